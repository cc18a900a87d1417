"""Allocation policies and the engine's adaptive path (simulator/adaptive.py).

* ``static:G`` through the policy entry point gives today's records exactly, and the pool path
  forced on a static policy gives them too (placements aside: the pool picks groups as it goes);
* the fast milestone-to-milestone path gives the records of the epoch-by-epoch path under
  adaptive policies;
* invariants over random policies: GPUs held never exceed the budget, every started trial ends
  exactly once, the same seed gives the same records, resized segments pay save/start-up/load.
"""

import random

import pytest

from nasalloc.errors import UserError
from nasalloc.simulator.adaptive import simulate_policy
from nasalloc.simulator.engine import simulate
from nasalloc.simulator.gpupool import GpuPool
from nasalloc.simulator.policies import Ask, expand_policies, parse_policy, split_policy_list
from nasalloc.simulator.schedulers import make_scheduler
from nasalloc.simulator.schedulers.sampling import TableSource

from .simdata import make_table, split, time_model

CASES = [
    ("hyperband", "ray", {}),
    ("hyperband", "reference", {}),
    ("asha", "ray", {}),
    ("asha", "ray", {"variant": "promotion"}),
    ("bohb", "ray", {"min_points_in_model": 4}),
]


def _scheduler(algorithm, semantics, extra, table, seed=3):
    limits = {"trials": 60} if algorithm == "asha" else {"brackets": 4}
    return make_scheduler(algorithm, source=TableSource(table.space, table.configs), max_t=27, eta=3,
                          semantics=semantics, mode=table.mode, seed=seed, **limits, **extra)


def _records(result, placement=True):
    rows = [e.to_dict() for e in result.events]
    if not placement:
        for row in rows:
            row.pop("placement", None)
    return rows


MODEL = dict(epoch_s=10.0, startup_s=7.0, save_s=2.0, load_s=3.0, cv=0.2)


@pytest.mark.parametrize("algorithm,semantics,extra", CASES)
@pytest.mark.parametrize("g", [1, 4, 8])
def test_static_policy_reproduces_todays_records(algorithm, semantics, extra, g):
    table, model = make_table(rows=80, epochs=27), time_model(**MODEL)
    today = simulate(_scheduler(algorithm, semantics, extra, table), split(16, g), model, table, seed=5)
    policy = parse_policy(f"static:{g}", 16, 4)
    same = simulate_policy(_scheduler(algorithm, semantics, extra, table), policy, model, table, seed=5)
    assert _records(same) == _records(today) and same.row() == today.row()
    pool = simulate_policy(_scheduler(algorithm, semantics, extra, table), policy, model, table, seed=5,
                           force_pool=True)
    assert _records(pool, placement=False) == _records(today, placement=False)
    assert pool.makespan_s == today.makespan_s and pool.epochs == today.epochs
    assert pool.busy_gpu_s == pytest.approx(today.busy_gpu_s, rel=1e-12)


@pytest.mark.parametrize("algorithm,semantics,extra,spec", [
    (*case, spec) for case in CASES for spec in ("double:1,2", "double:2", "fill")
    if not (spec == "fill" and case[0] == "asha")])  # fill is for synchronous brackets (refused for ASHA)
@pytest.mark.parametrize("timing", ["ties", "noise"])
def test_fast_path_matches_epoch_by_epoch_under_adaptive_policies(algorithm, semantics, extra, spec, timing):
    table = make_table(rows=80, epochs=27, costs=timing != "ties")
    model = time_model(**(MODEL if timing == "noise" else dict(epoch_s=10.0)))
    policy = parse_policy(spec, 16, 4)
    fast = simulate_policy(_scheduler(algorithm, semantics, extra, table), policy, model, table, seed=5)
    slow = simulate_policy(_scheduler(algorithm, semantics, extra, table), policy, model, table, seed=5,
                           epoch_by_epoch=True)
    assert _records(fast) == _records(slow) and fast.row() == slow.row()
    assert fast.resizes == slow.resizes
    assert len({e.gpus for e in fast.events if e.kind == "epoch"}) > 1  # trials did change size
    if algorithm == "asha" and extra.get("variant") != "promotion":
        assert fast.resizes > 0  # stopping ASHA continues past rungs: resized in place


