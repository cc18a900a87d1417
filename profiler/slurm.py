"""The SLURM launcher: every DDP job is one job step (``srun``) inside the current allocation.

One ``srun`` per job, one task per rank::

    srun --exact --nodes=N --ntasks=N*T --ntasks-per-node=T --nodelist=HOSTS --cpus-per-task=C
         --gpus-per-node=T --kill-on-bad-exit=1 --immediate=S --job-name=NAME
         --output=LOGS/rank%t.log  python -m nasalloc.profiler.slurm_task MODULE ARGS...

* placement: a job that fits on a node stays on one node, a larger one takes whole nodes (the
  simulator's rule, :func:`nasalloc.simulator.cluster.make_split`); the validation executor
  passes the simulator's slot and :func:`hosts_of_devices` maps its GPUs to hosts;
* every task of a node sees the step's GPUs of that node and uses the ``LOCAL_RANK``-th, as
  under torchrun (``--gpus-per-node=T`` rather than ``--gpus-per-task=1``, whose per-task
  binding would hide a rank's peers from it);
* :mod:`nasalloc.profiler.slurm_task` turns SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID into
  RANK/WORLD_SIZE/LOCAL_RANK; MASTER_ADDR is the step's first host, MASTER_PORT one per step;
* ``--immediate`` makes a step that cannot get its resources fail instead of waiting forever;
* launch and completion are watched through the ``srun`` child process (no sacct polling),
  with :class:`nasalloc.profiler.launch.ProcessJob`; :class:`StepJob` adds what srun reports.

srun reads many ``SLURM_*`` variables of the allocation as its own options (a job-level
``--gpus-per-node`` would make every step ask for all GPUs and run one at a time); the step
environment drops them (:data:`SRUN_INPUT_VARIABLES`) and passes every option explicitly.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from nasalloc.errors import UserError
from nasalloc.lifetime import parent_death_prefix
from nasalloc.workloads.distributed import free_port

from .launch import LAUNCH_TIME_ENV, Capacity, DDPJob, Launcher, ProcessJob, job_log_dir, tail
from .slurm_env import Allocation, detect_allocation, in_allocation

TASK_MODULE = "nasalloc.profiler.slurm_task"
DEFAULT_IMMEDIATE_S = 60
SLURM_COMMAND_TIMEOUT_S = 20.0

# Allocation variables srun would take as options of the step; the step gets explicit ones.
SRUN_INPUT_VARIABLES = (
    "SLURM_GPUS", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK", "SLURM_GPUS_PER_SOCKET",
    "SLURM_CPUS_PER_GPU", "SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_GPU", "SLURM_MEM_PER_CPU",
    "SLURM_MEM_PER_NODE", "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_NTASKS_PER_NODE",
    "SLURM_NTASKS_PER_GPU", "SLURM_NTASKS_PER_SOCKET", "SLURM_NTASKS_PER_CORE",
    "SLURM_TRES_PER_TASK", "SLURM_GRES", "SLURM_DISTRIBUTION", "SLURM_EXCLUSIVE",
    "SLURM_OVERLAP", "SLURM_GPU_BIND", "SLURM_EXACT", "SLURM_WHOLE",
)
# A rank's place comes from SLURM inside the step, never from the launching process.
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK")


@dataclass(frozen=True)
class StepRequest:
    """One job step: ``tasks_per_node`` tasks on each of ``hosts``."""

    hosts: tuple                 # nodes of the step; the first is the rendezvous host
    tasks_per_node: int
    cpus_per_task: int
    gpus_per_node: int           # GPUs the step holds per node (0: none)
    command: tuple               # what every task runs
    name: str                    # step name (squeue --steps, sacct)
    immediate_s: int = DEFAULT_IMMEDIATE_S
    output: Optional[str] = None  # per-task output file pattern (%t: task id); stderr joins it
    overlap: bool = False        # share resources with other steps (co-located trials)


def srun_argv(step: StepRequest) -> list:
    """The ``srun`` command line of ``step`` (pure; see the module docstring)."""
    nodes = len(step.hosts)
    argv = ["srun", "--exact", f"--nodes={nodes}", f"--ntasks={nodes * step.tasks_per_node}",
            f"--ntasks-per-node={step.tasks_per_node}", f"--nodelist={','.join(step.hosts)}",
            f"--cpus-per-task={step.cpus_per_task}"]
    if step.gpus_per_node:
        argv.append(f"--gpus-per-node={step.gpus_per_node}")
    if step.overlap:
        argv.append("--overlap")
    argv += ["--kill-on-bad-exit=1", f"--immediate={step.immediate_s}", f"--job-name={step.name}"]
    if step.output:
        argv.append(f"--output={step.output}")
    return argv + [str(part) for part in step.command]


def step_environment(base: Mapping[str, str], extra: Mapping[str, str], master_addr: str,
                     master_port: int, device: str, name: str, launch_time: float) -> dict:
    """The environment srun passes to every task (pure)."""
    env = {k: v for k, v in base.items() if k not in SRUN_INPUT_VARIABLES and k not in RANK_VARIABLES}
    env.update({str(k): str(v) for k, v in extra.items()})
    env.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), NASALLOC_JOB_NAME=name)
    env[LAUNCH_TIME_ENV] = repr(launch_time)
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # one thread per CPU rank (cores are shared)
    return env


def hosts_of_devices(allocation: Allocation, devices: Sequence, gpus_per_node: int) -> tuple:
    """Hosts and tasks per host of a slot given as global GPU indices (node * gpus_per_node + i),
    the simulator's numbering. Returns (hosts, tasks_per_node)."""
    nodes: dict[int, int] = {}
    for device in devices:
        node = int(device) // gpus_per_node
        nodes[node] = nodes.get(node, 0) + 1
    if max(nodes) >= allocation.nodes:
        raise UserError(f"GPUs {list(devices)} need node {max(nodes) + 1} of {gpus_per_node} GPUs each; "
                        f"SLURM job {allocation.job_id} has {allocation.nodes} node(s)")
    counts = set(nodes.values())
    if len(counts) != 1:
        raise UserError(f"GPUs {list(devices)} sit unevenly on nodes of {gpus_per_node} GPUs "
                        f"({nodes}); a step needs the same number of tasks on every node")
    return tuple(allocation.hosts[n] for n in sorted(nodes)), counts.pop()


