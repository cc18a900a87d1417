"""ASHA, asynchronous successive halving, in its two published forms.

``variant="stopping"`` -- Ray Tune's ASHAScheduler (async_hyperband.py, one bracket). Rungs are
``min_t * eta**k`` (Ray's count: ``int(log(max_t/min_t)/log(eta) + 1)``). When a trial first
reaches a rung, the cutoff is the ``(1 - 1/eta)`` quantile (``np.nanpercentile``, linear) of
the scores recorded at that rung so far, computed BEFORE recording the trial's own score; the
trial is stopped if its score is below the cutoff (no cutoff on an empty rung), otherwise it
continues without pausing. Every trial stops at ``max_t``.

``variant="promotion"`` -- the ASHA paper (Li et al. 2020). A trial pauses at every rung. On
``suggest()``, scanning from the highest rung below the top down, a paused trial in the top
``floor(|rung| / eta)`` of its rung that was not promoted yet resumes to the next rung;
otherwise a new config starts at the bottom rung. The top rung is ``max_t``, where trials
complete. When no new trial may start, nothing is promotable and nothing runs, the paused
trials end as stopped.

Scores are "larger is better" (the metric, negated for ``mode="min"``; NaN is worst).
Both variants end by ``trials=N``: no trial is created after the N-th.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Optional

from nasalloc.errors import UserError

from .base import (COMPLETED, DONE, FAILED, PAUSED, RUNNING, STOPPED, WAIT, Action, Decision,
                   Resume, Start)
from .brackets import asha_rungs, check_budget, check_semantics
from .common import SchedulerCore, SeedLike, check_count, jfloat, ufloat

VARIANTS = ("stopping", "promotion")


def nan_percentile(sorted_values: list[float], q: float) -> float:
    """np.nanpercentile(values, q) (linear method) of already sorted, NaN-free values, in O(1)."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    position = q / 100.0 * (n - 1)
    low = int(math.floor(position))
    high = min(low + 1, n - 1)
    t = position - low
    a, b = sorted_values[low], sorted_values[high]
    # numpy's _lerp: a + (b-a)*t, computed from the upper end when t >= 0.5
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


