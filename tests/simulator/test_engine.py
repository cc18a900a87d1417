"""The SimPy engine against hand-computed makespans and the invariants it promises."""

import math
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasalloc.simulator.cluster import default_gpus_per_trial
from nasalloc.simulator.engine import simulate
from nasalloc.simulator.schedulers import WAIT, hyperband_brackets

from .simdata import make_table, scheduler, split, time_model

EPOCH = 10.0


@pytest.mark.parametrize("max_t", [9, 27])
@pytest.mark.parametrize("slots", [1, 2, 3, 4, 9, 16])
def test_synchronous_hyperband_makespan_rung_by_rung(max_t, slots):
    """One bracket, constant epoch time, no overheads: every rung is a barrier, and n equal
    jobs of e epochs on P slots take ceil(n / P) * e epochs."""
    table = make_table(rows=120, epochs=max_t, costs=False)
    shape = hyperband_brackets(max_t, 3, 1, "reference", "hyperband")[0]
    expected, previous = 0.0, 0
    for n, epochs in shape:
        expected += math.ceil(n / slots) * (epochs - previous) * EPOCH
        previous = epochs
    result = simulate(scheduler("hyperband", table, max_t=max_t, semantics="reference", brackets=1),
                      split(slots, 1, gpus_per_node=1), time_model(EPOCH), table)
    assert result.makespan_s == pytest.approx(expected)
    assert result.trials == shape[0][0]
    assert result.epochs == sum(n * (e - p) for (n, e), p in zip(shape, [0] + [e for _, e in shape]))


@pytest.mark.parametrize("semantics", ["ray", "reference"])
def test_asha_on_one_slot_takes_the_sum_of_its_epochs(semantics):
    table = make_table(rows=30, epochs=27)
    result = simulate(scheduler("asha", table, max_t=27, semantics=semantics, trials=25),
                      split(1, 1, gpus_per_node=1), time_model(EPOCH), table)
    epochs = [e for e in result.events if e.kind == "epoch"]
    rows = {e.trial_id: e.extra["row"] for e in result.events if e.kind == "start"}
    assert result.makespan_s == pytest.approx(sum(table.rel_cost[rows[e.trial_id]] * EPOCH for e in epochs))
    assert result.utilization == pytest.approx(1.0)


def test_overheads_are_paid_per_segment():
    """Promotion ASHA on one slot: start-up per segment, a load per resume, a save per pause."""
    table = make_table(rows=30, epochs=9)
    model = time_model(EPOCH, startup_s=7.0, save_s=2.0, load_s=3.0)
    result = simulate(scheduler("asha", table, max_t=9, semantics="reference", trials=12),
                      split(1, 1, gpus_per_node=1), model, table)
    kinds = Counter(e.kind for e in result.events)
    rows = {e.trial_id: e.extra["row"] for e in result.events if e.kind == "start"}
    work = sum(table.rel_cost[rows[e.trial_id]] * EPOCH for e in result.events if e.kind == "epoch")
    assert kinds["resume"] > 0 and kinds["pause"] > 0
    expected = work + 7.0 * (kinds["start"] + kinds["resume"]) + 3.0 * kinds["resume"] + 2.0 * kinds["pause"]
    assert result.makespan_s == pytest.approx(expected)
    assert result.lower_bound_s == pytest.approx(work)  # one GPU: the work itself, no overheads
    starts = {e.trial_id: e.time_s for e in result.events if e.kind == "start"}
    firsts = {}
    for e in result.events:
        if e.kind == "epoch" and e.epoch == 1:
            firsts[e.trial_id] = e.began_s
    assert all(firsts[t] - starts[t] == pytest.approx(7.0) for t in firsts)


