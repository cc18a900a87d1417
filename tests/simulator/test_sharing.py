"""Fractional splits: a trial pays the co-location slowdown of the sharers busy on its GPU, not
always the full k-way one (simulator/sharing.py)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from nasalloc.simulator.engine import ROW_KEY, simulate
from nasalloc.simulator.schedulers.base import DONE, WAIT, Decision, Start

from .simdata import make_table, scheduler, split, time_model

ALONE_S, SLOWDOWN = 10.0, 1.8  # one trial alone on a GPU; two trials sharing it, each 1.8x slower


def _model(**overheads):
    model = time_model(ALONE_S, colocation={"2": SLOWDOWN})
    model.overheads.update(overheads)
    return model


class _Fixed:
    """Starts trial i (table row i) at the i-th request; every trial trains ``epochs[i]`` epochs."""

    name = "fixed"

    def __init__(self, epochs):
        self.epochs, self.started, self.max_t = list(epochs), 0, max(epochs)
        self.ended = 0

    def suggest(self):
        if self.started < len(self.epochs):
            self.started += 1
            return Start(self.started - 1, {ROW_KEY: self.started - 1}, self.epochs[self.started - 1])
        return DONE if self.ended == len(self.epochs) else WAIT

    def on_result(self, trial_id, epoch, metric):
        if epoch < self.epochs[trial_id]:
            return Decision.CONTINUE
        self.ended += 1
        return Decision.STOP


def _epoch_seconds(result) -> dict:
    seconds = defaultdict(list)
    for e in result.events:
        if e.kind == "epoch":
            seconds[e.trial_id].append(round(e.time_s - e.began_s, 9))
    return seconds


def test_a_trial_alone_on_its_gpu_trains_at_the_one_gpu_speed():
    table = make_table(rows=4, epochs=9, costs=False)
    # budget 1 at 0.5 GPU: two slots on one GPU; trial 0 trains 2 epochs, trial 1 trains 6
    result = simulate(_Fixed([2, 6]), split(1, 0.5, gpus_per_node=1), _model(), table)
    seconds = _epoch_seconds(result)
    assert seconds[0] == [ALONE_S * SLOWDOWN] * 2  # both busy
    # trial 1 shares for its first two epochs, then has the GPU to itself
    assert seconds[1] == [ALONE_S * SLOWDOWN] * 2 + [ALONE_S] * 4
    assert result.makespan_s == pytest.approx(2 * ALONE_S * SLOWDOWN + 4 * ALONE_S)


def test_start_up_is_the_co_located_one_only_while_a_partner_is_busy():
    table = make_table(rows=4, epochs=9, costs=False)
    model = _model(startup_s=3.0)
    model.per_gpus["startup_s"] = [(0.5, 5.0), (1.0, 3.0)]  # two launched together: 5 s each
    one = simulate(_Fixed([3]), split(1, 0.5, gpus_per_node=1), model, table)
    assert one.makespan_s == pytest.approx(3.0 + 3 * ALONE_S)  # one trial, two slots: alone throughout
    two = simulate(_Fixed([3, 3]), split(1, 0.5, gpus_per_node=1), model, table)
    assert two.makespan_s == pytest.approx(5.0 + 3 * ALONE_S * SLOWDOWN)


def test_a_full_gpu_costs_what_the_k_way_measurement_says():
    """With every slot always busy the occupancy model is the old static charge."""
    table = make_table(rows=4, epochs=9, costs=False)
    result = simulate(_Fixed([4, 4, 4, 4]), split(2, 0.5, gpus_per_node=2), _model(), table)
    assert set(s for v in _epoch_seconds(result).values() for s in v) == {ALONE_S * SLOWDOWN}


@pytest.mark.parametrize("algorithm", ["asha", "hyperband", "bohb"])
@pytest.mark.parametrize("g", [0.5, 0.25])
def test_sharers_never_exceed_the_slots_and_the_records_are_deterministic(algorithm, g):
    table = make_table(rows=60, epochs=27)
    runs = [simulate(scheduler(algorithm, table, max_t=27, seed=3), split(4, g), _model(), table, seed=5)
            for _ in range(2)]
    assert runs[0].events == runs[1].events
    # never more busy segments on a GPU than it has slots (SharedGPUs raises otherwise)
    k = round(1 / g)
    busy = defaultdict(int)
    intervals = defaultdict(list)
    for e in runs[0].events:
        if e.kind in ("start", "resume"):
            intervals[e.trial_id].append([e.time_s, None, e.placement[0]])
        elif e.kind in ("pause", "stop", "complete"):
            intervals[e.trial_id][-1][1] = e.time_s
    points = sorted((t, d, gpu) for spans in intervals.values() for a, b, gpu in spans
                    for t, d in ((a, 1), (b if b is not None else float("inf"), -1)))
    for _, delta, gpu in sorted(points, key=lambda p: (p[0], p[1])):
        busy[gpu] += delta
        assert busy[gpu] <= k
    # and every epoch is charged at 1..k sharers: between alone and the full co-located time
    lo, hi = min(table.rel_cost) * ALONE_S, max(table.rel_cost) * ALONE_S * SLOWDOWN * (k / 2)
    assert all(lo - 1e-9 <= s <= hi + 1e-9 for v in _epoch_seconds(runs[0]).values() for s in v)


def test_an_allocation_chain_charges_a_shared_gpu_by_its_busy_sharers_too():
    from nasalloc.simulator.allocation import AllocationModel

    table = make_table(rows=4, epochs=9, costs=False)
    chain = simulate(_Fixed([2, 6]), split(1, 0.5, gpus_per_node=1), _model(), table,
                     allocation=AllocationModel(time_limit_s=1e9))
    seconds = _epoch_seconds(chain)
    assert seconds[0] == [ALONE_S * SLOWDOWN] * 2 and seconds[1] == [ALONE_S * SLOWDOWN] * 2 + [ALONE_S] * 4
