"""Where configs come from: a ConfigSpace space, or a finite table of configs.

A table is what the simulator replays: a learning-curve benchmark where every config has a
recorded curve, so a scheduler may only run configs that are rows of the table. Both sources are
stateless objects that may be shared by many schedulers; anything that changes as a search goes
(the rows not yet drawn) lives in a small ``state`` dict that the scheduler owns and saves.

The vector helpers below (config dict <-> ConfigSpace's normalised vector, the KDE variable
types) are shared with BOHB's sampler.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from ConfigSpace import Configuration, ConfigurationSpace
from ConfigSpace.hyperparameters import (CategoricalHyperparameter, IntegerHyperparameter,
                                         OrdinalHyperparameter)
from ConfigSpace.util import deactivate_inactive_hyperparameters

from nasalloc.errors import UserError

from .common import plain
from .roundtrip import hyperparameters

ROW_KEY = "_row"


# -- vectors --------------------------------------------------------------------------------
def kde_vartypes(space: ConfigurationSpace) -> tuple[str, np.ndarray]:
    """statsmodels var_type string and, per dimension, the number of levels (0: continuous).

    As in HpBandSter: categoricals are 'u' (unordered), everything numeric (float and int alike)
    is 'c' on its [0, 1] vector scale. Ordinals, which HpBandSter rejects, are 'o' here.
    """
    types, levels = "", []
    for hp in hyperparameters(space):
        if isinstance(hp, CategoricalHyperparameter):
            types += "u"
            levels.append(len(hp.choices))
        elif isinstance(hp, OrdinalHyperparameter):
            types += "o"
            levels.append(len(hp.sequence))
        else:
            types += "c"
            levels.append(0)
    return types, np.array(levels, dtype=int)


def _clean(space: ConfigurationSpace, config: dict) -> dict:
    """Drop our private keys and inactive (None/NaN) values; whole floats for int hps -> int."""
    out = {}
    for name, value in config.items():
        if name.startswith("_") or value is None:
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        if name in space and isinstance(space[name], IntegerHyperparameter) \
                and isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        out[name] = plain(value)
    return out


def config_to_vector(space: ConfigurationSpace, config: dict) -> np.ndarray:
    """The normalised vector of a config (NaN where a hyperparameter is inactive)."""
    try:
        return Configuration(space, values=_clean(space, config)).get_array()
    except Exception as error:  # ConfigSpace raises several types for a bad value
        raise UserError(f"config {config!r} is not in the search space: {error}") from None


def vector_to_config(space: ConfigurationSpace, vector: np.ndarray) -> dict:
    """A plain dict from a vector; categorical/ordinal entries rounded, inactive ones dropped."""
    vector = np.array(vector, dtype=float)
    for i, hp in enumerate(hyperparameters(space)):
        if isinstance(hp, (CategoricalHyperparameter, OrdinalHyperparameter)) \
                and np.isfinite(vector[i]):
            vector[i] = float(np.rint(vector[i]))
    values = dict(Configuration(space, vector=vector))
    return plain(dict(deactivate_inactive_hyperparameters(values, space)))


def vector_distances(matrix: np.ndarray, vectors: np.ndarray, vartypes: str,
                     levels: np.ndarray) -> np.ndarray:
    """Euclidean distances in the normalised space: of ``vectors`` (k, d) -- or one vector
    (d,) -- to every row of ``matrix`` (n, d); shape (k, n), or (n,) for one vector.

    Categoricals ('u') differ by 0 or 1; ordinals ('o') by index difference / (levels - 1);
    numeric ('c') by the vector difference. Inactive (NaN) against inactive is 0, inactive
    against a value is 1 (the largest per-dimension distance), so a conditional config snaps to
    rows with the same structure when one exists.
    """
    vectors = np.asarray(vectors, dtype=float)
    single = vectors.ndim == 1
    queries = np.atleast_2d(vectors)[:, None, :]  # (k, 1, d)
    rows = matrix[None, :, :]  # (1, n, d)
    types = np.array(list(vartypes))
    diff = np.abs(rows - queries)
    unordered = types == "u"
    diff[..., unordered] = (diff[..., unordered] > 0).astype(float)
    ordinal = types == "o"
    diff[..., ordinal] /= np.maximum(levels[ordinal] - 1, 1)
    nan_row, nan_q = np.isnan(rows), np.isnan(queries)
    diff = np.where(nan_row & nan_q, 0.0, np.where(nan_row | nan_q, 1.0, diff))
    distances = np.sqrt((diff * diff).sum(axis=2))
    return distances[0] if single else distances


def distance_features(vectors: np.ndarray, vartypes: str, levels: np.ndarray, side: str) -> np.ndarray:
    """Features of query (``side="query"``) or row vectors whose products are the squared
    vector_distances: ``query_features @ row_features.T``, one matrix product for any mix of
    active and inactive (NaN) dimensions.

    Per dimension, with a = 1 where active (else 0) and x the value on the distance's scale
    (an ordinal's index over levels - 1; 0 where inactive): both active contribute
    (x_q - x_r)² (a categorical 0 or 1), one active 1, none 0. That is, for a numeric
    dimension x_q² a_r + a_q x_r² - 2 x_q x_r + a_q + a_r - 2 a_q a_r, and for a categorical
    one a_q + a_r - a_q a_r - (the products of the two one-hot codes); the a_q + a_r of all
    dimensions are two summed columns. The row side carries the signs."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=float))
    numeric, scales, categorical, starts, width = _feature_plan(vartypes, levels)
    active = ~np.isnan(vectors)
    on = active.astype(float)
    a = on[:, numeric]
    x = np.where(active[:, numeric], vectors[:, numeric], 0.0) / scales
    onehot = np.zeros((len(vectors), width))
    rows, which = np.nonzero(active[:, categorical])
    onehot[rows, starts[which] + np.rint(vectors[rows, categorical[which]]).astype(np.int64)] = 1.0
    count = on.sum(axis=1, keepdims=True)
    ones = np.ones_like(count)
    if side == "query":
        return np.hstack([x * x, a, a, x, on[:, categorical], onehot, count, ones])
    return np.hstack([a, -2.0 * a, x * x, -2.0 * x, -on[:, categorical], -onehot, ones, count])


_FEATURE_PLANS: dict = {}


def _feature_plan(vartypes: str, levels: np.ndarray) -> tuple:
    """Numeric dimensions and their scales, categorical ones and their one-hot columns."""
    key = (vartypes, tuple(int(n) for n in levels))
    if key not in _FEATURE_PLANS:
        numeric = np.array([d for d, kind in enumerate(vartypes) if kind != "u"], dtype=np.int64)
        scales = np.array([max(int(levels[d]) - 1, 1) if vartypes[d] == "o" else 1 for d in numeric], dtype=float)
        categorical = np.array([d for d, kind in enumerate(vartypes) if kind == "u"], dtype=np.int64)
        counts = [int(levels[d]) for d in categorical]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)
        _FEATURE_PLANS[key] = (numeric, scales, categorical, starts, int(sum(counts)))
    return _FEATURE_PLANS[key]


