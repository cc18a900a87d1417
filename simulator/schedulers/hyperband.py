"""Synchronous HyperBand (Li et al. 2018; Ray Tune's HyperBandScheduler), the base of BOHB.

A bracket is successive halving over its rungs ``(n, epochs)``: its trials train to the rung's
milestone and PAUSE; once every live trial of the rung has reported (failed ones are dropped),
the best ``n`` of the next rung resume from their checkpoints and the rest are stopped. At the
bracket's last rung a trial STOPs as completed.

Across brackets, ``suggest()`` hands out work from the earliest open bracket that has some (a
config not started yet, or a promoted trial waiting to resume) and opens the next bracket only
when no open bracket has runnable work, so brackets overlap instead of leaving slots idle
(HpBandSter's master, Ray's band filling). With ``semantics="ray"`` open brackets are served in
Ray's order: band first, then the least complete bracket (``choose_trial_to_run``).

Termination: ``trials=N`` stops creating trials after N (the last bracket may be partial and
keeps ``min(live, n)`` at each rung), or ``brackets=N`` runs N brackets (bracket k has the shape
``k mod (s_max + 1)``).
"""

from __future__ import annotations

from typing import Any, Optional

from nasalloc.errors import UserError

from .base import (COMPLETED, DONE, FAILED, PAUSED, RUNNING, STOPPED, WAIT, Action, Decision,
                   Resume, Start)
from .brackets import check_budget, check_semantics, hyperband_brackets
from .common import SchedulerCore, SeedLike, check_count, jfloat, ufloat


class _Bracket:
    """Successive halving state of one bracket (plain data, saved as a dict)."""

    __slots__ = ("index", "shape", "level", "to_start", "live", "results", "to_resume",
                 "progress")

    def __init__(self, index: int, shape: list):
        self.index = index
        self.shape = [list(rung) for rung in shape]  # [[n, epochs], ...]
        self.level = 0
        self.to_start = self.shape[0][0]
        self.live: list[int] = []  # trials still in the bracket at this level
        self.results: dict[int, float] = {}  # score at this level's milestone
        self.to_resume: list[int] = []  # promoted, waiting for a slot
        self.progress = 0  # epochs reported (Ray orders brackets by completion)

    @property
    def milestone(self) -> int:
        return self.shape[self.level][1]

    @property
    def is_last(self) -> bool:
        return self.level == len(self.shape) - 1

    def completion(self) -> float:
        work, previous = 0, 0
        for n, epochs in self.shape:
            work += n * (epochs - previous)
            previous = epochs
        return min(self.progress / work, 1.0)

    def to_dict(self) -> dict:
        return {"index": self.index, "shape": self.shape, "level": self.level,
                "to_start": self.to_start, "live": list(self.live),
                "results": [[t, jfloat(s)] for t, s in self.results.items()],
                "to_resume": list(self.to_resume), "progress": self.progress}

    @classmethod
    def from_dict(cls, data: dict) -> "_Bracket":
        bracket = cls(data["index"], data["shape"])
        bracket.level = data["level"]
        bracket.to_start = data["to_start"]
        bracket.live = list(data["live"])
        bracket.results = {int(t): ufloat(s) for t, s in data["results"]}
        bracket.to_resume = list(data["to_resume"])
        bracket.progress = data["progress"]
        return bracket