def job_hosts(allocation: Allocation, ranks: int, gpus_per_node: int) -> tuple:
    """Where a lone job of ``ranks`` ranks goes: one node when it fits, else whole nodes
    (the simulator's placement of a trial, first slot). Returns (hosts, tasks_per_node)."""
    if ranks <= gpus_per_node:
        return (allocation.hosts[0],), ranks  # any count that fits stays on one node
    from nasalloc.simulator.cluster import make_split

    if ranks > allocation.nodes * gpus_per_node:
        raise UserError(f"{ranks} ranks do not fit SLURM job {allocation.job_id}: "
                        f"{allocation.nodes} node(s) of {gpus_per_node} GPUs")
    if ranks % gpus_per_node:
        raise UserError(f"a job of {ranks} ranks spans nodes of {gpus_per_node} GPUs, so it takes whole nodes: "
                        f"use a multiple of {gpus_per_node}")
    slot = make_split(allocation.nodes * gpus_per_node, gpus_per_node, ranks).slots[0]
    return hosts_of_devices(allocation, slot.gpus, gpus_per_node)


_TASK_FAILURE = re.compile(r"srun: error: (?P<host>\S+): tasks? (?P<tasks>[\d,\-]+): (?P<what>.+)")


def first_task_failure(srun_log: str) -> Optional[dict]:
    """srun's first 'task N: Exited with exit code X' (or 'Killed', ...) line, parsed."""
    for line in srun_log.splitlines():
        match = _TASK_FAILURE.search(line)
        if match:
            first = int(re.split(r"[,\-]", match.group("tasks"))[0])
            code = re.search(r"exit code (\d+)", match.group("what"))
            return {"host": match.group("host"), "task": first, "what": match.group("what").strip(),
                    "exit_code": int(code.group(1)) if code else None, "line": line.strip()}
    return None


