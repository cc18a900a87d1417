"""The SimPy driver under an allocation model: a chain of allocations, node failures, checkpoints.

:func:`.engine.simulate` hands a run to :class:`ChainSimulation` when its
:class:`~.allocation.AllocationModel` is active; without one nothing here runs and the engine's
records are what they always were. The behaviour (what pauses when, what is lost, what the
scheduler hears) is the model's, documented in :mod:`.allocation`; this module only plays it
on the engine's epoch-by-epoch path (one SimPy event per epoch: an allocation's end cuts
stretches anyway). Everything else (noise rows, priorities, records, results) is the engine's.

GPU time is accounted per allocation, each held interval once: ``busy`` (what the search
without limits or failures does too: start-ups, training kept, the scheduler's own pauses and
resumes), ``checkpoint`` (saves of interrupted pauses and of ``--checkpoint-every``),
``restart`` (start-up and load after an allocation change, work killed at its end),
``failure`` (work lost to node failures and their restarts) and ``idle`` (the rest of
budget x wall time: GPUs no trial holds, tails while the last trials pause, and each
allocation's first ``allocation_start`` seconds, while the runner starts). The held time is
also summed on its own, so a test can check that the categories add up to it.
"""

from __future__ import annotations

import math

import simpy

from .allocation import AllocationDraws, AllocationModel, after_lost_segment, checkpoint_due
from .engine import _Simulation
from .schedulers.base import DONE, WAIT, Decision, Start

CATEGORIES = ("busy", "checkpoint", "restart", "failure")


class _Allocation:
    __slots__ = ("index", "start", "end", "held", "signal", "kill", *CATEGORIES)

    def __init__(self, index: int, start: float, model: AllocationModel):
        self.index, self.start, self.end, self.held = index, start, None, 0.0
        self.signal, self.kill = model.signal_at(start), model.kill_at(start)
        for name in CATEGORIES:
            setattr(self, name, 0.0)


