"""BOHB's sampler: HpBandSter's model rules, the KDE evaluation, and that it actually helps."""

import math
import warnings

import ConfigSpace as CS
import numpy as np
import pytest

from nasalloc.simulator.schedulers import BOHB, SpaceSource, TableSource, make_scheduler
from nasalloc.simulator.schedulers.bohb import NormalReferenceKDE, kde_pdf, pair_pdf, pair_row_pdf
from nasalloc.simulator.schedulers.sampling import kde_vartypes
from nasalloc.simulator.schedulers.fakeclock import FakeClock

OPTIMUM = np.array([0.25, 0.7])


def square():
    space = CS.ConfigurationSpace()
    space.add([CS.Float("x", (0.0, 1.0)), CS.Float("y", (0.0, 1.0))])
    return space


def quadratic(config, epoch, rng):
    """A loss that falls with epochs; its floor is the squared distance to OPTIMUM."""
    d2 = (config["x"] - OPTIMUM[0]) ** 2 + (config["y"] - OPTIMUM[1]) ** 2
    return d2 + 0.5 / epoch + float(rng.normal(0, 0.002))


def distance(config):
    return math.hypot(config["x"] - OPTIMUM[0], config["y"] - OPTIMUM[1])


def test_kde_pdf_matches_statsmodels_for_every_variable_type():
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    rng = np.random.default_rng(0)
    data = rng.random((25, 4))
    data[:, 2] = rng.integers(0, 3, 25)
    data[:, 3] = rng.integers(0, 4, 25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kde = KDEMultivariate(data=data, var_type="ccuo", bw="normal_reference")
    kde.bw = np.clip(kde.bw, 1e-3, None)
    points = rng.random((64, 4))
    points[:, 2] = rng.integers(0, 3, 64)
    points[:, 3] = rng.integers(0, 4, 64)
    np.testing.assert_allclose(kde_pdf(kde, points), kde.pdf(points), rtol=1e-12)


def test_normal_reference_kde_has_statsmodels_bandwidths_to_the_last_bit():
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    rng = np.random.default_rng(1)
    for rows in (6, 25, 113):
        data = rng.random((rows, 5))
        data[:, 1] = rng.integers(0, 3, rows)
        data[:, 4] = rng.integers(0, 2, rows)
        data[: rows // 2, 2] = 0.5  # a dimension with repeated values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = KDEMultivariate(data=data, var_type="cuccu", bw="normal_reference")
        ours = NormalReferenceKDE(data, "cuccu")
        assert ours.bw.tobytes() == reference.bw.tobytes()
        np.testing.assert_array_equal(ours.data, reference.data)
        points = rng.random((64, 5))
        points[:, 1] = rng.integers(0, 3, 64)
        points[:, 4] = rng.integers(0, 2, 64)
        np.testing.assert_allclose(kde_pdf(ours, points), reference.pdf(points), rtol=1e-12)
    with pytest.raises(ValueError):
        NormalReferenceKDE(rng.random((5, 5)), "ccccc")


def test_row_densities_are_the_floats_of_one_call_on_all_candidates():
    """pair_row_pdf evaluates a good and a bad KDE side by side and keeps each row's
    densities on the pair; whichever rows came before, a row's densities are the floats
    kde_pdf gives it under each KDE alone among any other points (no tolerance)."""
    space = CS.ConfigurationSpace()
    space.add([CS.Float("x", (0.0, 1.0)), CS.Categorical("c", ["a", "b", "c"]), CS.Float("y", (0.0, 1.0)),
               CS.OrdinalHyperparameter("o", [1, 2, 4, 8])])
    rng = np.random.default_rng(2)
    configs = [{"x": float(rng.random()), "c": str(rng.choice(["a", "b", "c"])), "y": float(rng.random()),
                "o": int(rng.choice([1, 2, 4, 8]))} for _ in range(40)]
    table = TableSource(space, configs)
    vartypes, _ = kde_vartypes(space)
    assert sorted(vartypes) == ["c", "c", "o", "u"]
    good, bad = (NormalReferenceKDE(table.vectors[rng.integers(0, 40, n)], vartypes) for n in (15, 31))
    for kde in (good, bad):
        kde.bw = np.clip(kde.bw, 1e-3, None)
    for _ in range(5):
        rows = rng.integers(0, 40, 64)
        densities = pair_row_pdf(good, bad, table, rows)
        for kde, got in zip((good, bad), densities):
            assert got.tobytes() == kde_pdf(kde, table.vectors[rows]).tobytes()
    points = table.vectors[rng.integers(0, 40, 30)]
    points[:, [0, 2]] = rng.random((30, 2))  # not table rows: the search-space path
    for kde, got in zip((good, bad), pair_pdf(good, bad, points)):
        assert got.tobytes() == kde_pdf(kde, points).tobytes()


def test_suggestions_concentrate_near_the_optimum():
    scheduler = make_scheduler("bohb", source=SpaceSource(square()), max_t=9, eta=3,
                               semantics="reference", mode="min", seed=7, trials=300)
    clock = FakeClock(scheduler, 4, seed=1, metric=quadratic).run()
    configs = [entry[3] for entry in clock.log if entry[0] == "start"]
    late = [dict(c) for c in configs[150:]]
    rng = np.random.default_rng(7)
    random = [SpaceSource(square()).sample(rng) for _ in range(len(late))]
    bohb_mean = np.mean([distance(c) for c in late])
    random_mean = np.mean([distance(c) for c in random])
    assert scheduler.model_based_picks > 50
    assert bohb_mean < 0.7 * random_mean, (bohb_mean, random_mean)


def test_random_fraction_one_never_uses_the_model_and_zero_always_does():
    def run(fraction):
        scheduler = make_scheduler("bohb", source=SpaceSource(square()), max_t=9,
                                   mode="min", seed=3, trials=120, random_fraction=fraction)
        FakeClock(scheduler, 3, seed=3, metric=quadratic).run()
        return scheduler

    assert run(1.0).model_based_picks == 0
    greedy = run(0.0)
    assert greedy.model_budget() is not None
    assert greedy.model_based_picks > 60


def _bohb(**kwargs):
    return BOHB(SpaceSource(square()), max_t=9, eta=3, semantics="reference", mode="min",
                seed=0, trials=1000, **kwargs)


def test_a_budget_gets_a_model_by_hpbandsters_counting_rules():
    scheduler = _bohb()  # dim 2: min_points 3; both KDEs need more than 2 rows
    for trial in range(6):
        scheduler._new_trial({"x": trial / 10, "y": 0.5})
    for trial in range(5):
        scheduler._observe(trial, 1, float(trial))
    assert scheduler.model_budget() is None  # good 3 rows, bad 2 rows
    scheduler._observe(5, 1, 5.0)
    assert scheduler.model_budget() == 1  # good 3, bad 3
    good, bad = scheduler._kde_pair(1)
    assert sorted(good.data[:, 0]) == pytest.approx([0.0, 0.1, 0.2])  # lowest losses
    assert sorted(bad.data[:, 0]) == pytest.approx([0.3, 0.4, 0.5])


def test_smaller_budgets_stop_collecting_once_a_larger_one_has_a_model():
    scheduler = _bohb()
    for trial in range(8):
        scheduler._new_trial({"x": trial / 10, "y": 0.5})
    for trial in range(6):
        scheduler._observe(trial, 3, float(trial))
    assert scheduler.model_budget() == 3
    scheduler._observe(6, 1, 0.0)
    assert 1 not in scheduler._observations
    scheduler._observe(7, 9, 0.0)
    assert len(scheduler._observations[9]) == 1


def test_min_mode_loss_is_the_metric_and_max_mode_negates_it():
    low = BOHB(SpaceSource(square()), max_t=9, mode="min", seed=0, trials=5)
    high = BOHB(SpaceSource(square()), max_t=9, mode="max", seed=0, trials=5)
    for scheduler in (low, high):
        scheduler._new_trial({"x": 0.1, "y": 0.1})
        scheduler._observe(0, 1, 0.8)
        scheduler._observe(0, 3, math.nan)
    assert low._observations[1][0][1] == 0.8 and high._observations[1][0][1] == -0.8
    assert low._observations[3][0][1] == math.inf  # non-finite counts as the worst


def test_with_a_table_every_config_is_a_row():
    space = square()
    rows = [SpaceSource(space).sample(np.random.default_rng(i)) for i in range(60)]
    table = TableSource(space, rows)
    scheduler = make_scheduler("bohb", source=table, max_t=9, mode="min", seed=2, trials=150)
    clock = FakeClock(scheduler, 4, seed=2, metric=quadratic).run()
    assert scheduler.model_based_picks > 20
    for entry in clock.log:
        if entry[0] == "start":
            config = dict(entry[3])
            assert config == table.row(config["_row"])


def test_conditional_space_imputes_inactive_values():
    space = CS.ConfigurationSpace()
    space.add([CS.Categorical("opt", ["sgd", "adam"]), CS.Float("momentum", (0.0, 1.0)),
               CS.Float("lr", (0.0, 1.0))])
    space.add(CS.EqualsCondition(space["momentum"], space["opt"], "sgd"))

    def metric(config, epoch, rng):
        return abs(config["lr"] - 0.3) + (0.2 if config["opt"] == "adam" else 0.0) + 1 / epoch

    scheduler = make_scheduler("bohb", source=SpaceSource(space), max_t=9, mode="min",
                               seed=5, trials=150)
    clock = FakeClock(scheduler, 4, seed=5, metric=metric).run()
    assert scheduler.model_based_picks > 20
    for entry in clock.log:
        if entry[0] == "start":
            config = dict(entry[3])
            assert ("momentum" in config) == (config["opt"] == "sgd")


@pytest.mark.parametrize("mean, scale", [(0.1, 0.3), (0.9, 0.01), (0.0, 3.0), (0.5, 0.003)])
def test_truncated_normal_draws_follow_scipys_truncnorm(mean, scale):
    import scipy.stats as sps

    from nasalloc.simulator.schedulers.bohb import truncated_normal

    draws = truncated_normal(np.random.default_rng(0), np.full(5000, mean), np.full(5000, scale))
    reference = sps.truncnorm(-mean / scale, (1 - mean) / scale, loc=mean, scale=scale)
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    assert sps.kstest(draws, reference.cdf).pvalue > 0.001


def test_imputation_in_one_draw_gives_the_loops_values_and_generator_state():
    """Where every incomplete row needs one donor, BOHB imputes by one rng.integers call over
    the donor pools; the values and the generator's state after must be the row-by-row loop's
    (few rows and many, pools of one donor, and the cases the loop keeps: a donor that leaves a
    dimension missing, a dimension no row holds)."""
    scheduler = BOHB(SpaceSource(square()), max_t=9, seed=0, trials=5)
    scheduler.levels = np.zeros(5, dtype=int)
    rng = np.random.default_rng(5)
    taken = 0
    for trial in range(40):
        rows = rng.random((int(rng.integers(2, 30) if trial % 2 else rng.integers(30, 120)), 5))
        cnn = rng.random(len(rows)) < 0.5
        if trial % 8 == 5:  # one row alone holds dimension 3: a pool of one (no draw)
            cnn[:] = True
            cnn[0] = False
        rows[cnn, 3] = np.nan  # one structure misses dimension 3, the other 1 and 4
        rows[~cnn, 1] = np.nan
        rows[~cnn, 4] = np.nan
        if trial % 4 == 3:  # a donor that leaves a dimension missing: the loop's business
            rows[np.flatnonzero(cnn)[:2], 4] = np.nan
        if trial % 10 == 9:  # no row holds dimension 2: random values
            rows[:, 2] = np.nan
        ours, loops = np.random.default_rng([trial, 1]), np.random.default_rng([trial, 1])
        quick = scheduler._impute(rows, ours)
        scheduler_loop = BOHB(SpaceSource(square()), max_t=9, seed=0, trials=5)
        scheduler_loop.levels = scheduler.levels
        scheduler_loop._impute_one_draw_each = lambda *args: None
        slow = scheduler_loop._impute(rows, loops)
        assert quick.tobytes() == slow.tobytes()
        assert ours.bit_generator.state == loops.bit_generator.state
        assert not np.isnan(quick).any()
        taken += scheduler._impute_one_draw_each(rows, np.isnan(rows), np.random.default_rng(0)) is not None
    assert 10 < taken < 40  # both paths ran
