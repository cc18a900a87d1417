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


def atomic_save_figure(path: Path, figure) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    _atomic_write(path, lambda h: figure.savefig(h, format="png", dpi=110, bbox_inches="tight"), "wb")


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
