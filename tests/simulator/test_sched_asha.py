"""ASHA's two variants on small hand-made sequences, and the O(1) quantile against numpy."""

import ConfigSpace as CS
import numpy as np
import pytest

from nasalloc.simulator.schedulers import (ASHA, COMPLETED, DONE, STOPPED, WAIT, Decision,
                                           Resume, SpaceSource, Start)
from nasalloc.simulator.schedulers.asha import nan_percentile

SPACE = CS.ConfigurationSpace()
SPACE.add(CS.Float("x", (0.0, 1.0)))


def asha(**kwargs):
    base = dict(max_t=9, eta=3, seed=0, trials=10)
    return ASHA(SpaceSource(SPACE), **{**base, **kwargs})


def test_stopping_cuts_below_the_rung_quantile_computed_before_recording():
    scheduler = asha(semantics="ray")
    assert scheduler.rungs == [1, 3, 9]
    for _ in range(4):
        assert isinstance(scheduler.suggest(), Start)
    assert scheduler.on_result(0, 1, 0.5) is Decision.CONTINUE  # empty rung: no cutoff
    # cutoff of [0.5] is 0.5: 0.4 is below it
    assert scheduler.on_result(1, 1, 0.4) is Decision.STOP
    # recorded [0.5, 0.4]: 66.7th percentile = 0.4667; 0.47 passes
    assert scheduler.cutoff(1) == pytest.approx(np.percentile([0.5, 0.4], 200 / 3))
    assert scheduler.on_result(2, 1, 0.47) is Decision.CONTINUE
    assert scheduler.on_result(3, 1, 0.3) is Decision.STOP
    assert scheduler.on_result(0, 2, 0.0) is Decision.CONTINUE  # not a rung: no check
    assert scheduler.on_result(0, 3, 0.0) is Decision.CONTINUE  # first at rung 3
    for epoch in range(4, 9):
        assert scheduler.on_result(0, epoch, 0.9) is Decision.CONTINUE
    assert scheduler.on_result(0, 9, 0.9) is Decision.STOP
    assert scheduler.trial_status(0) == COMPLETED and scheduler.trial_status(1) == STOPPED


def test_stopping_min_mode_and_nan_metrics():
    scheduler = asha(semantics="ray", mode="min")
    for _ in range(3):
        scheduler.suggest()
    scheduler.on_result(0, 1, 0.2)
    assert scheduler.on_result(1, 1, 0.3) is Decision.STOP  # larger loss is worse
    assert scheduler.on_result(2, 1, float("nan")) is Decision.CONTINUE  # Ray: NaN < x is False


def test_promotion_pauses_and_promotes_the_top_third_from_the_highest_rung_first():
    scheduler = asha(semantics="reference", trials=6)
    assert scheduler.rungs == [1, 3, 9]
    metrics = [0.1, 0.9, 0.5]
    for trial in range(3):
        assert scheduler.suggest() == Start(trial, scheduler.config_of(trial), 1)
        assert scheduler.on_result(trial, 1, metrics[trial]) is Decision.PAUSE
    # rung 1 holds 3 results: floor(3/3) = 1 may go on, the best (trial 1)
    assert scheduler.suggest() == Resume(1, 3)
    assert isinstance(scheduler.suggest(), Start)  # trial 3: nothing else promotable
    scheduler.on_result(1, 2, 0.9)
    assert scheduler.on_result(1, 3, 0.95) is Decision.PAUSE
    scheduler.on_result(3, 1, 0.0)
    # rung 3 has 1 result (floor(1/3)=0); rung 1 has 4 (floor=1, trial 1 already went)
    assert isinstance(scheduler.suggest(), Start)  # trial 4
    scheduler.on_result(4, 1, 0.7)
    assert isinstance(scheduler.suggest(), Start)  # trial 5: rung 1 (5 results) top 1 taken
    scheduler.on_result(5, 1, 0.8)
    # 6 results at rung 1: top 2 are trials 1 and 5 -> 5 goes on
    assert scheduler.suggest() == Resume(5, 3)
    assert scheduler.suggest() is WAIT
    scheduler.on_result(5, 2, 0.8)
    scheduler.on_result(5, 3, 0.85)
    # no trials left to create, nothing promotable (rung 3: 2 results, floor 0), none running
    assert scheduler.suggest() is DONE
    assert set(scheduler.finished_trials.values()) == {STOPPED}
    assert len(scheduler.finished_trials) == 6


def test_promotion_completes_at_max_t_even_when_not_a_power_of_eta():
    scheduler = asha(semantics="reference", max_t=10, trials=1, eta=3)
    assert scheduler.rungs == [1, 3, 9, 10]


def test_asha_rejects_brackets_and_missing_trials():
    from nasalloc.errors import UserError

    with pytest.raises(UserError, match="trials=None"):
        ASHA(SpaceSource(SPACE), max_t=9)
    with pytest.raises(UserError, match="'median'"):
        ASHA(SpaceSource(SPACE), max_t=9, trials=3, variant="median")


@pytest.mark.parametrize("seed", range(20))
def test_quantile_equals_numpy_nanpercentile(seed):
    rng = np.random.default_rng(seed)
    values = list(rng.normal(size=int(rng.integers(1, 60))))
    if seed % 3 == 0:
        values += [values[0]] * 3  # ties
    q = (1 - 1 / int(rng.integers(2, 6))) * 100
    with_nan = values + [float("nan")] * (seed % 4)
    assert nan_percentile(sorted(values), q) == np.nanpercentile(with_nan, q)
