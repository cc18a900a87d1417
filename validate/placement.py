"""Slots: which GPUs each concurrently running trial of a split gets.

A budget of ``budget`` GPUs split into trials of ``g`` GPUs gives ``budget // g`` slots of g
GPUs (kept inside one node when ``g <= gpus_per_node``), or for a fractional ``g = 1/k``,
``budget * k`` single-rank slots, k on each GPU. On CPU the "GPUs" are one-thread gloo ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from nasalloc.errors import UserError


@dataclass
class Slot:
    index: int
    devices: list      # GPU indices of the budget (0..budget-1); a fractional slot shares one
    ranks: int         # processes of a trial in this slot


def ranks_per_trial(gpus_per_trial: float) -> int:
    return int(gpus_per_trial) if gpus_per_trial >= 1 else 1


def make_slots(budget: int, gpus_per_trial: float, gpus_per_node: int | None = None) -> list[Slot]:
    g = float(gpus_per_trial)
    if g <= 0 or budget < 1:
        raise UserError(f"a split needs GPUs per trial > 0 and a budget >= 1, got {gpus_per_trial!r} of {budget!r}")
    if g < 1:
        per_gpu = round(1 / g)
        if abs(per_gpu * g - 1) > 1e-6:
            raise UserError(f"fractional GPUs per trial must be 1/k, got {gpus_per_trial!r}")
        return [Slot(i, [i // per_gpu], 1) for i in range(budget * per_gpu)]
    if not g.is_integer():
        raise UserError(f"GPUs per trial must be a whole number or 1/k, got {gpus_per_trial!r}")
    g = int(g)
    if g > budget:
        raise UserError(f"{g} GPUs per trial do not fit a budget of {budget} GPUs")
    node = gpus_per_node or budget
    slots, start = [], 0
    while start + g <= budget:
        if g <= node and start // node != (start + g - 1) // node:
            start = (start // node + 1) * node  # do not straddle a node boundary
            continue
        slots.append(Slot(len(slots), list(range(start, start + g)), g))
        start += g
    return slots
