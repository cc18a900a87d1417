"""Allocation policies: how many GPUs the next segment of a trial gets.

A policy is a pure decision object beside the scheduler (no clock, no processes, no random
state). Both drivers, the SimPy engine and the validation runner, ask the same object at the
start of every segment and after every result a trial continues past a rung, with the same
:class:`Ask` built by :func:`ask_for` from the scheduler's rungs, so a gap between prediction
and measurement cannot come from the policy. Its answer depends only on the trial's rung
level (rungs passed since it started) and, for ``fill``, on the size of the rung it trains
towards: never on the free GPUs or the time, which keeps both drivers' records deterministic.

* ``static:G`` -- every segment gets G GPUs (today's behaviour; the engine runs it on the
  split's fixed slots, so its records are exactly those of a run without a policy).
* ``double:G0[,S]`` -- RASDA's rule (Aach et al., FGCS 2025): a trial starts on G0 GPUs and
  each time it continues past a rung it is checkpointed and resumed on S times as many
  (default S = eta), i.e. G0 * S**level rounded down to a placeable count (a power of two that
  divides a node or takes whole nodes), capped at the largest placeable count of the budget.
* ``fill`` -- for synchronous HyperBand/BOHB: a trial of a rung of n trials gets the largest
  placeable count <= budget / n (at least 1), so all of the rung's trials run at once.

When the larger allocation is not free, the trial waits for it (first come, first served, see
:mod:`.gpupool`), as RASDA's trials wait PENDING under Ray Tune.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Optional

from nasalloc.errors import UserError

from .cluster import default_gpus_per_trial

KINDS = ("static", "double", "fill")


@dataclass(frozen=True)
class Ask:
    """What a policy is told about a trial's next segment."""

    level: int                  # rungs the trial has passed since it started
    rung_trials: Optional[int]  # trials of the rung it trains towards (synchronous brackets), else None
    next_rung: Optional[int]    # the next epoch at which its level may change (None: never)


def placeable(budget: int, gpus_per_node: int) -> list[int]:
    """Whole GPU counts a policy may give: the powers of two a static split places."""
    return [int(g) for g in default_gpus_per_trial(budget, gpus_per_node) if g >= 1]


def _round_down(target: float, sizes: list[int]) -> int:
    k = bisect.bisect_right(sizes, target)
    return sizes[max(k - 1, 0)]


