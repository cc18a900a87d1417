"""Ray Tune's HyperBandScheduler and HyperBandForBOHB, decision for decision, together with the
part of Ray's TuneController that decides when trials are created and which one runs next.

Read from Ray 2.60 (``python/ray/tune/schedulers/hyperband.py``, ``hb_bohb.py``,
``python/ray/tune/execution/tune_controller.py``, ``python/ray/air/execution/_internal/
actor_manager.py``); ``tests/simulator/test_peer_streams.py`` replays decision streams produced
by Ray's own classes (``bench/peers/``) and requires them identical.

Bracket rules (``_RayBracket``, Ray's ``_Bracket``):

* a trial joins the *current* bracket while it holds fewer live trials than its current size
  (``filled()``; a failed trial leaves room that the next created trial takes: it trains from
  epoch 0 up to the bracket's milestone); otherwise the next bracket of the band opens
  (HyperBand: s = 0, 1, ...; BOHB: largest first);
* a bracket halves once every live trial reached its milestone (``cur_iter_done``): Ray's
  stable ``sorted`` by ``metric_op * metric`` keeps the last ``ceil(n/eta)`` (ties and NaN order
  as in Ray, since the same sort runs on the same list in the same order); live trials stay in
  the order they joined;
* completion for the bracket order is ``progress / _calculate_total_work`` with Ray's own total
  (its ``cumulative_r`` is never advanced, so the totals are 405/378/414/474/404 for max_t 81);
* at the last rung a trial PAUSEs until the whole rung has reported, then the paused ones stop
  (completed); after a bracket's first halving Ray no longer processes it when a trial leaves
  (``is_being_processed`` stays set).

The controller model (``TuneController.step``: ask the searcher, then ``_maybe_add_actors``,
then one event):

* up to ``pending`` trials wait created-but-not-started (Ray's ``max_pending_trials``: 200 or
  more with the default ``BasicVariantGenerator``, 1 with a custom searcher such as TuneBOHB);
  each is assigned its bracket when it is created (``on_trial_add``);
* after every event (a result, a failure, a start) ``choose_trial_to_run`` is asked once; a
  PAUSED trial it names is staged (PENDING) and queued;
* free GPUs go to the queue first in, first out (the actor manager starts pending actors in
  request order), so a staged trial waits behind the new trials created before it.

One departure: where Ray's HyperBandScheduler would wait forever (a failure completed a rung
of a bracket that was already halved once, so no result will ever process it), nasalloc
processes the bracket once nothing runs, as HyperBandForBOHB's ``choose_trial_to_run`` does.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import groupby
from operator import attrgetter
from typing import Optional

import numpy as np

from .base import (COMPLETED, DONE, PAUSED, PENDING, RUNNING, STOPPED, WAIT, Decision,
                   Resume, Start)
from .common import jfloat, ufloat

#: Ray's default max_pending_trials with BasicVariantGenerator (min_autoscaling_rate)
BASIC_VARIANT_PENDING = 200
_RATIO = attrgetter("ratio")  # a bracket's completion(), kept as its trials report


class _RayBracket:
    """Ray's ``_Bracket``: plain data, saved as a dict."""

    __slots__ = ("index", "s", "n", "r", "halves", "max_t", "eta", "live", "progress",
                 "total_work", "to_unpause", "processed", "queued", "reached", "ratio", "unstaged")

    def __init__(self, index: int, s: int, n0: int, r0: int, max_t: int, eta: int):
        self.index = index  # brackets opened before it (its shape: shapes[index % len(shapes)])
        self.s, self.n, self.r, self.halves = s, n0, r0, s
        self.max_t, self.eta = max_t, eta
        self.live: dict[int, list] = {}  # trial -> [epoch, metric_op * metric]; epoch 0: none yet
        self.progress = 0
        self.total_work = self._total_work(n0, r0, s)
        self.to_unpause: set[int] = set()
        self.processed = False  # Ray's is_being_processed: set at the first halving, never reset
        self.queued: set[int] = set()  # its trials in the controller's queue (Ray: PENDING)
        self.unstaged: set[int] = set()  # of to_unpause: PAUSED, not queued (kept by _touch)
        self.reached = 0  # live trials at or past the milestone r (kept as results come)
        self.ratio = self.completion()  # kept up to date by every change below

    def _count_reached(self) -> None:
        self.reached = sum(1 for epoch, _ in self.live.values() if epoch >= self.r)
        self.ratio = self.completion()

    def join(self, trial_id: int) -> None:
        self.live[trial_id] = [0, math.nan]
        self.ratio = self.completion()

    def report(self, trial_id: int, epoch: int, score: float) -> None:
        """A live trial's result: Ray's progress counter, its [epoch, score], the reached count."""
        entry = self.live[trial_id]
        self.progress += epoch - entry[0]
        if entry[0] < self.r <= epoch:
            self.reached += 1
        entry[0], entry[1] = epoch, score
        self.ratio = self.completion()

    def drop(self, trial_id: int) -> None:
        """The trial leaves the bracket (stopped, failed, or halved away)."""
        entry = self.live.pop(trial_id, None)
        if entry is not None and entry[0] >= self.r:
            self.reached -= 1
        self.ratio = self.completion()

    def _total_work(self, n, r, s) -> int:
        work, cumulative_r = 0, r  # Ray never advances cumulative_r: kept on purpose
        for _ in range(s + 1):
            work += int(n) * int(r)
            n = int(np.ceil(n / self.eta))
            r = int(min(r * self.eta, self.max_t - cumulative_r))
        return work

    def filled(self) -> bool:
        return len(self.live) == self.n

    def cur_iter_done(self) -> bool:
        return self.reached == len(self.live)  # all(epoch >= r for every live trial)

    def finished(self) -> bool:
        return self.halves == 0 and self.cur_iter_done()

    def completion(self) -> float:
        if self.finished():
            return 1.0
        return min(self.progress / self.total_work, 1.0)

    def halve(self) -> tuple[list[int], list[int]]:
        self.halves -= 1
        self.n = int(np.ceil(self.n / self.eta))
        self.r = int(min(self.r * self.eta, self.max_t))
        self._count_reached()
        ranked = sorted(self.live, key=lambda t: self.live[t][1])
        return ranked[-self.n:], ranked[:-self.n]

    def to_dict(self) -> dict:
        return {"index": self.index, "s": self.s, "n": self.n, "r": self.r, "halves": self.halves,
                "live": [[t, e, jfloat(m)] for t, (e, m) in self.live.items()],
                "progress": self.progress, "total_work": self.total_work,
                "to_unpause": sorted(self.to_unpause), "processed": self.processed,
                "queued": sorted(self.queued)}

    @classmethod
    def from_dict(cls, data: dict, max_t: int, eta: int) -> "_RayBracket":
        bracket = cls.__new__(cls)
        bracket.max_t, bracket.eta = max_t, eta
        for key in ("index", "s", "n", "r", "halves", "progress", "total_work", "processed"):
            setattr(bracket, key, data[key])
        bracket.queued = set(data["queued"])
        bracket.live = {int(t): [int(e), ufloat(m)] for t, e, m in data["live"]}
        bracket.to_unpause = set(data["to_unpause"])
        bracket.unstaged = set()  # the owner's _touch fills it
        bracket._count_reached()
        return bracket


