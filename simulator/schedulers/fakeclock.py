"""A minimal discrete-event loop for tests and benchmarks of the schedulers alone.

Not the simulator (that is the SimPy engine): ``P`` slots, epochs of random duration, a metric
per epoch from a seeded generator (or a function of the config), optional random failures.
Every call into the scheduler and its answer is logged, so two runs can be compared decision by
decision. ``FakeClock.scheduler`` may be swapped mid-run (save/restore tests).
"""

from __future__ import annotations

import heapq
import math
from typing import Callable, Optional

import numpy as np

from .base import DONE, Decision, Resume, Scheduler, Start

MetricFn = Callable[[dict, int, np.random.Generator], float]


class FakeClock:
    def __init__(self, scheduler: Scheduler, slots: int, seed: int = 0,
                 fail_prob: float = 0.0, metric: Optional[MetricFn] = None):
        self.scheduler = scheduler
        self.slots = slots
        self.free = slots
        self.rng = np.random.default_rng(seed)
        self.fail_prob = fail_prob
        self.metric_fn = metric
        self.now = 0.0
        self.heap: list[tuple[float, int, int]] = []  # (end time, seq, trial)
        self.seq = 0
        self.epochs: dict[int, int] = {}
        self.quality: dict[int, float] = {}
        self.configs: dict[int, dict] = {}
        self.log: list[tuple] = []
        self.finished = False
        self.counts = {"suggest": 0, "result": 0, "failure": 0}

    def _schedule(self, trial_id: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (self.now + float(self.rng.uniform(0.5, 1.5)), self.seq,
                                   trial_id))

    def _metric(self, trial_id: int, epoch: int) -> float:
        if self.metric_fn is not None:
            return float(self.metric_fn(self.configs[trial_id], epoch, self.rng))
        # a saturating learning curve with its own level per trial, plus noise
        level = self.quality[trial_id]
        return level * (1 - math.exp(-epoch / 5)) + float(self.rng.normal(0, 0.01))

    def fill(self) -> None:
        """Ask for work until the slots are full or the scheduler says WAIT/DONE."""
        while self.free > 0:
            action = self.scheduler.suggest()
            self.counts["suggest"] += 1
            if isinstance(action, Start):
                self.log.append(("start", action.trial_id, action.milestone,
                                 tuple(sorted(action.config.items()))))
                self.configs[action.trial_id] = action.config
                self.quality[action.trial_id] = float(self.rng.uniform(0, 1))
                self.epochs[action.trial_id] = 0
            elif isinstance(action, Resume):
                self.log.append(("resume", action.trial_id, action.milestone))
            else:
                self.log.append((action.value,))
                if action is DONE and not self.heap:
                    self.finished = True
                return
            self.free -= 1
            self._schedule(action.trial_id)

    def step(self) -> bool:
        """Fill free slots, then process the next epoch end. False once the search is over."""
        self.fill()
        if self.finished:
            return False
        if not self.heap:
            raise RuntimeError(f"deadlock: {self.scheduler.name} says WAIT with nothing running")
        self.now, _, trial_id = heapq.heappop(self.heap)
        if self.fail_prob and self.rng.random() < self.fail_prob:
            self.scheduler.on_failure(trial_id)
            self.counts["failure"] += 1
            self.log.append(("fail", trial_id))
            self.free += 1
            return True
        self.epochs[trial_id] += 1
        epoch = self.epochs[trial_id]
        metric = self._metric(trial_id, epoch)
        decision = self.scheduler.on_result(trial_id, epoch, metric)
        self.counts["result"] += 1
        self.log.append(("result", trial_id, epoch, metric, decision.value))
        if decision is Decision.CONTINUE:
            self._schedule(trial_id)
        else:
            self.free += 1
        return True

    def run(self, max_steps: Optional[int] = None) -> "FakeClock":
        steps = 0
        while self.step():
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        return self

    @property
    def decisions(self) -> int:
        return self.counts["suggest"] + self.counts["result"] + self.counts["failure"]


__all__ = ["FakeClock"]