class ASHA(SchedulerCore):
    name = "asha"

    def __init__(self, source, *, max_t: int, min_t: int = 1, eta: int = 3,
                 semantics: str = "ray", mode: str = "max", seed: SeedLike = 0,
                 trials: Optional[int] = None, variant: Optional[str] = None):
        max_t, min_t, eta = check_budget(max_t, min_t, eta)
        super().__init__(max_t=max_t, mode=mode, seed=seed)
        self.semantics = check_semantics(semantics)
        if variant is None:
            variant = "stopping" if semantics == "ray" else "promotion"
        if variant not in VARIANTS:
            raise UserError(f"variant={variant!r}: expected stopping or promotion")
        if trials is None:
            raise UserError("trials=None: ASHA needs trials=N (how many trials to create)")
        self.trials_limit = check_count("trials", trials)
        self.variant = variant
        self.name = f"asha-{variant}"
        self.min_t, self.eta = min_t, eta
        self.source = source
        self.rungs = asha_rungs(max_t, min_t, eta, semantics)
        if variant == "promotion" and self.rungs[-1] < max_t:
            self.rungs.append(max_t)  # promotion needs a top rung where trials complete
        self._rung_index = {epochs: k for k, epochs in enumerate(self.rungs)}
        self._quantile = (1 - 1 / eta) * 100
        self._source_state = source.new_state()
        self._reset_rungs()

    def _reset_rungs(self) -> None:
        count = len(self.rungs)
        # every rung: recorded (trial, score) in arrival order -- the saved truth -- and, derived
        # from it, a sorted index for O(log n) quantiles (stopping) and ranks (promotion)
        self._recorded: list[list[list]] = [[] for _ in range(count)]
        self._sorted: list[list] = [[] for _ in range(count)]
        self._candidates: list[list] = [[] for _ in range(count)]  # paused, not promoted
        self._level: dict[int, int] = {}  # promotion: rung the trial trains towards

    def _record(self, k: int, trial_id: int, score: float) -> None:
        seq = len(self._recorded[k])
        self._recorded[k].append([trial_id, score])
        if self.variant == "stopping":
            if not math.isnan(score):
                bisect.insort(self._sorted[k], score)
        else:  # rank key: better score first, earlier arrival first among equals
            key = (-score, seq, trial_id)
            bisect.insort(self._sorted[k], key)
            if k < len(self.rungs) - 1:
                bisect.insort(self._candidates[k], key)

    # -- what to run --------------------------------------------------------------------------
    def suggest(self) -> Action:
        if self.variant == "promotion":
            promoted = self._promote()
            if promoted is not None:
                return promoted
        if self._next_id < self.trials_limit:
            config = self.source.sample(self._rng, self._source_state)
            trial_id = self._new_trial(config)
            self._level[trial_id] = 0
            return Start(trial_id, self._configs[trial_id], self._next_milestone(0))
        if self._running:
            return WAIT
        for trial_id in self.paused_trials():
            self._set(trial_id, STOPPED)
        return DONE

    def _next_milestone(self, level: int) -> int:
        return self.rungs[level]

    def _promote(self) -> Optional[Resume]:
        for k in range(len(self.rungs) - 2, -1, -1):
            candidates = self._candidates[k]
            if not candidates:
                continue
            best = candidates[0]  # the best not-yet-promoted trial of this rung
            rank = bisect.bisect_left(self._sorted[k], best)
            if rank < len(self._sorted[k]) // self.eta:
                candidates.pop(0)
                trial_id = best[2]
                self._level[trial_id] = k + 1
                self._set(trial_id, RUNNING)
                return Resume(trial_id, self.rungs[k + 1])
        return None

    # -- results -------------------------------------------------------------------------------
    def on_result(self, trial_id: int, epoch: int, metric: float) -> Decision:
        self._check_running(trial_id, epoch)
        if self.variant == "stopping":
            return self._stopping_result(trial_id, epoch, metric)
        k = self._level[trial_id]
        if epoch < self.rungs[k]:
            return Decision.CONTINUE
        self._record(k, trial_id, self.score(metric))
        if k == len(self.rungs) - 1:
            self._set(trial_id, COMPLETED)
            return Decision.STOP
        self._set(trial_id, PAUSED)
        return Decision.PAUSE

    def _stopping_result(self, trial_id: int, epoch: int, metric: float) -> Decision:
        if epoch >= self.max_t:
            self._set(trial_id, COMPLETED)
            return Decision.STOP
        k = self._rung_index.get(epoch)
        if k is None:  # results come every epoch, so a trial meets each rung exactly once
            return Decision.CONTINUE
        score = self.signed(metric)  # NaN stays NaN: nanpercentile ignores it, it never stops
        cutoff = nan_percentile(self._sorted[k], self._quantile) if self._recorded[k] else None
        self._record(k, trial_id, score)
        if cutoff is not None and score < cutoff:
            self._set(trial_id, STOPPED)
            return Decision.STOP
        return Decision.CONTINUE

    def next_decision_epoch(self, trial_id: int, epoch: int) -> int:
        """Results between rungs are plain CONTINUEs (promotion: up to the trial's next rung)."""
        if self.variant == "promotion":
            return self.rungs[self._level[trial_id]]
        k = bisect.bisect_right(self.rungs, epoch)
        return min(self.rungs[k], self.max_t) if k < len(self.rungs) else self.max_t

    def waits(self) -> bool:
        """Stopping: once every trial was created, WAIT until none runs (then DONE)."""
        return self.variant == "stopping" and self._next_id >= self.trials_limit and bool(self._running)

    def cutoff(self, epochs: int) -> Optional[float]:
        """Stopping variant: the cutoff a trial reaching rung ``epochs`` now would face."""
        k = self._rung_index[epochs]
        return nan_percentile(self._sorted[k], self._quantile) if self._recorded[k] else None

    def on_failure(self, trial_id: int) -> None:
        # Results it recorded at lower rungs stay: they were real and it was promoted past them.
        self._check_running(trial_id)
        self._set(trial_id, FAILED)

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        recorded = [[[t, jfloat(score)] for t, score in rung] for rung in self._recorded]
        return {"name": self.name, **self._core_state(), "recorded": recorded,
                "level": {str(t): k for t, k in self._level.items()},
                "source_state": self._source_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"state of {state.get('name')!r} loaded into {self.name!r}")
        self._load_core_state(state)
        self._source_state = state["source_state"]
        self._reset_rungs()
        self._level = {int(t): k for t, k in state["level"].items()}
        for k, rung in enumerate(state["recorded"]):
            for trial_id, score in rung:
                self._record(k, int(trial_id), ufloat(score))
        if self.variant == "promotion":  # drop the candidates that were promoted already
            for k, rung in enumerate(self._candidates):
                self._candidates[k] = [key for key in rung if self._level[key[2]] == k
                                       and self._status[key[2]] == PAUSED]