def test_fractional_split_slows_each_sharer_by_the_colocation_factor():
    table = make_table(rows=20, epochs=9, costs=False)
    shared = simulate(scheduler("asha", table, max_t=9, trials=8), split(2, 0.5), time_model(EPOCH), table)
    assert shared.parallel_trials == 4
    durations = Counter(round(e.time_s - e.began_s, 9) for e in shared.events if e.kind == "epoch")
    # no co-location data: time-sliced, 2 busy trials -> 2x; a trial whose partner ended: alone
    assert set(durations) == {2 * EPOCH, EPOCH} and durations[2 * EPOCH] > durations[EPOCH]
    measured = time_model(EPOCH, colocation={"2": 1.25})
    faster = simulate(scheduler("asha", table, max_t=9, trials=8), split(2, 0.5), measured, table)
    assert {round(e.time_s - e.began_s, 9) for e in faster.events if e.kind == "epoch"} == {1.25 * EPOCH, EPOCH}
    per_gpu = Counter(tuple(e.placement) for e in shared.events if e.kind == "start")
    assert set(per_gpu) == {(0,), (1,)}


def test_split_that_leaves_gpus_idle_shows_it_in_the_result():
    table = make_table(rows=20, epochs=9)
    result = simulate(scheduler("hyperband", table, max_t=9), split(6, 4), time_model(EPOCH), table)
    assert result.parallel_trials == 1 and result.idle_gpus == 2
    assert result.utilization <= 4 / 6 + 1e-9
    row = result.row()
    assert row["idle_gpus"] == 2 and row["parallel_trials"] == 1


def test_inter_node_trials_pay_the_inter_node_factor():
    table = make_table(rows=20, epochs=3, costs=False)
    model = time_model(EPOCH, s0=1.0, inter_node=3.0)
    one_node = simulate(scheduler("asha", table, max_t=3, trials=2), split(8, 4, gpus_per_node=8), model, table)
    two_nodes = simulate(scheduler("asha", table, max_t=3, trials=2), split(8, 8, gpus_per_node=4), model, table)
    epoch = lambda r: {round(e.time_s - e.began_s, 9) for e in r.events if e.kind == "epoch"}  # noqa: E731
    assert epoch(one_node) == {round(EPOCH / 4 + 1.0, 9)}
    assert epoch(two_nodes) == {round(EPOCH / 8 + 3.0, 9)}


class Counting:
    """Passes every call to a real scheduler and counts the results it is told."""

    def __init__(self, inner):
        self.inner, self.results = inner, 0
        self.max_t, self.mode, self.name = inner.max_t, inner.mode, inner.name

    def suggest(self):
        return self.inner.suggest()

    def on_result(self, trial_id, epoch, metric):
        self.results += 1
        return self.inner.on_result(trial_id, epoch, metric)


def _segments(events):
    """(start, end, trial, placement, gpus) of every segment that held GPUs."""
    open_, out = {}, []
    for e in events:
        if e.kind in ("start", "resume"):
            open_[e.trial_id] = e
        elif e.kind in ("pause", "stop", "complete") and e.trial_id in open_:
            begin = open_.pop(e.trial_id)
            out.append((begin.time_s, e.time_s, e.trial_id, tuple(begin.placement), begin.gpus))
    assert not open_
    return out


ALGORITHMS = ["hyperband", "asha", "bohb"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(algorithm=st.sampled_from(ALGORITHMS), semantics=st.sampled_from(["ray", "reference"]),
       budget=st.integers(1, 24), gpus_per_node=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 2 ** 16),
       data=st.data())
