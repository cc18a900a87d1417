"""Launchers: start one DDP job (N ranks of a Python module) and watch it as a whole.

The profiler times every GPU count as a job, and the validation runner runs every trial as
one; both talk to a launcher only through this small interface:

* :class:`DDPJob` says what to run: ``python -m <module> <args...>`` on ``ranks`` ranks over
  ``nodes`` nodes, on ``device`` ("cpu" or "cuda"), with extra ``env`` and, for a local
  launch on CUDA, which physical GPU ids the job gets (``gpu_ids``).
* :meth:`Launcher.start` starts it without blocking and returns a :class:`RunningJob`:
  ``poll()``, ``wait(timeout)``, ``terminate()``, ``returncode``, ``failure`` and
  ``stderr_tail()``. A rank that fails takes its siblings down (a DDP job cannot finish
  without all its ranks), and ``failure`` names that rank and its exit status.
* :meth:`Launcher.capacity` says what the launcher can hold here (GPUs, nodes, cores), and
  :meth:`Launcher.check` turns a job that does not fit into a one-line ``UserError``.

Every rank gets the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) plus
``NASALLOC_LAUNCH_TIME`` (``time.time()`` when the launcher started the job, so a rank can
measure its start-up), ``NASALLOC_JOB_NAME`` and, from the local launcher,
``NASALLOC_PARENT_PID`` (a rank whose parent changed was orphaned and should exit); CPU ranks
get ``OMP_NUM_THREADS=1``.

Launchers are found by name (:func:`get_launcher`): ``local`` is here; ``slurm`` lives in
``nasalloc.profiler.slurm`` as ``SlurmLauncher`` (and ``ray``, jobs started from inside a Ray
actor, in ``nasalloc.profiler.ray``) with the same interface (a class with
``from_environment(gpus_per_node, device=None)`` and ``detected()``); ``auto`` picks slurm inside an
allocation. :class:`ProcessJob` is the RunningJob for any set of local processes (one per rank
here, one ``srun`` per job under SLURM), so other launchers reuse its watching and killing.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Optional, Sequence

from nasalloc.errors import UserError
from nasalloc.lifetime import PARENT_PID_ENV
from nasalloc.workloads.distributed import free_port

DEVICES = ("cpu", "cuda")
LAUNCHERS = ("auto", "local", "slurm", "ray")
LAUNCH_TIME_ENV = "NASALLOC_LAUNCH_TIME"
#: how long terminate() waits after SIGTERM before SIGKILL
TERMINATE_GRACE_S = 5.0


@dataclass
class DDPJob:
    """One data-parallel job: ``python -m module *args`` on ``ranks`` ranks."""

    module: str
    args: Sequence[str] = ()
    ranks: int = 1
    nodes: int = 1
    device: str = "cpu"
    env: dict = field(default_factory=dict)
    #: physical GPU ids for a local CUDA launch, one per rank; None: the first ``ranks`` visible
    gpu_ids: Optional[Sequence[str]] = None
    #: for a local CPU launch, the core each rank is pinned to (a CPU "GPU" is one core, so
    #: co-located trials really share one); taken modulo the cores this process may use.
    #: None: not pinned
    cpu_cores: Optional[Sequence[int]] = None
    #: per-rank stdout+stderr files go here (``rank<i>.log``); None: a temporary folder
    log_dir: Optional[Path] = None
    name: str = "job"
    python: str = sys.executable

    def __post_init__(self) -> None:
        if not isinstance(self.ranks, int) or self.ranks < 1:
            raise UserError(f"a job needs ranks >= 1, got {self.ranks!r}")
        if not isinstance(self.nodes, int) or not 1 <= self.nodes <= self.ranks:
            raise UserError(f"a job of {self.ranks} rank(s) cannot span nodes={self.nodes!r}")
        if self.device not in DEVICES:
            raise UserError(f"job device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.gpu_ids is not None and len(self.gpu_ids) != self.ranks:
            raise UserError(f"job {self.name!r} has {self.ranks} rank(s) but {len(self.gpu_ids)} GPU id(s)")
        if self.cpu_cores is not None and len(self.cpu_cores) != self.ranks:
            raise UserError(f"job {self.name!r} has {self.ranks} rank(s) but {len(self.cpu_cores)} CPU core(s)")

    @property
    def ranks_per_node(self) -> int:
        return math.ceil(self.ranks / self.nodes)

    def command(self) -> list:
        return [self.python, "-m", self.module, *map(str, self.args)]


@dataclass
class Capacity:
    """What a launcher can hold here: the largest job it can start."""

    device: str
    gpus: int            # GPUs in all (0 on CPU)
    nodes: int
    gpus_per_node: int   # 0 on CPU
    cpus: int            # cores per node
    where: str           # a few words for messages, e.g. "this machine" or "SLURM job 42"

    def max_ranks(self) -> int:
        """Most ranks of one job: one GPU each on CUDA, one core each on CPU (not GPUs!)."""
        return self.gpus if self.device == "cuda" else self.cpus * self.nodes


class RunningJob(ABC):
    """A started job. ``poll``/``wait`` return None while it runs, else its exit status."""

    name: str = "job"

    @abstractmethod
    def poll(self) -> Optional[int]: ...

    @abstractmethod
    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Block until the job ends (status) or ``timeout`` seconds pass (None, still running)."""

    @abstractmethod
    def terminate(self, reason: str = "terminated") -> None:
        """Stop every process of the job (SIGTERM, then SIGKILL after a grace period);
        ``failure`` then reports ``reason``."""

    @property
    @abstractmethod
    def returncode(self) -> Optional[int]: ...

    @property
    @abstractmethod
    def failure(self) -> Optional[str]:
        """One line saying which rank failed how, or None when none failed (yet)."""

    @abstractmethod
    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines the failing rank (else rank 0) wrote."""


class ProcessJob(RunningJob):
    """Watches local processes that together are one job, all in one process group.

    A watcher thread notices the first process that exits non-zero and terminates the
    others, so a crashed rank never leaves its siblings blocked in a collective.
    """

    def __init__(self, name: str, processes: Sequence[subprocess.Popen], labels: Sequence[str],
                 logs: Sequence[Path], pgid: int, cleanup_dir: Optional[Path] = None,
                 poll_interval_s: float = 0.05):
        self.name = name
        self.processes = list(processes)
        self.labels = list(labels)
        self.logs = [Path(p) for p in logs]
        self.pgid = pgid
        self.started = time.time()
        self._failed_index: Optional[int] = None
        self._returncode: Optional[int] = None
        self._terminated: Optional[str] = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._interval = poll_interval_s
        if cleanup_dir is not None:  # temporary logs go when the job object does
            weakref.finalize(self, shutil.rmtree, cleanup_dir, True)
        threading.Thread(target=self._watch, name=f"watch-{name}", daemon=True).start()

    def _watch(self) -> None:
        while not self._done.is_set():
            self._update()
            if not self._done.is_set():
                time.sleep(self._interval)

    def _update(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            codes = [p.poll() for p in self.processes]
            if self._failed_index is None and not self._terminated:
                for index, code in enumerate(codes):
                    if code not in (None, 0):
                        self._failed_index = index
                        break
            if self._failed_index is not None and any(c is None for c in codes):
                self._kill_group(codes)
                codes = [p.poll() for p in self.processes]
            if all(c is not None for c in codes):
                if self._failed_index is not None:
                    self._returncode = codes[self._failed_index]
                elif self._terminated:
                    self._returncode = next((c for c in codes if c != 0), -signal.SIGTERM)
                else:
                    self._returncode = 0
                self._done.set()

    def _kill_group(self, codes) -> None:
        # SIGTERM first so ranks can flush logs; SIGKILL whatever is left after the grace time.
        _signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_S
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.pgid, signal.SIGKILL)
        for proc in self.processes:
            proc.wait()

    def poll(self) -> Optional[int]:
        self._update()
        return self._returncode

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        self._done.wait(timeout)
        return self._returncode

    def terminate(self, reason: str = "terminated") -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._terminated = reason
            self._kill_group([p.poll() for p in self.processes])
        self._update()

    @property
    def returncode(self) -> Optional[int]:
        return self._returncode

    @property
    def failed_rank(self) -> Optional[str]:
        return None if self._failed_index is None else self.labels[self._failed_index]

    @property
    def failure(self) -> Optional[str]:
        if self._failed_index is None:
            if self._terminated and self._done.is_set():
                return f"{self.name}: {self._terminated}"
            return None
        code = self.processes[self._failed_index].returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        last = self.stderr_tail(1).strip()
        return f"{self.name}: {self.labels[self._failed_index]} {how}" + (f": {last}" if last else "")

    def stderr_tail(self, lines: int = 20) -> str:
        index = self._failed_index if self._failed_index is not None else 0
        return tail(self.logs[index], lines)


def tail(path: Path, lines: int = 20, max_bytes: int = 64_000) -> str:
    """The last ``lines`` non-empty lines of a (log) file; '' when it does not exist."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


