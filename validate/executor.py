"""Executors: how the runner starts one trial segment as a DDP job, and the registry of them.

The runner never touches processes itself; it hands an executor a :class:`JobSpec` and gets
back a running job: the profiler's :class:`nasalloc.profiler.launch.RunningJob` (``poll()``,
``wait(timeout)``, ``terminate(reason)``, ``returncode``, ``failure``, ``stderr_tail()``), so
an executor is a thin layer over a launcher. Implementing a new one (SLURM: ``srun`` steps
inside an allocation) is three things:

1. subclass :class:`Executor` and implement ``launch(spec) -> RunningJob``; it must return
   as soon as the job is started (never wait for training);
2. optionally override ``runner_host()`` (the address the trial's rank 0 uses to reach the
   runner's channel: 127.0.0.1 locally, this host's name when ranks run on other nodes),
   ``check(ranks, slots)`` and ``close()``;
3. ``register_executor("slurm", factory)`` in a module ``nasalloc.validate.slurm`` (found
   and imported automatically), where ``factory(device=..., gpus_per_node=...) -> Executor``.

Every rank runs ``spec.argv`` (``python -m nasalloc.validate.trial --spec FILE``) with the
torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) plus
``spec.env`` (the channel address and token, see :mod:`nasalloc.validate.channel`), on the
GPUs ``spec.devices`` (one id per rank; for a fractional split one shared id) or, on CPU, as
``spec.ranks`` one-thread gloo processes. A job's exit status is 0 only when every rank
exited 0; a failing rank must take its siblings down (the launchers do).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from nasalloc.errors import UserError


@dataclass
class JobSpec:
    trial_id: int
    segment: int                 # 1 for the start, 2.. for each resume
    ranks: int                   # DDP world size (>= 1)
    devices: list                # GPU ids of the placement: one per rank, or one shared GPU for fractional splits
    argv: list                   # arguments of `python -m nasalloc.validate.trial` (every rank runs it)
    env: dict = field(default_factory=dict)  # extra environment (channel address, token)
    log_dir: Optional[Path] = None           # per-rank logs (rank<i>.log) go here
    device: str = "cpu"                      # "cpu" or "cuda"
    trials_per_gpu: int = 1                  # k > 1: a fractional split, k trials share each GPU


class Executor(ABC):
    name: str = "executor"

    @abstractmethod
    def launch(self, spec: JobSpec):
        """Start the job and return its ``RunningJob`` at once."""

    def check(self, ranks: int, slots: int) -> None:
        """Raise a one-line UserError when ``slots`` jobs of ``ranks`` ranks cannot run here."""

    def fit_plan(self, plan, splits: list) -> tuple:
        """Check (or adapt) the placement of the plan's ``splits`` here before anything runs:
        (GPUs per node to place trials with, a note to print when that changed; else None).
        Default: the plan's placement, unchanged."""
        return plan.gpus_per_node, None

    def check_plan(self, plan, chosen: list) -> None:
        """Raise a one-line UserError when this executor cannot run the ``chosen`` splits of ``plan``."""

    def make_runner(self, task, out_dir: Path, **options):
        """What drives one split: nasalloc's runner over this executor's jobs (the Ray executor
        hands the whole search to Ray Tune instead)."""
        if getattr(task, "policy", None):
            from .adaptiverunner import AdaptiveRunner

            return AdaptiveRunner(task, self, out_dir, **options)
        from .runner import Runner

        return Runner(task, self, out_dir, **options)

    def runner_host(self) -> str:
        """Address on which trial processes reach the runner's channel."""
        return "127.0.0.1"

    def close(self) -> None:
        """Release whatever the executor holds (called once at the end of a run)."""


_EXECUTORS: dict[str, Callable[..., Executor]] = {}
_PLANNED = {"ray": "needs Ray Tune: pip install 'nasalloc[ray]'"}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    _EXECUTORS[name] = factory


def executor_names() -> list[str]:
    _load_builtin()
    return sorted(_EXECUTORS)


def make_executor(name: str, **options) -> Executor:
    _load_builtin()
    if name not in _EXECUTORS:
        why = f" ({_PLANNED[name]}, not installed here)" if name in _PLANNED else ""
        raise UserError(f"executor {name!r} is not available{why}; expected one of {', '.join(sorted(_EXECUTORS))}")
    return _EXECUTORS[name](**options)


def _load_builtin() -> None:
    # Executors register themselves on import; importing here keeps this module light and
    # lets an executor whose module is missing simply not be offered.
    from importlib import import_module

    for module in ("nasalloc.validate.local", "nasalloc.validate.slurm", "nasalloc.validate.raytune"):
        try:
            import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