def test_invariants(algorithm, semantics, budget, gpus_per_node, seed, data):
    g = data.draw(st.sampled_from(default_gpus_per_trial(budget, gpus_per_node, {"2": 1.5, "4": 3.0})))
    table = make_table(rows=25, epochs=9, seed=seed % 7)
    model = time_model(EPOCH, startup_s=3.0, save_s=1.0, load_s=2.0, cv=0.1)
    limits = {"trials": 12} if algorithm == "asha" else {"brackets": 2}

    def run():
        counted = Counting(scheduler(algorithm, table, max_t=9, semantics=semantics, seed=seed, **limits))
        return counted, simulate(counted, split(budget, g, gpus_per_node), model, table, seed=seed)

    counted, result = run()
    events = result.events
    # The epochs simulated are the results the scheduler was told.
    assert sum(e.kind == "epoch" for e in events) == counted.results == result.epochs
    # GPUs in use never exceed the budget; a GPU is shared only by fractional trials.
    segments = _segments(events)
    moments = sorted({s[0] for s in segments})
    k = round(1 / g) if g < 1 else 1
    for t in moments:
        live = [s for s in segments if s[0] <= t < s[1]]
        assert sum(s[4] for s in live) <= budget + 1e-9
        per_gpu = Counter(gpu for s in live for gpu in s[3])
        assert all(gpu < budget for gpu in per_gpu)
        assert max(per_gpu.values(), default=0) <= k
    # A trial's records end in stop or complete, or in pause when the scheduler stopped it while
    # paused; busy time never exceeds the allocation.
    last = {}
    for e in events:
        last[e.trial_id] = e.kind
    scheduler_ = counted.inner
    for trial_id, kind in last.items():
        assert kind in ("stop", "complete", "pause")
        expected = {"pause": {"stopped"}, "stop": {"stopped"}, "complete": {"completed"}}[kind]
        if kind == "pause" and semantics == "ray" and algorithm != "asha":
            expected = {"stopped", "completed"}  # Ray pauses at the last rung, then stops it
        assert scheduler_.trial_status(trial_id) in expected
    assert 0 < result.utilization <= 1 + 1e-9
    assert result.lower_bound_s <= result.makespan_s + 1e-9
    # The same seed gives identical records.
    _, again = run()
    assert [e.to_dict() for e in again.events] == [e.to_dict() for e in events]


@pytest.mark.parametrize("algorithm, semantics", [("hyperband", "ray"), ("hyperband", "reference"),
                                                  ("asha", "ray"), ("asha", "reference"), ("bohb", "ray")])
def test_with_unlimited_gpus_nothing_waits_for_a_slot(algorithm, semantics):
    """With a slot for every trial, work starts the moment the scheduler has it: every start at
    time 0 or at the moment of a result (the event that made it runnable), never later."""
    table = make_table(rows=60, epochs=9)
    limits = {"trials": 30} if algorithm == "asha" else {"brackets": 3}
    model = time_model(EPOCH, startup_s=3.0, save_s=1.0, load_s=2.0, cv=0.1)
    result = simulate(scheduler(algorithm, table, max_t=9, semantics=semantics, **limits),
                      split(256, 1, gpus_per_node=8), model, table, seed=3)
    result_times = {e.time_s for e in result.events if e.kind in ("epoch", "pause")}
    for e in result.events:
        if e.kind == "start":
            assert e.time_s == 0.0 or e.time_s in result_times
        if e.kind == "resume":
            assert e.time_s in result_times
    segments = _segments(result.events)
    assert max(sum(1 for s in segments if s[0] <= t < s[1]) for t in {s[0] for s in segments}) < 256
    if algorithm == "asha":
        assert all(e.time_s == 0.0 for e in result.events if e.kind == "start")


def test_a_scheduler_that_waits_with_nothing_running_is_a_bug():
    class Stuck:
        max_t, mode, name = 9, "max", "stuck"

        def suggest(self):
            return WAIT

    table = make_table(rows=5, epochs=9)
    with pytest.raises(RuntimeError, match="WAIT while no trial runs"):
        simulate(Stuck(), split(2, 1), time_model(EPOCH), table)


def test_best_metric_and_deadline_come_from_the_curves():
    table = make_table(rows=40, epochs=9)
    run = lambda deadline: simulate(scheduler("hyperband", table, max_t=9, brackets=2), split(4, 1),  # noqa: E731
                                    time_model(EPOCH), table, deadline_s=deadline)
    result = run(None)
    last = {}
    for e in result.events:
        if e.kind == "epoch":
            last[e.trial_id] = (e.metric, e.test_metric)
    best_id = max(last, key=lambda t: (last[t][0], -t))
    assert (result.best_trial_id, result.best_metric, result.best_test_metric) == (best_id, *last[best_id])
    assert math.isnan(result.row()["deadline_metric"] or math.nan)
    everything = run(result.makespan_s)
    assert everything.deadline_metric == max(e.metric for e in result.events if e.kind == "epoch")
    assert math.isnan(run(EPOCH / 10).deadline_metric)  # no epoch has ended yet
