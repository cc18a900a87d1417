"""Synchronous HyperBand (Li et al. 2018; Ray Tune's HyperBandScheduler), the base of BOHB.

A bracket is successive halving over its rungs ``(n, epochs)``: its trials train to the rung's
milestone and PAUSE; once every live trial of the rung has reported (failed ones are dropped),
the best ``n`` of the next rung resume from their checkpoints and the rest are stopped.

The bracket half lives in one of two objects, by semantics:

* ``ray``: :class:`.ray_bands.RayBands`, Ray Tune's HyperBandScheduler / HyperBandForBOHB and
  the TuneController's trial creation and start order, decision for decision;
* ``reference``: :class:`ReferenceBands` below: Li et al.'s brackets for HyperBand; for BOHB
  HpBandSter 0.7.4's master and SuccessiveHalving iterations (``core/master.py``,
  ``core/base_iteration.py``): the oldest open bracket is served first and a new one opens only
  when no open bracket has runnable work; configs are created when a slot asks.

Termination: ``trials=N`` stops creating trials after N (the last bracket may be partial and
keeps ``min(live, n)`` at each rung), or ``brackets=N`` runs N brackets (bracket k has the shape
``k mod (s_max + 1)``).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Optional

import numpy as np

from nasalloc.errors import UserError

from .base import (COMPLETED, DONE, FAILED, PAUSED, RUNNING, STOPPED, WAIT, Action, Decision,
                   Resume, Start)
from .brackets import check_budget, check_semantics, hyperband_brackets
from .common import SchedulerCore, SeedLike, check_count, jfloat, ufloat
from .ray_bands import BASIC_VARIANT_PENDING, RayBands


class _Bracket:
    """Successive halving state of one bracket (plain data, saved as a dict)."""

    __slots__ = ("index", "shape", "level", "to_start", "live", "results", "to_resume")

    def __init__(self, index: int, shape: list):
        self.index = index
        self.shape = [list(rung) for rung in shape]  # [[n, epochs], ...]
        self.level = 0
        self.to_start = self.shape[0][0]
        self.live: list[int] = []  # trials still in the bracket at this level
        self.results: dict[int, float] = {}  # score at this level's milestone
        self.to_resume: list[int] = []  # promoted, waiting for a slot

    @property
    def milestone(self) -> int:
        return self.shape[self.level][1]

    @property
    def is_last(self) -> bool:
        return self.level == len(self.shape) - 1

    def to_dict(self) -> dict:
        return {"index": self.index, "shape": self.shape, "level": self.level,
                "to_start": self.to_start, "live": list(self.live),
                "results": [[t, jfloat(s)] for t, s in self.results.items()],
                "to_resume": list(self.to_resume)}

    @classmethod
    def from_dict(cls, data: dict) -> "_Bracket":
        bracket = cls(data["index"], data["shape"])
        bracket.level = data["level"]
        bracket.to_start = data["to_start"]
        bracket.live = list(data["live"])
        bracket.results = {int(t): ufloat(s) for t, s in data["results"]}
        bracket.to_resume = list(data["to_resume"])
        return bracket


class ReferenceBands:
    """Brackets served oldest first, trials created when a slot asks (``semantics="reference"``).

    With ``hpbandster`` (BOHB) the rules of HpBandSter's SuccessiveHalving iteration: a
    non-finite metric at a milestone is a crashed run (never promoted); promoted trials resume
    in the order they were created, the trial that completed the rung included (its job ended:
    it pauses like the others); when fewer survive a rung than the next rung's size, new
    configs are started straight into the next rung (``get_next_run`` -> ``add_configuration``).
    Ranks are HpBandSter's ``argsort(argsort(losses))`` over the rung in creation order, so equal
    losses fall as numpy's (unstable, CPU-dependent SIMD) quicksort puts them, as in HpBandSter.
    Li et al.'s HyperBand: the reporter continues when promoted, the rest resume best first.
    """

    def __init__(self, owner, *, hpbandster: bool):
        self.owner = owner
        self.hpbandster = hpbandster
        self.brackets: dict[int, _Bracket] = {}  # open brackets, by index
        self.bracket_of: dict[int, int] = {}
        self.opened = 0

    def suggest(self) -> Action:
        owner = self.owner
        for bracket in self.brackets.values():
            if bracket.to_resume:
                trial_id = bracket.to_resume.pop(0)
                owner._set(trial_id, RUNNING)
                return Resume(trial_id, bracket.milestone)
            if bracket.to_start > 0:
                return self._start_in(bracket)
        if owner._may_create() and (owner.brackets_limit is None
                                    or self.opened < owner.brackets_limit):
            bracket = _Bracket(self.opened, owner.shapes[self.opened % len(owner.shapes)])
            self.opened += 1
            self.brackets[bracket.index] = bracket
            return self._start_in(bracket)
        if owner._running:
            return WAIT
        for trial_id in owner.paused_trials():  # nothing can run any more
            owner._set(trial_id, STOPPED)
        self.brackets.clear()
        return DONE

    def _start_in(self, bracket: _Bracket) -> Start:
        owner = self.owner
        trial_id = owner._new_trial(owner._new_config())
        bracket.to_start -= 1
        bracket.live.append(trial_id)
        self.bracket_of[trial_id] = bracket.index
        if not owner._may_create():  # trial budget spent: brackets being filled stay partial
            for other in list(self.brackets.values()):
                other.to_start = 0
                self._advance(other, reporter=None)
        return Start(trial_id, owner._configs[trial_id], bracket.milestone)

    def on_result(self, trial_id: int, epoch: int, metric: float) -> Decision:
        owner = self.owner
        bracket = self.brackets[self.bracket_of[trial_id]]
        if epoch < bracket.milestone:
            return Decision.CONTINUE
        if self.hpbandster and not math.isfinite(float(metric)):  # a crashed run
            owner._set(trial_id, STOPPED)
            bracket.live.remove(trial_id)
            self._advance(bracket, reporter=None)
            return Decision.STOP
        bracket.results[trial_id] = owner.score(metric)
        if bracket.is_last:
            owner._set(trial_id, COMPLETED)
            bracket.live.remove(trial_id)
            self._close_if_empty(bracket)
            return Decision.STOP
        owner._set(trial_id, PAUSED)
        return self._advance(bracket, reporter=trial_id)

    def on_failure(self, trial_id: int) -> None:
        bracket = self.brackets[self.bracket_of[trial_id]]
        bracket.live.remove(trial_id)
        bracket.results.pop(trial_id, None)
        if bracket.is_last:
            self._close_if_empty(bracket)
        else:
            self._advance(bracket, reporter=None)

    def _advance(self, bracket: _Bracket, reporter: Optional[int]) -> Decision:
        """Halve the bracket once every live trial has reached the rung; the reporter (the
        trial whose result completed the rung) continues at once when promoted (Li et al.)."""
        if bracket.to_start > 0 or bracket.is_last or len(bracket.results) < len(bracket.live):
            self._close_if_empty(bracket)
            return Decision.PAUSE
        owner = self.owner
        keep = bracket.shape[bracket.level + 1][0]
        if self.hpbandster:  # SuccessiveHalving: ranks = argsort(argsort(losses)) < keep
            ids = sorted(bracket.live)
            ranks = np.argsort(np.argsort([-bracket.results[t] for t in ids]))
            good = [t for t, rank in zip(ids, ranks) if rank < keep]
            bad = [t for t, rank in zip(ids, ranks) if rank >= keep]
        else:
            ranked = sorted(bracket.live, key=lambda t: (-bracket.results[t], t))
            good, bad = ranked[:keep], ranked[keep:]
        decision = Decision.PAUSE
        for trial_id in bad:
            owner._set(trial_id, STOPPED)
            if trial_id == reporter:
                decision = Decision.STOP
        bracket.level += 1
        bracket.live = good
        bracket.results = {}
        if self.hpbandster:  # HpBandSter: QUEUED configs in the order they were created
            bracket.to_resume.extend(sorted(good))
            room = math.inf if owner.trials_limit is None else owner.trials_limit - owner._next_id
            bracket.to_start = int(min(keep - len(good), room))
        else:
            for trial_id in good:
                if trial_id == reporter:
                    owner._set(trial_id, RUNNING)
                    decision = Decision.CONTINUE
                else:
                    bracket.to_resume.append(trial_id)
        self._close_if_empty(bracket)
        return decision

    def _close_if_empty(self, bracket: _Bracket) -> None:
        if bracket.to_start == 0 and not bracket.live:
            self.brackets.pop(bracket.index, None)

    def settled(self) -> bool:
        return True  # an epoch before the milestone changes nothing here

    def waits(self) -> bool:
        return False  # not worked out for these rules: the driver asks

    def milestone_of(self, trial_id: int) -> Optional[int]:
        bracket = self.brackets.get(self.bracket_of[trial_id])
        return None if bracket is None else bracket.milestone

    def bracket_index(self, trial_id: int) -> int:
        return self.bracket_of[trial_id]

    def state_dict(self) -> dict:
        return {"brackets": [b.to_dict() for b in self.brackets.values()],
                "bracket_of": {str(t): b for t, b in self.bracket_of.items()},
                "opened": self.opened}

    def load_state_dict(self, state: dict) -> None:
        self.brackets = {b["index"]: _Bracket.from_dict(b) for b in state["brackets"]}
        self.bracket_of = {int(t): b for t, b in state["bracket_of"].items()}
        self.opened = int(state["opened"])


class HyperBand(SchedulerCore):
    name = "hyperband"
    algorithm = "hyperband"

    def __init__(self, source, *, max_t: int, min_t: int = 1, eta: int = 3,
                 semantics: str = "ray", mode: str = "max", seed: SeedLike = 0,
                 trials: Optional[int] = None, brackets: Optional[int] = None,
                 pending: Optional[int] = None):
        max_t, min_t, eta = check_budget(max_t, min_t, eta)
        super().__init__(max_t=max_t, mode=mode, seed=seed)
        self.semantics = check_semantics(semantics)
        self.min_t, self.eta = min_t, eta
        self.source = source
        self.shapes = hyperband_brackets(max_t, eta, min_t, semantics, self.algorithm)
        self.trials_limit, self.brackets_limit = _one_limit(trials, brackets)
        self.milestones = sorted({epochs for shape in self.shapes for _, epochs in shape})
        self._milestone_set = set(self.milestones)
        self._source_state = source.new_state()
        if semantics == "ray":
            if pending is None:  # a plain Tuner's BasicVariantGenerator; TuneBOHB: one ahead
                pending = 1 if self.algorithm == "bohb" else BASIC_VARIANT_PENDING
            self.pending = check_count("pending", pending)
            self._bands = RayBands(self, for_bohb=self.algorithm == "bohb", pending=self.pending)
        else:
            if pending is not None:
                raise UserError(f"pending={pending!r}: only Ray semantics create trials ahead "
                                "(reference semantics create a trial when a slot asks)")
            self._bands = ReferenceBands(self, hpbandster=self.algorithm == "bohb")

    # -- what to run --------------------------------------------------------------------------
    def suggest(self) -> Action:
        return self._bands.suggest()

    def _may_create(self) -> bool:
        return self.trials_limit is None or self._next_id < self.trials_limit

    def _new_config(self) -> dict:
        """Where a new trial's config comes from (BOHB overrides this)."""
        return self.source.sample(self._rng, self._source_state)

    def _observe(self, trial_id: int, epoch: int, metric: float) -> None:
        """A result at a milestone epoch (BOHB keeps it for its model)."""

    def _observe_failure(self, trial_id: int) -> None:
        """A trial failed (BOHB counts it as a bad result)."""

    # -- results -------------------------------------------------------------------------------
    def on_result(self, trial_id: int, epoch: int, metric: float) -> Decision:
        self._check_running(trial_id, epoch)
        if epoch in self._milestone_set:
            self._observe(trial_id, epoch, metric)
        return self._bands.on_result(trial_id, epoch, metric)

    def on_failure(self, trial_id: int) -> None:
        self._check_running(trial_id)
        self._set(trial_id, FAILED)
        self._observe_failure(trial_id)
        self._bands.on_failure(trial_id)

    def milestone_of(self, trial_id: int) -> Optional[int]:
        """The milestone the trial is training towards (None once its bracket closed)."""
        return self._bands.milestone_of(trial_id)

    def next_decision_epoch(self, trial_id: int, epoch: int) -> int:
        """The next milestone of any bracket (BOHB observes results there), at the latest the
        trial's own: both semantics answer a plain CONTINUE before it."""
        k = bisect.bisect_right(self.milestones, epoch)
        nearest = self.milestones[k] if k < len(self.milestones) else epoch + 1
        own = self._bands.milestone_of(trial_id)
        return nearest if own is None or own <= epoch else min(nearest, own)

    def settled(self) -> bool:
        return self._bands.settled()

    def waits(self) -> bool:
        return self._bands.waits()

    def bracket_index(self, trial_id: int) -> int:
        """Brackets opened before the trial's; its shape is ``shapes[index % len(shapes)]``."""
        return self._bands.bracket_index(trial_id)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self._core_state(), "bands": self._bands.state_dict(),
                "source_state": self._source_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state of {state.get('name')!r} loaded into {self.name!r}")
        self._load_core_state(state)
        self._bands.load_state_dict(state["bands"])
        self._source_state = state["source_state"]


def _one_limit(trials: Optional[int], brackets: Optional[int]):
    if (trials is None) == (brackets is None):
        raise UserError(f"trials={trials!r}, brackets={brackets!r}: give exactly one of "
                        "trials (how many trials to create) or brackets (how many brackets)")
    if trials is not None:
        return check_count("trials", trials), None
    return None, check_count("brackets", brackets)
