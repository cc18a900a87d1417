"""What the runner is given (one algorithm and split of a plan) and what tells it to stop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional


@dataclass
class SplitTask:
    """One (algorithm, split) of a plan, with everything needed to run it."""

    algorithm: str
    gpus_per_trial: float
    budget: int
    workload: Any                           # spec for nasalloc.workloads.registry.load_workload
    make_scheduler: Callable[[], Any]       # a fresh scheduler with the plan's class, parameters, seed
    max_t: int
    seed: int = 0
    gpus_per_node: Optional[int] = None
    predicted_makespan_s: Optional[float] = None
    metric_name: str = "metric"
    mode: str = "max"
    repeat: int = 1                         # which run of this split (validate --repeats); 1: the first
    row_seeds: Optional[list] = None        # per curve row: the seed it was recorded with (None: unknown)
    checkpoint_every: Optional[int] = None  # also checkpoint after every K-th epoch (--checkpoint-every)
    max_restarts: int = 0                   # lost segments a trial restarts from its checkpoint (allocation.py)
    policy: Optional[str] = None            # an adaptive allocation policy (simulator/policies.py)

    @property
    def label(self) -> str:
        what = f"policy {self.policy}" if self.policy else f"g={self.gpus_per_trial:g}"
        return f"{self.algorithm} {what}" + (f" run {self.repeat}" if self.repeat > 1 else "")

    @property
    def dirname(self) -> str:
        """The run's own folder: ``<algorithm>_g<g>`` for the first run (as without repeats),
        ``<algorithm>_g<g>_r<k>`` for run k >= 2."""
        base = f"{self.algorithm}_g{self.gpus_per_trial:g}".replace("/", "-")
        if self.policy:
            base = f"{self.algorithm}_{self.policy.replace(':', '-').replace(',', '-')}"
        return base if self.repeat == 1 else f"{base}_r{self.repeat}"


    def seed_for(self, trial_id: int, row: Optional[int]) -> int:
        return training_seed(self.seed, trial_id, row, self.row_seeds)


def training_seed(split_seed: int, trial_id: int, row: Optional[int] = None, row_seeds=None) -> int:
    """The training seed of a trial: the recorded seed of its config's curve where the plan's
    curves carry one (``validate --trial-seeds recorded``: the run then trains the very curves
    the simulation read, up to the numerics of another rank count), else :func:`trial_seed`."""
    if row is not None and row_seeds and 0 <= row < len(row_seeds) and row_seeds[row] is not None:
        return int(row_seeds[row])
    return trial_seed(split_seed, trial_id)


def trial_seed(split_seed: int, trial_id: int) -> int:
    """The seed a trial's training gets (its weights, data order): the same for a trial id under
    every executor, so two runs of one plan train the same models."""
    return (int(split_seed) * 1_000_003 + int(trial_id)) % 2**31


class Stopper:
    """Whether to stop launching: set by a signal handler, or a wall-clock deadline
    ``time_limit_s`` after a start ``elapsed_s`` ago (validate: its process's start). One
    stopper is the allocation the splits of one command share: ``free_since`` is when its last
    split ended (unix time), where the next split's allocation time begins."""

    def __init__(self, time_limit_s: Optional[float] = None, elapsed_s: float = 0.0):
        self.deadline = (None if time_limit_s is None
                         else time.monotonic() - float(elapsed_s) + float(time_limit_s))
        self.reason: Optional[str] = None
        self.exit_code = 0
        self.free_since: Optional[float] = None

    def request(self, reason: str, exit_code: int) -> None:
        if self.reason is None:
            self.reason, self.exit_code = reason, exit_code

    def check(self) -> Optional[str]:
        if self.reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.request("time limit", 124)
        return self.reason


@dataclass
class RunResult:
    task: SplitTask
    out_dir: Path
    finished: bool
    reason: str
    elapsed_s: float