class Launcher(ABC):
    """Starts :class:`DDPJob` s where they can run. Subclasses: LocalLauncher, SlurmLauncher."""

    name: str = "launcher"

    @abstractmethod
    def capacity(self, device: str) -> Capacity:
        """The largest job this launcher can hold here on ``device``."""

    @abstractmethod
    def start(self, job: DDPJob) -> RunningJob:
        """Start ``job`` and return at once; the job runs in the background."""

    def nodes_for(self, ranks: int, device: str) -> int:
        """Nodes a job of ``ranks`` ranks spans (fewest that hold it)."""
        cap = self.capacity(device)
        per_node = cap.gpus_per_node if device == "cuda" else cap.cpus
        return max(1, math.ceil(ranks / max(1, per_node)))

    def check(self, job: DDPJob) -> None:
        """Raise a one-line UserError when ``job`` does not fit this launcher here."""
        cap = self.capacity(job.device)
        unit = "GPU(s)" if job.device == "cuda" else "CPU core(s) (CPU ranks are processes, not GPUs)"
        if job.ranks > cap.max_ranks():
            raise UserError(f"{job.ranks} rank(s) do not fit {cap.where}: it has {cap.max_ranks()} {unit}")
        if job.nodes > cap.nodes:
            raise UserError(f"a job over {job.nodes} nodes does not fit {cap.where}: it has {cap.nodes} node(s)")


