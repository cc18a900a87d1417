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
* On a fractional split (g = 1/k: k slots per GPU) an epoch, start-up, resume, save, load and
  round trip cost what the profile says for the number of the GPU's slots busy at that moment
  (:mod:`.sharing`): a trial alone on its GPU trains at the 1-GPU speed, not the k-way
  co-located one. Such splits run epoch by epoch (an epoch's time depends on its neighbours).
* ``WAIT``: the slot sleeps until the next result or segment end wakes a waiting slot.
* ``DONE``: the slot retires. Trials still paused then were stopped by the scheduler without a
  record of their own, as in the validation runner's records (ask ``trial_status``). Time
  limits, queue waits and node failures are :mod:`.chainengine`'s (``simulate(allocation=...)``).

**Milestone to milestone.** A trial trains one *stretch* per SimPy timeout: from its current
epoch up to the next epoch whose result the scheduler may answer with something other than a
pure CONTINUE (``scheduler.next_decision_epoch``: its rung, pause or end). The epochs inside a
stretch are *virtual*: their end times are computed up front (the same float sums as one
timeout each), and they are handed to the scheduler, in order and with their own times, just
before the next real event that comes after them in SimPy's order (``_catch_up``). That is
exact while the scheduler is *settled* (``scheduler.settled()``: such a result changes nothing
another answer depends on; Ray's controller, for one, stages a promoted trial on every event
while it has one to stage). After every real call the engine asks; while the scheduler is not
settled, the earliest virtual epoch becomes a real event of its own (``_tick``), so it is
handled at its time as the epoch-by-epoch path would. ``epoch_by_epoch=True`` makes every epoch
a stretch of one (the reference path; ``tests/simulator/test_engine_paths.py`` asserts both give
identical records and results). What makes the two comparable, and both deterministic:

* events at the same simulated time are ordered by SimPy priority: wake-ups and finished
  checkpoint saves first, then each trial's own events by trial id (``2 + trial_id``), never by
  when they were scheduled;
* a trial's epoch-time noise is one row drawn when it starts (trials start in the same order
  on both paths), not one draw per epoch in global time order;
* records are sorted by (time, trial, epoch, kind) at the end.

It writes the shared :class:`nasalloc.records.Event` records (the validation runner writes the
same) and sums what the sweep needs as it goes, so a run without records costs little.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Optional

import numpy as np
import simpy
from simpy.events import Event as SimEvent

from nasalloc.records import Event

from .cluster import Split
from .curvetable import CurveTable
from .schedulers.base import DONE, WAIT, Decision, Resume, Scheduler, Start
from .sharing import SharedGPUs
from .simresult import SimulationResult
from .timemodel import TimeModel

__all__ = ["ROW_KEY", "SimulationResult", "simulate"]

ROW_KEY = "_row"  # the table row a sampled config came from (TableSource)
_TRIAL_PRIORITY = 2  # SimPy's URGENT (0) and NORMAL (1: wake-ups, saved checkpoints) come first
_NOISE_ROWS = 64  # trials' noise rows drawn at once
_KIND_ORDER = {"epoch": 1, "pause": 2, "stop": 2, "complete": 2, "fail": 2, "start": 3, "resume": 3}


class _Env(simpy.Environment):
    def at(self, when: float, priority: int) -> SimEvent:
        """An event firing at the absolute time ``when`` (scheduled with SimPy's own heap entry,
        so a stretch end is the very float a chain of per-epoch timeouts would reach)."""
        event = SimEvent(self)
        event._ok = True
        event._value = None
        heapq.heappush(self._queue, (when, priority, next(self._eid), event))
        return event


class _Trial:
    __slots__ = ("trial_id", "row", "rel_cost", "epoch", "saved", "priority", "noise", "planned",
                 "last_end", "val", "test")

    def __init__(self, trial_id: int, row: int, rel_cost: float, noise: list, curves: tuple):
        self.trial_id, self.row, self.rel_cost, self.noise = trial_id, row, rel_cost, noise
        self.val, self.test = curves  # its row of the table, as Python floats
        self.priority = _TRIAL_PRIORITY + trial_id
        self.epoch = 0
        self.saved = None       # SimPy event while its checkpoint is being written
        self.planned = deque()  # end times of its virtual epochs not handed over yet
        self.last_end = 0.0     # when its last epoch handed over ended (or its training began)


