"""The engine under an allocation model (time limits, queue waits, node failures, checkpoints).

Asserts what could go wrong: GPU time is conserved in every allocation (the categories add up
to the GPU time held, and held plus idle is budget x wall time); a model that never interrupts
gives the records of today's engine; nothing the scheduler heard is reported again; no trial
trains outside an allocation or starts after its SIGTERM; a seed gives the same chain twice.
"""


import pytest

from nasalloc.errors import UserError
from nasalloc.simulator.allocation import AllocationModel
from nasalloc.simulator.chainengine import CATEGORIES
from nasalloc.simulator.engine import simulate
from nasalloc.simulator.schedulers import make_scheduler
from nasalloc.simulator.schedulers.sampling import TableSource

from .simdata import make_table, split, time_model

TABLE = make_table(rows=80, epochs=27)
MODEL = time_model(epoch_s=10.0, startup_s=7.0, save_s=2.0, load_s=3.0, cv=0.2)
MODELS = {
    "limit": AllocationModel(time_limit_s=900.0, signal_lead_s=60.0, grace_s=40.0, requeue_wait_s=300.0),
    "limit+spread+failures": AllocationModel(time_limit_s=900.0, signal_lead_s=60.0, grace_s=40.0,
                                             requeue_wait_s=300.0, requeue_spread_s=200.0, node_mtbf_h=0.5),
    "failures+every2": AllocationModel(node_mtbf_h=0.3, checkpoint_every=2),
    "tight grace": AllocationModel(time_limit_s=700.0, signal_lead_s=30.0, grace_s=5.0, checkpoint_every=1),
    "no restarts": AllocationModel(node_mtbf_h=0.2, max_restarts=0),
    "limit+start": AllocationModel(time_limit_s=900.0, signal_lead_s=60.0, grace_s=40.0, requeue_wait_s=300.0,
                                   allocation_start_s=45.0),
}


def run(algorithm, slots, gpus, allocation, seed=5, epoch_by_epoch=False):
    limits = {"trials": 60} if algorithm == "asha" else {"brackets": 4}
    scheduler = make_scheduler(algorithm, source=TableSource(TABLE.space, TABLE.configs), max_t=27, eta=3,
                               mode=TABLE.mode, seed=3, **limits)
    return simulate(scheduler, split(slots, gpus), MODEL, TABLE, seed=seed, allocation=allocation,
                    epoch_by_epoch=epoch_by_epoch)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("algorithm", ["hyperband", "asha", "bohb"])
@pytest.mark.parametrize("slots,gpus", [(8, 1), (8, 4), (4, 0.5)])
def test_gpu_time_is_conserved_in_every_allocation(name, algorithm, slots, gpus):
    result = run(algorithm, slots, gpus, MODELS[name])
    chain = result.chain
    assert chain["allocations"] == len(chain["per_allocation"]) >= 1
    budget = result.budget
    previous_end = 0.0
    for a in chain["per_allocation"]:
        wall = a["end_s"] - a["start_s"]
        assert a["start_s"] >= previous_end and wall > 0
        previous_end = a["end_s"]
        parts = sum(a[f"{c}_gpu_s"] for c in CATEGORIES)
        assert parts == pytest.approx(a["held_gpu_s"], rel=1e-9, abs=1e-6)   # each held second once
        assert a["idle_gpu_s"] >= -1e-6                                       # never more than the budget held
        assert parts + a["idle_gpu_s"] == pytest.approx(budget * wall, rel=1e-9)
        assert all(a[f"{c}_gpu_s"] >= -1e-9 for c in CATEGORIES)
    assert chain["time_to_result_s"] == result.makespan_s == previous_end
    assert chain["compute_s"] <= result.makespan_s + 1e-9


@pytest.mark.parametrize("name", sorted(MODELS))
def test_nothing_heard_is_reported_again_and_nothing_runs_outside_an_allocation(name):
    result = run("hyperband", 8, 1, MODELS[name])
    windows = [(a["start_s"], a["end_s"]) for a in result.chain["per_allocation"]]
    model = MODELS[name]
    heard = [(e.trial_id, e.epoch) for e in result.events if e.kind == "epoch" and not e.extra.get("replay")]
    assert len(heard) == len(set(heard)) == result.epochs
    for e in result.events:
        assert any(s - 1e-9 <= e.time_s <= t + 1e-9 for s, t in windows), e
        if e.kind == "start":  # nothing new starts after the SIGTERM of its allocation
            start = max(s for s, _ in windows if s <= e.time_s + 1e-9)
            assert e.time_s < model.signal_at(start)
    # every trial's heard epochs come in order, each once
    for trial in {t for t, _ in heard}:
        epochs = [ep for t, ep in heard if t == trial]
        assert epochs == list(range(1, len(epochs) + 1))


def test_no_trial_launches_before_the_runner_has_started_in_its_allocation():
    plain, started = MODELS["limit"], MODELS["limit+start"]
    without, with_start = run("asha", 8, 1, plain), run("asha", 8, 1, started)
    windows = [(a["start_s"], a["end_s"]) for a in with_start.chain["per_allocation"]]
    assert len(windows) >= 2
    for e in with_start.events:
        if e.kind in ("start", "resume"):
            start = max(s for s, _ in windows if s <= e.time_s + 1e-9)
            assert e.time_s >= start + 45.0 - 1e-9, e
    # every allocation loses its first 45 s: the chain needs at least as many, and takes longer
    assert with_start.chain["allocations"] >= without.chain["allocations"]
    assert with_start.makespan_s > without.makespan_s
    # the key of a model without a start is the one it had before the field existed
    assert "allocation_start_s" not in plain.key() and "allocation_start_s" in started.key()