class ChainSimulation(_Simulation):
    def __init__(self, scheduler, split, time_model, table, seed, record_events, deadline_s,
                 model: AllocationModel):
        super().__init__(scheduler, split, time_model, table, seed, record_events, deadline_s, epoch_by_epoch=True)
        self.model, self.draws = model, AllocationDraws(model, seed)
        self.nodes = split.nodes_per_trial
        self.allocations = [_Allocation(0, 0.0, model)]
        self.next_allocation = self.env.event()
        self.holding = 0       # segments holding GPUs now
        self.failures = 0      # node failures that hit a trial
        self.failed = 0        # trials failed (out of restarts)
        self.checkpoints: dict = {}  # trial id -> epoch of its last checkpoint
        self.kept = 0          # epochs heard and checkpoints written: an allocation must add some
        self.kept_at_start = 0
        self.pending: dict = {}   # trial id -> training seconds since its last checkpoint
        self.lost_segments: dict = {}  # trial id -> segments lost to failures
        self.heard: dict = {}     # trial id -> epochs the scheduler heard
        self.trial_gpu: dict = {}  # trial id -> the GPU (first of its placement) of its segment now

    # -- allocations ---------------------------------------------------------------------------
    @property
    def current(self) -> _Allocation:
        return self.allocations[-1]

    def draining(self) -> bool:
        return self.env.now >= self.current.signal

    def charge(self, category: str, seconds: float) -> None:
        setattr(self.current, category, getattr(self.current, category) + seconds * self.gpus)

    def hold(self) -> float:
        self.holding += 1
        return self.env.now

    def release(self, since: float) -> None:
        self.holding -= 1
        self.current.held += (self.env.now - since) * self.gpus
        # slots told WAIT hold no GPUs: the allocation ends when the last trial has left
        if self.holding == 0 and self.draining() and self.retired < len(self.split.slots):
            self.end_allocation()

    def end_allocation(self) -> None:
        self.current.end = self.env.now
        if self.kept == self.kept_at_start:
            from nasalloc.errors import UserError

            longest = max(t.rel_cost for t in self.trials.values()) * self.base_epoch_s
            raise UserError(f"--time-limit {self.model.time_limit_s:g}s: allocation {self.current.index + 1} kept no "
                            f"work at {self.gpus:g} GPU(s) per trial: its trials were killed {self.model.grace_s:g}s "
                            f"(--grace) after SIGTERM before they could pause with a checkpoint (an epoch takes up "
                            f"to ~{longest:.0f}s); give a --grace and --signal-lead above one epoch plus a save, "
                            f"or --checkpoint-every K")
        self.kept_at_start = self.kept
        wait = self.draws.queue_wait()
        starting = self.env.at(self.env.now + wait, simpy.events.NORMAL)
        starting.callbacks.append(lambda _: self.begin_allocation())

    def begin_allocation(self) -> None:
        """The next allocation starts now; its trials launch once the runner has started in it."""
        self.allocations.append(_Allocation(len(self.allocations), self.env.now, self.model))
        event, self.next_allocation = self.next_allocation, self.env.event()
        ready = self.model.ready_at(self.env.now)
        if ready > self.env.now:
            self.env.at(ready, simpy.events.NORMAL).callbacks.append(lambda _: event.succeed())
        else:
            event.succeed()

    # -- processes ----------------------------------------------------------------------------
    def slot(self, slot):
        scheduler = self.scheduler
        placement = list(slot.gpus)
        woken, since = False, 0
        if self.model.ready_at(0.0) > 0:  # the first allocation's runner starts too
            self.yields += 1
            yield self.env.at(self.model.ready_at(0.0), simpy.events.NORMAL)
        while True:
            while self.draining():
                self.yields += 1
                yield self.next_allocation
            action = scheduler.suggest()
            if action is WAIT:
                since = yield from self.wait_in_line(woken, since)
                woken = True
                continue
            if woken:
                self.notify()
                woken = False
            if action is DONE:
                break
            yield from self.segment(action, placement)
        self.retired += 1

    def segment(self, action, placement):
        env, gpu = self.env, placement[0]
        trial, setup = yield from self.open_segment(action, placement)
        if isinstance(action, Start):
            self.pending[trial.trial_id], self.lost_segments[trial.trial_id] = 0.0, 0
            self.heard[trial.trial_id] = 0
            self.checkpoints[trial.trial_id] = 0
        self.trial_gpu[trial.trial_id] = gpu
        ended = yield from self.train(trial, placement, setup, "busy")
        if self.shared is not None:
            self.shared.leave(gpu)
        self.active -= 1
        self.makespan = max(self.makespan, env.now)
        self.notify()
        return ended

    def restart_setup(self, trial, gpu: int) -> float:
        if self.checkpoints[trial.trial_id] > 0:
            return self.overhead_on("resume_s", gpu) * self.startup_factor() + self.overhead_on("checkpoint_load_s", gpu)
        return self.overhead_on("startup_s", gpu) * self.startup_factor()

    def train(self, trial, placement, setup: float, category: str):
        """Hold the slot's GPUs for the trial until the scheduler ends its segment (or it fails)."""
        env, own, tid = self.env, trial.priority, trial.trial_id
        epoch_s, roundtrip_s = trial.rel_cost * self.base_epoch_s, self.roundtrip_s
        while True:  # one pass per hold of the GPUs
            since = self.hold()
            fails = env.now + self.draws.failure_after(self.nodes)
            cut = min(fails, self.current.kill)
            began = env.now
            if began + setup > cut:
                killed = yield from self.cut_short(trial, cut, began, fails)
                self.release(since)
                if killed == "fail":
                    return "fail"
                setup, category = self.restart_setup(trial, placement[0]), killed
                yield from self.wait_for_allocation()
                continue
            self.charge(category, setup)
            yield env.at(began + setup, own)
            trained_from = trial.last_end = env.now
            outcome = None
            while outcome is None:
                k = trial.epoch + 1
                if self.shared is not None:  # this epoch at the sharers busy as it begins
                    epoch_s = trial.rel_cost * self.shared.epoch_seconds(placement[0])
                    roundtrip_s = self.shared.overhead("roundtrip_s", placement[0])
                end = env.now + epoch_s * trial.noise[k - 1] + roundtrip_s
                if end > cut:
                    self.pending[tid] += env.now - trained_from
                    killed = yield from self.cut_short(trial, cut, env.now, fails)
                    outcome = killed
                    break
                self.stretches += 1
                yield env.at(end, own)
                self.pending[tid] += end - trained_from
                trained_from = end
                if k <= self.heard[tid]:  # re-training after a restart: the scheduler heard it already
                    trial.epoch = k
                    if self.record:
                        self.emit(time_s=end, kind="epoch", trial_id=tid, epoch=k, began_s=trial.last_end,
                                  metric=trial.val[k - 1], extra={"replay": True})
                    trial.last_end = end
                    if env.now >= self.current.signal:  # the runner answers a replay as any epoch
                        yield from self.save(trial, "checkpoint")
                        self.emit(time_s=env.now, kind="pause", trial_id=tid, epoch=trial.epoch,
                                  extra={"interrupted": True, "replay": True})
                        outcome = "restart"
                    continue
                decision, metric, test_metric = self._result(trial, end)
                self.heard[tid] = trial.epoch
                self.kept += 1
                self.notify()
                if decision is Decision.CONTINUE or decision == "continue":
                    if env.now >= self.current.signal:
                        yield from self.save(trial, "checkpoint")
                        self.emit(time_s=env.now, kind="pause", trial_id=tid, epoch=trial.epoch, metric=metric,
                                  extra={"interrupted": True})
                        outcome = "restart"
                    elif checkpoint_due(trial.epoch, self.model.checkpoint_every, scheduler_max_t(self)):
                        yield from self.save(trial, "checkpoint")
                        trained_from = trial.last_end = env.now
                    continue
                if decision is Decision.PAUSE or decision == "pause":
                    yield from self.save(trial, "busy")
                    kind = "pause"
                elif decision is Decision.STOP or decision == "stop":
                    kind = "complete" if trial.epoch >= self.scheduler.max_t else "stop"
                    self.commit(trial, "busy")
                else:
                    raise RuntimeError(f"{type(self.scheduler).__name__}.on_result returned {decision!r}")
                self.emit(time_s=env.now, kind=kind, trial_id=tid, epoch=trial.epoch, metric=metric,
                          test_metric=None if math.isnan(test_metric) else test_metric)
                outcome = "ended"
            self.release(since)
            if outcome == "ended":
                return "ended"
            if outcome == "fail":
                return "fail"
            setup, category = self.restart_setup(trial, placement[0]), outcome
            yield from self.wait_for_allocation()

    def wait_for_allocation(self):
        while self.draining():
            self.yields += 1
            yield self.next_allocation

    def commit(self, trial, category: str) -> None:
        self.charge(category, self.pending[trial.trial_id])
        self.pending[trial.trial_id] = 0.0

    def save(self, trial, category: str):
        """Write the trial's checkpoint: the work since the last one is kept."""
        self.commit(trial, "busy")
        trial.saved = self.env.event()
        self.yields += 1
        save_s = self.overhead_on("checkpoint_save_s", self.trial_gpu[trial.trial_id])
        yield self.env.at(self.env.now + save_s, trial.priority)
        self.charge(category, save_s)
        trial.saved.succeed()
        trial.saved = None
        self.checkpoints[trial.trial_id] = trial.epoch
        self.kept += 1

    def cut_short(self, trial, cut: float, began: float, fails: float):
        """The trial's step dies at ``cut``: by a node failure, or killed at the allocation's end.
        Returns what follows: ``"failure"``/``"restart"`` (re-run from the checkpoint, as the
        category its restart is charged to) or ``"fail"``."""
        tid = trial.trial_id
        self.yields += 1
        yield self.env.at(cut, trial.priority)
        by_failure = cut == fails
        category = "failure" if by_failure else "restart"
        # the unfinished part (set-up or epoch) and the training since the checkpoint are lost
        self.charge(category, cut - began)
        self.commit(trial, category)
        checkpoint = trial.epoch = self.checkpoints[tid]
        trial.last_end = cut
        if not by_failure:
            self.emit(time_s=cut, kind="pause", trial_id=tid, epoch=self.heard[tid],
                      extra={"interrupted": True, "killed": True, "checkpoint_epoch": checkpoint})
            return "restart"
        self.failures += 1
        self.lost_segments[tid] += 1
        if after_lost_segment(self.lost_segments[tid], self.model.max_restarts) == "fail":
            self.failed += 1
            self.scheduler.on_failure(tid)
            self.emit(time_s=cut, kind="fail", trial_id=tid, epoch=self.heard[tid], error="node failure")
            return "fail"
        self.emit(time_s=cut, kind="pause", trial_id=tid, epoch=self.heard[tid],
                  extra={"interrupted": True, "lost": True, "cause": "node failure",
                         "checkpoint_epoch": checkpoint})
        return "failure"

    # -- result -------------------------------------------------------------------------------
    def run(self, algorithm: str, seed: int):
        result = super().run(algorithm, seed)
        # an allocation begun after the last result only finds the search DONE: not counted
        while len(self.allocations) > 1 and self.current.start >= self.makespan and self.current.held == 0:
            self.allocations.pop()
        if self.current.end is None:
            self.current.end = self.makespan
        result.busy_gpu_s = sum(a.busy for a in self.allocations)
        result.chain = self.summary()
        return result

    def summary(self) -> dict:
        rows = []
        for a in self.allocations:
            wall = a.end - a.start
            row = {"index": a.index, "start_s": a.start, "end_s": a.end, "held_gpu_s": a.held,
                   **{f"{c}_gpu_s": getattr(a, c) for c in CATEGORIES}}
            row["idle_gpu_s"] = self.split.budget * wall - a.held
            rows.append(row)
        compute = sum(r["end_s"] - r["start_s"] for r in rows)
        total = {c: sum(r[f"{c}_gpu_s"] for r in rows) for c in (*CATEGORIES, "idle")}
        return {"allocations": len(rows), "compute_s": compute, "time_to_result_s": self.makespan,
                "failures": self.failures, "failed_trials": self.failed,
                "lost_checkpoint_gpu_h": total["checkpoint"] / 3600, "lost_restart_gpu_h": total["restart"] / 3600,
                "lost_failure_gpu_h": total["failure"] / 3600, "idle_gpu_h": total["idle"] / 3600,
                "per_allocation": rows}


def scheduler_max_t(simulation) -> int:
    return int(getattr(simulation.scheduler, "max_t", simulation.max_epochs))
