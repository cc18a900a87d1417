"""Durable file output: every file is replaced atomically or appended line by line.

A run that is killed at any moment leaves either the old file or the new one (atomic writes),
and an append-only JSON-lines log loses at most its last, partly written line, which
:func:`read_jsonl` skips.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import UserError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file 0600; give it the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda h: h.write(text), "w")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda h: h.write(data), "wb")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_csv(path: Path, frame) -> None:
    """Write a pandas DataFrame as CSV, atomically."""
    atomic_write_text(path, frame.to_csv(index=False))


FIGURE_DPI = 110


def atomic_save_figure(path: Path, figure, tight_layout: bool = False) -> None:
    """Save a matplotlib figure as PNG cropped to its tight bounding box, atomically.

    ``tight_layout=True`` first does ``figure.tight_layout()``'s layout, as a one-off (the figure
    keeps no layout engine), and crops to the bounding box measured once here: savefig with
    ``bbox_inches="tight"`` would lay the figure out once more to measure it (any figure with a
    layout engine, as ``tight_layout()`` leaves, gets that pass). The PNG is byte for byte the one
    ``figure.tight_layout()`` and this function without it give (so the sweep's three plots on
    matplotlib 3.11), with one text layout of every tick, label and title fewer.
    """
    if not tight_layout:
        _atomic_write(path, lambda h: figure.savefig(h, format="png", dpi=FIGURE_DPI, bbox_inches="tight"), "wb")
        return
    import matplotlib
    from matplotlib.layout_engine import TightLayoutEngine

    TightLayoutEngine().execute(figure)
    shown_dpi = figure.dpi
    figure.dpi = FIGURE_DPI  # measured as savefig measures it: at the saved resolution
    try:
        bbox = figure.get_tightbbox(figure.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    finally:
        figure.dpi = shown_dpi
    _atomic_write(path, lambda h: figure.savefig(h, format="png", dpi=FIGURE_DPI, bbox_inches=bbox), "wb")


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays appear in records; keep the JSON plain.
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class AppendOnlyText:
    """A text file written only by appending whole lines, each flushed (and optionally fsynced).

    Opening an existing file first cuts a torn last line (a writer killed mid-line), so the
    next line does not glue onto it.
    """

    def __init__(self, path: Path, fsync: bool = True, newline: Optional[str] = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        cut_torn_last_line(self.path)
        self._handle = open(self.path, "a", encoding="utf-8", newline=newline)

    def append(self, text: str) -> None:
        self._handle.write(text)
        self._handle.flush()
        if self._fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cut_torn_last_line(path: Path) -> None:
    """Truncate ``path`` after its last newline, if its end is a partly written line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


class JsonlAppender(AppendOnlyText):
    """Append-only JSON-lines file; every record is flushed (and fsynced) as it is written."""

    def write(self, record: dict) -> None:
        self.append(json.dumps(record, default=_json_default, separators=(",", ":")) + "\n")


def read_jsonl(path: Path) -> Iterator[dict]:
    """Records of a JSON-lines file; a torn last line (a killed writer) is skipped."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                return  # torn final write
            raise UserError(f"{path}: line {number} is not valid JSON")


def read_json(path: Path, what: str = "file") -> Any:
    """Load a JSON file, turning a missing or malformed file into a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {path} is not valid JSON (line {err.lineno}: {err.msg})") from None


def write_lines(path: Path, rows: Iterable[dict]) -> None:
    """Write JSON lines atomically (a whole file at once, e.g. a simulation's event records)."""
    atomic_write_text(path, "".join(json.dumps(r, default=_json_default, separators=(",", ":")) + "\n" for r in rows))


# -- output locations --------------------------------------------------------------------------
def check_writable(path, flag: str = "--out", folder: bool = True) -> Path:
    """Raise a one-line UserError unless ``path`` can be created (or already is) and written.

    ``folder``: ``path`` is a folder the run writes into; else it is a file whose folder must be
    writable. Nothing is created: the nearest existing ancestor must be a writable folder (or,
    for an existing target, the target itself). Run this before anything else runs.
    """
    path = Path(path)
    target = path if folder else path.parent
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path} is a folder, not a file")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a folder")
    probe = Path(os.path.abspath(target))
    while not probe.exists():
        if probe.is_symlink():
            raise UserError(f"{flag} {path}: {probe} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {path} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(probe) else "is not writable"
        if probe == Path(os.path.abspath(target)):
            raise UserError(f"{flag} {path}: {probe} {why}")
        raise UserError(f"{flag} {path} cannot be created: {probe} {why}")
    return path


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


LOCK_NAME = ".nasalloc.lock"


class OutputLock:
    """An exclusive ``flock`` on a lock file: one run writes an output at a time.

    The kernel releases it when the holding process ends, however it ends (SIGKILL too), so a
    killed run never leaves a stale lock. The holder's PID is written into the file for the
    message a second run gets. The file descriptor is not inherited by programs the run
    executes (Python's default); forked pool workers share it and end with the run.
    """

    def __init__(self, lock_path: Path, what: str):
        self.path = Path(lock_path)
        self.what = what
        self._fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        """Create the lock file if needed and take the lock, or raise a UserError naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_umask())
            try:
                self._take(fd)
                same = _same_file(fd, self.path)
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)  # a holder removed (or replaced) the file as we took it: take the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def refuse_if_held(self) -> None:
        """Raise the UserError :meth:`acquire` would raise if a run holds the lock now; creates
        nothing (a check to make before the inputs are checked and anything is written)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no lock file: no run holds it
        try:
            self._take(fd)
        finally:
            os.close(fd)  # drops the lock if it was free and taken just now

    def _take(self, fd: int) -> None:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            pid = f"PID {holder}" if holder.isdigit() else "another process"
            raise UserError(f"{self.what} is in use by another nasalloc run ({pid}); "
                            f"wait for it to end or choose another --out") from None

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one takes a removed file) and
        drop the lock. A run that is killed leaves the file, unlocked: harmless."""
        if self._fd is not None:
            if _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def folder_lock(folder: Path) -> OutputLock:
    """The lock of results folder ``folder`` (``.nasalloc.lock`` in it); not taken yet."""
    return OutputLock(Path(folder) / LOCK_NAME, str(folder))


def file_output_lock(path: Path) -> OutputLock:
    """The lock of an output file (``.NAME.lock`` beside it); not taken yet."""
    path = Path(path)
    return OutputLock(path.parent / f".{path.name}.lock", str(path))
