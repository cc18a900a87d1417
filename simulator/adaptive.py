"""The SimPy engine under an adaptive allocation policy (:mod:`.policies`).

Same engine as :mod:`.engine` (same scheduler calls, priorities, noise streams, milestone-to-
milestone stretches with the epoch-by-epoch reference path), with two differences:

* no fixed slots: ``budget // policy.min_gpus`` workers ask the scheduler for work, and each
  segment takes the GPUs the policy gives it from a :class:`.gpupool.GpuPool` (first come,
  first served; a request that does not fit waits, the ones behind it too) and frees them at
  its end;
* a resize: when a trial continues past a rung and the policy gives its next segment another
  GPU count, it saves a checkpoint at the old size (``checkpoint_save_s`` of g_old), frees its
  GPUs, waits for the new group, then pays the resumed start-up (``resume_s``, else
  ``startup_s``, of g_new, with its start-up noise) and the load (``checkpoint_load_s`` of
  g_new). Its records: a ``pause`` and a ``resume`` with ``extra.resize`` (the scheduler saw
  neither: to it the trial ran on). Every epoch record carries the GPUs of its segment.

With ``scaling`` (the ``per_gpu`` batch policy with a measured noise scale) a segment's global
batch is the config's batch times its GPUs, and the trial's curve from there on is its recorded
one continued at that batch from where the earlier segments left it
(:class:`.batchscaling.ResizedCurves`; the validation runner scales the learning rate by RASDA's
rule at each size, the assumption the stretch makes).

A stretch never runs past the trial's next rung (``Ask.next_rung``): the level can change only
there, so both paths ask the policy after the very same results.
"""

from __future__ import annotations

import math
from collections import deque


from nasalloc.records import Event

from .batchscaling import ResizedCurves
from .cluster import make_split
from .engine import ROW_KEY, _Simulation, _Trial
from .gpupool import GpuPool
from .policies import ask_for, rung_ladder
from .schedulers.base import Decision, Resume, Start
from .simresult import SimulationResult

__all__ = ["simulate_policy"]


