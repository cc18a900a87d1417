"""The pure allocation/failure model: parsing, validation, the shared rules."""

import math

import pytest

from nasalloc.errors import UserError
from nasalloc.simulator.allocation import (AllocationDraws, AllocationModel, after_lost_segment, checkpoint_due,
                                           parse_duration, parse_wait)


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400),
                                          ("1.5d", 129600), ("01:30", 90), ("24:00:00", 86400),
                                          ("1-00:00:00", 86400), ("0:01:05", 65)])
def test_durations(text, seconds):
    assert parse_duration(text, "--time-limit") == seconds


@pytest.mark.parametrize("text", ["", "1y", "-5m", "h", "1:2:3:4"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(UserError, match=f"--time-limit {text!r}"):
        parse_duration(text, "--time-limit")


def test_waits():
    assert parse_wait("30m") == (1800, 0) and parse_wait("30m,10m") == (1800, 600)
    with pytest.raises(UserError, match="MEAN,SPREAD"):
        parse_wait("1m,2m,3m")
    with pytest.raises(UserError, match="needs a mean"):
        parse_wait("0,5m")


def test_rules_shared_by_both_drivers():
    assert [after_lost_segment(n, 2) for n in (1, 2, 3)] == ["restart", "restart", "fail"]
    assert after_lost_segment(1, 0) == "fail"
    assert [e for e in range(1, 10) if checkpoint_due(e, 3, 9)] == [3, 6]
    assert not any(checkpoint_due(e, None, 9) for e in range(1, 10))


def test_model_checks_and_keys():
    assert not AllocationModel().active and AllocationModel().key() == ""
    model = AllocationModel(time_limit_s=86400, requeue_wait_s=1800)
    assert model.active and model.key()
    assert model.signal_at(100.0) == 100 + 86400 - 300 and model.kill_at(100.0) == 100 + 86400 - 240
    assert AllocationModel().signal_at(0.0) == math.inf
    for kwargs, words in [(dict(time_limit_s=200.0), "--time-limit 200s must be longer"),
                          (dict(node_mtbf_h=0.0), "--node-mtbf 0.0"), (dict(checkpoint_every=0), "--checkpoint-every 0"),
                          (dict(max_restarts=-1), "--max-restarts -1")]:
        with pytest.raises(UserError, match=words):
            AllocationModel(**kwargs)


def test_draws_are_seeded_and_have_the_asked_mean():
    model = AllocationModel(time_limit_s=3600, requeue_wait_s=600, requeue_spread_s=300, node_mtbf_h=10)
    one, two = AllocationDraws(model, 4), AllocationDraws(model, 4)
    waits = [one.queue_wait() for _ in range(4000)]
    assert waits[:5] == [two.queue_wait() for _ in range(5)]
    assert sum(waits) / len(waits) == pytest.approx(600, rel=0.05) and min(waits) >= 0
    hits = [one.failure_after(4) for _ in range(4000)]
    assert sum(hits) / len(hits) == pytest.approx(10 * 3600 / 4, rel=0.06)
    assert AllocationDraws(AllocationModel(), 0).failure_after(3) == math.inf
