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


def _embedding(vectors: np.ndarray, vartypes: str, levels: np.ndarray) -> np.ndarray:
    """NaN-free vectors mapped so that plain Euclidean distance equals vector_distances:
    categoricals one-hot scaled by 1/sqrt(2) (a mismatch adds 1), ordinals index/(levels-1)."""
    columns = []
    for dim, kind in enumerate(vartypes):
        values = vectors[:, dim]
        if kind == "u":
            onehot = np.zeros((len(values), int(levels[dim])))
            onehot[np.arange(len(values)), np.rint(values).astype(int)] = 1 / np.sqrt(2)
            columns.append(onehot)
        elif kind == "o":
            columns.append((values / max(int(levels[dim]) - 1, 1))[:, None])
        else:
            columns.append(values[:, None])
    return np.hstack(columns)


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
        # nearest rows come from matrix products (BOHB snaps 64 candidates per config): per
        # pair of inactive patterns (row, query), the dimensions active in both are embedded
        # and every dimension inactive in exactly one adds 1 (see vector_distances)
        inactive = np.isnan(self.vectors)
        self._row_patterns = [(pattern, np.flatnonzero((inactive == pattern).all(axis=1)))
                              for pattern in np.unique(inactive, axis=0)]
        self._pair_cache: dict = {}
        widths = [int(levels) if kind == "u" else 1 for kind, levels in zip(self._vartypes, self._levels)]
        self._embedding_start = np.concatenate([[0], np.cumsum(widths)]).astype(int)
        self._embedding_width = int(self._embedding_start[-1])
        kinds = np.array(list(self._vartypes))
        plain_dims, onehot_dims = np.flatnonzero(kinds != "u"), np.flatnonzero(kinds == "u")
        divisors = np.array([max(int(self._levels[d]) - 1, 1) if kinds[d] == "o" else 1 for d in plain_dims],
                            dtype=float)  # x / 1 is x: numeric values go through unchanged
        self._embedding_plan = (plain_dims, self._embedding_start[plain_dims], divisors, onehot_dims,
                                self._embedding_start[onehot_dims])
        self._pattern_order: dict = {}
        self._pattern_weights = np.left_shift(1, np.arange(min(len(self._vartypes), 62)), dtype=np.int64)

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
        """Row index nearest to one vector (d,), or an array of them for vectors (k, d); of
        equally near rows the first (as ``argmin`` over all rows in table order picks)."""
        vectors = np.asarray(vectors, dtype=float)
        queries = np.atleast_2d(vectors)
        nearest = np.empty(queries.shape[0], dtype=np.int64)
        query_inactive = np.isnan(queries)
        embedded_queries = self._embed_all(queries, query_inactive)
        for picked in self._groups(query_inactive):  # the queries of one inactive pattern
            query_pattern = query_inactive[picked[0]]
            group = embedded_queries[picked]
            blocks, covered, least = [], [], None
            for mismatched, row_pattern, rows in self._patterns_for(query_pattern):
                if least is not None and (least < mismatched - 1e-9).all():
                    break  # every query has a row nearer than any row left could be
                columns, embedded, norms, mismatched = self._pair(row_pattern, query_pattern, rows)
                # the same floats, in the same layout, as _embedding of the shared dimensions
                q = group[:, columns]
                blocks.append(mismatched + (q ** 2).sum(axis=1)[:, None] + norms[None, :] - 2.0 * q @ embedded.T)
                covered.append(rows)
                least = blocks[-1].min(axis=1) if least is None else np.minimum(least, blocks[-1].min(axis=1))
            squared = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
            order = covered[0] if len(covered) == 1 else np.concatenate(covered)  # the rows of squared
            if np.isnan(least).any():  # argmin's rule for NaN: the first NaN in table order
                full = np.full((len(picked), len(self.rows)), np.inf)
                full[:, order] = squared
                nearest[picked] = np.argmin(full, axis=1)
            else:  # the first row in table order among the nearest
                nearest[picked] = np.where(squared == least[:, None], order[None, :], len(self.rows)).min(axis=1)
        return int(nearest[0]) if vectors.ndim == 1 else nearest

    def _patterns_for(self, query_pattern: np.ndarray) -> list:
        """The row patterns as (dimensions inactive in exactly one of the two, pattern, rows),
        fewest first: a row of the pattern is at squared distance at least that count."""
        key = query_pattern.tobytes()
        if key not in self._pattern_order:
            self._pattern_order[key] = sorted(
                ((float(np.count_nonzero(pattern != query_pattern)), pattern, rows)
                 for pattern, rows in self._row_patterns), key=lambda entry: entry[0])
        return self._pattern_order[key]

    def _groups(self, inactive: np.ndarray) -> list:
        """Indices of the queries sharing each inactive pattern, ascending within a group."""
        if inactive.shape[1] <= 62:  # a pattern as one integer
            codes = inactive.astype(np.int64) @ self._pattern_weights
            first = codes[0]
            if (codes == first).all():
                return [np.arange(len(codes))]
            return [np.flatnonzero(codes == code) for code in np.unique(codes).tolist()]
        groups: dict = {}
        for i, key in enumerate(map(bytes, inactive)):
            groups.setdefault(key, []).append(i)
        return [np.array(members) for members in groups.values()]

    def _embed_all(self, queries: np.ndarray, inactive: np.ndarray) -> np.ndarray:
        """_embedding of every dimension of the queries at once (zeros where inactive: those
        columns are never read for a query of that pattern)."""
        out = np.zeros((queries.shape[0], self._embedding_width))
        plain_dims, plain_columns, divisors, onehot_dims, onehot_starts = self._embedding_plan
        if plain_dims.size:  # numeric values as they are, ordinals over (levels - 1)
            out[:, plain_columns] = queries[:, plain_dims] / divisors
        if onehot_dims.size:
            rows, which = np.nonzero(~inactive[:, onehot_dims])
            index = np.rint(queries[rows, onehot_dims[which]]).astype(int)
            out[rows, onehot_starts[which] + index] = 1 / np.sqrt(2)
        return out

    def _vartypes_of(self, dims: np.ndarray) -> str:
        return "".join(self._vartypes[d] for d in dims)

    def _pair(self, row_pattern: np.ndarray, query_pattern: np.ndarray, rows: np.ndarray):
        """Embedding columns of the dimensions active in both patterns, the rows' embedding
        on them and its norms, and how many dimensions are inactive in exactly one of the two
        (each adds 1)."""
        key = (row_pattern.tobytes(), query_pattern.tobytes())
        if key not in self._pair_cache:
            dims = np.flatnonzero(~row_pattern & ~query_pattern)
            embedded = _embedding(self.vectors[np.ix_(rows, dims)], self._vartypes_of(dims),
                                  self._levels[dims])
            columns = np.concatenate([np.arange(self._embedding_start[d], self._embedding_start[d + 1])
                                      for d in dims]) if dims.size else np.zeros(0, dtype=int)
            self._pair_cache[key] = (columns, embedded, (embedded ** 2).sum(axis=1),
                                     float(np.count_nonzero(row_pattern != query_pattern)))
        return self._pair_cache[key]

    def snap(self, config: dict) -> dict:
        """The table row nearest to ``config`` (itself when it is a row)."""
        if ROW_KEY in config:
            return self.row(int(config[ROW_KEY]))
        return self.row(self.nearest(config_to_vector(self.space, config)))