class RayBands:
    """The bracket and controller half of a :class:`HyperBand` with ``semantics="ray"``.

    ``owner`` is the scheduler: it keeps the trial book (statuses, configs) and samples configs.
    ``for_bohb`` selects HyperBandForBOHB's rules (largest bracket first, pause until every
    other trial of the bracket is paused, its own ``choose_trial_to_run``).
    """

    def __init__(self, owner, *, for_bohb: bool, pending: int):
        self.owner = owner
        self.for_bohb = for_bohb
        self.pending = pending
        max_t, min_t, eta = owner.max_t, owner.min_t, owner.eta
        # Ray has no min_t: log(max_t) there; a first milestone below min_t counts as "too small"
        self.s_max_1 = int(np.round(np.log(max_t / min_t) / np.log(eta))) + 1
        self.bands: list[list[Optional[_RayBracket]]] = [[]]
        self.current: Optional[tuple[int, int]] = None  # (band, position) of the bracket filling
        self.opened = 0
        self.bracket_of: dict[int, tuple[int, int]] = {}
        self.queue: deque[int] = deque()  # the actor requests, first in first out
        self.queued: set[int] = set()
        self.active: dict[tuple[int, int], _RayBracket] = {}  # brackets with a trial to offer
        self.trials_limit = owner.trials_limit
        if self.trials_limit is None:  # brackets=N: the trials of the first N brackets
            shapes = owner.shapes
            self.trials_limit = sum(shapes[k % len(shapes)][0][0]
                                    for k in range(owner.brackets_limit))

    # -- Ray's pieces --------------------------------------------------------------------------
    def _n0(self, s: int) -> int:
        return int(np.ceil(self.s_max_1 / (s + 1) * self.owner.eta ** s))

    def _r0(self, s: int) -> int:
        return int(self.owner.max_t * self.owner.eta ** (-s))

    def _bracket(self, where: tuple[int, int]) -> _RayBracket:
        return self.bands[where[0]][where[1]]

    def _ray_status(self, trial_id: int) -> str:
        """Ray's view: a created trial not started yet, or a staged paused one, is PENDING."""
        status = self.owner._status[trial_id]
        if status == PAUSED and trial_id in self.queued:
            return PENDING
        return status

    def on_trial_add(self, trial_id: int) -> None:
        where = self.current
        if where is None or self._bracket(where).filled():
            while True:
                if len(self.bands[-1]) == self.s_max_1:
                    self.bands.append([])
                band = self.bands[-1]
                s = self.s_max_1 - len(band) - 1 if self.for_bohb else len(band)
                r0 = self._r0(s)
                bracket = None
                if r0 >= self.owner.min_t and r0 > 0:
                    bracket = _RayBracket(self.opened, s, self._n0(s), r0, self.owner.max_t,
                                          self.owner.eta)
                    self.opened += 1
                band.append(bracket)
                if bracket is not None:
                    where = (len(self.bands) - 1, len(band) - 1)
                    break
            self.current = where
        self._bracket(where).join(trial_id)
        self.bracket_of[trial_id] = where

    def _stop_paused(self, trial_id: int) -> None:
        """TuneController.stop_trial of a PAUSED/PENDING trial: on_trial_remove, TERMINATED."""
        where = self.bracket_of[trial_id]
        bracket = self._bracket(where)
        epoch = bracket.live.get(trial_id, [0])[0]
        self._unqueue(trial_id)
        self.owner._set(trial_id, self._ended_status(bracket, epoch))
        self._on_trial_remove(trial_id)

    def _ended_status(self, bracket: _RayBracket, epoch: int) -> str:
        return COMPLETED if bracket.halves == 0 and epoch >= bracket.r else STOPPED

    def _on_trial_remove(self, trial_id: int) -> None:
        bracket = self._bracket(self.bracket_of[trial_id])
        bracket.drop(trial_id)
        if not bracket.finished() and not bracket.processed:
            self._process(bracket)

    def _process(self, bracket: _RayBracket) -> Decision:
        """HyperBandScheduler._process_bracket; the reporter is the one RUNNING live trial."""
        action = Decision.PAUSE
        if not bracket.cur_iter_done():
            return action
        if bracket.finished():
            for trial_id in list(bracket.live):
                if self._ray_status(trial_id) == PAUSED:
                    self._stop_paused(trial_id)
            return Decision.STOP
        bracket.processed = True
        good, bad = bracket.halve()
        for trial_id in bad:
            status = self._ray_status(trial_id)
            if status == PAUSED:
                self._stop_paused(trial_id)
            elif status == RUNNING:
                bracket.drop(trial_id)
                action = Decision.STOP
            else:
                raise RuntimeError(f"trial {trial_id} is {status} at a halving (Ray: TuneError)")
        for trial_id in good:
            status = self._ray_status(trial_id)
            if bracket.live[trial_id][0] < bracket.r:  # continue_trial
                if status == PAUSED:
                    bracket.to_unpause.add(trial_id)
                    self._touch(self.bracket_of[trial_id], trial_id)
                elif status == RUNNING:
                    action = Decision.CONTINUE
            elif bracket.finished():
                if status == PAUSED:
                    self._stop_paused(trial_id)
                elif status == RUNNING:
                    bracket.drop(trial_id)
                    action = Decision.STOP
        return action

    def _candidate(self, bracket: _RayBracket) -> Optional[int]:
        """The first live trial that is PENDING, or PAUSED and promoted. Trials join a bracket
        when created, so live order is trial-id order: the smallest such id."""
        paused = [t for t in bracket.unstaged if self.owner._status[t] == PAUSED]
        if not paused and not bracket.queued:  # (promoted and staged ones are in queued)
            return None
        return min(bracket.queued.union(paused))

    def _choose(self, allow_recurse: bool = True) -> Optional[int]:
        """choose_trial_to_run (HyperBandScheduler: least complete bracket of each band first;
        HyperBandForBOHB: brackets in order, and halve paused brackets once nothing runs)."""
        # Only brackets with a PENDING or promoted trial can answer; filtering before the
        # stable sort keeps the order Ray's sort of the whole band gives them.
        # completion() is O(1): progress and the reached count are kept as results come.
        for _, group in groupby(sorted(self.active.items()), key=lambda item: item[0][0]):
            brackets = [bracket for _, bracket in group]
            if not self.for_bohb and len(brackets) > 1:
                brackets.sort(key=_RATIO)
            for bracket in brackets:
                trial_id = self._candidate(bracket)
                if trial_id is not None:
                    return trial_id
        if self.for_bohb and not self.owner._running:
            for band in self.bands:
                for bracket in band:
                    if bracket is None or not any(self._ray_status(t) == PAUSED
                                                  for t in bracket.live):
                        continue
                    self._process(bracket)
                    if allow_recurse and self._candidate(bracket) is not None:
                        return self._choose(allow_recurse=False)
        return None

    # -- the controller ------------------------------------------------------------------------
    def _touch(self, where: tuple[int, int], trial_id: Optional[int] = None) -> None:
        """``trial_id`` joined or left the bracket's queue or to_unpause set (None: any did):
        keep its unstaged set (promoted PAUSED trials not staged yet; a trial that ends is
        filtered by status where the set is read) and whether it has a trial to offer."""
        bracket = self._bracket(where)
        status = self.owner._status
        if trial_id is None:
            bracket.unstaged = {t for t in bracket.to_unpause if status[t] == PAUSED and t not in self.queued}
        elif trial_id in bracket.to_unpause and status[trial_id] == PAUSED and trial_id not in self.queued:
            bracket.unstaged.add(trial_id)
        else:
            bracket.unstaged.discard(trial_id)
        if bracket.queued or any(status[t] == PAUSED for t in bracket.unstaged):
            self.active[where] = bracket
        else:
            self.active.pop(where, None)

    def _enqueue(self, trial_id: int) -> None:
        self.queue.append(trial_id)
        self.queued.add(trial_id)
        where = self.bracket_of[trial_id]
        self._bracket(where).queued.add(trial_id)
        self._touch(where, trial_id)

    def _unqueue(self, trial_id: int) -> None:
        if trial_id in self.queued:
            self.queue.remove(trial_id)
            self.queued.discard(trial_id)
            where = self.bracket_of[trial_id]
            self._bracket(where).queued.discard(trial_id)
            self._touch(where, trial_id)

    def step(self) -> None:
        """What TuneController.step does before it handles the next event."""
        owner = self.owner
        if (owner._running or not self.for_bohb) and self.settled():
            return  # nothing to create or stage: Ray's step would change nothing (cheaper to ask)
        while len(self.queue) < self.pending and owner._next_id < self.trials_limit:
            trial_id = owner._new_trial(owner._new_config(), status=PENDING)
            self.on_trial_add(trial_id)
            self._enqueue(trial_id)
        trial_id = self._choose()
        if trial_id is not None and self._ray_status(trial_id) == PAUSED:
            self._enqueue(trial_id)

    def suggest(self):
        owner = self.owner
        self.step()
        if not self.queue and not owner._running and owner._paused:  # (nothing paused: nothing to unstick)
            self._unstick()
        if self.queue:
            trial_id = self.queue[0]
            fresh = owner._status[trial_id] == PENDING
            owner._set(trial_id, RUNNING)
            self._unqueue(trial_id)  # after the status: a running promoted trial offers nothing
            milestone = self._bracket(self.bracket_of[trial_id]).r
            self.step()
            if fresh:
                return Start(trial_id, owner._configs[trial_id], milestone)
            return Resume(trial_id, milestone)
        if owner._running:
            return WAIT
        for trial_id in owner.paused_trials():  # nothing can run any more
            where = self.bracket_of[trial_id]
            owner._set(trial_id, self._ended_status(self._bracket(where),
                                                    self._bracket(where).live[trial_id][0]))
        return DONE

    def _unstick(self) -> None:
        """Where Ray's HyperBandScheduler would wait forever (see the module docstring)."""
        for band in self.bands:
            for bracket in band:
                if bracket is not None and any(self._ray_status(t) == PAUSED
                                               for t in bracket.live):
                    self._process(bracket)
        self.step()

    def on_result(self, trial_id: int, epoch: int, metric: float) -> Decision:
        owner = self.owner
        bracket = self._bracket(self.bracket_of[trial_id])
        bracket.report(trial_id, epoch, owner.signed(metric))
        if trial_id in bracket.to_unpause:
            bracket.to_unpause.discard(trial_id)
            self._touch(self.bracket_of[trial_id], trial_id)
        if epoch < bracket.r:
            decision = Decision.CONTINUE
        elif self.for_bohb and (not bracket.filled() or any(
                self._ray_status(t) != PAUSED for t in bracket.live if t != trial_id)):
            decision = Decision.PAUSE
        else:
            decision = self._process(bracket)
        if decision is Decision.PAUSE:
            owner._set(trial_id, PAUSED)
        elif decision is Decision.STOP:  # stop_trial of a RUNNING trial: on_trial_complete
            owner._set(trial_id, self._ended_status(bracket, epoch))
            self._on_trial_remove(trial_id)
        self.step()
        return decision

    def on_failure(self, trial_id: int) -> None:
        """on_trial_error -> on_trial_remove (the owner has marked it failed)."""
        self._on_trial_remove(trial_id)
        self.step()

    def settled(self) -> bool:
        """Whether step() on the next event would do nothing: no trial to create, and no
        promoted PAUSED trial left to stage (whatever order the brackets' completion gives)."""
        owner = self.owner
        if len(self.queue) < self.pending and owner._next_id < self.trials_limit:
            return False
        status = owner._status
        for bracket in self.active.values():
            for trial_id in bracket.unstaged:
                if status[trial_id] == PAUSED:
                    return False
        return True

    def waits(self) -> bool:
        """suggest() would answer WAIT: its step() would do nothing, nothing is queued, and a
        trial runs (else it would unstick or end)."""
        return not self.queue and bool(self.owner._running) and self.settled()

    def milestone_of(self, trial_id: int) -> int:
        return self._bracket(self.bracket_of[trial_id]).r

    def bracket_index(self, trial_id: int) -> int:
        return self._bracket(self.bracket_of[trial_id]).index

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"bands": [[None if b is None else b.to_dict() for b in band]
                          for band in self.bands],
                "current": None if self.current is None else list(self.current),
                "bracket_of": {str(t): list(w) for t, w in self.bracket_of.items()},
                "queue": list(self.queue), "opened": self.opened}

    def load_state_dict(self, state: dict) -> None:
        max_t, eta = self.owner.max_t, self.owner.eta
        self.bands = [[None if b is None else _RayBracket.from_dict(b, max_t, eta) for b in band]
                      for band in state["bands"]]
        self.current = None if state["current"] is None else tuple(state["current"])
        self.bracket_of = {int(t): tuple(w) for t, w in state["bracket_of"].items()}
        self.queue = deque(state["queue"])
        self.queued = set(self.queue)
        self.opened = int(state["opened"])
        self.active = {}
        for b, band in enumerate(self.bands):
            for p, bracket in enumerate(band):
                if bracket is not None:
                    self._touch((b, p))
