"""The Workload contract: what a trial trains, shared by profiler, simulator and validator.

Importable without torch: only :meth:`Workload.make_trainer` (and the Trainer it returns)
imports torch, inside the processes that train.

A workload gives

* ``search_space()``: its ConfigSpace space (users bring spaces they use with HpBandSter,
  SMAC or DEHB), and ``reference_config()``: the config the profiler times;
* ``metric_name`` and ``mode`` (``"max"`` or ``"min"``) of its validation metric;
* ``relative_cost(config)``: seconds of one epoch of ``config`` over seconds of one epoch of
  the reference config (from FLOPs or parameter counts; checked against measured times), so
  the simulator scales the profiled epoch time per architecture;
* ``batch_policy``: ``"global"`` (default: a fixed global batch split across ranks, so the
  learning curve does not depend on the number of GPUs) or ``"per_gpu"``;
* ``make_trainer(config, seed, device)``: a :class:`Trainer` on the current torch.distributed
  process group (or a single process when none is initialised).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class EpochResult:
    epoch: int                      # 1-based count of epochs trained so far
    val_metric: float
    test_metric: Optional[float]
    train_seconds: float            # wall seconds of the training part of the epoch
    eval_seconds: float             # wall seconds of evaluation
    samples: int                    # training samples processed by all ranks together
    sync_seconds: Optional[float] = None  # time this rank waited in gradient all-reduce, if measured


class Trainer(ABC):
    """One trial's training state on this process (one DDP rank)."""

    epoch: int = 0

    @abstractmethod
    def train_epoch(self) -> EpochResult:
        """Train one epoch on every rank, evaluate, and return the (rank-agreed) result."""

    @abstractmethod
    def save_checkpoint(self, path: str) -> None:
        """Save the whole training state (model, optimizer, schedule, RNG, epoch) atomically.
        Collective: every rank calls it; rank 0 writes."""

    @abstractmethod
    def load_checkpoint(self, path: str) -> None:
        """Restore what :meth:`save_checkpoint` wrote; the next epoch continues identically."""


class Workload(ABC):
    name: str = "workload"
    metric_name: str = "accuracy"
    mode: str = "max"
    batch_policy: str = "global"

    @abstractmethod
    def search_space(self) -> Any:
        """A ConfigSpace.ConfigurationSpace."""

    @abstractmethod
    def reference_config(self) -> dict: ...

    @abstractmethod
    def relative_cost(self, config: dict) -> float: ...

    @abstractmethod
    def make_trainer(self, config: dict, seed: int, device: str = "cpu") -> Trainer: ...

    def describe(self) -> dict:
        """What a profile or plan records about the workload."""
        return {"name": self.name, "metric_name": self.metric_name, "mode": self.mode,
                "batch_policy": self.batch_policy}