class HyperBand(SchedulerCore):
    name = "hyperband"
    algorithm = "hyperband"

    def __init__(self, source, *, max_t: int, min_t: int = 1, eta: int = 3,
                 semantics: str = "ray", mode: str = "max", seed: SeedLike = 0,
                 trials: Optional[int] = None, brackets: Optional[int] = None):
        max_t, min_t, eta = check_budget(max_t, min_t, eta)
        super().__init__(max_t=max_t, mode=mode, seed=seed)
        self.semantics = check_semantics(semantics)
        self.min_t, self.eta = min_t, eta
        self.source = source
        self.shapes = hyperband_brackets(max_t, eta, min_t, semantics, self.algorithm)
        self.trials_limit, self.brackets_limit = _one_limit(trials, brackets)
        self.milestones = sorted({epochs for shape in self.shapes for _, epochs in shape})
        self._milestone_set = set(self.milestones)
        self._brackets: dict[int, _Bracket] = {}  # open brackets, by index
        self._bracket_of: dict[int, int] = {}
        self._opened = 0
        self._source_state = source.new_state()

    # -- what to run --------------------------------------------------------------------------
    def suggest(self) -> Action:
        for bracket in self._open_in_order():
            if bracket.to_resume:
                trial_id = bracket.to_resume.pop(0)
                self._set(trial_id, RUNNING)
                return Resume(trial_id, bracket.milestone)
            if bracket.to_start > 0:
                return self._start_in(bracket)
        if self._may_create() and (self.brackets_limit is None
                                   or self._opened < self.brackets_limit):
            bracket = _Bracket(self._opened, self.shapes[self._opened % len(self.shapes)])
            self._opened += 1
            self._brackets[bracket.index] = bracket
            return self._start_in(bracket)
        if self._running:
            return WAIT
        for trial_id, status in self._status.items():  # nothing can run any more
            if status == PAUSED:
                self._set(trial_id, STOPPED)
        self._brackets.clear()
        return DONE

    def _open_in_order(self):
        if self.semantics == "ray" and self.algorithm == "hyperband" and len(self._brackets) > 1:
            band = len(self.shapes)
            return sorted(self._brackets.values(),
                          key=lambda b: (b.index // band, b.completion(), b.index))
        return list(self._brackets.values())

    def _may_create(self) -> bool:
        return self.trials_limit is None or self._next_id < self.trials_limit

    def _start_in(self, bracket: _Bracket) -> Start:
        config = self._new_config(bracket)
        trial_id = self._new_trial(config)
        bracket.to_start -= 1
        bracket.live.append(trial_id)
        self._bracket_of[trial_id] = bracket.index
        if not self._may_create():  # trial budget spent: brackets being filled stay partial
            for other in list(self._brackets.values()):
                other.to_start = 0
                self._advance(other, reporter=None)
        return Start(trial_id, self._configs[trial_id], bracket.milestone)

    def _new_config(self, bracket: _Bracket) -> dict:
        """Where a new trial's config comes from (BOHB overrides this)."""
        return self.source.sample(self._rng, self._source_state)

    def _observe(self, trial_id: int, epoch: int, metric: float) -> None:
        """A result at a milestone epoch (BOHB keeps it for its model)."""

    def _observe_failure(self, trial_id: int) -> None:
        """A trial failed (BOHB counts it as a bad result)."""

    # -- results -------------------------------------------------------------------------------
    def on_result(self, trial_id: int, epoch: int, metric: float) -> Decision:
        self._check_running(trial_id, epoch)
        bracket = self._brackets[self._bracket_of[trial_id]]
        bracket.progress += 1
        if epoch in self._milestone_set:
            self._observe(trial_id, epoch, metric)
        if epoch < bracket.milestone:
            return Decision.CONTINUE
        bracket.results[trial_id] = self.score(metric)
        if bracket.is_last:
            self._set(trial_id, COMPLETED)
            bracket.live.remove(trial_id)
            self._close_if_empty(bracket)
            return Decision.STOP
        self._set(trial_id, PAUSED)
        return self._advance(bracket, reporter=trial_id)

    def on_failure(self, trial_id: int) -> None:
        self._check_running(trial_id)
        self._set(trial_id, FAILED)
        self._observe_failure(trial_id)
        bracket = self._brackets[self._bracket_of[trial_id]]
        bracket.live.remove(trial_id)
        bracket.results.pop(trial_id, None)
        if bracket.is_last:
            self._close_if_empty(bracket)
        else:
            self._advance(bracket, reporter=None)

    def _advance(self, bracket: _Bracket, reporter: Optional[int]) -> Decision:
        """Halve the bracket once every live trial has reached the rung; the reporter (the
        trial whose result completed the rung) continues at once when it is promoted."""
        if bracket.to_start > 0 or bracket.is_last or len(bracket.results) < len(bracket.live):
            self._close_if_empty(bracket)
            return Decision.PAUSE
        keep = bracket.shape[bracket.level + 1][0]
        ranked = sorted(bracket.live, key=lambda t: (-bracket.results[t], t))
        good, bad = ranked[:keep], ranked[keep:]
        decision = Decision.PAUSE
        for trial_id in bad:
            self._set(trial_id, STOPPED)
            if trial_id == reporter:
                decision = Decision.STOP
        bracket.level += 1
        bracket.live = good
        bracket.results = {}
        for trial_id in good:
            if trial_id == reporter:
                self._set(trial_id, RUNNING)
                decision = Decision.CONTINUE
            else:
                bracket.to_resume.append(trial_id)
        self._close_if_empty(bracket)
        return decision

    def _close_if_empty(self, bracket: _Bracket) -> None:
        if bracket.to_start == 0 and not bracket.live:
            self._brackets.pop(bracket.index, None)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, **self._core_state(),
            "brackets": [b.to_dict() for b in self._brackets.values()],
            "bracket_of": {str(t): b for t, b in self._bracket_of.items()},
            "opened": self._opened,
            "source_state": self._source_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state of {state.get('name')!r} loaded into {self.name!r}")
        self._load_core_state(state)
        self._brackets = {b["index"]: _Bracket.from_dict(b) for b in state["brackets"]}
        self._bracket_of = {int(t): b for t, b in state["bracket_of"].items()}
        self._opened = int(state["opened"])
        self._source_state = state["source_state"]


def _one_limit(trials: Optional[int], brackets: Optional[int]):
    if (trials is None) == (brackets is None):
        raise UserError(f"trials={trials!r}, brackets={brackets!r}: give exactly one of "
                        "trials (how many trials to create) or brackets (how many brackets)")
    if trials is not None:
        return check_count("trials", trials), None
    return None, check_count("brackets", brackets)
