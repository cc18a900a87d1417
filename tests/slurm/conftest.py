"""A running SLURM for the tests that need one; they skip with the reason where there is none.

CI's ``.ci/run`` starts a one-node SLURM with 4 fake GPUs (``bash .ci/slurm-local.sh start``),
the ``slurm`` fixture, and beside it a separate two-node one, ``cimulti`` (``bash
.ci/slurm-local.sh start --nodes 2``: nodes ci-n1 and ci-n2 with 2 fake GPUs each), the
``slurm_multi`` fixture, reached through its own config (``SLURM_CONF``, default
:data:`MULTI_CONF`). Every call here has a timeout: SLURM waits forever on a request it cannot
fill, so the allocations also ask with ``--immediate``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

TOOLS = ("sinfo", "srun", "salloc", "sbatch", "squeue", "scancel", "scontrol")
COMMAND_TIMEOUT_S = 15
# The two-node cluster's config (.ci/slurm-local.sh --nodes 2 writes it); SLURM_CI_MULTI_CONF overrides
MULTI_CONF = os.environ.get("SLURM_CI_MULTI_CONF", "/tmp/slurm-ci-multi/etc/slurm.conf")


def slurm_unavailable(env: Optional[dict] = None, min_nodes: int = 1) -> Optional[str]:
    """Why the SLURM tests cannot run here, or None when a usable SLURM answers (with ``min_nodes``
    or more usable nodes; ``env``: the environment of every SLURM command, e.g. its SLURM_CONF)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%t %G %c"], capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer within {COMMAND_TIMEOUT_S} s"
    if done.returncode != 0:
        return f"sinfo failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"
    nodes = [line.split() for line in done.stdout.splitlines() if line.strip()]
    # comp: finishing a job (e.g. the harness's own check), free in a moment
    usable = [n for n in nodes if n[0].rstrip("*") in ("idle", "mix", "comp") and "gpu:" in n[1] and int(n[2]) >= 2]
    if len(usable) < min_nodes:
        return (f"{'no' if not usable else f'only {len(usable)}'} idle node(s) with GPUs (GRES) and 2+ CPUs, "
                f"{min_nodes} needed: sinfo says {done.stdout.strip() or 'nothing'!r}")
    return None


class Slurm:
    """Small helpers around salloc/sbatch/squeue/scancel, each with a timeout. ``env``: the
    environment of every command (None: this process's), e.g. another cluster's SLURM_CONF."""

    def __init__(self, env: Optional[dict] = None):
        self.env = env

    def run(self, argv: list, timeout_s: float = COMMAND_TIMEOUT_S, **options) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              env=options.pop("env", None) or self.env, **options)

    def salloc(self, command: list, gpus: int = 2, cpus: int = 2, timeout_s: float = 120, cwd=None,
               env=None, mem_mb: Optional[int] = None, nodes: int = 1) -> subprocess.CompletedProcess:
        """Run ``command`` inside a fresh allocation of ``nodes`` nodes with ``gpus`` GPUs and
        ``cpus`` CPUs each."""
        argv = ["salloc", f"--nodes={nodes}", f"--gpus-per-node={gpus}", f"--ntasks-per-node={cpus}",
                "--cpus-per-task=1", "--immediate=30", "--job-name=nasalloc-test",
                *([f"--mem={mem_mb}"] if mem_mb else []), *command]
        return self.run(argv, timeout_s=timeout_s, cwd=cwd, env=env)

    def sbatch(self, script, cwd, extra: tuple = (), start_timeout_s: float = 30) -> str:
        """Submit ``script`` and wait until it runs (sbatch has no --immediate: a job the cluster
        cannot start would pend forever, so it is cancelled after ``start_timeout_s``)."""
        done = self.run(["sbatch", "--parsable", *extra, str(script)], cwd=cwd)
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
        done = self.run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%T"])
        return done.stdout.strip() or None

    def steps(self, job_id: str) -> list:
        done = self.run(["squeue", "--steps", "--noheader", f"--jobs={job_id}", "--format=%i %j"])
        return [line.split() for line in done.stdout.splitlines() if line.strip()]

    def steps_named(self, prefix: str, nodes: bool = False) -> list:
        """(step id, name) of every running step, of any job, whose name starts with ``prefix``;
        with ``nodes``, (step id, name, node list)."""
        width = 3 if nodes else 2
        done = self.run(["squeue", "--steps", "--noheader", "--format=%i %j" + (" %N" if nodes else "")])
        rows = [line.split() for line in done.stdout.splitlines() if len(line.split()) == width]
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
        self.run(["scancel", *options, job_id])

    def slurmd_log(self, node: str) -> str:
        """The text of ``node``'s slurmd log (SlurmdLogFile of this cluster's config, %n: node)."""
        conf = Path((self.env or os.environ).get("SLURM_CONF", "/etc/slurm/slurm.conf"))
        found = re.search(r"^SlurmdLogFile=(\S+)", conf.read_text(), re.M)
        assert found, f"{conf} names no SlurmdLogFile"
        log = Path(found.group(1).replace("%n", node))
        return log.read_text(errors="replace") if log.exists() else ""


@pytest.fixture(scope="session")
def slurm():
    reason = slurm_unavailable()
    if reason:
        pytest.skip(f"needs a running SLURM ({reason}); start one with `bash .ci/slurm-local.sh start`")
    return Slurm()


@pytest.fixture(scope="session")
def slurm_multi():
    """The two-node cluster (ci-n1, ci-n2): its commands run with its SLURM_CONF, and so do the
    nasalloc processes a test starts with ``slurm_multi.env``."""
    if not Path(MULTI_CONF).is_file():
        pytest.skip(f"needs the two-node SLURM ({MULTI_CONF} missing); start it with "
                    "`bash .ci/slurm-local.sh start --nodes 2`")
    env = {**os.environ, "SLURM_CONF": MULTI_CONF}
    reason = slurm_unavailable(env, min_nodes=2)
    if reason:
        pytest.skip(f"needs the two-node SLURM ({reason}); start it with `bash .ci/slurm-local.sh start --nodes 2`")
    return Slurm(env)


def small_plans(tmp_path_factory):
    """A maker of small ASHA plans (4 trials of at most 3 epochs) of one split, from a copy of
    the shipped digits curves (the plan pins their sha256): ``make(budget, gpus_per_node, g, *simulate_args)``."""
    import nasalloc.data

    data = Path(nasalloc.data.__file__).parent
    shipped = next((p for p in (data / "digits_curves.csv.gz", data / "digits_curves.csv") if p.exists()), None)
    if shipped is None:
        pytest.skip("the shipped digits learning curves are missing")
    curves = Path(shutil.copy(shipped, tmp_path_factory.mktemp("curves")))

    def make(budget: int, gpus_per_node: int, gpus_per_trial: str, *extra: str) -> Path:
        """``extra``: more simulate flags (a flag given again overrides the one above)."""
        out = tmp_path_factory.mktemp("plan")
        done = subprocess.run([sys.executable, "-m", "nasalloc", "simulate", "--budget", str(budget),
                               "--gpus-per-node", str(gpus_per_node), "--algorithms", "asha",
                               "--gpus-per-trial", gpus_per_trial, "--max-epochs", "3", "--trials", "4",
                               "--seeds", "1", "--jobs", "1", "--curves", str(curves), "--out", str(out), "-q", *extra],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return out / "plan.json"

    return make
