"""How the simulator names things for a reader: splits, durations, intervals.

One place for the terminal table, the progress lines and the plots, so they agree (a run the
table shows as ``5.8 s`` is never ``0.0 h`` in the progress line). Pure functions; no plotting
or report code is imported here, so ``report`` and ``plots`` both depend on this module and
not on each other.
"""

from __future__ import annotations

import math
from typing import Optional

#: fewer seeds than this give no interval worth printing (2 seeds: t(0.975, 1) = 12.7)
MIN_SEEDS_FOR_INTERVAL = 3

_UNITS = ((3600.0, "h"), (60.0, "min"), (1.0, "s"))


def split_tick(g: float) -> str:
    """GPUs per trial as a number: ``1/4``, ``1``, ``8``."""
    return f"1/{round(1 / g)}" if g < 1 else str(int(g))


def split_label(g: float) -> str:
    """GPUs per trial with the unit: ``1/4 GPU``, ``1 GPU``, ``8 GPUs``."""
    return f"{split_tick(g)} GPU" + ("s" if g > 1 else "")


def time_unit(seconds: float) -> tuple:
    """(divisor, name) of the unit a duration of ``seconds`` reads best in: h, min or s."""
    for divisor, name in _UNITS:
        if seconds >= divisor:
            return divisor, name
    return 1.0, "s"


def duration(seconds: Optional[float], unit_of: Optional[float] = None) -> str:
    """``5.8 s``, ``12.5 min``, ``21.2 h``: the unit of ``unit_of`` (default: of ``seconds``),
    so the two ends of an interval share one unit."""
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return "-"
    divisor, name = time_unit(seconds if unit_of is None else unit_of)
    return f"{seconds / divisor:.1f} {name}"


def interval(low: Optional[float], high: Optional[float], seeds: int, form=duration) -> str:
    """``[low, high]`` formatted by ``form``, or ``n/a (2 seeds)`` with too few seeds."""
    if seeds < MIN_SEEDS_FOR_INTERVAL or low is None or high is None:
        return f"n/a ({seeds} seed{'s' if seeds != 1 else ''})"
    if form is duration:
        return f"[{duration(low, high)}, {duration(high)}]"
    return f"[{form(low)}, {form(high)}]"
