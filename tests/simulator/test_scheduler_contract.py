"""One contract test for every scheduler, driven by a fake clock (random epoch times, random
metrics, P parallel slots, random failures). A referee replays the decision log and checks the
rules each algorithm promises."""

import json
from collections import defaultdict

import ConfigSpace as CS
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasalloc.simulator.schedulers import (ENDED, STOPPED, SpaceSource, TableSource,
                                           make_scheduler)
from nasalloc.simulator.schedulers.fakeclock import FakeClock

SPACE = CS.ConfigurationSpace()
SPACE.add([CS.Float("lr", (1e-4, 1e-1), log=True), CS.Integer("width", (8, 64)),
           CS.Categorical("opt", ["sgd", "adam"]), CS.Float("momentum", (0.0, 0.99))])
SPACE.add(CS.EqualsCondition(SPACE["momentum"], SPACE["opt"], "sgd"))
TABLE = TableSource(SPACE, [SpaceSource(SPACE).sample(np.random.default_rng(i))
                            for i in range(40)])

# (algorithm, semantics, variant)
KINDS = [
    ("hyperband", "ray", None), ("hyperband", "reference", None),
    ("bohb", "ray", None), ("bohb", "reference", None),
    ("asha", "ray", "stopping"), ("asha", "reference", "promotion"),
    ("asha", "ray", "promotion"), ("asha", "reference", "stopping"),
]
IDS = [f"{a}-{s}-{v or ''}".rstrip("-") for a, s, v in KINDS]


def build(kind, *, max_t=27, eta=3, min_t=1, trials=60, brackets=None, seed=0, mode="max",
          source=None):
    algorithm, semantics, variant = kind
    limits = dict(trials=trials) if brackets is None else dict(brackets=brackets)
    extra = dict(min_points_in_model=None) if algorithm == "bohb" else {}
    return make_scheduler(algorithm, source=source or SpaceSource(SPACE), max_t=max_t,
                          min_t=min_t, eta=eta, semantics=semantics, mode=mode, seed=seed,
                          variant=variant, **limits, **extra)


def referee(scheduler, clock, kind):
    """Check the log of one finished run against the contract and the algorithm's rules."""
    algorithm, _, variant = kind
    sign = 1.0 if scheduler.mode == "max" else -1.0
    state, ends, epoch_of = {}, defaultdict(int), {}
    at_milestone = defaultdict(dict)  # (group, epochs) -> {trial: score}
    went_past = defaultdict(set)  # (group, epochs) -> trials that trained beyond it
    stopped_at = defaultdict(set)
    rung_log = defaultdict(list)  # asha: epochs -> [(trial, score)] in arrival order
    milestone_of = {}

    def group(trial):
        return scheduler.bracket_index(trial) if algorithm != "asha" else 0

    for entry in clock.log:
        kind_ = entry[0]
        if kind_ == "start":
            _, trial, milestone, _ = entry
            assert trial not in state, "a trial id was started twice"
            state[trial], epoch_of[trial], milestone_of[trial] = "running", 0, milestone
        elif kind_ == "resume":
            _, trial, milestone = entry
            assert state[trial] == "paused", f"resumed trial {trial} was {state[trial]}"
            state[trial], milestone_of[trial] = "running", milestone
            if variant == "promotion":  # top floor(|rung|/eta) of its rung at this moment
                below = max(e for e in scheduler.rungs if e < milestone)
                rung = rung_log[below]
                mine = dict(rung)[trial]
                better = sum(1 for t, s in rung if s > mine or (s == mine and t < trial))
                assert better < len(rung) // scheduler.eta, \
                    f"trial {trial} promoted from rung {below} at rank {better} of {len(rung)}"
        elif kind_ == "result":
            _, trial, epoch, metric, decision = entry
            assert state[trial] == "running", f"result for trial {trial} that is {state[trial]}"
            assert epoch == epoch_of[trial] + 1 and 1 <= epoch <= scheduler.max_t
            epoch_of[trial] = epoch
            score = sign * metric
            key = (group(trial), epoch)
            for (g, e), members in list(at_milestone.items()):
                if g == key[0] and e < epoch and trial in members:
                    went_past[(g, e)].add(trial)
            if algorithm == "asha" and epoch in getattr(scheduler, "rungs", ()):
                if variant == "stopping" and epoch < scheduler.max_t:
                    previous = [s for _, s in rung_log[epoch]]
                    cutoff = (np.nanpercentile(previous, (1 - 1 / scheduler.eta) * 100)
                              if previous else None)
                    below = cutoff is not None and score < cutoff
                    assert (decision == "stop") == below, \
                        f"trial {trial} at rung {epoch}: score {score} cutoff {cutoff} {decision}"
                rung_log[epoch].append((trial, score))
            if algorithm != "asha" and epoch == milestone_of[trial]:
                at_milestone[key][trial] = score
            if decision == "continue":
                assert variant == "stopping" or epoch != milestone_of[trial] \
                    or algorithm != "asha"
            elif decision == "pause":
                assert variant != "stopping", "stopping ASHA never pauses"
                state[trial] = "paused"
            else:
                assert decision == "stop"
                state[trial] = "ended"
                ends[trial] += 1
                if algorithm != "asha":
                    stopped_at[key].add(trial)
        elif kind_ == "fail":
            trial = entry[1]
            assert state[trial] == "running"
            state[trial] = "ended"
            ends[trial] += 1
        elif kind_ == "done":  # DONE only once nothing runs; the paused ones are stopped
            assert all(s != "running" for s in state.values())

    started = set(state)
    assert started == set(range(scheduler.num_started))
    for trial in started:
        status = scheduler.trial_status(trial)
        assert status in ENDED, f"trial {trial} left {status}"
        if ends[trial] == 0:  # ended by DONE while paused (Ray: paused at the last rung)
            last_rung_pause = scheduler.semantics == "ray" and algorithm != "asha"
            assert state[trial] == "paused" and (status == STOPPED or last_rung_pause)
        else:
            assert ends[trial] == 1
    if algorithm != "asha":  # HB/BOHB: at most n_{i+1} go on, and they are the best
        for (bracket, epochs), members in at_milestone.items():
            shape = scheduler.shapes[bracket % len(scheduler.shapes)]
            levels = [e for _, e in shape]
            if epochs not in levels or levels.index(epochs) == len(levels) - 1:
                continue
            allowed = shape[levels.index(epochs) + 1][0]
            promoted = went_past[(bracket, epochs)]
            assert len(promoted) <= allowed
            dropped = [members[t] for t in stopped_at[(bracket, epochs)] if t in members]
            if promoted and dropped:
                assert min(members[t] for t in promoted) >= max(dropped)
    assert clock.finished