def _check_invariants(result, budget):
    held, ended, started = 0, {}, set()
    deltas = []
    for e in result.events:
        if e.kind in ("start", "resume"):
            deltas.append((e.time_s, 1, e.gpus, e))
        if e.kind in ("pause", "stop", "complete"):
            deltas.append((e.time_s, 0, -e.gpus, e))
        if e.kind == "start":
            assert e.trial_id not in started
            started.add(e.trial_id)
        if e.kind in ("stop", "complete"):
            assert e.trial_id not in ended, f"trial {e.trial_id} ended twice"
            ended[e.trial_id] = e.kind
    holding, busy = {}, set()
    for _, _, d, e in sorted(deltas, key=lambda x: (x[0], x[1])):  # frees before takes at one time
        held += d
        assert 0 <= held <= budget
        if d > 0:  # its group: e.gpus GPUs, on one node or whole nodes, none held by another
            group = set(e.placement)
            assert len(group) == e.gpus and not group & busy and max(group) < budget
            assert len({gpu // 4 for gpu in group}) == max(1, e.gpus // 4)
            holding[e.trial_id] = group
            busy |= group
        else:
            busy -= holding.pop(e.trial_id)
    assert held == 0 and not busy
    return started, ended


@pytest.mark.parametrize("case", range(12))
def test_invariants_over_random_policies(case):
    rnd = random.Random(case)
    budget = rnd.choice([4, 8, 12, 16, 32])
    algorithm, semantics, extra = rnd.choice(CASES)
    sizes = [g for g in (1, 2, 4, 8, 16, 32) if g <= budget and (g <= 4 or g % 4 == 0)]
    kind = rnd.choice(["double", "double", "fill"] if algorithm != "asha" else ["double"])
    spec = "fill" if kind == "fill" else f"double:{rnd.choice(sizes)},{rnd.choice([2, 3, 4])}"
    table = make_table(rows=80, epochs=27, costs=rnd.random() < 0.7)
    model = time_model(**MODEL)
    policy = parse_policy(spec, budget, 4)
    one = simulate_policy(_scheduler(algorithm, semantics, extra, table, seed=case), policy, model, table, seed=case)
    two = simulate_policy(_scheduler(algorithm, semantics, extra, table, seed=case), policy, model, table, seed=case)
    assert _records(one) == _records(two)
    started, ended = _check_invariants(one, budget)
    scheduler_view = _scheduler(algorithm, semantics, extra, table, seed=case)
    simulate_policy(scheduler_view, policy, model, table, seed=case)
    for trial_id in started:  # ended exactly once: a record, or ended by the scheduler while paused
        # (stopped at DONE, or Ray's BOHB bands completing a trial paused at max_t), as today
        assert trial_id in ended or scheduler_view.trial_status(trial_id) in ("stopped", "completed")
        assert scheduler_view.trial_status(trial_id) in ("stopped", "completed")
    assert one.busy_gpu_s <= budget * one.makespan_s + 1e-6


def test_a_resize_pays_save_startup_and_load_at_the_right_sizes():
    """One trial, ASHA stopping, double:1,2 on 4 GPUs: epoch 1 on 1 GPU, then 2, then 4."""
    table = make_table(rows=1, epochs=9, costs=False)
    model = time_model(epoch_s=8.0, startup_s=1.0, save_s=2.0, load_s=3.0)
    scheduler = make_scheduler("asha", source=TableSource(table.space, table.configs), max_t=9, eta=3,
                               mode=table.mode, seed=0, trials=1)
    result = simulate_policy(scheduler, parse_policy("double:1,2", 4, 4), model, table, seed=0)
    epochs = [(e.epoch, e.gpus, e.time_s) for e in result.events if e.kind == "epoch"]
    assert [g for _, g, _ in epochs] == [1, 2, 2, 4, 4, 4, 4, 4, 4]
    # start-up 1, epoch 8; save 2, resume (startup 1) + load 3, two epochs of 4; save 2, 1 + 3, six of 2
    assert epochs[0][2] == 9.0
    assert epochs[1][2] == 9.0 + 2 + 4 + 4
    assert epochs[3][2] == 9.0 + 2 + 4 + 8 + 2 + 4 + 2
    assert result.makespan_s == epochs[-1][2] == 31.0 + 5 * 2
    kinds = [(e.kind, e.gpus) for e in result.events if e.kind != "epoch"]
    assert kinds == [("start", 1), ("pause", 1), ("resume", 2), ("pause", 2), ("resume", 4), ("complete", 4)]


def test_a_larger_group_waits_for_free_gpus_first_come_first_served():
    pool = GpuPool(8, 4)
    a, b = pool.take(2), pool.take(4)
    assert len(set(a) | set(b)) == 6 and pool.free == 2
    assert pool.take(4) is None and pool.take(8) is None
    assert pool.take(2) is not None and pool.free == 0
    pool.give(b)
    assert pool.take(4) == b
    with pytest.raises(UserError):
        pool.take(3 * 4)  # 12 GPUs: more whole nodes than there are


def test_policy_answers():
    assert [parse_policy("double:1,2", 64, 4).gpus(Ask(k, None, None)) for k in range(7)] == [1, 2, 4, 8, 16, 32, 64]
    assert [parse_policy("double:1", 64, 4).gpus(Ask(k, None, None)) for k in range(5)] == [1, 2, 8, 16, 64]
    fill = parse_policy("fill", 64, 4)
    assert [fill.gpus(Ask(0, n, None)) for n in (81, 27, 9, 3, 1)] == [1, 2, 4, 16, 64]
    assert parse_policy("static:8", 64, 4).gpus(Ask(3, 1, None)) == 8
    with pytest.raises(UserError, match="fill needs synchronous brackets"):
        fill.gpus(Ask(0, None, None))


@pytest.mark.parametrize("text,message", [
    ("double:3", "3 GPUs is not a placeable"), ("double:1,1", "S=1 must be >= 2"), ("grow", "'grow' is not a policy"),
    ("fill:2", "fill takes no parameters"), ("static:x", "whole numbers"), ("static:1,2", "expected static:G"),
])
def test_bad_policies_are_named(text, message):
    with pytest.raises(UserError, match=message):
        parse_policy(text, 64, 4)


def test_policy_lists():
    assert split_policy_list("static,double:1,2,fill") == ["static", "double:1,2", "fill"]
    statics, adaptive = expand_policies("static,double,fill,double:1,2", 16, 4, 3, [1.0, 4.0])
    assert statics == [1.0, 4.0]
    assert [p.name for p in adaptive] == ["double:1,3", "double:2,3", "double:4,3", "double:8,3", "fill",
                                          "double:1,2"]


def test_per_gpu_under_a_policy_continues_each_curve_at_the_segment_batch():
    """double:1,2 with per_gpu batches: the epochs of a trial's 1-GPU segment report its recorded
    curve, its later epochs the curve continued at 2x and 4x the batch; without scaling all
    epochs report the recorded curve; fast and epoch-by-epoch paths agree."""
    from nasalloc.simulator.batchscaling import BatchScaling, NoiseScaleCurve

    table = make_table(rows=1, epochs=9, costs=False)
    model = time_model(epoch_s=8.0, startup_s=1.0, save_s=2.0, load_s=3.0)
    scaling = BatchScaling(policy="per_gpu", noise=NoiseScaleCurve((1.0, 9.0), (20.0, 80.0)), batch_key="width")

    def run(scaling, epoch_by_epoch=False):
        scheduler = make_scheduler("asha", source=TableSource(table.space, table.configs), max_t=9, eta=3,
                                   mode=table.mode, seed=0, trials=1)
        return simulate_policy(scheduler, parse_policy("double:1,2", 4, 4), model, table, seed=0,
                               scaling=scaling, epoch_by_epoch=epoch_by_epoch)

    plain, batched = run(None), run(scaling)
    metrics = lambda r: [(e.epoch, e.gpus, e.metric) for e in r.events if e.kind == "epoch"]
    assert [m for _, _, m in metrics(plain)] == pytest.approx(table.val[0].tolist())
    got = metrics(batched)
    assert [g for _, g, _ in got] == [1, 2, 2, 4, 4, 4, 4, 4, 4]
    assert got[0][2] == table.val[0, 0]                       # one GPU: the recorded batch
    assert all(m < r - 1e-6 for (_, _, m), r in zip(got[1:], table.val[0, 1:]))  # larger batches: behind
    assert metrics(run(scaling, epoch_by_epoch=True)) == got


def test_simulate_policies_with_per_gpu_batches(tmp_path):
    """The CLI no longer refuses --policies with per_gpu: it notes the model and writes policies.csv."""
    import json
    from click.testing import CliRunner
    from nasalloc.simulator.cli import simulate as simulate_cmd

    profile = json.loads((__import__("pathlib").Path(__file__).parents[2] / "results" / "reference" /
                          "digits_cpu_profile.json").read_text())
    profile["noise_scale"] = {"points": [{"epoch": 1, "b_noise": 40.0}, {"epoch": 9, "b_noise": 160.0}],
                              "batch_small": 16, "batch_big": 64}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    result = CliRunner().invoke(simulate_cmd, ["--budget", "2", "--profile", str(path), "--algorithms", "asha",
                                               "--seeds", "1", "--policies", "static,double:1,2",
                                               "--batch-policy", "per_gpu", "--out", str(tmp_path / "out"),
                                               "--quiet"])
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert any("policies under per_gpu" in n for n in plan["notes"])
    assert (tmp_path / "out" / "policies.csv").read_text().count("double:1,2") == 1
