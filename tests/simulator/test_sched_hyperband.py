"""HyperBand on hand-computed examples (one slot, metric = trial id: larger ids are better)."""

import ConfigSpace as CS
import numpy as np

from nasalloc.simulator.schedulers import (COMPLETED, DONE, STOPPED, WAIT, Decision, HyperBand,
                                           Resume, SpaceSource, Start)

SPACE = CS.ConfigurationSpace()
SPACE.add(CS.Float("x", (0.0, 1.0)))


def drive_one_slot(scheduler, metric=lambda trial, epoch: float(trial)):
    """Serial driver: one slot; returns the log of (call, trial, epoch, answer)."""
    log, epochs = [], {}
    while True:
        action = scheduler.suggest()
        if action is DONE:
            log.append(("done",))
            return log
        assert action is not WAIT, "one slot: never WAIT"
        trial = action.trial_id
        log.append(("start" if isinstance(action, Start) else "resume", trial, action.milestone))
        epochs.setdefault(trial, 0)
        while True:
            epochs[trial] += 1
            decision = scheduler.on_result(trial, epochs[trial], metric(trial, epochs[trial]))
            if decision is not Decision.CONTINUE or epochs[trial] in (1, 3, 9):
                log.append(("result", trial, epochs[trial], decision.value))
            if decision is not Decision.CONTINUE:
                break


def test_one_reference_bracket_by_hand():
    # R=9, eta=3 reference: first bracket 9@1, 3@3, 1@9
    scheduler = HyperBand(SpaceSource(SPACE), max_t=9, eta=3, semantics="reference",
                          seed=0, brackets=1)
    log = drive_one_slot(scheduler)
    expected = []
    for trial in range(8):
        expected += [("start", trial, 1), ("result", trial, 1, "pause")]
    # trial 8 completes rung 1: top 3 are 8, 7, 6; 8 itself continues at once
    expected += [("start", 8, 1), ("result", 8, 1, "continue"), ("result", 8, 3, "pause"),
                 ("resume", 7, 3), ("result", 7, 3, "pause"),
                 # trial 6 completes rung 3: only 8 goes on; 6 (the reporter) stops
                 ("resume", 6, 3), ("result", 6, 3, "stop"),
                 ("resume", 8, 9), ("result", 8, 9, "stop"), ("done",)]
    assert log == expected
    status = {t: scheduler.trial_status(t) for t in range(9)}
    assert status == {**{t: STOPPED for t in range(8)}, 8: COMPLETED}


def test_ray_fills_the_smallest_bracket_first_and_keeps_top_n_of_a_partial_bracket():
    # Ray max_t=9, eta=3: brackets in fill order 3@9 | 5@3,2@9 | 9@1,3@3,1@9
    scheduler = HyperBand(SpaceSource(SPACE), max_t=9, eta=3, semantics="ray", seed=0,
                          trials=6)
    assert [[tuple(r) for r in b] for b in scheduler.shapes] == \
        [[(3, 9)], [(5, 3), (2, 9)], [(9, 1), (3, 3), (1, 9)]]
    log = drive_one_slot(scheduler)
    starts = [(e[1], e[2]) for e in log if e[0] == "start"]
    assert starts == [(0, 9), (1, 9), (2, 9), (3, 3), (4, 3), (5, 3)]
    # the second bracket got only 3 of its 5 trials: its top 2 (5 and 4) go on to 9
    finished = scheduler.finished_trials
    assert finished == {0: COMPLETED, 1: COMPLETED, 2: COMPLETED, 3: STOPPED, 4: COMPLETED,
                        5: COMPLETED}


def test_promoted_trials_wait_for_a_slot_and_failed_ones_leave_the_rung():
    scheduler = HyperBand(SpaceSource(SPACE), max_t=3, eta=3, semantics="reference", seed=1,
                          brackets=1)  # 3@1, 1@3 (s_max=1: n = ceil(2/2*3)=3)
    assert [tuple(r) for r in scheduler.shapes[0]] == [(3, 1), (1, 3)]
    starts = [scheduler.suggest() for _ in range(3)]
    assert [s.trial_id for s in starts] == [0, 1, 2]
    assert scheduler.suggest() is WAIT  # all started, none reported
    assert scheduler.on_result(0, 1, 0.9) is Decision.PAUSE
    scheduler.on_failure(1)
    assert scheduler.on_result(2, 1, 0.1) is Decision.STOP  # rung done: 0 is the best
    assert scheduler.suggest() == Resume(0, 3)
    assert scheduler.suggest() is WAIT
    for epoch in (2, 3):
        decision = scheduler.on_result(0, epoch, 0.95)
    assert decision is Decision.STOP
    assert scheduler.suggest() is DONE
    assert scheduler.finished_trials == {0: COMPLETED, 1: "failed", 2: STOPPED}


def test_brackets_overlap_only_when_no_open_bracket_has_work():
    scheduler = HyperBand(SpaceSource(SPACE), max_t=3, eta=3, semantics="reference", seed=1,
                          brackets=2)  # 3@1,1@3 | 2@3
    first = [scheduler.suggest() for _ in range(3)]
    assert all(s.milestone == 1 for s in first)
    fourth = scheduler.suggest()  # first bracket fully handed out, slot free: open the next
    assert isinstance(fourth, Start) and fourth.milestone == 3
    scheduler.on_result(0, 1, 1.0)
    scheduler.on_result(1, 1, 0.5)
    assert scheduler.on_result(2, 1, 0.0) is Decision.STOP
    # trial 0 waits to resume in bracket 0, which comes before bracket 1's unstarted config
    assert scheduler.suggest() == Resume(0, 3)
    nxt = scheduler.suggest()
    assert isinstance(nxt, Start) and nxt.milestone == 3
    assert scheduler.suggest() is WAIT


def test_state_dict_is_plain_json_with_the_generator_state():
    import json

    scheduler = HyperBand(SpaceSource(SPACE), max_t=9, seed=np.random.default_rng(4), trials=5)
    scheduler.suggest()
    state = json.loads(json.dumps(scheduler.state_dict(), allow_nan=False))
    assert state["rng"]["bit_generator"] == "PCG64"
