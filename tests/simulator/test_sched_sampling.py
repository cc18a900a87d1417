"""Config sources (space, table), the vector helpers and the factory's argument checks."""

import json

import ConfigSpace as CS
import numpy as np
import pytest

from nasalloc.errors import UserError
from nasalloc.simulator.schedulers import (ALGORITHMS, ASHA, BOHB, SEMANTICS, HyperBand,
                                           SpaceSource, TableSource, config_to_vector,
                                           make_scheduler, vector_to_config)


def conditional_space():
    space = CS.ConfigurationSpace()
    space.add([CS.Categorical("opt", ["sgd", "adam", "rms"]), CS.Float("momentum", (0.0, 1.0)),
               CS.Integer("width", (1, 10)), CS.Float("lr", (1e-4, 1.0), log=True)])
    space.add(CS.EqualsCondition(space["momentum"], space["opt"], "sgd"))
    return space


def test_space_source_is_a_pure_function_of_the_generator():
    source = SpaceSource(conditional_space())
    a = [source.sample(np.random.default_rng(3)) for _ in range(3)]
    b = [source.sample(np.random.default_rng(3)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(3)
    draws = [source.sample(rng) for _ in range(20)]
    assert len({json.dumps(d, sort_keys=True) for d in draws}) == 20
    assert all(isinstance(v, (int, float, str)) for d in draws for v in d.values())


def test_table_source_draws_without_replacement_then_starts_over():
    space = conditional_space()
    rows = [SpaceSource(space).sample(np.random.default_rng(i)) for i in range(7)]
    table = TableSource(space, rows)
    rng, state = np.random.default_rng(0), table.new_state()
    first = [table.sample(rng, state)["_row"] for _ in range(7)]
    assert sorted(first) == list(range(7))
    assert table.sample(rng, state)["_row"] in range(7)
    assert len(state["remaining"]) == 6
    picked = table.sample(np.random.default_rng(0))  # no state: with replacement
    assert picked == table.row(picked["_row"])


def test_snap_returns_the_nearest_row_and_respects_inactive_values():
    space = conditional_space()
    rows = [{"opt": "sgd", "momentum": 0.9, "width": 5, "lr": 0.01},
            {"opt": "adam", "width": 5, "lr": 0.01},
            {"opt": "sgd", "momentum": 0.1, "width": 5, "lr": 0.01}]
    table = TableSource(space, rows)
    assert table.snap({"opt": "sgd", "momentum": 0.8, "width": 5, "lr": 0.012})["_row"] == 0
    assert table.snap({"opt": "rms", "width": 5, "lr": 0.01})["_row"] == 1  # both inactive
    assert table.snap({"opt": "sgd", "momentum": 0.2, "width": 6, "lr": 0.01})["_row"] == 2
    assert table.snap(table.row(2)) == table.row(2)


def test_table_rows_from_a_csv_with_nan_and_float_ints_are_accepted():
    space = conditional_space()
    table = TableSource(space, [{"opt": "adam", "momentum": float("nan"), "width": 3.0,
                                 "lr": 0.1}])
    assert table.row(0) == {"opt": "adam", "width": 3, "lr": 0.1, "_row": 0}
    with pytest.raises(UserError, match="row 0"):
        TableSource(space, [{"opt": "nadam", "width": 3, "lr": 0.1}])
    with pytest.raises(UserError, match="empty"):
        TableSource(space, [])


def test_vectors_round_trip():
    space = conditional_space()
    rng = np.random.default_rng(1)
    for _ in range(20):
        config = SpaceSource(space).sample(rng)
        back = vector_to_config(space, config_to_vector(space, config))
        assert back.keys() == config.keys()
        for key, value in config.items():
            assert back[key] == pytest.approx(value) if isinstance(value, float) \
                else back[key] == value


def test_factory_builds_every_algorithm_and_semantics():
    source = SpaceSource(conditional_space())
    classes = {"hyperband": HyperBand, "asha": ASHA, "bohb": BOHB}
    for algorithm in ALGORITHMS:
        for semantics in SEMANTICS:
            scheduler = make_scheduler(algorithm, source=source, max_t=27, semantics=semantics,
                                       trials=10)
            assert type(scheduler) is classes[algorithm]
    assert make_scheduler("asha", source=source, max_t=9, trials=3).variant == "stopping"
    assert make_scheduler("asha", source=source, max_t=9, trials=3,
                          semantics="reference").variant == "promotion"


@pytest.mark.parametrize("kwargs, quoted", [
    (dict(algorithm="pbt"), "'pbt'"),
    (dict(semantics="optuna"), "'optuna'"),
    (dict(mode="maximize"), "'maximize'"),
    (dict(eta=1), "eta=1"),
    (dict(max_t=3, min_t=5), "max_t=3"),
    (dict(max_t=0), "max_t=0"),
    (dict(trials=None), "exactly one"),
    (dict(brackets=4), "exactly one"),
    (dict(trials=0), "trials=0"),
    (dict(seed="abc"), "'abc'"),
    (dict(algorithm="bohb", top_n_percent=120), "top_n_percent=120"),
    (dict(algorithm="bohb", random_fraction=1.5), "random_fraction=1.5"),
    (dict(algorithm="bohb", num_samples=0), "num_samples=0"),
    (dict(algorithm="bohb", min_bandwidth=0), "min_bandwidth=0"),
    (dict(algorithm="hyperband", top_n_percent=10), "top_n_percent"),
    (dict(algorithm="hyperband", variant="stopping"), "'stopping'"),
    (dict(algorithm="asha", variant="median"), "'median'"),
    (dict(algorithm="asha", brackets=3), "brackets=3"),
])
def test_bad_constructor_values_raise_user_error_quoting_them(kwargs, quoted):
    arguments = dict(algorithm="hyperband", source=SpaceSource(conditional_space()), max_t=27,
                     trials=10)
    arguments.update(kwargs)
    algorithm = arguments.pop("algorithm")
    with pytest.raises(UserError, match=quoted):
        make_scheduler(algorithm, **arguments)


def test_space_source_rejects_what_is_not_a_space():
    with pytest.raises(UserError, match="ConfigurationSpace"):
        SpaceSource({"lr": [0.1, 0.01]})


def test_fast_nearest_agrees_with_the_elementwise_distance():
    from nasalloc.simulator.schedulers.sampling import kde_vartypes, vector_distances

    space = CS.ConfigurationSpace()
    space.add([CS.Categorical("opt", ["sgd", "adam", "rms"]), CS.Float("lr", (0.0, 1.0)),
               CS.OrdinalHyperparameter("depth", [2, 4, 8, 16]), CS.Integer("width", (1, 9))])
    rng = np.random.default_rng(0)
    table = TableSource(space, [SpaceSource(space).sample(rng) for _ in range(300)])
    vartypes, levels = kde_vartypes(space)
    assert sorted(vartypes) == ["c", "c", "o", "u"]
    queries = np.column_stack([rng.integers(0, n, 50) if n else rng.random(50) for n in levels])
    exact = vector_distances(table.vectors, queries, vartypes, levels)
    fast = table.nearest(queries)
    picked = exact[np.arange(50), fast]
    np.testing.assert_allclose(picked, exact.min(axis=1), atol=1e-9)


def test_fast_nearest_agrees_with_the_elementwise_distance_on_inactive_values():
    """Rows and queries with inactive (NaN) values: per pair of patterns the matrix-product
    path must pick the row the element-wise rule finds nearest (here: the same index)."""
    from nasalloc.simulator.schedulers.sampling import kde_vartypes, vector_distances

    space = conditional_space()
    space.add(CS.Integer("units", (1, 64)))
    space.add(CS.EqualsCondition(space["units"], space["opt"], "adam"))
    rng = np.random.default_rng(1)
    table = TableSource(space, [SpaceSource(space).sample(rng) for _ in range(250)])
    assert len(np.unique(np.isnan(table.vectors), axis=0)) == 3  # sgd (momentum), adam (units), rms (neither)
    vartypes, levels = kde_vartypes(space)
    from nasalloc.simulator.schedulers.roundtrip import round_trip_vectors

    raw = np.column_stack([rng.integers(0, n, 200) if n else rng.random(200) for n in levels])
    queries = round_trip_vectors(space, raw.astype(float))
    assert np.isnan(queries).any()
    exact = vector_distances(table.vectors, queries, vartypes, levels)
    np.testing.assert_array_equal(table.nearest(queries), exact.argmin(axis=1))
    assert table.nearest(queries[3]) == exact[3].argmin()


def test_loading_state_made_with_other_settings_is_a_user_error():
    source = SpaceSource(conditional_space())
    saved = make_scheduler("hyperband", source=source, max_t=27, trials=10).state_dict()
    other = make_scheduler("hyperband", source=source, max_t=81, trials=10)
    with pytest.raises(UserError, match="max_t=27"):
        other.load_state_dict(saved)


def _round_trip_by_configspace(space, matrix):
    """round_trip_vectors as it was: every column through ConfigSpace's to_value/to_vector,
    the conditions applied until nothing changes."""
    from nasalloc.simulator.schedulers.sampling import hyperparameters

    out = np.array(matrix, dtype=float, copy=True)
    hps = hyperparameters(space)
    for i, hp in enumerate(hps):
        column = out[:, i]
        finite = np.isfinite(column)
        if isinstance(hp, (CS.CategoricalHyperparameter, CS.OrdinalHyperparameter)):
            column[finite] = np.rint(column[finite])
        if finite.any():
            column[finite] = hp.to_vector(hp.to_value(column[finite]))
    index = {hp.name: i for i, hp in enumerate(hps)}
    for _ in range(len(space.conditions) + 1):
        changed = False
        for condition in space.conditions:
            child = index[condition.child.name]
            parents = [index[p.name] for p in getattr(condition, "parents", None) or [condition.parent]]
            active = condition.satisfied_by_vector_array(out.T) & np.all(np.isfinite(out[:, parents]), axis=1)
            drop = ~active & np.isfinite(out[:, child])
            if drop.any():
                out[drop, child] = np.nan
                changed = True
        if not changed:
            break
    return out


@pytest.mark.parametrize("nested", [False, True])
def test_round_trip_vectors_gives_configspaces_floats_to_the_last_bit(nested):
    """The batched scalers, the categorical indices kept as they are and the single pass over
    unnested conditions change no float against every column through ConfigSpace."""
    from nasalloc.simulator.schedulers.roundtrip import round_trip_vectors
    from nasalloc.simulator.schedulers.sampling import kde_vartypes

    space = conditional_space()
    space.add([CS.Integer("units", (32, 512), log=True), CS.Float("wd", (1e-6, 1e-2), log=True),
               CS.Integer("depth", (1, 3)), CS.OrdinalHyperparameter("size", [2, 4, 8]),
               CS.Float("unit", (0.0, 1.0))])
    space.add(CS.EqualsCondition(space["units"], space["opt"], "adam"))
    if nested:  # depth only with units, units only with adam
        space.add(CS.GreaterThanCondition(space["depth"], space["units"], 64))
    rng = np.random.default_rng(3)
    _, levels = kde_vartypes(space)
    raw = np.column_stack([rng.integers(0, n, 500) + rng.uniform(-0.45, 0.45, 500) if n else rng.random(500)
                           for n in levels])
    raw[:5] = 0.0
    raw[5:10] = 1.0
    expected = _round_trip_by_configspace(space, raw)
    assert np.isnan(expected).any()
    got = round_trip_vectors(space, raw)
    assert got.tobytes() == expected.tobytes()
    from nasalloc.simulator.schedulers.roundtrip import _round_trip_plan

    plan = _round_trip_plan(space)  # unnested: both EqualsConditions in the one comparison
    assert (plan["equals"] is None, len(plan["conditions"])) == ((True, 3) if nested else (False, 0))
    wide = raw.copy()
    wide[7, space.index_of["opt"]] = 5.0  # an index out of range: ConfigSpace's own answer (its error), as before
    with pytest.raises(Exception) as ours:
        round_trip_vectors(space, wide)
    with pytest.raises(Exception) as theirs:
        _round_trip_by_configspace(space, wide)
    assert type(ours.value) is type(theirs.value)


def test_nearest_breaks_ties_by_table_order_across_patterns():
    """Equal rows (of one pattern and of two) and a query at equal distance from rows of two
    patterns: the first row in table order wins, as argmin over the table does."""
    from nasalloc.simulator.schedulers.sampling import kde_vartypes, vector_distances

    space = conditional_space()
    configs = [{"opt": "rms", "width": 3, "lr": 0.01}, {"opt": "sgd", "momentum": 0.5, "width": 3, "lr": 0.01},
               {"opt": "rms", "width": 3, "lr": 0.01}, {"opt": "sgd", "momentum": 0.5, "width": 3, "lr": 0.01},
               {"opt": "adam", "width": 7, "lr": 0.1}]
    table = TableSource(space, configs)
    vartypes, levels = kde_vartypes(space)
    queries = table.vectors[[2, 3, 4, 0, 1]]
    np.testing.assert_array_equal(table.nearest(queries), [0, 1, 4, 0, 1])
    rng = np.random.default_rng(4)
    raw = np.column_stack([rng.integers(0, n, 300) if n else rng.random(300) for n in levels])
    from nasalloc.simulator.schedulers.roundtrip import round_trip_vectors

    queries = round_trip_vectors(space, raw.astype(float))
    exact = vector_distances(table.vectors, queries, vartypes, levels)
    np.testing.assert_array_equal(table.nearest(queries), exact.argmin(axis=1))


def test_distance_features_multiply_to_the_squared_elementwise_distance():
    """Every mix of active and inactive dimensions, numeric, ordinal and categorical: the
    product of query and row features is vector_distances squared."""
    from nasalloc.simulator.schedulers.sampling import distance_features, kde_vartypes, vector_distances

    space = conditional_space()
    space.add([CS.OrdinalHyperparameter("depth", [2, 4, 8, 16]), CS.Categorical("act", ["relu", "tanh"])])
    space.add([CS.EqualsCondition(space["depth"], space["opt"], "adam"),
               CS.EqualsCondition(space["act"], space["opt"], "rms")])
    rng = np.random.default_rng(2)
    rows = np.array([TableSource(space, [SpaceSource(space).sample(rng)]).vectors[0] for _ in range(60)])
    vartypes, levels = kde_vartypes(space)
    queries = rows[rng.permutation(60)[:40]].copy()
    queries[:, levels == 0] += rng.normal(0, 0.05, queries[:, levels == 0].shape)
    products = distance_features(queries, vartypes, levels, "query") @ distance_features(rows, vartypes, levels, "row").T
    np.testing.assert_allclose(products, vector_distances(rows, queries, vartypes, levels) ** 2, atol=1e-12)
    assert len(np.unique(np.isnan(rows), axis=0)) == 3