def job_log_dir(job: "DDPJob") -> tuple[Path, Optional[Path]]:
    """The folder for a job's rank logs, and the same folder again when it is a temporary one
    the job should remove when it is gone (None for a folder the caller chose)."""
    if job.log_dir is not None:
        log_dir, cleanup = Path(job.log_dir), None
    else:
        log_dir = cleanup = Path(tempfile.mkdtemp(prefix=f"nasalloc-{job.name}-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir, cleanup


class LocalLauncher(Launcher):
    """One process per rank on this machine, all in one new process group.

    On CUDA every rank sees the job's GPUs (``CUDA_VISIBLE_DEVICES`` = the job's ids, in rank
    order) and ``LOCAL_RANK`` picks its own, as torchrun does; a single-rank job sees just its
    GPU, so several jobs can share one GPU (co-located trials).
    """

    name = "local"

    def __init__(self, gpus_per_node: Optional[int] = None):
        self.gpus_per_node = gpus_per_node

    @classmethod
    def from_environment(cls, gpus_per_node: Optional[int] = None, device: Optional[str] = None) -> "LocalLauncher":
        return cls(gpus_per_node)

    @staticmethod
    def detected() -> bool:
        return True

    def visible_gpu_ids(self) -> list:
        """Physical ids of the GPUs this process may use (respects CUDA_VISIBLE_DEVICES)."""
        raw = os.environ.get("CUDA_VISIBLE_DEVICES")
        if raw is not None:
            ids = [x.strip() for x in raw.split(",") if x.strip() and x.strip() != "-1"]
        else:
            ids = [str(i) for i in range(_cuda_device_count())]
        return ids[: self.gpus_per_node] if self.gpus_per_node else ids

    def capacity(self, device: str) -> Capacity:
        cpus = os.cpu_count() or 1
        gpus = len(self.visible_gpu_ids()) if device == "cuda" else 0
        return Capacity(device=device, gpus=gpus, nodes=1, gpus_per_node=gpus, cpus=cpus,
                        where="this machine")

    def start(self, job: DDPJob) -> RunningJob:
        if job.nodes != 1:
            raise UserError(f"the local launcher runs on one node; job {job.name!r} asks for {job.nodes}")
        gpu_ids = None
        if job.device == "cuda":
            gpu_ids = list(job.gpu_ids) if job.gpu_ids is not None else self.visible_gpu_ids()[: job.ranks]
            if len(gpu_ids) < job.ranks:
                raise UserError(f"{job.ranks} CUDA rank(s) but only {len(gpu_ids)} GPU(s) visible here")
        log_dir, cleanup = job_log_dir(job)
        port = free_port()
        launch_time = time.time()
        processes, logs, pgid = [], [], 0
        try:
            for rank in range(job.ranks):
                env = dict(os.environ)
                env.update({str(k): str(v) for k, v in job.env.items()})
                env.update(RANK=str(rank), WORLD_SIZE=str(job.ranks), LOCAL_RANK=str(rank),
                           LOCAL_WORLD_SIZE=str(job.ranks), NODE_RANK="0", GROUP_RANK="0",
                           MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                           NASALLOC_JOB_NAME=job.name)
                env[LAUNCH_TIME_ENV] = str(job.env.get(LAUNCH_TIME_ENV, repr(launch_time)))  # Ray's: earlier
                env[PARENT_PID_ENV] = str(os.getpid())
                if job.device == "cpu":
                    env["OMP_NUM_THREADS"] = "1"
                    env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU rank must not grab a GPU
                else:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
                log = log_dir / f"rank{rank}.log"
                with open(log, "wb") as handle:
                    # rank 0 leads a new process group; the others join it, so the job is
                    # signalled as a whole (os.killpg) and apart from the launcher's own group.
                    proc = subprocess.Popen(job.command(), env=env, stdin=subprocess.DEVNULL,
                                            stdout=handle, stderr=subprocess.STDOUT,
                                            **_join_group(pgid))
                if job.device == "cpu" and job.cpu_cores is not None:
                    pin_to_core(proc.pid, job.cpu_cores[rank])
                if rank == 0:
                    pgid = proc.pid
                processes.append(proc)
                logs.append(log)
        except BaseException:
            if pgid:
                _signal_group(pgid, signal.SIGKILL)
            for proc in processes:
                proc.wait()
            raise
        return ProcessJob(job.name, processes, [f"rank {r}" for r in range(job.ranks)], logs, pgid,
                          cleanup_dir=cleanup)


def pin_to_core(pid: int, core: int) -> None:
    """Pin process ``pid`` to the ``core``-th core this process may use (wrapping around).

    Called right after the child is spawned, while it is still single-threaded, so the threads
    it starts later (gloo, torch) inherit the pin. A no-op where affinity is not supported.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    allowed = sorted(os.sched_getaffinity(0))
    try:
        os.sched_setaffinity(pid, {allowed[int(core) % len(allowed)]})
    except ProcessLookupError:
        pass  # it already died; the job's watcher reports why


def _join_group(pgid: int) -> dict:
    """Popen arguments that put the child in process group ``pgid`` (0: a new group)."""
    if sys.version_info >= (3, 11):
        return {"process_group": pgid}
    return {"preexec_fn": lambda: os.setpgid(0, pgid)}


def _cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _launcher_class(name: str):
    if name == "local":
        return LocalLauncher
    try:
        module = import_module(f"nasalloc.profiler.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"nasalloc.profiler.{name}":
            raise UserError(f"launcher {name!r} is not available in this installation") from None
        raise
    return getattr(module, f"{name.capitalize()}Launcher")


def get_launcher(name: str, gpus_per_node: Optional[int] = None, device: Optional[str] = None) -> Launcher:
    """The launcher called ``name`` (auto|local|slurm), ready to run here, or a UserError;
    ``device`` "cpu" lets the slurm launcher use an allocation without GPUs (cores as slots)."""
    if name not in LAUNCHERS:
        raise UserError(f"launcher {name!r} is not one of {', '.join(LAUNCHERS)}")
    if gpus_per_node is not None and gpus_per_node < 1:
        raise UserError(f"--gpus-per-node must be >= 1, got {gpus_per_node}")
    if name == "auto":
        name = "local"
        if os.environ.get("SLURM_JOB_ID"):
            try:
                if _launcher_class("slurm").detected():
                    name = "slurm"
            except UserError:
                pass  # no SLURM support installed: stay local
    try:
        return _launcher_class(name).from_environment(gpus_per_node, device=device)
    except UserError as err:
        raise UserError(f"launcher {name!r}: {err}") from None


def run_job(launcher: Launcher, job: DDPJob, timeout: Optional[float] = None) -> RunningJob:
    """Start ``job``, wait for it (terminating it after ``timeout`` s or on Ctrl-C), return it."""
    running = launcher.start(job)
    try:
        if running.wait(timeout) is None:
            running.terminate(f"timed out after {timeout:g} s")
    except BaseException:
        running.terminate("interrupted")
        raise
    return running
