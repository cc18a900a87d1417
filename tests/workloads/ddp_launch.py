"""Run a Python snippet as N gloo ranks on this machine (subprocesses with the torchrun
environment), for tests of real DDP training on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from nasalloc.workloads.distributed import free_port


def run_ranks(code: str, world_size: int, timeout_s: float = 120.0) -> list:
    """Run ``code`` in ``world_size`` processes; each prints one JSON line last, returned per rank.

    The snippet sees RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT and OMP_NUM_THREADS=1.
    """
    # End like the project's own rank processes (validate/trial.py): once the snippet is done,
    # skip the interpreter's teardown of torch, where gloo's transport threads can abort a
    # finished rank ("terminate called without an active exception"). A snippet that raises
    # still exits non-zero before reaching this.
    code = textwrap.dedent(code) + "\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_os._exit(0)\n"
    port = free_port()
    procs = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for rank, proc in enumerate(procs):
            out, err = proc.communicate(timeout=timeout_s)
            if proc.returncode != 0:
                raise AssertionError(f"rank {rank} exited {proc.returncode}:\n{err[-3000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results
