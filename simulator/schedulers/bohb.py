"""BOHB (Falkner et al. 2018): HyperBand whose new configs come from HpBandSter's model.

Per budget (a milestone epoch) BOHB keeps ``(config vector, loss)`` results, loss = the metric
made "lower is better" (non-finite -> +inf, as HpBandSter counts crashes). A budget has a
good/bad KDE pair (statsmodels ``KDEMultivariate``, ``bw='normal_reference'``, bandwidths
clipped at ``min_bandwidth``) once it has ``min_points_in_model`` results and both the best
``max(min_points, top_n_percent*N//100)`` and the next ``max(min_points,
(100-top_n_percent)*N//100)`` hold more rows than there are dimensions. A result is not kept
when a larger budget already has a model (HpBandSter's ``new_result``).

A new config: random (from the source) with probability ``random_fraction`` or while no budget
has a model; otherwise ``num_samples`` candidates, each drawn around a random datum of the good
KDE of the largest budget with a model (truncated normal with bandwidth * ``bandwidth_factor``
for numeric dimensions; categorical/ordinal kept with probability 1 - bandwidth, else uniform),
and the one minimising ``max(1e-32, bad(x)) / max(good(x), 1e-32)`` wins. With a
:class:`TableSource` every candidate is snapped to its nearest table row before scoring.

Only observations are state; the KDEs are refitted lazily (and deterministically: imputation of
inactive values draws from a generator keyed by budget and count), so a restored BOHB proposes
exactly what the original would have.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from nasalloc.errors import UserError

from .common import SeedLike, check_count, jfloat, ufloat
from .hyperband import HyperBand
from .kde import NormalReferenceKDE, kde_pdf, pair_pdf, pair_row_pdf, truncated_normal
from .roundtrip import round_trip_vectors
from .sampling import ROW_KEY, config_to_vector, kde_vartypes, vector_to_config


class BOHB(HyperBand):
    name = "bohb"
    algorithm = "bohb"

    def __init__(self, source, *, max_t: int, min_t: int = 1, eta: int = 3,
                 semantics: str = "ray", mode: str = "max", seed: SeedLike = 0,
                 trials: Optional[int] = None, brackets: Optional[int] = None,
                 pending: Optional[int] = None, min_points_in_model: Optional[int] = None, top_n_percent: int = 15,
                 num_samples: int = 64, random_fraction: float = 1 / 3,
                 bandwidth_factor: float = 3.0, min_bandwidth: float = 1e-3):
        super().__init__(source, max_t=max_t, min_t=min_t, eta=eta, semantics=semantics,
                         mode=mode, seed=seed, trials=trials, brackets=brackets,
                         pending=pending)
        self.space = source.space
        self.vartypes, self.levels = kde_vartypes(self.space)
        categorical = np.flatnonzero(self.levels > 0)
        self._kinds = (np.flatnonzero(self.levels == 0), categorical, self.levels[categorical].tolist())
        dim = len(self.levels)
        if min_points_in_model is None:
            min_points_in_model = dim + 1
        check_count("min_points_in_model", min_points_in_model)
        self.min_points_in_model = max(int(min_points_in_model), dim + 1)  # HpBandSter's floor
        if isinstance(top_n_percent, bool) or not isinstance(top_n_percent, (int, np.integer)) \
                or not 1 <= top_n_percent <= 99:
            raise UserError(f"top_n_percent={top_n_percent!r}: expected a whole number 1..99")
        self.top_n_percent = int(top_n_percent)
        self.num_samples = check_count("num_samples", num_samples)
        if not 0.0 <= float(random_fraction) <= 1.0:
            raise UserError(f"random_fraction={random_fraction!r}: expected a value in [0, 1]")
        self.random_fraction = float(random_fraction)
        for name, value in (("bandwidth_factor", bandwidth_factor),
                            ("min_bandwidth", min_bandwidth)):
            if not float(value) > 0:
                raise UserError(f"{name}={value!r}: expected a positive number")
        self.bandwidth_factor = float(bandwidth_factor)
        self.min_bandwidth = float(min_bandwidth)
        self._impute_seed = int(self._rng.integers(0, 2**31 - 1))
        self._observations: dict[int, list[tuple[np.ndarray, float]]] = {}
        self._kdes: dict[int, tuple] = {}  # budget -> (good, bad); dropped when data changes
        self._stacks: dict[int, tuple] = {}  # budget -> observations as arrays (see _stacked)
        self._vectors: dict[int, np.ndarray] = {}  # trial -> config vector (cache)
        self.model_based_picks = 0

    # -- observations ---------------------------------------------------------------------------
    def _vector_of(self, trial_id: int) -> np.ndarray:
        if trial_id not in self._vectors:
            config = self._configs[trial_id]
            if ROW_KEY in config and hasattr(self.source, "vectors"):  # a table row: known
                self._vectors[trial_id] = self.source.vectors[int(config[ROW_KEY])].copy()
            else:
                self._vectors[trial_id] = config_to_vector(self.space, config)
        return self._vectors[trial_id]

    def _add(self, trial_id: int, budget: int, loss: float) -> None:
        if any(b > budget and self._has_model(b) for b in self._observations):
            return  # HpBandSter: no point refining a smaller budget once a larger has a model
        loss = loss if math.isfinite(loss) else math.inf
        self._observations.setdefault(budget, []).append((self._vector_of(trial_id), loss))
        self._kdes.pop(budget, None)

    def _observe(self, trial_id: int, epoch: int, metric: float) -> None:
        self._add(trial_id, epoch, -self.signed(metric))

    def _observe_failure(self, trial_id: int) -> None:
        milestone = self.milestone_of(trial_id)
        if milestone is not None:  # a crashed run counts as a bad result on its budget
            self._add(trial_id, milestone, math.inf)

    def _split_sizes(self, count: int) -> tuple[int, int]:
        n_good = max(self.min_points_in_model, (self.top_n_percent * count) // 100)
        n_bad = max(self.min_points_in_model, ((100 - self.top_n_percent) * count) // 100)
        return min(n_good, count), max(0, min(n_bad, count - n_good))

    def _has_model(self, budget: int) -> bool:
        count = len(self._observations.get(budget, ()))
        if count < self.min_points_in_model:
            return False
        good, bad = self._split_sizes(count)
        dim = len(self.levels)
        return good > dim and bad > dim

    def model_budget(self) -> Optional[int]:
        """The largest budget with a KDE pair, or None."""
        budgets = [b for b in self._observations if self._has_model(b)]
        return max(budgets) if budgets else None

    def _kde_pair(self, budget: int) -> tuple:
        if budget not in self._kdes:
            data = self._observations[budget]
            vectors, losses = self._stacked(budget)
            order = np.argsort(losses, kind="stable")
            n_good, n_bad = self._split_sizes(len(data))
            rng = np.random.default_rng([self._impute_seed, budget, len(data)])
            good = self._impute(vectors[order[:n_good]], rng)
            bad = self._impute(vectors[order[n_good:n_good + n_bad]], rng)
            kdes = [NormalReferenceKDE(d, self.vartypes) for d in (good, bad)]
            for kde in kdes:
                kde.bw = np.maximum(kde.bw, self.min_bandwidth)  # np.clip's answer (bandwidths are >= +0)
            self._kdes[budget] = tuple(kdes)
        return self._kdes[budget]

    def _stacked(self, budget: int) -> tuple:
        """A budget's observations as (vectors, losses) arrays, kept and grown as results come
        (the list in _observations is the state; these catch up with it)."""
        data = self._observations[budget]
        vectors, losses, count = self._stacks.get(budget, (None, None, 0))
        if vectors is None or count > len(data):
            vectors, losses, count = np.empty((max(64, len(data)), len(self.levels))), np.empty(max(64, len(data))), 0
        if len(data) > len(losses):
            capacity = max(2 * len(losses), len(data))
            vectors = np.concatenate([vectors[:count], np.empty((capacity - count, vectors.shape[1]))])
            losses = np.concatenate([losses[:count], np.empty(capacity - count)])
        for i in range(count, len(data)):
            vectors[i], losses[i] = data[i]
        self._stacks[budget] = (vectors, losses, len(data))
        return vectors[:len(data)], losses[:len(data)]

    def _impute(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """HpBandSter's rule for inactive (NaN) values: copy them from a random row where the
        first missing dimension is active; if no row has it, a random valid value.
        (``rng.integers(0, n)`` is the draw ``rng.choice`` of n donors makes.)"""
        missing_rows = np.isnan(rows)
        if not missing_rows.any():
            return rows.copy()
        quick = self._impute_one_draw_each(rows, missing_rows, rng)
        if quick is not None:
            return quick
        # Python lists: the same draws in the same order, without a numpy call per value
        source = rows.tolist()
        out = rows.tolist()
        donors = [np.flatnonzero(column).tolist() for column in np.isfinite(rows).T]
        for i in np.flatnonzero(missing_rows.any(axis=1)).tolist():
            row = out[i]
            missing = [d for d, value in enumerate(row) if value != value]
            while missing:
                dim = missing[0]
                pool = donors[dim]
                if pool:
                    donor = source[pool[int(rng.integers(0, len(pool)))]]
                    for d in missing:
                        row[d] = donor[d]
                else:
                    levels = self.levels[dim]
                    row[dim] = float(rng.integers(levels)) if levels else rng.random()
                missing = [d for d in missing if row[d] != row[d]]
        return np.array(out, dtype=float)

    @staticmethod
    def _impute_one_draw_each(rows: np.ndarray, missing_rows: np.ndarray, rng: np.random.Generator):
        """_impute where every incomplete row is completed by its first donor, whichever it
        is (each row's first missing dimension has donors, and all of them hold every
        dimension the row misses), else None: then the loop draws one donor per row, in row
        order, and so does one ``rng.integers(0, sizes)`` call (each element a bounded draw of
        its own, as the loop's calls are: the same donors, the same generator state after).
        The pools are worked out on each row's pattern of missing dimensions as one integer."""
        if missing_rows.shape[1] > 62 or np.isinf(rows).any():
            return None  # patterns do not fit an integer; an infinite value is no donor, yet not missing
        codes = missing_rows @ np.left_shift(1, np.arange(missing_rows.shape[1]), dtype=np.int64)
        incomplete = np.flatnonzero(codes)
        patterns = sorted(set(codes[incomplete].tolist()))  # a few: np.unique's sort costs more
        group = np.searchsorted(np.array(patterns, dtype=np.int64), codes[incomplete])
        pools = []
        for code in patterns:
            first = (code & -code).bit_length() - 1  # the rows' first missing dimension
            pool = np.flatnonzero(~missing_rows[:, first])
            if not pool.size or (codes[pool] & code).any():
                return None  # no donor, or a donor that leaves a dimension missing
            pools.append(pool)
        sizes = np.array([pool.size for pool in pools], dtype=np.int64)
        starts = np.cumsum(sizes) - sizes
        donors = np.concatenate(pools)[starts[group] + rng.integers(0, sizes[group])]
        out = rows.copy()
        out[incomplete] = np.where(missing_rows[incomplete], rows[donors], rows[incomplete])
        return out

    # -- proposing ----------------------------------------------------------------------------
    def _new_config(self) -> dict:
        budget = self.model_budget()
        if budget is None or self._rng.random() < self.random_fraction:
            return self.source.sample(self._rng, self._source_state)
        good, bad = self._kde_pair(budget)
        candidates = self._candidates(good)
        rows = None
        if hasattr(self.source, "nearest"):  # a table: score the rows we could really run
            queries = candidates
            if self.space.conditions:  # inactive dims of a candidate must read as NaN
                queries = round_trip_vectors(self.space, candidates)
            rows = np.atleast_1d(self.source.nearest(queries))
        with np.errstate(all="ignore"):
            if rows is not None:  # densities of table rows, each computed once per KDE pair
                g, b = pair_row_pdf(good, bad, self.source, rows)
            else:
                scoring = np.nan_to_num(candidates, nan=0.0)  # inactive dims: any value, equal for all
                g, b = pair_pdf(good, bad, scoring)
            ratio = np.maximum(b, 1e-32) / np.maximum(g, 1e-32)
        # HpBandSter takes the first candidate whose ratio is not finite while good(x) is (a
        # categorical value the bad KDE never saw); otherwise the smallest ratio.
        odd = np.flatnonzero(~np.isfinite(ratio) & np.isfinite(g))
        if odd.size:
            pick = int(odd[0])
        elif np.isfinite(ratio).any():
            pick = int(np.argmin(np.where(np.isfinite(ratio), ratio, np.inf)))
        else:
            return self.source.sample(self._rng, self._source_state)
        self.model_based_picks += 1
        if rows is not None:
            row = int(rows[pick])
            remaining = self._source_state.get("remaining")
            if remaining is not None and row in remaining:
                remaining.remove(row)  # drawn now: random draws will not repeat it this pass
            return self.source.row(row)
        return vector_to_config(self.space, candidates[pick])

    def _candidates(self, good) -> np.ndarray:
        """num_samples vectors drawn around random data of the good KDE (widened bandwidth)."""
        data = np.asarray(good.data, dtype=float)
        bw = np.maximum(np.asarray(good.bw, dtype=float), self.min_bandwidth)
        count = self.num_samples
        picks = data[self._rng.integers(0, data.shape[0], count)]
        out = np.empty_like(picks)
        numeric, categorical, levels = self._kinds
        if numeric.size:
            out[:, numeric] = truncated_normal(self._rng, picks[:, numeric], bw[numeric] * self.bandwidth_factor)
        if categorical.size:  # the draws dimension by dimension (their order is the stream's), then one where
            draws = np.empty((2, categorical.size, count))
            for k, choices in enumerate(levels):
                self._rng.random(count, out=draws[0, k])
                draws[1, k] = self._rng.integers(0, choices, count)
            keep = draws[0] < (1 - bw[categorical])[:, None]
            out[:, categorical] = np.where(keep, np.floor(picks[:, categorical]).T, draws[1]).T
        return out

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["bohb"] = {
            "impute_seed": self._impute_seed,
            "model_based_picks": self.model_based_picks,
            "observations": {str(b): [[[jfloat(x) for x in v], jfloat(loss)] for v, loss in obs]
                             for b, obs in self._observations.items()},
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        data = state["bohb"]
        self._impute_seed = int(data["impute_seed"])
        self.model_based_picks = int(data["model_based_picks"])
        self._observations = {
            int(b): [(np.array([ufloat(x) for x in v]), ufloat(loss)) for v, loss in obs]
            for b, obs in data["observations"].items()}
        self._kdes = {}
        self._stacks = {}
        self._vectors = {}


__all__ = ["BOHB", "ROW_KEY", "kde_pdf"]
