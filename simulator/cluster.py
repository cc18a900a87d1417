"""Cluster and placement: where the trials of one split of a GPU budget run.

The budget's GPUs sit on nodes of ``gpus_per_node`` (the last node holds the remainder when the
budget is not a multiple). Every trial of a split has the same GPUs ``g``, so the split is a
fixed set of *slots* (placements), each running one trial at a time:

* ``g <= gpus_per_node``: ``g`` must divide ``gpus_per_node``; slots are contiguous blocks of
  ``g`` GPUs on one node (a trial never straddles nodes when it fits on one);
* ``g > gpus_per_node``: ``g`` must be a multiple of ``gpus_per_node``; slots are groups of
  ``g / gpus_per_node`` whole nodes;
* ``g = 1/k`` (k an integer >= 2): k slots share each GPU; every trial on such a GPU is slowed
  by the co-location factor for k trials (the simulator assumes all k sharers are busy: the
  split fixes k, and an idle sharer would mostly not give its share back under time slicing).

GPUs that no slot covers (e.g. 48 GPUs split 32 per trial, or a partial last node) stay idle:
``idle_gpus`` says how many, and utilization counts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from nasalloc.errors import UserError

TOLERANCE = 1e-9


@dataclass(frozen=True)
class Slot:
    index: int
    gpus: tuple            # global GPU indices (node * gpus_per_node + local index)
    nodes: int             # nodes the trial spans (sets inter-node synchronisation)


@dataclass(frozen=True)
class Split:
    budget: int
    gpus_per_node: int
    gpus_per_trial: float
    slots: tuple

    @property
    def parallel_trials(self) -> int:
        return len(self.slots)

    @property
    def trials_per_gpu(self) -> int:
        """k trials share a GPU (1 for g >= 1)."""
        return round(1 / self.gpus_per_trial) if self.gpus_per_trial < 1 else 1

    @property
    def used_gpus(self) -> int:
        return len({gpu for slot in self.slots for gpu in slot.gpus})

    @property
    def idle_gpus(self) -> int:
        return self.budget - self.used_gpus

    @property
    def nodes_per_trial(self) -> int:
        return self.slots[0].nodes


#: the largest budget simulated (65,536 GPUs: the default sweep of it takes ~25 s and ~350 MB here;
#: large HPC searches use 1,024). Larger is refused up front rather than growing memory unbounded.
MAX_BUDGET = 65_536
#: the most trials a split places at once (slots), fractions included (1/k: k trials per GPU)
MAX_PARALLEL_TRIALS = 65_536


def check_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget != budget or budget <= 0 \
            or (isinstance(budget, float) and not budget.is_integer()):
        raise UserError(f"--budget {budget!r} must be a whole number of GPUs > 0")
    if budget > MAX_BUDGET:
        raise UserError(f"--budget {int(budget):,} is above the largest budget nasalloc simulates, "
                        f"{MAX_BUDGET:,} GPUs")
    return int(budget)


def check_gpus_per_node(gpus_per_node) -> int:
    if isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int) or gpus_per_node < 1:
        raise UserError(f"--gpus-per-node {gpus_per_node!r} must be a whole number >= 1")
    return gpus_per_node


def check_gpus_per_trial(g: float, budget: int, gpus_per_node: int) -> float:
    """Validate one split value and return it normalised (1/k exactly for fractions)."""
    if not isinstance(g, (int, float)) or isinstance(g, bool) or not math.isfinite(g) or g <= 0:
        raise UserError(f"--gpus-per-trial {g!r} must be a number > 0")
    if g > budget + TOLERANCE:
        raise UserError(f"--gpus-per-trial {g:g} is larger than the budget of {budget} GPUs")
    if g < 1:
        k = 1 / g
        if abs(k - round(k)) > 1e-6:
            packed = math.floor(k)
            raise UserError(f"--gpus-per-trial {g:g}: a fraction must be 1/k for a whole k (k trials share a GPU), "
                            f"e.g. 0.5 or 0.25; Ray Tune packs {packed} such trials per GPU ({packed * budget} on "
                            f"{budget} GPUs, {1 - packed * g:.2g} of each GPU unused), not {budget}/{g:g} = "
                            f"{math.floor(budget / g)}: simulate 1/{packed} for what Ray runs")
        return 1 / round(k)
    if abs(g - round(g)) > TOLERANCE:
        raise UserError(f"--gpus-per-trial {g:g}: more than one GPU must be a whole number")
    g = int(round(g))
    if g <= gpus_per_node and gpus_per_node % g:
        raise UserError(f"--gpus-per-trial {g} does not fit a node of {gpus_per_node} GPUs evenly "
                        f"({gpus_per_node % g} GPU(s) per node would sit idle); use a divisor of {gpus_per_node}")
    if g > gpus_per_node and g % gpus_per_node:
        raise UserError(f"--gpus-per-trial {g} spans nodes of {gpus_per_node} GPUs but is not a multiple of "
                        f"{gpus_per_node} (a trial on several nodes takes whole nodes)")
    return float(g)


def make_split(budget: int, gpus_per_node: int, gpus_per_trial: float) -> Split:
    """Place as many trials of ``gpus_per_trial`` GPUs as fit on the budget's nodes."""
    budget = check_budget(budget)
    gpus_per_node = check_gpus_per_node(gpus_per_node)
    g = check_gpus_per_trial(gpus_per_trial, budget, gpus_per_node)
    if g < 1 and budget * round(1 / g) > MAX_PARALLEL_TRIALS:
        raise UserError(f"--gpus-per-trial 1/{round(1 / g)} on {budget:,} GPUs runs {budget * round(1 / g):,} trials at once; "
                        f"at most {MAX_PARALLEL_TRIALS:,} are supported")
    full_nodes, remainder = divmod(budget, gpus_per_node)
    node_sizes = [gpus_per_node] * full_nodes + ([remainder] if remainder else [])
    slots: list[Slot] = []
    if g < 1:
        k = round(1 / g)
        for gpu in range(budget):
            slots.extend(Slot(len(slots) + i, (gpu,), 1) for i in range(k))
    elif g <= gpus_per_node:
        size = int(g)
        for node, capacity in enumerate(node_sizes):
            base = node * gpus_per_node
            for block in range(capacity // size):
                first = base + block * size
                slots.append(Slot(len(slots), tuple(range(first, first + size)), 1))
    else:
        per_trial = int(g) // gpus_per_node
        for group in range(full_nodes // per_trial):
            first = group * per_trial * gpus_per_node
            slots.append(Slot(len(slots), tuple(range(first, first + int(g))), per_trial))
    return Split(budget=budget, gpus_per_node=gpus_per_node, gpus_per_trial=g, slots=tuple(slots))


def parse_gpus_per_trial(text: str) -> list[float]:
    """``"0.5,1,2"`` or ``"1/4,1"`` -> numbers (one-line UserError naming a bad item)."""
    values = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            value = float(Fraction(item)) if "/" in item else float(item)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"--gpus-per-trial: {item!r} is not a number (expected a list like 0.5,1,2,4)") from None
        if not math.isfinite(value):
            raise UserError(f"--gpus-per-trial: {item!r} is not a finite number")
        values.append(value)
    if not values:
        raise UserError("--gpus-per-trial is empty (expected a list like 0.5,1,2,4)")
    return values


def default_gpus_per_trial(budget: int, gpus_per_node: int, colocation_counts=()) -> list[float]:
    """Every power of two up to the budget that places evenly, plus the fractions the profile covers.

    Fractions 1/k only for the co-location counts k (powers of two) the profile measured: without
    measurements the simulator can only assume time slicing (each of k sharers k times slower),
    under which sharing a GPU never beats having it alone, so such splits would only pad the
    comparison. ``--gpus-per-trial 0.5`` still simulates them on request.
    """
    counts = sorted({int(k) for k in colocation_counts if int(k) >= 2 and (int(k) & (int(k) - 1)) == 0})
    splits = sorted(1 / k for k in counts)
    g = 1
    while g <= budget:
        if (g <= gpus_per_node and gpus_per_node % g == 0) or (g > gpus_per_node and g % gpus_per_node == 0):
            splits.append(float(g))
        g *= 2
    return splits
