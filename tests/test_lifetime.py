"""nasalloc.lifetime: a child ends when its parent dies, and one orphaned before it could arm
the parent-death signal exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from nasalloc.lifetime import EXIT_ORPHANED

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_child_whose_launcher_died_before_it_started_exits_at_once():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a PID that no longer runs: the launcher that "started" the child below
    code = f"from nasalloc.lifetime import end_with_parent; end_with_parent({gone.pid}); print('ran on')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_ORPHANED and "ran on" not in result.stdout


def test_a_grandchild_ends_when_its_parent_is_sigkilled():
    # parent: starts a child that arms end_with_parent and then sleeps; prints the child's pid
    child = ("import time, os; from nasalloc.lifetime import end_with_parent; end_with_parent(); "
             "print('armed', flush=True); time.sleep(120)")
    parent = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.PIPE, "
              "text=True); assert p.stdout.readline().strip() == 'armed'; print(p.pid, flush=True); "
              "import time; time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", parent, child], stdout=subprocess.PIPE, text=True)
    grandchild = int(proc.stdout.readline())
    try:
        assert _alive(grandchild)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 2
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild)
    finally:
        if _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