class _Simulation:
    def __init__(self, scheduler, split: Split, time_model: TimeModel, table: CurveTable, seed: int,
                 record_events: bool, deadline_s: Optional[float], epoch_by_epoch: bool):
        self.env = _Env()
        self.scheduler, self.split, self.table = scheduler, split, table
        g = split.gpus_per_trial
        self.gpus = g
        self.base_epoch_s = time_model.reference_epoch_seconds(g, split.nodes_per_trial)
        self.startup_s = time_model.overhead("startup_s", g)
        self.resume_s = time_model.overhead("resume_s", g)
        self.save_s = time_model.overhead("checkpoint_save_s", g)
        self.load_s = time_model.overhead("checkpoint_load_s", g)
        self.roundtrip_s = time_model.overhead("roundtrip_s", g)  # per epoch: report, decision, reply
        self.fixed = {"startup_s": self.startup_s, "resume_s": self.resume_s, "checkpoint_save_s": self.save_s,
                      "checkpoint_load_s": self.load_s, "roundtrip_s": self.roundtrip_s}
        self.one_gpu_epoch_s = time_model.reference_epoch_seconds(1.0, 1)
        self.sigma = time_model.noise_sigma()
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
        self.noise_rows: list = []  # drawn a block of rows at a time, taken in trial start order
        self.max_epochs = table.max_epochs
        self.curves: dict[int, tuple] = {}  # row -> (val, test) as lists of Python floats
        # start-up noise has a stream of its own: the epoch noise of a seed stays as it was
        self.startup_sigma = time_model.startup_sigma()
        self.startup_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x57A7]))
        run_sigma = time_model.run_sigma()  # one factor every epoch of this run shares
        run_factor = 1.0
        if run_sigma > 0.0:
            run_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x2B4]))
            run_factor = float(run_rng.lognormal(-0.5 * run_sigma ** 2, run_sigma))
            self.base_epoch_s *= run_factor
        self.run_factor = run_factor
        # a fractional split: costs by the busy sharers of each GPU (simulator/sharing.py)
        self.shared = SharedGPUs(split, time_model, run_factor) if split.trials_per_gpu > 1 else None
        self.record = record_events
        self.events: list[Event] = []
        self.trials: dict[int, _Trial] = {}
        self.waiters: list = []  # heap of (since, wake-up event) of the slots told WAIT
        self.waiting_since = 0   # counts the slots that began to wait, for their place in line
        self.active = 0          # segments holding GPUs (running, starting up or saving)
        self.retired = 0
        self.makespan = 0.0
        self.busy_slot_s = 0.0
        self.epochs = 0
        self.yields = 0          # SimPy events waited on, besides one timeout per stretch
        self.stretches = 0       # stretch timeouts (one per epoch on the epoch-by-epoch path)
        self.deadline_s = deadline_s
        self.deadline_best = (-math.inf, 0.0, 0, 0, math.nan, math.nan)  # (score, -time, -trial, -epoch, ...)
        self.sign = 1.0 if table.mode == "max" else -1.0
        # epoch by epoch where GPUs are shared: an epoch's time depends on the sharers busy as it begins
        fast = not epoch_by_epoch and self.shared is None
        self.next_decision = getattr(scheduler, "next_decision_epoch", None) if fast else None
        settled = getattr(scheduler, "settled", None)
        always = settled is None or getattr(type(scheduler), "settled", None) is Scheduler.settled
        self.settled = None if self.next_decision is None or always else settled
        # the fast path wakes no idle slot where the scheduler says it would answer WAIT
        self.waits = getattr(scheduler, "waits", None) if fast else None
        self.virtual: list = []  # (end time, priority, trial id) of each trial's next virtual epoch
        self.quiet = True        # the scheduler was settled after the last real call
        self.ticker: Optional[tuple] = None  # (time, priority) of the armed _tick

    # -- helpers ------------------------------------------------------------------------------
    def noise_row(self) -> list:
        """The epoch-time factors of a new trial, one per epoch the curves hold (and one more)."""
        count = self.max_epochs + 1
        if self.sigma == 0.0:
            return [1.0] * count
        if not self.noise_rows:
            block = self.rng.lognormal(-0.5 * self.sigma ** 2, self.sigma, (_NOISE_ROWS, count))
            self.noise_rows = block.tolist()[::-1]
        return self.noise_rows.pop()

    def curves_of(self, row: int) -> tuple:
        if row not in self.curves:
            self.curves[row] = (self.table.val[row].tolist(), self.table.test[row].tolist())
        return self.curves[row]

    def overhead_on(self, name: str, gpu: int) -> float:
        """Seconds of overhead ``name`` (timemodel.OVERHEADS, resume_s, roundtrip_s) for a segment
        on ``gpu``: the split's figure, or on a shared GPU the one for its sharers busy now."""
        if self.shared is not None:
            return self.shared.overhead(name, gpu)
        return self.fixed[name]

    def startup_factor(self) -> float:
        if self.startup_sigma == 0.0:
            return 1.0
        return float(self.startup_rng.lognormal(-0.5 * self.startup_sigma ** 2, self.startup_sigma))

    def notify(self) -> None:
        """The scheduler's state changed: wake the longest-waiting slot.

        A woken slot that gets work wakes the next one (a chain), one that gets WAIT again goes
        back to its place in the line (the order slots began to wait) and ends the chain:
        suggest() has no side effects when it answers WAIT, so the slots behind it would hear
        WAIT too. Same outcome as waking them all, without asking the scheduler once per idle
        slot per result; and a slot not woken keeps the same place as one woken to hear WAIT.
        (A virtual epoch wakes no one: a settled scheduler's answer to a waiting slot is still
        WAIT; nor, on the fast path, does a result after which ``scheduler.waits()``.)
        """
        if self.waiters and not (self.waits is not None and self.waits()):
            heapq.heappop(self.waiters)[1].succeed()

    def wait_in_line(self, woken: bool, since: int):
        """Sleep until :meth:`notify` wakes this slot; its place in line (a slot woken only to
        hear WAIT again keeps the place it had)."""
        if self.active == 0:
            raise RuntimeError(f"{type(self.scheduler).__name__} answered WAIT while no trial runs: "
                               f"nothing could ever wake it")
        wake = self.env.event()
        if not woken:
            since = self.waiting_since = self.waiting_since + 1
        heapq.heappush(self.waiters, (since, wake))
        self.yields += 1
        yield wake
        return since

    def emit(self, **fields) -> None:
        if self.record:
            self.events.append(Event(gpus=self.gpus, **fields))

    # -- virtual epochs -----------------------------------------------------------------------
    def _catch_up(self, priority: int) -> None:
        """Hand over every virtual epoch that SimPy would have processed before the event now
        being processed (time now, ``priority``), each trial's in its order."""
        heap = self.virtual
        if not heap:
            return
        now = self.env.now
        while heap and (heap[0][0] < now or (heap[0][0] == now and heap[0][1] < priority)):
            if not self.quiet:
                raise RuntimeError("a virtual epoch was left behind while the scheduler was not settled")
            _, own, trial_id = heapq.heappop(heap)
            trial = self.trials[trial_id]
            planned = trial.planned
            while planned and (planned[0] < now or (planned[0] == now and own < priority)):
                decision = self._result(trial, planned.popleft())[0]
                if decision is not Decision.CONTINUE and decision != "continue":
                    raise RuntimeError(f"{type(self.scheduler).__name__} answered {decision!r} to epoch "
                                       f"{trial.epoch} of trial {trial_id}, before the epoch it named in "
                                       f"next_decision_epoch")
            if planned:
                heapq.heappush(heap, (planned[0], own, trial_id))

    def _after_call(self) -> None:
        """After a real call: while the scheduler is not settled, virtual epochs become real."""
        if self.settled is None:
            return  # epoch by epoch, or a scheduler that is always settled
        self.quiet = self.settled()
        if not self.quiet and self.virtual:
            key = self.virtual[0][:2]
            if self.ticker is None or key < self.ticker:
                self.ticker = key
                event = self.env.at(*key)
                event.callbacks.append(lambda _, key=key: self._tick(key))

    def _tick(self, key: tuple) -> None:
        """The earliest virtual epoch's own event, armed while the scheduler is not settled."""
        if key != self.ticker:
            return  # superseded by an earlier one
        self.ticker = None
        if self.quiet:
            return  # settled again: the virtual epochs are caught up at the next real event
        if not self.virtual or self.virtual[0][:2] != key:
            self._after_call()  # its epoch was handed over while settled: arm the next one
            return
        _, own, trial_id = heapq.heappop(self.virtual)
        trial = self.trials[trial_id]
        self._result(trial, trial.planned.popleft())
        if trial.planned:
            heapq.heappush(self.virtual, (trial.planned[0], own, trial_id))
        self.yields += 1
        self.notify()
        self._after_call()

    def epoch_gpus(self, trial: _Trial) -> float:
        """The GPUs an epoch record carries: the split's (an adaptive run: the segment's)."""
        return self.gpus

    def _result(self, trial: _Trial, end: float):
        """The epoch of ``trial`` that ended at ``end``: count it, record it, ask the scheduler."""
        epoch = trial.epoch = trial.epoch + 1
        if epoch > self.max_epochs:
            raise RuntimeError(f"trial {trial.trial_id} continued past the curves' {self.max_epochs} epochs")
        metric = trial.val[epoch - 1]
        test_metric = trial.test[epoch - 1]
        self.epochs += 1
        if self.deadline_s is not None and end <= self.deadline_s:
            # the first best epoch in time order (ties: the lower trial id, as SimPy orders them)
            key = (self.sign * metric, -end, -trial.trial_id, -epoch, metric, test_metric)
            if key[:4] > self.deadline_best[:4]:
                self.deadline_best = key
        if self.record:
            self.events.append(Event(time_s=end, kind="epoch", trial_id=trial.trial_id, epoch=epoch,
                                     gpus=self.epoch_gpus(trial), metric=metric, began_s=trial.last_end,
                                     test_metric=None if math.isnan(test_metric) else test_metric))
        trial.last_end = end
        return self.scheduler.on_result(trial.trial_id, epoch, metric), metric, test_metric

    # -- processes ----------------------------------------------------------------------------
    def slot(self, slot):
        scheduler = self.scheduler
        placement = list(slot.gpus)
        woken, since = False, 0
        priority = 0  # the priority of the SimPy event this process is handling
        while True:
            self._catch_up(priority)
            action = scheduler.suggest()
            if action is WAIT:
                since = yield from self.wait_in_line(woken, since)
                woken, priority = True, simpy.events.NORMAL
                continue
            self._after_call()
            if woken:
                self.notify()  # pass the wake-up on along the chain
                woken = False
            if action is DONE:
                break
            priority = yield from self.segment(action, placement)
        self.retired += 1

    def open_segment(self, action, placement):
        """Take the slot for a Start or Resume: the trial (created for a Start), its record, and
        the seconds of its set-up (start-up; for a resume, after its pause's save has finished,
        the resume start-up and the checkpoint load). The slot's GPU counts as busy from here."""
        env, gpu = self.env, placement[0]
        if self.shared is not None:
            self.shared.enter(gpu)
        if isinstance(action, Start):
            row = int(action.config[ROW_KEY])
            trial = _Trial(action.trial_id, row, float(self.table.rel_cost[row]), self.noise_row(), self.curves_of(row))
            self.trials[action.trial_id] = trial
            self.active += 1
            if self.record:
                config = {k: v for k, v in action.config.items() if k != ROW_KEY}
                self.emit(time_s=env.now, kind="start", trial_id=trial.trial_id, epoch=0, placement=placement,
                          config=config, extra={"row": row})
            return trial, self.overhead_on("startup_s", gpu) * self.startup_factor()
        if isinstance(action, Resume):
            trial = self.trials[action.trial_id]
            self.active += 1
            if trial.saved is not None:
                self.yields += 1
                yield trial.saved
            self.emit(time_s=env.now, kind="resume", trial_id=trial.trial_id, epoch=trial.epoch, placement=placement)
            return trial, (self.overhead_on("resume_s", gpu) * self.startup_factor()
                           + self.overhead_on("checkpoint_load_s", gpu))
        raise RuntimeError(f"{type(self.scheduler).__name__}.suggest() returned {action!r}")

    def train_stretch(self, trial: _Trial, training: float, epoch_s: float, roundtrip_s: float, cap=None):
        """Train ``trial`` from time ``training`` through its next stretch: the epochs up to the
        next one at which a decision can change (one epoch on the epoch-by-epoch path; never
        past epoch ``cap`` if given), each handed to the scheduler in order at its simulated
        end. Returns the scheduler's (decision, metric, test metric) for the stretch's last."""
        env, own, noise = self.env, trial.priority, trial.noise
        first = trial.epoch + 1
        last = first
        if self.next_decision is not None and self.quiet:  # else one epoch: it would tick anyway
            last = max(first, min(self.next_decision(trial.trial_id, trial.epoch), self.max_epochs + 1))
            if cap is not None and cap >= first:
                last = min(last, cap)
        t = trial.last_end = training
        if last > first:
            planned = trial.planned
            for k in range(first, last):
                t = t + epoch_s * noise[k - 1] + roundtrip_s
                planned.append(t)
            heapq.heappush(self.virtual, (planned[0], own, trial.trial_id))
            if not self.quiet:
                self._after_call()  # an earlier virtual epoch than the armed one
        self.stretches += 1
        yield env.at(t + epoch_s * noise[last - 1] + roundtrip_s, own)
        self._catch_up(own)
        while trial.planned:  # its own, ending at this very time (zero-length epochs)
            self._result(trial, trial.planned.popleft())
        outcome = self._result(trial, env.now)
        self.notify()
        self._after_call()
        return outcome

    def close_segment(self, trial: _Trial, decision, metric: float, test_metric: float, save_s: float):
        """End a segment the scheduler paused (its checkpoint saved in ``save_s``, then the
        record) or stopped (the record: ``complete`` at max_t, else ``stop``)."""
        env = self.env
        if decision is Decision.PAUSE or decision == "pause":
            trial.saved = env.event()
            self.yields += 1
            yield env.at(env.now + save_s, trial.priority)
            trial.saved.succeed()
            trial.saved = None
            kind = "pause"
        elif decision is Decision.STOP or decision == "stop":
            kind = "complete" if trial.epoch >= self.scheduler.max_t else "stop"
        else:
            raise RuntimeError(f"{type(self.scheduler).__name__}.on_result returned {decision!r}")
        if self.record:
            self.events.append(Event(time_s=env.now, kind=kind, trial_id=trial.trial_id, epoch=trial.epoch,
                                     gpus=self.epoch_gpus(trial), metric=metric,
                                     test_metric=None if math.isnan(test_metric) else test_metric))

    def segment(self, action, placement):
        env = self.env
        shared, gpu = self.shared, placement[0]
        trial, setup_s = yield from self.open_segment(action, placement)
        began = env.now
        training = began + setup_s
        if self.next_decision is None:  # epoch by epoch: the start-up (or load) is an event of its own
            self.yields += 1
            yield env.at(training, trial.priority)
        # else it is folded into the first stretch: nothing happens at its end but the first epoch

        epoch_s, roundtrip_s = trial.rel_cost * self.base_epoch_s, self.roundtrip_s
        while True:
            if shared is not None:  # epoch by epoch (one-epoch stretches): this epoch at the sharers busy now
                epoch_s, roundtrip_s = trial.rel_cost * shared.epoch_seconds(gpu), shared.overhead("roundtrip_s", gpu)
            decision, metric, test_metric = yield from self.train_stretch(trial, training, epoch_s, roundtrip_s)
            training = env.now
            if decision is Decision.CONTINUE or decision == "continue":
                continue
            yield from self.close_segment(trial, decision, metric, test_metric,
                                          self.overhead_on("checkpoint_save_s", gpu))
            break
        self.active -= 1
        if shared is not None:
            shared.leave(gpu)
        self.busy_slot_s += env.now - began
        self.makespan = max(self.makespan, env.now)
        self.notify()
        return trial.priority

    # -- result -------------------------------------------------------------------------------
    def run(self, algorithm: str, seed: int) -> SimulationResult:
        for slot in self.split.slots:
            self.env.process(self.slot(slot))
        self.env.run()
        if self.retired != len(self.split.slots):
            raise RuntimeError(f"{self.split.parallel_trials - self.retired} slot(s) still waiting when the "
                               f"simulation ran out of events: the scheduler never said DONE")
        return self.finish(algorithm, seed)

    def finish(self, algorithm: str, seed: int, **fields) -> SimulationResult:
        """Sort the records and sum the run up; ``fields`` replace the split's own figures (an
        adaptive run has no one GPU count or slot count)."""
        if self.record:
            self.events.sort(key=lambda e: (e.time_s, e.trial_id, e.epoch, _KIND_ORDER[e.kind]))
        best_metric, best_test, best_id = self.best_trial()
        deadline_metric, deadline_test = self.deadline_best[4:] if self.deadline_s is not None else (math.nan,) * 2
        work_rel = math.fsum(trial.rel_cost * trial.epoch for trial in self.trials.values())
        values = dict(
            algorithm=algorithm, budget=self.split.budget, gpus_per_trial=self.gpus,
            parallel_trials=self.split.parallel_trials, idle_gpus=self.split.idle_gpus, seed=seed,
            makespan_s=self.makespan, busy_gpu_s=self.busy_slot_s * self.gpus, trials=len(self.trials),
            epochs=self.epochs, best_metric=best_metric, best_test_metric=best_test, best_trial_id=best_id,
            lower_bound_s=work_rel * self.one_gpu_epoch_s / self.split.budget, deadline_s=self.deadline_s,
            deadline_metric=deadline_metric, deadline_test_metric=deadline_test,
            sim_events=self.stretches + self.yields,
            events=self.events, model_based_trials=getattr(self.scheduler, "model_based_picks", None))
        values.update(fields)
        return SimulationResult(**values)

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
             algorithm: str = "", record_events: bool = True, deadline_s: Optional[float] = None,
             epoch_by_epoch: bool = False, allocation=None) -> SimulationResult:
    """Run ``scheduler`` to DONE on ``split`` in simulated time; see the module docstring.

    ``seed`` seeds the epoch-time noise only (the scheduler carries its own seed). Configs the
    scheduler starts must carry ``"_row"``, their row in ``table`` (``TableSource`` does).
    ``epoch_by_epoch``: one SimPy timeout per epoch (the reference path; same records).
    ``allocation``: an active :class:`~.allocation.AllocationModel` (time limits, queue waits,
    node failures, checkpoints) runs the split as a chain of allocations (:mod:`.chainengine`);
    None or an inactive one changes nothing.
    """
    if allocation is not None and allocation.active:
        from .chainengine import ChainSimulation

        simulation = ChainSimulation(scheduler, split, time_model, table, seed, record_events, deadline_s,
                                     allocation)
        return simulation.run(algorithm or getattr(scheduler, "name", type(scheduler).__name__), seed)
    simulation = _Simulation(scheduler, split, time_model, table, seed, record_events, deadline_s, epoch_by_epoch)
    return simulation.run(algorithm or getattr(scheduler, "name", type(scheduler).__name__), seed)
