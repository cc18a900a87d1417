"""Bracket and rung tables of HyperBand, BOHB and ASHA, as the tools people run compute them.

A bracket is a list of rungs ``(n_trials, epochs)``: ``n_trials`` configs train to the cumulative
milestone ``epochs``; the best ``n`` of the next rung go on. Brackets are listed in the order
they are filled. For ``max_t=81, eta=3``:

=========  =========  ======================================================================
semantics  algorithm  brackets (fill order)
=========  =========  ======================================================================
reference  hyperband  81@1..1@81 | 34@3,11@9,3@27,1@81 | 15@9,5@27,1@81 | 8@27,2@81 | 5@81
reference  bohb       81@1..1@81 | 27@3,9@9,3@27,1@81 | 9@9,3@27,1@81 | 6@27,2@81 | 5@81
ray        bohb       81@1..1@81 | 34@3,12@9,4@27,2@81 | 15@9,5@27,2@81 | 8@27,3@81 | 5@81
ray        hyperband  the same five brackets as ray/bohb, filled in the REVERSE order:
                      5@81 first, 81@1 last (HyperBandScheduler fills s = 0, 1, ...)
=========  =========  ======================================================================

``reference`` is Li et al. 2018 (HyperBand, floor halving) and HpBandSter (BOHB);
``ray`` is Ray Tune's HyperBandScheduler / HyperBandForBOHB (ceil halving).
"""

from __future__ import annotations

import math

import numpy as np

from nasalloc.errors import UserError

SEMANTICS = ("ray", "reference")
Rung = tuple[int, int]  # (n_trials, epochs)


def check_budget(max_t, min_t, eta) -> tuple[int, int, int]:
    """Validate the shared budget arguments; returns them as ints."""
    for name, value in (("max_t", max_t), ("min_t", min_t)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UserError(f"{name}={value!r}: expected a whole number of epochs >= 1")
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.integer, np.floating)) \
            or not float(eta).is_integer() or eta < 2:
        raise UserError(f"eta={eta!r}: expected a whole reduction factor >= 2")
    if max_t < min_t:
        raise UserError(f"max_t={max_t!r} is below min_t={min_t!r}: expected max_t >= min_t")
    return int(max_t), int(min_t), int(eta)


def check_semantics(semantics: str) -> str:
    if semantics not in SEMANTICS:
        raise UserError(f"semantics={semantics!r}: expected one of {', '.join(SEMANTICS)}")
    return semantics


def exact_log_floor(ratio: float, eta: int) -> int:
    """Largest s with eta**s <= ratio, free of float error (log(243)/log(3) = 4.999...)."""
    s = 0
    while eta ** (s + 1) <= ratio * (1 + 1e-12):
        s += 1
    return s


def _milestones(max_t: int, min_t: int, eta: int, s: int) -> list[int]:
    """Reference milestones max_t * eta**(i-s), i = 0..s, rounded to whole epochs."""
    out: list[int] = []
    for i in range(s + 1):
        epochs = max(min_t, int(round(max_t / eta ** (s - i))))
        out.append(max(epochs, out[-1] + 1) if out else epochs)
    return out


def hpbandster_levels(max_t: int, min_t: int, eta: int) -> int:
    """HpBandSter's ``max_SH_iter = -int(np.log(min_budget/max_budget)/np.log(eta)) + 1``, float
    error included: for 243/3/1 the log ratio is -4.999999999999999, so HpBandSter runs 5 levels
    (budgets 3..243) and never uses min_budget 1 (likewise 486/3/2, 729/3/3)."""
    return -int(np.log(min_t / max_t) / np.log(eta)) + 1


def _reference_brackets(max_t: int, min_t: int, eta: int, algorithm: str) -> list[list[Rung]]:
    if algorithm == "hyperband":  # Li et al.: the exact floor of log_eta(max_t/min_t)
        s_max = exact_log_floor(max_t / min_t, eta)
    else:
        s_max = hpbandster_levels(max_t, min_t, eta) - 1
    brackets = []
    for s in range(s_max, -1, -1):  # most aggressive first (Li et al.; HpBandSter iteration 0)
        if algorithm == "hyperband":
            n0 = math.ceil((s_max + 1) * eta ** s / (s + 1))
            sizes = [n0 // eta ** i for i in range(s + 1)]  # floor halving
        else:  # HpBandSter BOHB: n0 = floor((s_max+1)/(s+1)) * eta^s, at least one per rung
            n0 = ((s_max + 1) // (s + 1)) * eta ** s
            sizes = [max(n0 // eta ** i, 1) for i in range(s + 1)]
        brackets.append(list(zip(sizes, _milestones(max_t, min_t, eta, s))))
    return brackets


def _ray_bracket(max_t: int, eta: int, s_max_1: int, s: int) -> list[Rung]:
    n = int(np.ceil(s_max_1 / (s + 1) * eta ** s))
    r = int(max_t * eta ** (-s))
    rungs = [(n, r)]
    for _ in range(s):  # Ray's _Bracket.successive_halving: ceil halving, milestone capped
        n = int(np.ceil(n / eta))
        r = int(min(r * eta, max_t))
        rungs.append((n, r))
    return rungs


def _ray_brackets(max_t: int, min_t: int, eta: int, algorithm: str) -> list[list[Rung]]:
    # Ray computes s_max_1 with np.round of a float log (Ray has no min_t: min_t=1 is exact).
    s_max_1 = int(np.round(np.log(max_t / min_t) / np.log(eta))) + 1
    shapes = []
    for s in range(s_max_1):
        if int(max_t * eta ** (-s)) < min_t:
            continue  # Ray skips a bracket whose first milestone is 0 ("Bracket too small")
        shapes.append(_ray_bracket(max_t, eta, s_max_1, s))
    # HyperBandScheduler fills s = 0 (fewest trials, longest) first; HyperBandForBOHB the largest.
    return shapes if algorithm == "hyperband" else shapes[::-1]


def hyperband_brackets(max_t: int, eta: int = 3, min_t: int = 1, semantics: str = "ray",
                       algorithm: str = "hyperband") -> list[list[Rung]]:
    """The brackets of one HyperBand iteration in fill order; each a list of ``(n, epochs)``."""
    max_t, min_t, eta = check_budget(max_t, min_t, eta)
    check_semantics(semantics)
    if algorithm not in ("hyperband", "bohb"):
        raise UserError(f"algorithm={algorithm!r}: expected hyperband or bohb")
    if semantics == "ray":
        return _ray_brackets(max_t, min_t, eta, algorithm)
    return _reference_brackets(max_t, min_t, eta, algorithm)


def asha_rungs(max_t: int, min_t: int = 1, eta: int = 3, semantics: str = "ray") -> list[int]:
    """ASHA rung milestones min_t * eta**k.

    ``ray``: Ray's ``int(log(max_t/min_t)/log(eta) + 1)`` rungs (float log, as in
    async_hyperband.py); a trial is stopped at ``max_t`` whether or not it is a rung.
    ``reference``: every min_t * eta**k <= max_t exactly, then ``max_t`` itself as the top rung
    where trials complete (the promotion variant needs a top rung).
    """
    max_t, min_t, eta = check_budget(max_t, min_t, eta)
    check_semantics(semantics)
    if semantics == "ray":
        count = int(np.log(max_t / min_t) / np.log(eta) + 1)
        return [min_t * eta ** k for k in range(count)]
    levels = [min_t * eta ** k for k in range(exact_log_floor(max_t / min_t, eta) + 1)]
    if levels[-1] < max_t:
        levels.append(max_t)
    return levels
