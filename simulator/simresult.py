"""What one simulated run sums up: the row of ``simulations.csv`` and (if asked) its records."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional


# columns of simulations.csv under an allocation model (absent without one)
CHAIN_COLUMNS = ("free_makespan_s", "compute_s", "allocations", "failures", "failed_trials",
                 "lost_checkpoint_gpu_h", "lost_restart_gpu_h", "lost_failure_gpu_h", "idle_gpu_h")


@dataclass
class SimulationResult:
    algorithm: str
    budget: int
    gpus_per_trial: float
    parallel_trials: int
    idle_gpus: int
    seed: int
    makespan_s: float
    busy_gpu_s: float
    trials: int
    epochs: int
    best_metric: float
    best_test_metric: float
    best_trial_id: Optional[int]
    lower_bound_s: float
    deadline_s: Optional[float] = None
    deadline_metric: float = math.nan        # best metric of any epoch ended by the deadline
    deadline_test_metric: float = math.nan
    sim_events: int = 0                      # SimPy events the run processed (for the bench)
    model_based_trials: Optional[int] = None  # BOHB: configs its model proposed (others: None)
    events: list = field(default_factory=list)
    chain: Optional[dict] = None             # under an allocation model: see chainengine.summary()

    @property
    def utilization(self) -> float:
        return self.busy_gpu_s / (self.budget * self.makespan_s) if self.makespan_s > 0 else 0.0

    def row(self) -> dict:
        """The summary columns of ``simulations.csv``."""
        return {
            "algorithm": self.algorithm, "budget": self.budget, "gpus_per_trial": self.gpus_per_trial,
            "parallel_trials": self.parallel_trials, "idle_gpus": self.idle_gpus, "seed": self.seed,
            "makespan_s": self.makespan_s, "gpu_hours": self.budget * self.makespan_s / 3600,
            "busy_gpu_hours": self.busy_gpu_s / 3600, "utilization": self.utilization,
            "trials": self.trials, "epochs": self.epochs, "best_metric": self.best_metric,
            "best_test_metric": self.best_test_metric, "best_trial_id": self.best_trial_id,
            "lower_bound_s": self.lower_bound_s, "deadline_s": self.deadline_s,
            "deadline_metric": None if self.deadline_s is None else self.deadline_metric,
            "deadline_test_metric": None if self.deadline_s is None else self.deadline_test_metric,
            "model_based_trials": self.model_based_trials,
            **({} if self.chain is None else {k: v for k, v in self.chain.items() if k in CHAIN_COLUMNS}),
        }