# -- sources --------------------------------------------------------------------------------
class SpaceSource:
    """Configs sampled from a ConfigSpace space, seeded from the scheduler's own Generator."""

    def __init__(self, space: ConfigurationSpace):
        if not isinstance(space, ConfigurationSpace):
            raise UserError(f"space={space!r}: expected a ConfigSpace.ConfigurationSpace")
        if len(space) == 0:
            raise UserError("the search space has no hyperparameters")
        self.space = space
        self._random = np.random.RandomState(0)  # re-seeded before every draw, never carried

    def new_state(self) -> dict:
        return {}

    def sample(self, rng: np.random.Generator, state: Optional[dict] = None) -> dict:
        # ConfigSpace samples from space.random; seed it from our Generator so the draw is a
        # pure function of the scheduler's stream, and put the space's own generator back.
        self._random.seed(int(rng.integers(0, 2**31 - 1)))
        previous, self.space.random = self.space.random, self._random
        try:
            config = self.space.sample_configuration()
        finally:
            self.space.random = previous
        return plain(dict(config))

    def snap(self, config: dict) -> dict:
        return config

    def __len__(self) -> int:  # unbounded; for symmetry with TableSource
        return 0


class TableSource:
    """A finite table of configs (rows of a learning-curve benchmark).

    ``sample`` draws rows uniformly WITHOUT replacement until every row was drawn, then starts
    over (a fresh pass), when the scheduler passes its ``state``; with ``state=None`` it draws
    with replacement. Each returned dict carries the hyperparameters and ``"_row"``.
    """

    def __init__(self, space: ConfigurationSpace, configs: list[dict]):
        if not isinstance(space, ConfigurationSpace):
            raise UserError(f"space={space!r}: expected a ConfigSpace.ConfigurationSpace")
        if len(configs) == 0:
            raise UserError("the config table is empty: expected at least one row")
        self.space = space
        self.rows = []
        vectors = []
        for index, config in enumerate(configs):
            clean = _clean(space, dict(config))
            try:
                vector = Configuration(space, values=clean).get_array()
            except Exception as error:
                raise UserError(f"config table row {index} ({config!r}) is not in the search "
                                f"space: {error}") from None
            vectors.append(vector)
            self.rows.append({**clean, ROW_KEY: index})
        self.vectors = np.vstack(vectors)
        self._vartypes, self._levels = kde_vartypes(space)
        # nearest rows by one matrix product (distance_features) against each distinct row
        # once: the first of equal rows in table order stands for all of them, so equal rows
        # tie exactly and the first wins (-1 stands for NaN in np.unique: no vector holds it)
        _, first = np.unique(np.nan_to_num(self.vectors, nan=-1.0), axis=0, return_index=True)
        self._distinct = np.sort(first)
        self._row_features = np.ascontiguousarray(
            distance_features(self.vectors[self._distinct], self._vartypes, self._levels, "row").T)

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, index: int) -> dict:
        return dict(self.rows[index])

    def new_state(self) -> dict:
        return {"remaining": list(range(len(self.rows)))}

    def sample(self, rng: np.random.Generator, state: Optional[dict] = None) -> dict:
        if state is None:
            return self.row(int(rng.integers(len(self.rows))))
        remaining = state["remaining"]
        if not remaining:
            remaining.extend(range(len(self.rows)))
        pick = int(rng.integers(len(remaining)))
        remaining[pick], remaining[-1] = remaining[-1], remaining[pick]  # O(1) removal
        return self.row(remaining.pop())

    def nearest(self, vectors: np.ndarray):
        """Row index nearest to one vector (d,), or an array of them for vectors (k, d), by
        vector_distances; of equally near rows the first in table order."""
        vectors = np.asarray(vectors, dtype=float)
        squared = distance_features(vectors, self._vartypes, self._levels, "query") @ self._row_features
        nearest = self._distinct[np.argmin(squared, axis=1)]
        return int(nearest[0]) if vectors.ndim == 1 else nearest

    def snap(self, config: dict) -> dict:
        """The table row nearest to ``config`` (itself when it is a row)."""
        if ROW_KEY in config:
            return self.row(int(config[ROW_KEY]))
        return self.row(self.nearest(config_to_vector(self.space, config)))

