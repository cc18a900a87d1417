"""The SimPy driver: one scheduler, one split of the GPU budget, simulated time.

Every slot of the split (see :mod:`.cluster`) is a SimPy process that asks the scheduler what
to run whenever it is free:

* ``Start``/``Resume``: the trial takes the slot's GPUs, pays the start-up cost (a resume pays
  the profile's ``resume_s``, else the same start-up, and loads its checkpoint after the save of
  its pause has finished), then trains epoch after
  epoch: ``relative cost of its config x the reference epoch time at g GPUs x a lognormal
  factor (mean 1, the profile's CV) + the runner's round trip (``roundtrip_s``)``. After each
  epoch the scheduler is told the metric of the
  config's learning curve at that epoch and answers CONTINUE, PAUSE (save a checkpoint, free the
  GPUs) or STOP (free them; ``complete`` when it reached ``max_t``).
* ``WAIT``: the slot sleeps until the next result or segment end wakes every waiting slot.
* ``DONE``: the slot retires. Trials still paused then were stopped by the scheduler without a
  record of their own, as in the validation runner's records (ask ``trial_status``). The
  simulator has no failures.

It writes the shared :class:`nasalloc.records.Event` records (the validation runner writes the
same) and sums what the sweep needs as it goes, so a run without records costs little.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import simpy

from nasalloc.records import Event

from .cluster import Split
from .curvetable import CurveTable
from .schedulers.base import DONE, WAIT, Decision, Resume, Start
from .timemodel import TimeModel

ROW_KEY = "_row"  # the table row a sampled config came from (TableSource)
_NOISE_BLOCK = 1024


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
        }


class _Trial:
    __slots__ = ("trial_id", "row", "rel_cost", "config", "epoch", "saved")

    def __init__(self, trial_id: int, row: int, rel_cost: float, config: dict):
        self.trial_id, self.row, self.rel_cost, self.config = trial_id, row, rel_cost, config
        self.epoch = 0
        self.saved = None       # SimPy event while its checkpoint is being written


class _Simulation:
    def __init__(self, scheduler, split: Split, time_model: TimeModel, table: CurveTable, seed: int,
                 record_events: bool, deadline_s: Optional[float]):
        self.env = simpy.Environment()
        self.scheduler, self.split, self.table = scheduler, split, table
        g = split.gpus_per_trial
        self.gpus = g
        self.base_epoch_s = time_model.reference_epoch_seconds(g, split.nodes_per_trial)
        self.startup_s = time_model.overhead("startup_s", g)
        self.resume_s = time_model.overhead("resume_s", g)
        self.save_s = time_model.overhead("checkpoint_save_s", g)
        self.load_s = time_model.overhead("checkpoint_load_s", g)
        self.roundtrip_s = time_model.overhead("roundtrip_s", g)  # per epoch: report, decision, reply
        self.one_gpu_epoch_s = time_model.reference_epoch_seconds(1.0, 1)
        self.sigma = time_model.noise_sigma()
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
        # start-up noise has a stream of its own: the epoch noise of a seed stays as it was
        self.startup_sigma = time_model.startup_sigma()
        self.startup_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x57A7]))
        run_sigma = time_model.run_sigma()  # one factor every epoch of this run shares
        if run_sigma > 0.0:
            run_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x2B4]))
            self.base_epoch_s *= float(run_rng.lognormal(-0.5 * run_sigma ** 2, run_sigma))
        self.noise = np.empty(0)
        self.noise_at = 0
        self.record = record_events
        self.events: list[Event] = []
        self.trials: dict[int, _Trial] = {}
        self.waiters: deque = deque()   # wake-up events of slots told WAIT, oldest first
        self.active = 0          # segments holding GPUs (running, starting up or saving)
        self.retired = 0
        self.makespan = 0.0
        self.busy_slot_s = 0.0
        self.epochs = 0
        self.yields = 0          # SimPy events waited on, besides one timeout per epoch
        self.work_rel = 0.0      # sum of relative costs of the epochs trained (for the lower bound)
        self.deadline_s = deadline_s
        self.deadline_best = (-math.inf, math.nan, math.nan)  # (score, metric, test)
        self.sign = 1.0 if table.mode == "max" else -1.0

    # -- helpers ------------------------------------------------------------------------------
    def noise_factor(self) -> float:
        if self.sigma == 0.0:
            return 1.0
        if self.noise_at >= len(self.noise):
            self.noise = self.rng.lognormal(-0.5 * self.sigma ** 2, self.sigma, _NOISE_BLOCK)
            self.noise_at = 0
        value = self.noise[self.noise_at]
        self.noise_at += 1
        return float(value)

    def startup_factor(self) -> float:
        if self.startup_sigma == 0.0:
            return 1.0
        return float(self.startup_rng.lognormal(-0.5 * self.startup_sigma ** 2, self.startup_sigma))

    def notify(self) -> None:
        """The scheduler's state changed: wake the longest-waiting slot.

        A woken slot that gets work wakes the next one (a chain), one that gets WAIT again goes
        back to the head of the queue and ends the chain: suggest() has no side effects when it
        answers WAIT, so the slots behind it would hear WAIT too. Same outcome as waking them all,
        without asking the scheduler once per idle slot per result.
        """
        if self.waiters:
            self.waiters.popleft().succeed()

    def emit(self, **fields) -> None:
        if self.record:
            self.events.append(Event(gpus=self.gpus, **fields))

    # -- processes ----------------------------------------------------------------------------
    def slot(self, slot):
        env, scheduler = self.env, self.scheduler
        placement = list(slot.gpus)
        woken = False
        while True:
            action = scheduler.suggest()
            if action is WAIT:
                if self.active == 0:
                    raise RuntimeError(f"{type(scheduler).__name__} answered WAIT while no trial runs: "
                                       f"nothing could ever wake it")
                wake = env.event()
                if woken:
                    self.waiters.appendleft(wake)
                else:
                    self.waiters.append(wake)
                self.yields += 1
                yield wake
                woken = True
                continue
            if woken:
                self.notify()  # pass the wake-up on along the chain
                woken = False
            if action is DONE:
                break
            yield from self.segment(action, placement)
        self.retired += 1

    def segment(self, action, placement):
        env, scheduler, table = self.env, self.scheduler, self.table
        if isinstance(action, Start):
            config = dict(action.config)
            row = int(config.pop(ROW_KEY))
            trial = self.trials[action.trial_id] = _Trial(action.trial_id, row, float(table.rel_cost[row]), config)
            self.active += 1
            began = env.now
            self.emit(time_s=began, kind="start", trial_id=trial.trial_id, epoch=0, placement=placement,
                      config=config, extra={"row": row})
            self.yields += 1
            yield env.timeout(self.startup_s * self.startup_factor())
        elif isinstance(action, Resume):
            trial = self.trials[action.trial_id]
            self.active += 1
            if trial.saved is not None:
                self.yields += 1
                yield trial.saved
            began = env.now
            self.emit(time_s=began, kind="resume", trial_id=trial.trial_id, epoch=trial.epoch, placement=placement)
            self.yields += 1
            yield env.timeout(self.resume_s * self.startup_factor() + self.load_s)
        else:
            raise RuntimeError(f"{type(scheduler).__name__}.suggest() returned {action!r}")

        row, val, test = trial.row, table.val, table.test
        while True:
            epoch_began = env.now
            yield env.timeout(trial.rel_cost * self.base_epoch_s * self.noise_factor() + self.roundtrip_s)
            trial.epoch += 1
            epoch = trial.epoch
            if epoch > table.max_epochs:
                raise RuntimeError(f"trial {trial.trial_id} continued past the curves' {table.max_epochs} epochs")
            metric = float(val[row, epoch - 1])
            test_metric = float(test[row, epoch - 1])
            self.epochs += 1
            self.work_rel += trial.rel_cost
            if self.deadline_s is not None and env.now <= self.deadline_s:
                score = self.sign * metric
                if score > self.deadline_best[0]:
                    self.deadline_best = (score, metric, test_metric)
            self.emit(time_s=env.now, kind="epoch", trial_id=trial.trial_id, epoch=epoch, metric=metric,
                      test_metric=None if math.isnan(test_metric) else test_metric, began_s=epoch_began)
            decision = scheduler.on_result(trial.trial_id, epoch, metric)
            self.notify()
            if decision is Decision.CONTINUE or decision == "continue":
                continue
            if decision is Decision.PAUSE or decision == "pause":
                trial.saved = env.event()
                self.yields += 1
                yield env.timeout(self.save_s)
                trial.saved.succeed()
                trial.saved = None
                kind = "pause"
            elif decision is Decision.STOP or decision == "stop":
                kind = "complete" if epoch >= scheduler.max_t else "stop"
            else:
                raise RuntimeError(f"{type(scheduler).__name__}.on_result returned {decision!r}")
            self.emit(time_s=env.now, kind=kind, trial_id=trial.trial_id, epoch=epoch, metric=metric,
                      test_metric=None if math.isnan(test_metric) else test_metric)
            break
        self.active -= 1
        self.busy_slot_s += env.now - began
        self.makespan = max(self.makespan, env.now)
        self.notify()

    # -- result -------------------------------------------------------------------------------
    def run(self, algorithm: str, seed: int) -> SimulationResult:
        for slot in self.split.slots:
            self.env.process(self.slot(slot))
        self.env.run()
        if self.retired != len(self.split.slots):
            raise RuntimeError(f"{self.split.parallel_trials - self.retired} slot(s) still waiting when the "
                               f"simulation ran out of events: the scheduler never said DONE")
        best_metric, best_test, best_id = self.best_trial()
        deadline_metric, deadline_test = self.deadline_best[1:] if self.deadline_s is not None else (math.nan,) * 2
        return SimulationResult(
            algorithm=algorithm, budget=self.split.budget, gpus_per_trial=self.gpus,
            parallel_trials=self.split.parallel_trials, idle_gpus=self.split.idle_gpus, seed=seed,
            makespan_s=self.makespan, busy_gpu_s=self.busy_slot_s * self.gpus, trials=len(self.trials),
            epochs=self.epochs, best_metric=best_metric, best_test_metric=best_test, best_trial_id=best_id,
            lower_bound_s=self.work_rel * self.one_gpu_epoch_s / self.split.budget, deadline_s=self.deadline_s,
            deadline_metric=deadline_metric, deadline_test_metric=deadline_test,
            sim_events=self.epochs + self.yields, events=self.events,
            model_based_trials=getattr(self.scheduler, "model_based_picks", None))

    def best_trial(self):
        """The trial whose metric at its last epoch is best; ties go to the lower trial id."""
        best = (-math.inf, math.nan, math.nan, None)
        for trial in self.trials.values():
            if trial.epoch == 0:
                continue
            metric = float(self.table.val[trial.row, trial.epoch - 1])
            score = self.sign * metric
            if score > best[0]:
                best = (score, metric, float(self.table.test[trial.row, trial.epoch - 1]), trial.trial_id)
        return best[1], best[2], best[3]


def simulate(scheduler, split: Split, time_model: TimeModel, table: CurveTable, *, seed: int = 0,
             algorithm: str = "", record_events: bool = True, deadline_s: Optional[float] = None) -> SimulationResult:
    """Run ``scheduler`` to DONE on ``split`` in simulated time; see the module docstring.

    ``seed`` seeds the epoch-time noise only (the scheduler carries its own seed). Configs the
    scheduler starts must carry ``"_row"``, their row in ``table`` (``TableSource`` does).
    """
    simulation = _Simulation(scheduler, split, time_model, table, seed, record_events, deadline_s)
    return simulation.run(algorithm or getattr(scheduler, "name", type(scheduler).__name__), seed)
