"""Output paths every subcommand writes: one that cannot be created or written is one line
naming it (exit 2) before anything runs, and one results folder has one writer at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasalloc.cli import main
from nasalloc.errors import UserError
from nasalloc.io import OutputLock, check_writable

REFERENCE_PLAN = Path(__file__).resolve().parents[1] / "results" / "reference" / "simulate_default" / "plan.json"


def _commands(out_folder: Path, out_file: Path) -> dict:
    return {
        "simulate": ["simulate", "--budget", "2", "--seeds", "1", "--jobs", "1", "--out", str(out_folder)],
        "profile": ["profile", "--gpus", "1", "--device", "cpu", "--workload", "digits", "--launcher", "local",
                    "--out", str(out_file)],
        "validate": ["validate", "--plan", str(REFERENCE_PLAN), "--device", "cpu", "--out", str(out_folder)],
        "sbatch": ["sbatch", "--plan", str(REFERENCE_PLAN), "--out", str(out_folder)],
    }


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def _tree(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("command", ["simulate", "profile", "validate", "sbatch"])
def test_out_under_a_regular_file_is_one_line_naming_it(tmp_path, capsys, command):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    argv = _commands(blocker / "out", blocker / "out" / "profile.json")[command]
    before = _tree(tmp_path)
    code, lines = _run(argv, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "--out" in lines[0] and str(blocker) in lines[0] and "is a file, not a folder" in lines[0]
    assert _tree(tmp_path) == before  # nothing written


@pytest.mark.parametrize("command", ["simulate", "profile", "validate", "sbatch"])
def test_unwritable_out_folder_is_one_line_naming_it(tmp_path, capsys, monkeypatch, command):
    # Tests run as root here, for whom a chmod 0555 folder is writable: make os.access answer
    # as it does for another user (the check asks os.access, as permission checks must).
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked and mode & os.W_OK
                        else real_access(p, mode, **kw))
    argv = _commands(locked / "out", locked / "profile.json")[command]
    code, lines = _run(argv, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert str(locked) in lines[0] and "is not writable" in lines[0]
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="as root a chmod 0555 folder stays writable")
def test_chmod_readonly_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(UserError, match="is not writable"):
            check_writable(locked / "out")
    finally:
        locked.chmod(0o755)


@pytest.fixture
def read_only_mount(tmp_path):
    """A read-only tmpfs (mounting needs root and mount rights; skipped where they are missing)."""
    point = tmp_path / "ro"
    point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {made.stderr.strip()}")
    yield point
    subprocess.run(["umount", str(point)], check=True)


@pytest.mark.parametrize("command", ["simulate", "profile", "validate", "sbatch"])
def test_out_on_a_read_only_file_system_is_one_line_naming_it(read_only_mount, capsys, command):
    argv = _commands(read_only_mount / "out", read_only_mount / "profile.json")[command]
    code, lines = _run(argv, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert str(read_only_mount) in lines[0] and "read-only file system" in lines[0]


def _hold(lock_path: Path) -> subprocess.Popen:
    """Another process that takes the lock and keeps it until killed."""
    code = ("import sys, time; from nasalloc.io import OutputLock; "
            "OutputLock(sys.argv[1], 'x').acquire(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_names_the_holder_and_is_freed_when_it_is_killed(tmp_path):
    lock_path = tmp_path / "out" / ".nasalloc.lock"
    holder = _hold(lock_path)
    try:
        with pytest.raises(UserError, match=f"in use by another nasalloc run \\(PID {holder.pid}\\)"):
            OutputLock(lock_path, "out").acquire()
        with pytest.raises(UserError, match=f"PID {holder.pid}"):
            OutputLock(lock_path, "out").refuse_if_held()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL leaves no stale lock: the kernel dropped it with the process
    lock = OutputLock(lock_path, "out").acquire()
    assert lock_path.read_text().strip() == str(os.getpid())
    lock.release()


def test_a_second_simulate_on_a_folder_in_use_is_refused_with_the_pid(tmp_path):
    out = tmp_path / "sim"
    args = [sys.executable, "-m", "nasalloc", "simulate", "--budget", "64", "--seeds", "10", "--jobs", "1",
            "--out", str(out)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "simulations.csv").exists():  # it holds the folder and is writing
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        began = time.monotonic()
        second = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run ended before the second was refused: make it longer"
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert str(out) in lines[0] and f"PID {first.pid}" in lines[0]
        assert time.monotonic() - began < 30  # refused at once, not after a sweep of its own
    finally:
        first.kill()
        first.communicate()


def test_a_profile_whose_file_another_run_writes_is_refused_with_the_pid(tmp_path):
    out = tmp_path / "profile.json"
    holder = _hold(tmp_path / ".profile.json.lock")  # where a running profile holds its lock
    try:
        result = subprocess.run([sys.executable, "-m", "nasalloc", "profile", "--gpus", "1", "--device", "cpu",
                                 "--workload", "digits", "--launcher", "local", "--out", str(out)],
                                capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert str(out) in lines[0] and f"PID {holder.pid}" in lines[0]
    assert not out.exists()