class StepJob(ProcessJob):
    """A running job step: its ``srun`` process, per-rank logs and what srun said."""

    def __init__(self, name: str, step_name: str, job_id: str, hosts: Sequence[str], process: subprocess.Popen,
                 srun_log: Path, rank_logs: Sequence[Path], cleanup_dir: Optional[Path] = None):
        self.step_name = step_name
        self.job_id = job_id
        self.hosts = list(hosts)
        self.srun_log = Path(srun_log)
        self.rank_logs = [Path(p) for p in rank_logs]
        self._found: Optional[tuple] = None  # (srun's status, its first task failure), once it ended
        super().__init__(name, [process], ["srun"], [srun_log], process.pid, cleanup_dir=cleanup_dir)

    def _task_failure(self) -> Optional[dict]:
        code = self.processes[0].returncode
        if code in (None, 0):
            return None
        if self._found is None or self._found[0] != code:  # srun's log is complete once it exited
            self._found = (code, first_task_failure(tail(self.srun_log, 200)))
        return self._found[1]

    def _cause(self, code: Optional[int]) -> Optional[int]:
        # srun exits with the status of the last task to end; the first failure is the cause
        found = self._task_failure() if code not in (None, 0) else None
        return found["exit_code"] if found and found["exit_code"] else code

    def poll(self) -> Optional[int]:
        return self._cause(super().poll())

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        return self._cause(super().wait(timeout))

    @property
    def returncode(self) -> Optional[int]:
        return self._cause(super().returncode)

    @property
    def failure(self) -> Optional[str]:
        found = self._task_failure()
        if self._terminated or found is None:
            base = super().failure
            if base and self.processes[0].returncode not in (None, 0) and not self._terminated:
                last = tail(self.srun_log, 1)
                return f"{self.name}: srun exited with status {self.processes[0].returncode}" + \
                    (f": {last}" if last else "")
            return base
        what = found["what"].replace("Exited with exit code", "exited with status")
        if found["exit_code"] is None:  # killed or cancelled: srun's own status says how
            what += f" (srun exit status {self.processes[0].returncode})"
        last = tail(self._rank_log(found["task"]), 1)
        return f"{self.name}: rank {found['task']} on {found['host']} {what}" + (f": {last}" if last else "")

    def _rank_log(self, task: int) -> Path:
        return self.rank_logs[task] if 0 <= task < len(self.rank_logs) else self.srun_log

    def stderr_tail(self, lines: int = 20) -> str:
        found = self._task_failure()
        rank = tail(self._rank_log(found["task"] if found else 0), lines)
        srun = "\n".join(l for l in tail(self.srun_log, 50).splitlines() if l.startswith(("srun:", "slurmstepd")))
        return "\n".join(part for part in (rank, srun) if part)

    def terminate(self, reason: str = "terminated") -> None:
        super().terminate(reason)
        if self.processes[0].returncode == -signal.SIGKILL:
            cancel_step(self.job_id, self.step_name)  # srun died hard: its tasks may live on


def cancel_step(job_id: str, step_name: str, timeout_s: float = SLURM_COMMAND_TIMEOUT_S) -> bool:
    """scancel the step of job ``job_id`` named ``step_name`` if it still runs."""
    try:
        listed = subprocess.run(["squeue", "--steps", "--noheader", f"--jobs={job_id}", "--format=%i %j"],
                                capture_output=True, text=True, timeout=timeout_s)
        ids = [line.split()[0] for line in listed.stdout.splitlines()
               if len(line.split()) == 2 and line.split()[1] == step_name]
        for step_id in ids:
            subprocess.run(["scancel", step_id], capture_output=True, timeout=timeout_s)
        return bool(ids)
    except (OSError, subprocess.TimeoutExpired):
        return False


