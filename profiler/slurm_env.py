"""What a SLURM allocation gives us, read from the environment SLURM sets.

Detection is a table: each thing we need (job id, hosts, GPUs per node, CPUs per node) lists
the variables that may carry it, in order of trust, and a parser per variable. The first
variable present wins, and :class:`Allocation` keeps which one it was (``sources``) so a
surprising answer can be traced back to the variable that caused it.

Everything here is pure over an ``env`` mapping except :func:`expand_hostlist`, the one call
to ``scontrol show hostnames`` (SLURM's own expansion of ``node[01-04,07]``).

Why the order: in a batch script ``SLURM_GPUS_ON_NODE`` and ``SLURM_JOB_GPUS`` describe what
the job really holds on the node (``--exclusive`` hands over every GPU even when fewer were
asked for), while ``SLURM_GPUS_PER_NODE`` / ``SLURM_GPUS`` only repeat the request; under
``salloc`` the shell runs outside the allocation and only the request variables exist.
Inside a job step (``SLURM_STEP_ID`` set) the ``*_ON_NODE`` variables describe the step, not
the job, so they are skipped there.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

from ..errors import UserError

SCONTROL_TIMEOUT_S = 20.0


def _count_list(value: str) -> int:
    """'0,1,3' -> 3 (GPU indices); empty -> 0."""
    return len([part for part in value.split(",") if part.strip()])


def _count_typed(value: str) -> int:
    """'4', 'a100:4', 'gpu:a100:4' -> 4 (a GRES count, maybe with a type); a list sums."""
    total = 0
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        match = re.search(r"(\d+)(?:\([^)]*\))?$", part)
        if not match:
            raise ValueError(part)
        total += int(match.group(1))
    return total


def parse_per_node_counts(value: str) -> list[int]:
    """SLURM's compressed per-node counts: '72(x2),36' -> [72, 72, 36]."""
    counts: list[int] = []
    for part in value.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            raise ValueError(value)
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


# (variable, parser, only_outside_a_step). GPUs: per node unless the parser divides.
GPU_VARIABLES: tuple = (
    ("SLURM_GPUS_ON_NODE", int, True),
    ("SLURM_JOB_GPUS", _count_list, False),
    ("SLURM_GPUS_PER_NODE", _count_typed, False),
    ("SLURM_TRES_PER_NODE", lambda v: _count_typed(re.sub(r"^(gres[:/])?gpu:?", "", v)), False),
    ("SLURM_GPUS", "per-job", False),  # total over the job: divided by the node count
)
CPU_VARIABLES: tuple = (
    ("SLURM_CPUS_ON_NODE", int, True),
    ("SLURM_JOB_CPUS_PER_NODE", parse_per_node_counts, False),
)
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "SLURM_JOBID")
NODELIST_VARIABLES = ("SLURM_JOB_NODELIST", "SLURM_NODELIST")
NUM_NODES_VARIABLES = ("SLURM_JOB_NUM_NODES", "SLURM_NNODES")


@dataclass(frozen=True)
class Allocation:
    """The resources of the SLURM job this process runs in."""

    job_id: str
    hosts: tuple                  # host names in SLURM's order (the first runs the batch script)
    gpus_per_node: int
    cpus_per_node: tuple          # per host, same order as ``hosts``
    step_id: Optional[str] = None  # set when this process itself runs inside a job step
    sources: dict = field(default_factory=dict, compare=False)  # what -> variable it came from
    #: an allocation without GPUs used with --device cpu: each CPU core is a slot ("GPU"), as
    #: the local executor does; steps then ask for no GPUs
    cpu_slots: bool = False

    @property
    def nodes(self) -> int:
        return len(self.hosts)

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    def describe(self) -> dict:
        """What a profile or a validation run records about where it ran."""
        return {"scheduler": "slurm", "job_id": self.job_id, "hosts": list(self.hosts),
                "nodes": self.nodes, "gpus_per_node": self.gpus_per_node,
                "cpus_per_node": list(self.cpus_per_node), "sources": dict(self.sources),
                **({"slots": "CPU cores (no GPUs in the job, --device cpu)"} if self.cpu_slots else {})}


def _first(env: Mapping[str, str], names: Sequence[str]) -> tuple[Optional[str], Optional[str]]:
    for name in names:
        value = env.get(name)
        if value is not None and value.strip() != "":
            return name, value.strip()
    return None, None


def in_allocation(env: Mapping[str, str]) -> bool:
    """True inside a SLURM job (batch script, salloc shell or job step)."""
    return _first(env, JOB_ID_VARIABLES)[0] is not None


