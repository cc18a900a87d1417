"""What every scheduler here shares: argument checks, the trial book, metric direction and
JSON-safe random state. Kept apart from base.py, which is only the contract."""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np

from nasalloc.errors import UserError

from .base import COMPLETED, ENDED, FAILED, PAUSED, PENDING, RUNNING, STOPPED, Scheduler

MODES = ("max", "min")
SeedLike = Union[int, np.random.Generator, None]


def make_rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"seed={seed!r}: expected an integer or a numpy Generator")
    return np.random.default_rng(int(seed))


def rng_state(rng: np.random.Generator) -> dict:
    """numpy's bit-generator state is a dict of ints: JSON as it is."""
    return _plain(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"mode={mode!r}: expected max or min")
    return mode


def check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name}={value!r}: expected a whole number >= 1")
    return int(value)


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and tuples -> plain Python, so json.dumps works."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, dict):  # a config: plain values are copied as they are, no call each
        return {k if type(k) is str else str(k): v if type(v) in _SCALARS else _plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


plain = _plain


def jfloat(value: float):
    """A float for strict JSON: non-finite ones as the strings 'nan', 'inf', '-inf'."""
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def ufloat(value) -> float:
    """Inverse of :func:`jfloat` (float('nan') parses the strings)."""
    return float(value)


class SchedulerCore(Scheduler):
    """Trial book-keeping shared by HyperBand, BOHB and ASHA.

    ``_status[tid]`` is the scheduler's view of every trial it started; ``_epochs[tid]`` the
    last epoch reported. Scores are "larger is better" (``metric`` negated for ``mode="min"``);
    a NaN metric scores as the worst possible value.
    """

    def __init__(self, *, max_t: int, mode: str, seed: SeedLike):
        self.max_t = int(max_t)
        self.mode = check_mode(mode)
        self._rng = make_rng(seed)
        self._status: dict[int, str] = {}
        self._configs: dict[int, dict] = {}
        self._epochs: dict[int, int] = {}
        self._running: set[int] = set()
        self._paused: set[int] = set()  # kept by _set: what DONE stops, without a walk over all
        self._next_id = 0

    # -- contract helpers -------------------------------------------------------------------
    def trial_status(self, trial_id: int) -> Optional[str]:
        return self._status.get(trial_id)

    @property
    def finished_trials(self) -> dict[int, str]:
        """Ended trials and how they ended (stopped, completed, failed)."""
        return {t: s for t, s in self._status.items() if s in ENDED}

    def config_of(self, trial_id: int) -> dict:
        return self._configs[trial_id]

    def score(self, metric: float) -> float:
        value = float(metric)
        if math.isnan(value):
            return -math.inf
        return value if self.mode == "max" else -value

    def signed(self, metric: float) -> float:
        """The metric made "larger is better" (Ray's metric_op * metric), NaN kept."""
        return float(metric) if self.mode == "max" else -float(metric)

    @property
    def num_started(self) -> int:
        return self._next_id

    @property
    def num_running(self) -> int:
        return len(self._running)

    # -- transitions ------------------------------------------------------------------------
    def _new_trial(self, config: dict, status: str = RUNNING) -> int:
        tid = self._next_id
        self._next_id += 1
        self._status[tid] = status
        if status == RUNNING:
            self._running.add(tid)
        self._configs[tid] = plain(config)
        self._epochs[tid] = 0
        return tid

    def _check_running(self, trial_id: int, epoch: Optional[int] = None) -> None:
        status = self._status.get(trial_id)
        if status != RUNNING:
            raise ValueError(f"trial {trial_id} is {status or 'unknown'}, not running")
        if epoch is not None:
            if epoch != self._epochs[trial_id] + 1:
                raise ValueError(f"trial {trial_id}: epoch {epoch} after epoch "
                                 f"{self._epochs[trial_id]}; results come one epoch at a time")
            if epoch > self.max_t:
                raise ValueError(f"trial {trial_id}: epoch {epoch} beyond max_t={self.max_t}")
            self._epochs[trial_id] = epoch

    def _set(self, trial_id: int, status: str) -> None:
        assert status in (RUNNING, PAUSED, STOPPED, COMPLETED, FAILED, PENDING)
        self._status[trial_id] = status
        if status == RUNNING:
            self._running.add(trial_id)
        else:
            self._running.discard(trial_id)
        if status == PAUSED:
            self._paused.add(trial_id)
        else:
            self._paused.discard(trial_id)

    def paused_trials(self) -> list:
        """The PAUSED trials, in trial-id order (the order of the trial book)."""
        return sorted(self._paused)

    def params(self) -> dict:
        """The settings a saved state only makes sense with (subclasses add theirs)."""
        keys = ("max_t", "min_t", "eta", "semantics", "mode", "trials_limit", "brackets_limit",
                "variant", "pending", "min_points_in_model", "top_n_percent", "num_samples",
                "random_fraction", "bandwidth_factor", "min_bandwidth")
        return {k: getattr(self, k) for k in keys if hasattr(self, k)}

    def _core_state(self) -> dict:
        return {
            "params": plain(self.params()),
            "rng": rng_state(self._rng),
            "status": {str(t): s for t, s in self._status.items()},
            "configs": {str(t): c for t, c in self._configs.items()},
            "epochs": {str(t): e for t, e in self._epochs.items()},
            "next_id": self._next_id,
        }

    def _load_core_state(self, state: dict) -> None:
        saved, mine = state.get("params", {}), plain(self.params())
        differ = [f"{k}={saved.get(k)!r} (saved) vs {v!r}" for k, v in mine.items()
                  if saved.get(k) != v]
        if differ:
            raise UserError(f"saved {self.name} state was made with other settings: "
                            + ", ".join(differ))
        set_rng_state(self._rng, state["rng"])
        self._status = {int(t): s for t, s in state["status"].items()}
        self._configs = {int(t): c for t, c in state["configs"].items()}
        self._epochs = {int(t): e for t, e in state["epochs"].items()}
        self._running = {t for t, s in self._status.items() if s == RUNNING}
        self._paused = {t for t, s in self._status.items() if s == PAUSED}
        self._next_id = int(state["next_id"])
