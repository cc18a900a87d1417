"""Child processes that end with their parent, however the parent ends (SIGKILL included).

A trial rank or a simulation worker whose parent has died holds GPUs, cores and open files for
nothing (and a resumed run would start new ranks beside it). On Linux the kernel can send a
child a signal the moment its parent dies (``prctl(PR_SET_PDEATHSIG)``); a child calls
:func:`end_with_parent` first thing. The parent may already have died before that call (the
child was just starting): the parent-PID check after arming the signal catches that race.
Where prctl is not available a thread polls the parent PID instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Optional

PR_SET_PDEATHSIG = 1
#: pid of the process that started a rank (set by the local launcher), so it can tell it was orphaned
PARENT_PID_ENV = "NASALLOC_PARENT_PID"
#: exit status of a process that found itself orphaned
EXIT_ORPHANED = 70


def _set_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_with_parent(launcher_pid: Optional[int] = None, sig: int = signal.SIGKILL,
                    poll_interval_s: float = 1.0) -> None:
    """Make this process end (``sig``) when its parent dies; exit now if it already has.

    ``launcher_pid``: the PID of the process that meant to start this one. When it is the
    parent but the parent has changed (re-parented to init), or it is dead, this process was
    orphaned before it got here and exits with :data:`EXIT_ORPHANED`. (A different, living
    launcher means a wrapper started us, e.g. a SLURM task: its death counts instead.)
    """
    parent = os.getppid()
    if launcher_pid and launcher_pid != parent and not _alive(launcher_pid):
        os._exit(EXIT_ORPHANED)
    armed = _set_parent_death_signal(sig)
    if os.getppid() != parent:  # the parent died between getppid() and prctl()
        os._exit(EXIT_ORPHANED)
    if armed:
        return

    def watch() -> None:
        while True:
            time.sleep(poll_interval_s)
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def parent_death_prefix(signal_name: str = "TERM") -> list:
    """Words to put before a non-Python command (srun) so it gets ``signal_name`` when its parent
    dies: util-linux ``setpriv --pdeathsig`` (which then execs the command, same PID); empty
    where setpriv is missing. srun on SIGTERM cancels its step, so no step outlives the runner."""
    import shutil

    if sys.platform.startswith("linux") and shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", signal_name, "--"]
    return []


def launcher_pid_from(environ, name: str = PARENT_PID_ENV) -> Optional[int]:
    """The launcher PID an environment variable holds, or None (absent or not a number)."""
    value = str(environ.get(name) or "").strip()
    return int(value) if value.isdigit() else None
