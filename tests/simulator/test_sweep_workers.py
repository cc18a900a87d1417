"""simulate's pool workers end with the main process, however it ends (SIGTERM or SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _children(pid: int) -> list:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def kill_all(proc, pids: list) -> None:
    """A test's clean-up: SIGKILL ``pids`` (gone ones are fine) and ``proc`` if it still runs."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_end_when_the_main_process_is_killed(tmp_path, sig):
    proc = subprocess.Popen([sys.executable, "-m", "nasalloc", "simulate", "--budget", "64", "--jobs", "2",
                             "--out", str(tmp_path / "sim"), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers = []
        while len(workers) < 2:  # the pool is up and simulating
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
            workers = _children(proc.pid)
        time.sleep(0.5)
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        time.sleep(3)
        assert [pid for pid in workers if _alive(pid)] == []
    finally:
        kill_all(proc, _children(proc.pid) + (workers if 'workers' in dir() else []))
