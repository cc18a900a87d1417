"""A running SLURM for the tests that need one; they skip with the reason where there is none.

CI's ``.ci/run`` starts a one-node SLURM with 4 fake GPUs (``bash .ci/slurm-local.sh start``).
Every call here has a timeout: SLURM waits forever on a request it cannot fill, so the
allocations also ask with ``--immediate``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Optional

import pytest

TOOLS = ("sinfo", "srun", "salloc", "sbatch", "squeue", "scancel", "scontrol")
COMMAND_TIMEOUT_S = 15


def slurm_unavailable() -> Optional[str]:
    """Why the SLURM tests cannot run here, or None when a usable SLURM answers."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%t %G %c"], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within {COMMAND_TIMEOUT_S} s"
    if done.returncode != 0:
        return f"sinfo failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"
    nodes = [line.split() for line in done.stdout.splitlines() if line.strip()]
    # comp: finishing a job (e.g. the harness's own check), free in a moment
    usable = [n for n in nodes if n[0].rstrip("*") in ("idle", "mix", "comp") and "gpu:" in n[1] and int(n[2]) >= 2]
    if not usable:
        return f"no idle node with GPUs (GRES) and 2+ CPUs: sinfo says {done.stdout.strip() or 'nothing'!r}"
    return None


class Slurm:
    """Small helpers around salloc/sbatch/squeue/scancel, each with a timeout."""

    def salloc(self, command: list, gpus: int = 2, cpus: int = 2, timeout_s: float = 120, cwd=None,
               env=None, mem_mb: Optional[int] = None) -> subprocess.CompletedProcess:
        """Run ``command`` inside a fresh one-node allocation of ``gpus`` GPUs and ``cpus`` CPUs."""
        argv = ["salloc", "--nodes=1", f"--gpus-per-node={gpus}", f"--ntasks-per-node={cpus}",
                "--cpus-per-task=1", "--immediate=30", "--job-name=nasalloc-test",
                *([f"--mem={mem_mb}"] if mem_mb else []), *command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, env=env)

    def sbatch(self, script, cwd, extra: tuple = (), start_timeout_s: float = 30) -> str:
        """Submit ``script`` and wait until it runs (sbatch has no --immediate: a job the cluster
        cannot start would pend forever, so it is cancelled after ``start_timeout_s``)."""
        done = subprocess.run(["sbatch", "--parsable", *extra, str(script)], capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S, cwd=cwd)
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.strip().split(";")[0]
        try:
            self.wait_until(lambda: self.state(job_id) != "PENDING", start_timeout_s, f"job {job_id} to start")
        except AssertionError:
            self.cancel(job_id)
            raise
        return job_id

    def state(self, job_id: str) -> Optional[str]:
        """The job's state (RUNNING, PENDING, ...) or None once it has left the queue."""
        done = subprocess.run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%T"], capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)
        return done.stdout.strip() or None

    def steps(self, job_id: str) -> list:
        done = subprocess.run(["squeue", "--steps", "--noheader", f"--jobs={job_id}", "--format=%i %j"],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        return [line.split() for line in done.stdout.splitlines() if line.strip()]

    def steps_named(self, prefix: str) -> list:
        """(step id, name) of every running step, of any job, whose name starts with ``prefix``."""
        done = subprocess.run(["squeue", "--steps", "--noheader", "--format=%i %j"], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
        rows = [line.split() for line in done.stdout.splitlines() if len(line.split()) == 2]
        return [tuple(row) for row in rows if row[1].startswith(prefix)]

    def wait_until(self, predicate, timeout_s: float, what: str, interval_s: float = 0.5):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval_s)
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")

    def wait_gone(self, job_id: str, timeout_s: float) -> None:
        self.wait_until(lambda: self.state(job_id) is None, timeout_s, f"job {job_id} to end")

    def cancel(self, job_id: str, *options: str) -> None:
        subprocess.run(["scancel", *options, job_id], capture_output=True, timeout=COMMAND_TIMEOUT_S)


@pytest.fixture(scope="session")
def slurm():
    reason = slurm_unavailable()
    if reason:
        pytest.skip(f"needs a running SLURM ({reason}); start one with `bash .ci/slurm-local.sh start`")
    return Slurm()
