"""Interval arithmetic of repeated validation runs (pure: numpy and scipy, no torch).

* :func:`t_interval`: the 95% interval of a mean of n measured runs, Student's t with n - 1
  degrees of freedom (``mean +- t(0.975, n-1) * s / sqrt(n)``); exact for normal run-to-run
  variation and the usual choice for n of 3-10. Needs n >= 2 (n = 1: no interval).
* :func:`predicted_intervals`: from many simulated runs of the same search (fresh epoch-time
  noise each), the 95% interval of one run (the 2.5 and 97.5 percentiles of the draws) and
  of the mean of n runs (``mean +- z(0.975) * sd / sqrt(n)``; the draws are many, so their
  sd is known well and the normal quantile is used).
* :func:`ratio_interval`: a speedup mean(worst) / mean(best) of two independent samples, with
  the 95% interval of its logarithm by the delta method
  (``var log R ~ s_w^2 / (n_w m_w^2) + s_b^2 / (n_b m_b^2)``) and t with min(n) - 1 degrees of
  freedom (conservative against Welch's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def contains(self, value: Optional[float]) -> Optional[bool]:
        if value is None or not math.isfinite(value) or not math.isfinite(self.low):
            return None
        return bool(self.low <= value <= self.high)

    def to_dict(self, prefix: str) -> dict:
        return {f"{prefix}_mean_s": self.mean, f"{prefix}_low_s": self.low, f"{prefix}_high_s": self.high}


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([v for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]


def t_quantile(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + LEVEL / 2, df))


def t_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% t-interval of the mean; (mean, nan, nan) for fewer than 2 values."""
    x = _finite(values)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, len(x))
    half = t_quantile(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(mean, mean - half, mean + half, len(x))


def predicted_intervals(draws: Sequence[float], n: int) -> tuple[Interval, Interval]:
    """(interval of one run, interval of the mean of ``n`` runs) from simulated draws."""
    x = _finite(draws)
    if len(x) == 0:
        nan = Interval(math.nan, math.nan, math.nan, 0)
        return nan, nan
    mean = float(x.mean())
    low, high = np.percentile(x, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    from scipy.stats import norm

    half = float(norm.ppf(0.5 + LEVEL / 2)) * float(x.std(ddof=1) if len(x) > 1 else 0.0) / math.sqrt(max(n, 1))
    return Interval(mean, float(low), float(high), len(x)), Interval(mean, mean - half, mean + half, len(x))


def ratio_interval(numerator: Sequence[float], denominator: Sequence[float]) -> Interval:
    """mean(numerator) / mean(denominator) with a delta-method 95% interval (nan for n < 2)."""
    a, b = _finite(numerator), _finite(denominator)
    if len(a) == 0 or len(b) == 0 or b.mean() <= 0 or a.mean() <= 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    ratio = float(a.mean() / b.mean())
    n = min(len(a), len(b))
    if n < 2:
        return Interval(ratio, math.nan, math.nan, n)
    var = a.var(ddof=1) / (len(a) * a.mean() ** 2) + b.var(ddof=1) / (len(b) * b.mean() ** 2)
    half = t_quantile(n - 1) * math.sqrt(float(var))
    return Interval(ratio, ratio * math.exp(-half), ratio * math.exp(half), n)


def fraction(flags: Sequence[Optional[bool]]) -> Optional[float]:
    """Share of True among the flags that are known (None: none known)."""
    known = [f for f in flags if f is not None]
    return sum(known) / len(known) if known else None