class _AdaptiveSimulation(_Simulation):
    def __init__(self, scheduler, policy, time_model, table, seed, record_events, deadline_s, epoch_by_epoch,
                 scaling=None):
        split = make_split(policy.budget, policy.gpus_per_node, policy.min_gpus)
        super().__init__(scheduler, split, time_model, table, seed, record_events, deadline_s, epoch_by_epoch)
        self.policy, self.time_model = policy, time_model
        self.pool = GpuPool(policy.budget, policy.gpus_per_node)
        self.gpu_queue: deque = deque()  # (gpus, event) of segments waiting for their group
        self.ladder = rung_ladder(scheduler)
        self.first: dict[int, int] = {}  # trial -> the milestone it started towards
        self.gpus_of: dict[int, int] = {}  # trial -> GPUs of its current (or last) segment
        self.cost_cache: dict[int, tuple] = {}
        self.workers = policy.budget // policy.min_gpus
        self.busy_gpu_s = 0.0
        self.resizes = 0
        self.resized_curves = ResizedCurves(table, scaling) if scaling is not None and scaling.active else None
        self.curve_gpus: dict[int, int] = {}  # trial -> the GPUs its curve is continued at
        self.positions: dict[int, list] = {}  # trial -> its position on the recorded epoch axis per epoch

    def costs(self, g: int) -> tuple:
        """(epoch s of the reference config, startup, resume, save, load, round trip) at g GPUs."""
        if g not in self.cost_cache:
            tm, n = self.time_model, self.policy.gpus_per_node
            nodes = 1 if g <= n else g // n
            epoch_s = tm.reference_epoch_seconds(g, nodes)
            if self.run_factor != 1.0:
                epoch_s *= self.run_factor
            self.cost_cache[g] = (epoch_s, tm.overhead("startup_s", g), tm.overhead("resume_s", g),
                                  tm.overhead("checkpoint_save_s", g), tm.overhead("checkpoint_load_s", g),
                                  tm.overhead("roundtrip_s", g))
        return self.cost_cache[g]

    def ask(self, trial):
        return ask_for(self.scheduler, self.ladder, trial.trial_id, self.first[trial.trial_id], trial.epoch)

    # -- GPUs -----------------------------------------------------------------------------------
    def acquire(self, g: int):
        got = None if self.gpu_queue else self.pool.take(g)
        if got is None:
            wake = self.env.event()
            self.gpu_queue.append((g, wake))
            self.yields += 1
            got = yield wake
        return got

    def release(self, gpus) -> None:
        self.pool.give(gpus)
        while self.gpu_queue:
            g, wake = self.gpu_queue[0]
            got = self.pool.take(g)
            if got is None:
                break
            self.gpu_queue.popleft()
            wake.succeed(got)

    def set_gpus(self, trial: _Trial, g: int) -> None:
        """The trial's next segment runs on ``g`` GPUs; under per_gpu its curve continues at g's batch."""
        self.gpus_of[trial.trial_id] = g
        if self.resized_curves is None or self.curve_gpus.get(trial.trial_id) == g:
            return
        self.curve_gpus[trial.trial_id] = g
        done = self.positions.get(trial.trial_id, [])[:trial.epoch]
        more = self.resized_curves.continue_row(trial.row, g, trial.epoch, done[-1] if done else 0.0)
        if more is not None:
            positions, val, test = more
            self.positions[trial.trial_id] = done + positions
            trial.val, trial.test = trial.val[:trial.epoch] + val, trial.test[:trial.epoch] + test

    def epoch_gpus(self, trial: _Trial) -> float:
        return self.gpus_of[trial.trial_id]

    def put(self, gpus, **fields) -> None:
        if self.record:
            self.events.append(Event(gpus=gpus, **fields))

    # -- a segment --------------------------------------------------------------------------------
    def segment(self, action, _placement):
        env, scheduler, table = self.env, self.scheduler, self.table
        if isinstance(action, Start):
            row = int(action.config[ROW_KEY])
            trial = _Trial(action.trial_id, row, float(table.rel_cost[row]), self.noise_row(), self.curves_of(row))
            self.trials[action.trial_id] = trial
            self.first[trial.trial_id] = int(action.milestone)
        elif isinstance(action, Resume):
            trial = self.trials[action.trial_id]
        else:
            raise RuntimeError(f"{type(scheduler).__name__}.suggest() returned {action!r}")
        self.active += 1
        if isinstance(action, Resume) and trial.saved is not None:
            self.yields += 1
            yield trial.saved
        asked = env.now
        g = self.policy.gpus(self.ask(trial))
        self.set_gpus(trial, g)
        placement = yield from self.acquire(g)
        began = env.now
        extra = {"queued_s": began - asked} if began > asked else {}
        if isinstance(action, Start):
            if self.record:
                config = {k: v for k, v in action.config.items() if k != ROW_KEY}
                self.put(g, time_s=began, kind="start", trial_id=trial.trial_id, epoch=0, placement=list(placement),
                         config=config, extra={"row": row, **extra})
            training = began + self.costs(g)[1] * self.startup_factor()
        else:
            self.put(g, time_s=began, kind="resume", trial_id=trial.trial_id, epoch=trial.epoch,
                     placement=list(placement), extra=extra)
            training = began + (self.costs(g)[2] * self.startup_factor() + self.costs(g)[4])
        own = trial.priority
        if self.next_decision is None:
            self.yields += 1
            yield env.at(training, own)
        while True:
            base_s, _, _, save_s, _, roundtrip_s = self.costs(g)
            # the level can change only at the next rung: never plan a stretch past it
            cap = self.ask(trial).next_rung if self.next_decision is not None and self.quiet else None
            decision, metric, test_metric = yield from self.train_stretch(trial, training, trial.rel_cost * base_s,
                                                                          roundtrip_s, cap)
            training = env.now
            if decision is Decision.CONTINUE or decision == "continue":
                new_g = self.policy.gpus(self.ask(trial))
                if new_g == g:
                    continue
                # resize: save at the old size, free, wait for the new group, resume there
                self.resizes += 1
                self.yields += 1
                yield env.at(env.now + save_s, own)
                self.put(g, time_s=env.now, kind="pause", trial_id=trial.trial_id, epoch=trial.epoch, metric=metric,
                         test_metric=None if math.isnan(test_metric) else test_metric, extra={"resize": new_g})
                self.busy_gpu_s += g * (env.now - began)
                self.release(placement)
                asked = env.now
                g = new_g
                self.set_gpus(trial, g)
                placement = yield from self.acquire(g)
                began = env.now
                self.put(g, time_s=began, kind="resume", trial_id=trial.trial_id, epoch=trial.epoch,
                         placement=list(placement), extra={"resize": g, **({"queued_s": began - asked} if began > asked else {})})
                training = began + (self.costs(g)[2] * self.startup_factor() + self.costs(g)[4])
                if self.next_decision is None:
                    self.yields += 1
                    yield env.at(training, own)
                continue
            yield from self.close_segment(trial, decision, metric, test_metric, save_s)
            break
        self.active -= 1
        self.busy_gpu_s += g * (env.now - began)
        self.release(placement)
        self.makespan = max(self.makespan, env.now)
        self.notify()
        return own

    def run(self, algorithm: str, seed: int) -> SimulationResult:
        for _ in range(self.workers):
            self.env.process(self.slot(_NoSlot))
        self.env.run()
        if self.retired != self.workers:
            raise RuntimeError(f"{self.workers - self.retired} worker(s) still waiting when the simulation ran "
                               f"out of events: the scheduler never said DONE")
        if self.pool.free != self.policy.budget:
            raise RuntimeError(f"{self.policy.budget - self.pool.free} GPU(s) still held at the end")
        return self.finish(algorithm, seed, gpus_per_trial=math.nan, parallel_trials=self.workers, idle_gpus=0,
                           busy_gpu_s=self.busy_gpu_s)


class _NoSlot:
    gpus = ()


def simulate_policy(scheduler, policy, time_model, table, *, seed: int = 0, algorithm: str = "",
                    record_events: bool = True, deadline_s=None, epoch_by_epoch: bool = False,
                    force_pool: bool = False, scaling=None) -> SimulationResult:
    """Run ``scheduler`` to DONE under an allocation ``policy`` (see the module docstring).

    A static policy runs the engine's fixed slots (:func:`.engine.simulate`), so its records are
    exactly those of a run without a policy; ``force_pool`` is for the test that the pool path
    gives a static policy the same records too. ``scaling``: the per_gpu batch policy (see the
    module docstring); a static policy then runs on the split's stretched curves."""
    if not policy.adaptive and not force_pool:
        from .batchscaling import stretched_table
        from .engine import simulate
        split = make_split(policy.budget, policy.gpus_per_node, policy.start)
        table = stretched_table(table, policy.start, scaling)
        return simulate(scheduler, split, time_model, table, seed=seed, algorithm=algorithm,
                        record_events=record_events, deadline_s=deadline_s, epoch_by_epoch=epoch_by_epoch)
    simulation = _AdaptiveSimulation(scheduler, policy, time_model, table, seed, record_events, deadline_s,
                                     epoch_by_epoch, scaling)
    result = simulation.run(algorithm or getattr(scheduler, "name", type(scheduler).__name__), seed)
    result.resizes = simulation.resizes
    return result