def run(kind, slots=4, seed=0, fail_prob=0.0, **kwargs):
    scheduler = build(kind, seed=seed, **kwargs)
    clock = FakeClock(scheduler, slots, seed=seed + 100, fail_prob=fail_prob).run()
    return scheduler, clock


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_run_keeps_every_rule(kind):
    scheduler, clock = run(kind, slots=5, trials=80)
    referee(scheduler, clock, kind)
    assert scheduler.num_started == 80


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_same_seed_same_decisions_other_seed_other_decisions(kind):
    assert run(kind, seed=3)[1].log == run(kind, seed=3)[1].log
    a = build(kind, seed=1)
    b = build(kind, seed=2)
    assert FakeClock(a, 4, seed=9).run().log != FakeClock(b, 4, seed=9).run().log


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
@pytest.mark.parametrize("source", ["space", "table"])
def test_state_dict_through_json_continues_identically(kind, source):
    src = SpaceSource(SPACE) if source == "space" else TABLE
    whole = FakeClock(build(kind, source=src, trials=70), 6, seed=5, fail_prob=0.03).run()
    steps = whole.counts["result"] + whole.counts["failure"]
    for cut in (5, steps // 3, steps * 2 // 3):
        clock = FakeClock(build(kind, source=src, trials=70), 6, seed=5, fail_prob=0.03)
        clock.run(max_steps=cut)
        saved = json.dumps(clock.scheduler.state_dict(), allow_nan=False)
        fresh = build(kind, source=src, trials=70, seed=12345)  # seed is overwritten by load
        fresh.load_state_dict(json.loads(saved))
        clock.scheduler = fresh
        clock.run()
        assert clock.log == whole.log, f"diverged after restoring at step {cut}"
    referee(clock.scheduler, clock, kind)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_failures_at_random_still_finish(kind):
    scheduler, clock = run(kind, slots=7, fail_prob=0.15, trials=120, seed=4)
    referee(scheduler, clock, kind)
    assert clock.counts["failure"] > 0
    assert scheduler.num_started == 120


@pytest.mark.parametrize("kind", KINDS[:4], ids=IDS[:4])
def test_brackets_limit_runs_that_many_brackets(kind):
    scheduler, clock = run(kind, slots=3, trials=None, brackets=7, max_t=9)
    referee(scheduler, clock, kind)
    shapes = scheduler.shapes
    expected = sum(shapes[k % len(shapes)][0][0] for k in range(7))
    assert scheduler.num_started == expected


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_min_mode_ranks_the_other_way(kind):
    # the same run in min mode with negated metrics must take the same decisions
    def negated(config, epoch, rng):
        return -float(rng.normal(epoch, 1.0))

    def plain_(config, epoch, rng):
        return float(rng.normal(epoch, 1.0))

    a = FakeClock(build(kind, mode="max"), 3, seed=2, metric=plain_).run()
    b = FakeClock(build(kind, mode="min"), 3, seed=2, metric=negated).run()
    strip = [e[:3] + e[4:] if e[0] == "result" else e for e in a.log]
    assert strip == [e[:3] + e[4:] if e[0] == "result" else e for e in b.log]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), slots=st.integers(1, 12), eta=st.integers(2, 4),
       max_t=st.integers(1, 40), min_t=st.integers(1, 4), trials=st.integers(1, 90),
       fail=st.sampled_from([0.0, 0.0, 0.1]), seed=st.integers(0, 10**6))
def test_rules_hold_for_random_settings(kind, slots, eta, max_t, min_t, trials, fail, seed):
    min_t = min(min_t, max_t)
    scheduler = build(kind, max_t=max_t, min_t=min_t, eta=eta, trials=trials, seed=seed)
    clock = FakeClock(scheduler, slots, seed=seed, fail_prob=fail).run()
    referee(scheduler, clock, kind)
    assert scheduler.num_started == trials