class SlurmLauncher(Launcher):
    """Starts each :class:`DDPJob` as a job step of the allocation this process runs in."""

    name = "slurm"

    def __init__(self, allocation: Allocation, gpus_per_node: Optional[int] = None,
                 cpus_per_task: Optional[int] = None, immediate_s: int = DEFAULT_IMMEDIATE_S):
        self.allocation = allocation
        self.gpus_per_node = gpus_per_node or allocation.gpus_per_node
        if self.gpus_per_node > allocation.gpus_per_node:
            raise UserError(f"--gpus-per-node {self.gpus_per_node} but SLURM job {allocation.job_id} holds "
                            f"{allocation.gpus_per_node} GPU(s) per node: pass --gpus-per-node "
                            f"{allocation.gpus_per_node} (or fewer), or submit with --gpus-per-node={self.gpus_per_node}")
        # CPUs for each rank: the node's share per GPU (data loading), at least one (a slot is
        # one core where the job has no GPUs: see Allocation.cpu_slots)
        self.cpus_per_task = cpus_per_task or max(1, min(allocation.cpus_per_node) // self.gpus_per_node)
        self.immediate_s = int(immediate_s)
        self._counter = itertools.count(1)
        self._ports = random.Random(f"{allocation.job_id}-{os.getpid()}")

    @classmethod
    def from_environment(cls, gpus_per_node: Optional[int] = None, device: Optional[str] = None,
                         **options) -> "SlurmLauncher":
        """The launcher of this allocation; ``device`` "cpu" accepts a job without GPUs (its
        CPU cores are the slots)."""
        if shutil.which("srun") is None:
            raise UserError("the slurm launcher needs srun on PATH")
        return cls(detect_allocation(device=device), gpus_per_node, **options)

    @staticmethod
    def detected() -> bool:
        return in_allocation(os.environ) and shutil.which("srun") is not None

    def capacity(self, device: str) -> Capacity:
        gpn = self.gpus_per_node
        return Capacity(device=device, gpus=gpn * self.allocation.nodes, nodes=self.allocation.nodes,
                        gpus_per_node=gpn, cpus=min(self.allocation.cpus_per_node),
                        where=f"SLURM job {self.allocation.job_id}")

    def nodes_for(self, ranks: int, device: str) -> int:
        # Steps are placed by GPUs (even for CPU ranks): one rank per GPU of the allocation.
        return max(1, math.ceil(ranks / self.gpus_per_node))

    def check(self, job: DDPJob) -> None:
        cap = self.capacity(job.device)
        if job.ranks > cap.gpus:
            raise UserError(f"{job.ranks} rank(s) do not fit {cap.where}: it holds {cap.gpus} GPU(s) "
                            f"({self.allocation.nodes} node(s) of {self.gpus_per_node})")
        job_hosts(self.allocation, job.ranks, self.gpus_per_node)  # placeable: one node, or whole nodes
        per_node = min(job.ranks, self.gpus_per_node)
        if per_node * self.cpus_per_task > cap.cpus:
            raise UserError(f"{per_node} rank(s) per node x {self.cpus_per_task} CPU(s) do not fit {cap.where}: "
                            f"its nodes have {cap.cpus} CPU(s)")

    def visible_gpu_ids(self) -> list:
        """GPU ids a job may name in ``gpu_ids``: node * gpus_per_node + index, as the simulator numbers."""
        return [str(i) for i in range(self.gpus_per_node * self.allocation.nodes)]

    def start(self, job: DDPJob) -> StepJob:
        self.check(job)
        if job.gpu_ids is not None and job.ranks == 1:
            # a job pinned to one GPU (co-located jobs name the same one): share that GPU
            gpu = int(job.gpu_ids[0])
            host = self.allocation.hosts[gpu // self.gpus_per_node]
            return self.start_step(job, [host], 1, gpu_index=gpu % self.gpus_per_node)
        hosts, per_node = job_hosts(self.allocation, job.ranks, self.gpus_per_node)
        return self.start_step(job, hosts, per_node)

    def start_step(self, job: DDPJob, hosts: Sequence[str], tasks_per_node: int,
                   gpu_index: Optional[int] = None) -> StepJob:
        """Start ``job`` on ``hosts`` (``tasks_per_node`` ranks each). ``gpu_index``: a
        co-located single-rank job sharing its node's GPUs, keeping GPU number ``gpu_index``."""
        if tasks_per_node * len(hosts) != job.ranks:
            raise UserError(f"job {job.name!r} has {job.ranks} rank(s), not {tasks_per_node} on each of {list(hosts)}")
        log_dir, cleanup = job_log_dir(job)
        step_name = f"nasalloc-{job.name}-{next(self._counter)}"
        shared = gpu_index is not None
        cpu_slots = self.allocation.cpu_slots  # no GPUs to ask for or to narrow
        wrapper = ["--gpu-index", str(gpu_index)] if shared and not cpu_slots else []
        request = StepRequest(
            hosts=tuple(hosts), tasks_per_node=tasks_per_node, cpus_per_task=self.cpus_per_task,
            gpus_per_node=0 if cpu_slots else self.gpus_per_node if shared else tasks_per_node,
            command=(job.python, "-m", TASK_MODULE, *wrapper, job.module, *map(str, job.args)),
            name=step_name, immediate_s=self.immediate_s, output=str(log_dir / "rank%t.log"), overlap=shared)
        launch_time = time.time()
        env = step_environment(os.environ, job.env, hosts[0], self._port(hosts[0]), job.device, job.name,
                               launch_time)
        srun_log = log_dir / "srun.log"
        with open(srun_log, "wb") as handle:
            # its own session: a signal for the runner (Ctrl-C, the allocation's SIGTERM)
            # must not reach srun, which would cancel the step at once
            # and SIGTERM when the runner dies, however it dies: srun then cancels the step
            process = subprocess.Popen(parent_death_prefix("TERM") + srun_argv(request), env=env,
                                       stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        return StepJob(job.name, step_name, self.allocation.job_id, hosts, process, srun_log,
                       [log_dir / f"rank{r}.log" for r in range(job.ranks)], cleanup_dir=cleanup)

    def _port(self, host: str) -> int:
        if host in ("localhost", "127.0.0.1", socket.gethostname()):
            return free_port()
        return self._ports.randrange(20000, 40000)  # cannot probe another node: spread steps out
