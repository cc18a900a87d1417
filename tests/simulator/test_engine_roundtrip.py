"""round_trip_vectors (added to sampling.py for the simulator's speed) equals the one-row path
BOHB used before on conditional spaces."""

import ConfigSpace as CS
import numpy as np
import pytest

from nasalloc.simulator.schedulers.roundtrip import round_trip_vectors
from nasalloc.simulator.schedulers.sampling import config_to_vector, vector_to_config


def conditional_space():
    space = CS.ConfigurationSpace(seed=1)
    space.add([CS.Categorical("family", ["cnn", "mlp"]), CS.Integer("channels", (8, 64), log=True),
               CS.Categorical("kernel", [3, 5]), CS.Integer("units", (32, 512), log=True),
               CS.Float("lr", (1e-4, 1e-1), log=True), CS.Categorical("opt", ["sgd", "adam"]),
               CS.Float("momentum", (0.0, 0.99)), CS.Float("nesterov_decay", (0.0, 1.0))])
    space.add([CS.EqualsCondition(space["channels"], space["family"], "cnn"),
               CS.EqualsCondition(space["kernel"], space["family"], "cnn"),
               CS.EqualsCondition(space["units"], space["family"], "mlp"),
               CS.EqualsCondition(space["momentum"], space["opt"], "sgd"),
               # nested: active only when momentum is active and large
               CS.GreaterThanCondition(space["nesterov_decay"], space["momentum"], 0.5)])
    return space


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_vectors_matches_the_one_row_path(seed):
    space = conditional_space()
    candidates = np.random.default_rng(seed).random((300, len(space)))
    slow = np.array([config_to_vector(space, vector_to_config(space, c)) for c in candidates])
    fast = round_trip_vectors(space, candidates)
    assert np.array_equal(np.isnan(slow), np.isnan(fast))
    assert np.nanmax(np.abs(slow - fast)) < 1e-6
    assert np.isnan(fast).any()  # the conditions really deactivated something