def _lookup(env: Mapping[str, str], table: tuple, in_step: bool, nodes: int):
    for name, parse, outside_step_only in table:
        if outside_step_only and in_step:
            continue
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            if parse == "per-job":
                total = _count_typed(raw)
                if total % nodes:
                    raise UserError(f"{name}={raw!r} GPUs do not split evenly over {nodes} nodes; "
                                    "ask for --gpus-per-node instead")
                return name, total // nodes
            return name, parse(raw.strip())
        except ValueError:
            raise UserError(f"environment variable {name}={raw!r} is not a SLURM count") from None
    return None, None


def allocation_from_env(env: Mapping[str, str], hosts: Sequence[str], device: Optional[str] = None) -> Allocation:
    """The :class:`Allocation` described by ``env``, with ``hosts`` the expanded node list.

    A job without GPUs is refused unless ``device`` is "cpu": then its CPU cores are the slots
    (``cpu_slots``). Pure: :func:`detect_allocation` supplies ``hosts`` from ``scontrol show hostnames``.
    """
    sources: dict = {}
    name, job_id = _first(env, JOB_ID_VARIABLES)
    if name is None:
        raise UserError("not inside a SLURM allocation (SLURM_JOB_ID is not set); "
                        "run under sbatch or salloc, or choose the local executor/launcher")
    sources["job_id"] = name
    hosts = tuple(hosts)
    if not hosts:
        raise UserError(f"SLURM job {job_id} has no node list (SLURM_JOB_NODELIST is empty)")
    sources["hosts"] = _first(env, NODELIST_VARIABLES)[0]
    count_name, count = _first(env, NUM_NODES_VARIABLES)
    if count is not None and count.isdigit() and int(count) != len(hosts):
        raise UserError(f"{count_name}={count} but the node list names {len(hosts)} hosts: {','.join(hosts)}")
    step_name, step_id = _first(env, ("SLURM_STEP_ID", "SLURM_STEPID"))
    in_step = step_name is not None

    gpu_name, gpus = _lookup(env, GPU_VARIABLES, in_step, len(hosts))
    if gpu_name is None and device != "cpu":
        raise UserError(f"SLURM job {job_id} holds no GPUs (none of "
                        f"{', '.join(v[0] for v in GPU_VARIABLES)} is set): submit with --gpus-per-node=N, "
                        f"or pass --device cpu to use its CPU cores as slots, or run here with --executor local "
                        f"(validate) / --launcher local (profile)")

    cpu_name, cpus = _lookup(env, CPU_VARIABLES, in_step, len(hosts))
    if cpu_name is None:
        cpus = [1] * len(hosts)  # SLURM always sets one of them; be safe rather than fail
        cpu_name = "default"
    cpus = [cpus] * len(hosts) if isinstance(cpus, int) else list(cpus)
    if len(cpus) != len(hosts):
        if len(set(cpus)) != 1:
            raise UserError(f"{cpu_name} lists {len(cpus)} nodes but the job has {len(hosts)}")
        cpus = [cpus[0]] * len(hosts)
    sources["cpus_per_node"] = cpu_name
    cpu_slots = gpu_name is None
    if cpu_slots:  # --device cpu without GPUs: one slot per core of the smallest node
        gpus = min(cpus)
        sources["gpus_per_node"] = f"{cpu_name} (CPU cores as slots)"
    else:
        sources["gpus_per_node"] = gpu_name
    return Allocation(job_id=job_id, hosts=hosts, gpus_per_node=int(gpus), cpus_per_node=tuple(cpus),
                      cpu_slots=cpu_slots,
                      step_id=step_id, sources=sources)


def expand_hostlist(nodelist: str, timeout_s: float = SCONTROL_TIMEOUT_S,
                    run: Callable = subprocess.run) -> list[str]:
    """Host names of a SLURM node list ('gpu[01-03]' -> gpu01, gpu02, gpu03), by scontrol."""
    if not re.search(r"[\[\],]", nodelist):
        return [nodelist]  # one plain host name: nothing to expand, no process to start
    try:
        done = run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                   timeout=timeout_s)
    except FileNotFoundError:
        raise UserError(f"cannot expand SLURM node list {nodelist!r}: scontrol is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"scontrol show hostnames {nodelist!r} did not answer within {timeout_s:g} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"scontrol show hostnames {nodelist!r} failed: {last}")
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def detect_allocation(env: Optional[Mapping[str, str]] = None, device: Optional[str] = None) -> Allocation:
    """The allocation this process runs in (reads ``os.environ`` by default); ``device`` "cpu"
    accepts one without GPUs (CPU cores as slots)."""
    import os

    env = os.environ if env is None else env
    if not in_allocation(env):
        allocation_from_env(env, [])  # raises the "not inside an allocation" message
    _, nodelist = _first(env, NODELIST_VARIABLES)
    if nodelist is None:
        raise UserError("SLURM_JOB_ID is set but SLURM_JOB_NODELIST is not; is this a SLURM job?")
    return allocation_from_env(env, expand_hostlist(nodelist), device)