def test_an_allocation_start_that_leaves_no_training_time_is_refused():
    with pytest.raises(UserError, match="--allocation-start 840s leaves no time"):
        AllocationModel(time_limit_s=900.0, signal_lead_s=60.0, allocation_start_s=840.0)


def test_limits_change_the_time_to_result():
    free = run("hyperband", 8, 1, None)
    chained = run("hyperband", 8, 1, MODELS["limit"])
    assert chained.chain["allocations"] > 1
    waits = 300.0 * (chained.chain["allocations"] - 1)
    assert chained.makespan_s == pytest.approx(chained.chain["compute_s"] + waits)
    assert chained.makespan_s > free.makespan_s + waits * 0.99
    assert chained.chain["lost_restart_gpu_h"] > 0  # restarts pay start-up and load
    assert chained.epochs == free.epochs or chained.trials == free.trials


@pytest.mark.parametrize("algorithm", ["hyperband", "asha", "bohb"])
@pytest.mark.parametrize("epoch_by_epoch", [False, True])
def test_a_model_that_never_interrupts_gives_todays_records(algorithm, epoch_by_epoch):
    today = run(algorithm, 8, 1, None, epoch_by_epoch=epoch_by_epoch)
    quiet = run(algorithm, 8, 1, AllocationModel(time_limit_s=1e12))
    assert [e.to_dict() for e in quiet.events] == [e.to_dict() for e in today.events]
    assert quiet.makespan_s == today.makespan_s and quiet.epochs == today.epochs
    assert quiet.chain["allocations"] == 1
    assert quiet.busy_gpu_s == pytest.approx(today.busy_gpu_s, rel=1e-9)


def test_an_inactive_model_is_no_model():
    today = run("asha", 8, 1, None)
    same = run("asha", 8, 1, AllocationModel())
    assert same.chain is None and same.row() == today.row()
    assert [e.to_dict() for e in same.events] == [e.to_dict() for e in today.events]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_chain(name):
    one, two = run("bohb", 8, 2, MODELS[name], seed=9), run("bohb", 8, 2, MODELS[name], seed=9)
    assert one.chain == two.chain
    assert [e.to_dict() for e in one.events] == [e.to_dict() for e in two.events]


def test_failures_restart_from_the_checkpoint_or_fail_the_trial():
    restarted = run("hyperband", 8, 1, MODELS["failures+every2"])
    assert restarted.chain["failures"] > 0 and restarted.chain["lost_failure_gpu_h"] > 0
    lost = [e for e in restarted.events if e.kind == "pause" and e.extra.get("lost")]
    assert lost and all(e.extra["checkpoint_epoch"] % 2 == 0 for e in lost)
    failed = run("hyperband", 8, 1, MODELS["no restarts"])
    fails = [e for e in failed.events if e.kind == "fail"]
    assert failed.chain["failed_trials"] == failed.chain["failures"] == len(fails) > 0


def test_more_nodes_per_trial_are_hit_more_often():
    model = AllocationModel(node_mtbf_h=2.0, checkpoint_every=1)
    small = sum(run("asha", 16, 1, model, seed=s).chain["failures"] for s in range(4))
    large = sum(run("asha", 16, 8, model, seed=s).chain["failures"] for s in range(4))
    assert small > 0 and large > 0
    hours = lambda g: sum(run("asha", 16, g, model, seed=s).busy_gpu_s for s in range(4)) / 3600  # noqa: E731
    # per GPU-hour a trial on 2 nodes of 4 GPUs is hit as often as 8 trials of one GPU: rates per node-hour
    assert large / (hours(8) / 4) == pytest.approx(small / hours(1), rel=0.8)


def test_an_allocation_that_keeps_no_work_is_a_clear_error():
    model = AllocationModel(time_limit_s=40.0, signal_lead_s=10.0, grace_s=1.0)
    with pytest.raises(UserError, match="--time-limit 40s: allocation .* kept no work"):
        run("hyperband", 8, 1, model)


def test_a_sweep_stopped_by_an_allocation_that_keeps_no_work_leaves_simulations_csv_as_it_was(tmp_path):
    """A 1-GPU trial starts in 2 s and keeps its first epoch; a 4-GPU trial takes 30 s to start,
    past the kill 25 s into every allocation: its run fails, after the 1-GPU rows were written."""
    from dataclasses import replace

    from nasalloc.simulator.sweep import CSV_NAME, SweepSpec, run_sweep
    from nasalloc.simulator.timemodel import TimeModel

    from .simdata import time_model

    base = time_model(epoch_s=1.0)
    slow_start = TimeModel(scaling=base.scaling, overheads={**base.overheads, "startup_s": 2.0},
                           per_gpus={"startup_s": [(1.0, 2.0), (4.0, 30.0)]}, gpus_per_node=4)
    model = AllocationModel(time_limit_s=60.0, signal_lead_s=40.0, grace_s=5.0)
    spec = SweepSpec(budget=8, gpus_per_node=4, splits=(1.0, 4.0), algorithms=("asha",), seeds=(0, 1), max_t=9,
                     allocation=model.key())
    path = tmp_path / CSV_NAME
    with pytest.raises(UserError, match="kept no work at 4 GPU"):
        run_sweep(spec, slow_start, TABLE, TABLE.space, tmp_path)
    assert not path.exists()  # the 1-GPU rows appended before the failure are gone with it
    # an earlier sweep's file (the same settings, the 1-GPU split only) is put back byte for byte
    run_sweep(replace(spec, splits=(1.0,)), slow_start, TABLE, TABLE.space, tmp_path)
    earlier = path.read_bytes()
    assert earlier.count(b"\n") == 3  # header and two seeds
    with pytest.raises(UserError, match="kept no work"):
        run_sweep(spec, slow_start, TABLE, TABLE.space, tmp_path, jobs=2)
    assert path.read_bytes() == earlier