@dataclass(frozen=True)
class Policy:
    kind: str
    budget: int
    gpus_per_node: int
    start: int = 1      # static: G; double: G0
    factor: int = 1     # double: S

    @property
    def name(self) -> str:
        if self.kind == "static":
            return f"static:{self.start}"
        if self.kind == "double":
            return f"double:{self.start},{self.factor}"
        return "fill"

    @property
    def adaptive(self) -> bool:
        return self.kind != "static"

    @property
    def min_gpus(self) -> int:
        return 1 if self.kind == "fill" else self.start

    def gpus(self, ask: Ask) -> int:
        sizes = placeable(self.budget, self.gpus_per_node)
        if self.kind == "static":
            return self.start
        if self.kind == "double":
            return _round_down(self.start * self.factor ** ask.level, sizes)
        if ask.rung_trials is None:
            raise UserError("policy fill needs synchronous brackets (hyperband or bohb), not asha")
        return _round_down(max(self.budget // max(ask.rung_trials, 1), 1), sizes)


def rung_ladder(scheduler) -> list[int]:
    """The scheduler's rung milestones below max_t (ASHA's rungs; every bracket's for HB/BOHB)."""
    rungs = getattr(scheduler, "rungs", None)
    if rungs is None:
        rungs = getattr(scheduler, "milestones", None)
    if rungs is None:
        raise UserError(f"{type(scheduler).__name__} exposes no rungs: adaptive policies need rungs or milestones")
    return sorted(r for r in set(rungs) if r < scheduler.max_t)


def ask_for(scheduler, ladder: list[int], trial_id: int, first_milestone: int, epoch: int) -> Ask:
    """The :class:`Ask` of a trial that started towards ``first_milestone`` and has ``epoch`` epochs."""
    lo = bisect.bisect_left(ladder, first_milestone)
    hi = bisect.bisect_right(ladder, epoch)
    level = max(hi - lo, 0)
    nxt = ladder[max(hi, lo)] if max(hi, lo) < len(ladder) else None
    rung_trials = None
    shapes = getattr(scheduler, "shapes", None)
    if shapes and hasattr(scheduler, "bracket_index"):
        shape = shapes[scheduler.bracket_index(trial_id) % len(shapes)]
        ahead = [n for n, epochs in shape if epochs > epoch]
        rung_trials = int(ahead[0]) if ahead else int(shape[-1][0])
    return Ask(level=level, rung_trials=rung_trials, next_rung=nxt)


def parse_policy(text: str, budget: int, gpus_per_node: int, eta: int = 3) -> Policy:
    """``static:4``, ``double:1``, ``double:1,2`` or ``fill`` -> a Policy (one-line UserError)."""
    spec = str(text).strip()
    kind, _, args = spec.partition(":")
    if kind not in KINDS:
        raise UserError(f"--policies: {spec!r} is not a policy (expected static:G, double:G0[,S] or fill)")
    sizes = placeable(budget, gpus_per_node)
    try:
        numbers = [int(a) for a in args.split(",")] if args else []
    except ValueError:
        raise UserError(f"--policies: {spec!r}: the parameters must be whole numbers") from None
    if kind == "fill":
        if numbers:
            raise UserError(f"--policies: {spec!r}: fill takes no parameters")
        return Policy("fill", budget, gpus_per_node)
    if not numbers or len(numbers) > (1 if kind == "static" else 2):
        raise UserError(f"--policies: {spec!r}: expected {'static:G' if kind == 'static' else 'double:G0[,S]'}")
    start = numbers[0]
    if start not in sizes:
        raise UserError(f"--policies: {spec!r}: {start} GPUs is not a placeable count on {budget} GPUs in nodes "
                        f"of {gpus_per_node} (expected one of {', '.join(map(str, sizes))})")
    if kind == "static":
        return Policy("static", budget, gpus_per_node, start)
    factor = numbers[1] if len(numbers) > 1 else eta
    if factor < 2:
        raise UserError(f"--policies: {spec!r}: the scaling factor S={factor} must be >= 2")
    return Policy("double", budget, gpus_per_node, start, factor)


def split_policy_list(text: str) -> list[str]:
    """``"static,double:1,2,fill"`` -> ``["static", "double:1,2", "fill"]`` (a bare number
    belongs to the policy before it)."""
    items: list[str] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise UserError(f"--policies {text!r}: an empty item")
        if part.isdigit() and items and ":" in items[-1]:
            items[-1] += "," + part
        else:
            items.append(part)
    return items


def expand_policies(text: str, budget: int, gpus_per_node: int, eta: int, static_splits) -> tuple:
    """The ``--policies`` list -> (static splits, adaptive policies). ``static`` alone: the
    sweep's splits; ``double`` alone: double from every placeable start that can grow."""
    statics: list[float] = []
    adaptive: list[Policy] = []
    for item in split_policy_list(text):
        if item == "static":
            statics.extend(float(g) for g in static_splits)
        elif item == "double":
            sizes = placeable(budget, gpus_per_node)
            adaptive.extend(Policy("double", budget, gpus_per_node, g, eta) for g in sizes if g < sizes[-1])
        else:
            policy = parse_policy(item, budget, gpus_per_node, eta)
            if policy.kind == "static":
                statics.append(float(policy.start))
            else:
                adaptive.append(policy)
    seen, unique = set(), []
    for p in adaptive:
        if p.name not in seen:
            seen.add(p.name)
            unique.append(p)
    return sorted(set(statics)), unique
