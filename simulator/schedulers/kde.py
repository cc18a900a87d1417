"""BOHB's kernel densities: the good/bad KDE (statsmodels' normal-reference KDEMultivariate
without statsmodels), its density at many points at once, and the candidates' truncated
normal draws. Every float is the one the per-point, per-dimension formulas give
(tests/simulator/test_bohb.py checks against statsmodels; bench/bench_bohb_proposals.py that
the proposals are those of the code before).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri


def truncated_normal(rng: np.random.Generator, mean: np.ndarray, scale: np.ndarray):
    """Draws of N(mean, scale) truncated to [0, 1], by inverting the CDF (what scipy's
    truncnorm.rvs does, ~20x faster per call here); the interval always holds the mean.
    ``scale`` broadcasts against ``mean`` (one per column, say); the draws have mean's shape."""
    low, high = ndtr(-mean / scale), ndtr((1 - mean) / scale)
    u = low + rng.random(np.shape(mean)) * (high - low)
    return np.clip(mean + scale * ndtri(u), 0.0, 1.0)


def kde_pdf(kde, points: np.ndarray) -> np.ndarray:
    """``kde.pdf(points)`` of a statsmodels KDEMultivariate (or a :class:`NormalReferenceKDE`),
    vectorised over the points and the dimensions.

    statsmodels evaluates point by point in Python (gpke per point); this is the same product
    kernel (gaussian 'c', Aitchison-Aitken 'u' with the levels seen in the data, Wang-Ryzin
    'o'). Every kernel value is the float the per-dimension formula gives, and they are
    multiplied in dimension order as a loop over dimensions would, so the densities are the
    same to the last bit as one (k, n) array per dimension gave; the per-KDE constants are
    computed once (a KDE's data never changes, a refit makes a new one).
    tests/simulator/test_bohb.py checks agreement with statsmodels.
    """
    return _joint_pdf(_joint_prep((kde,)), np.atleast_2d(np.asarray(points, dtype=float)))[0]


_GAUSS = 1.0 / np.sqrt(2 * np.pi)


def pair_pdf(good, bad, points: np.ndarray) -> tuple:
    """``kde_pdf(good, points)`` and ``kde_pdf(bad, points)`` in one pass (see pair_row_pdf)."""
    good_density, bad_density = _joint_pdf(_joint_prep((good, bad)), np.atleast_2d(np.asarray(points, dtype=float)))
    return good_density, bad_density


def pair_row_pdf(good, bad, source, rows) -> tuple:
    """``kde_pdf(good, scoring)`` and ``kde_pdf(bad, scoring)`` for the table rows ``rows``
    (inactive dimensions as 0), both KDEs in one pass over their data side by side, each row's
    two densities computed once per pair and kept: a candidate snapped to a row scores as that
    row, and a pair serves several proposals whose 64 candidates share rows.

    The floats are those of kde_pdf on each KDE alone: every kernel value is computed from the
    same numbers by the same elementwise operation (a KDE's constants repeated along its own
    data), the product over dimensions is elementwise, and each KDE's columns are divided and
    summed as a contiguous array of their own; a point's density does not depend on which
    other points are evaluated with it."""
    joint = _joint_prep((good, bad))  # a refit makes new KDEs, and so forgets the rows
    cache = joint.get("rows")
    if cache is None or cache[0] is not source:
        cache = joint["rows"] = (source, np.zeros((2, len(source))), np.zeros(len(source), dtype=bool))
    _, densities, known = cache
    rows = np.asarray(rows, dtype=np.int64)
    wanted = np.zeros(len(known), dtype=bool)
    wanted[rows] = True
    missing = np.flatnonzero(wanted & ~known)  # np.unique of the unknown rows, without its sort
    if missing.size:
        densities[:, missing] = _joint_pdf(joint, _zeroed_vectors(source)[missing])
        known[missing] = True
    return densities[0, rows], densities[1, rows]


def _joint_prep(kdes: tuple) -> dict:
    """The KDEs' constants along their concatenated data (in the order given; all of one
    var_type), kept on the first KDE for these others."""
    preps = tuple(_kernel_prep(kde) for kde in kdes)
    kept = kdes[0].__dict__.setdefault("_nasalloc_joint", {})  # by how many KDEs: alone, or in a pair
    joint = kept.get(len(kdes))
    if joint is not None and all(a is b for a, b in zip(joint["preps"], preps)):
        return joint
    sizes = [prep["data"].shape[0] for prep in preps]

    def along(key):  # per dimension, each KDE's constant repeated over its own data
        return np.hstack([np.repeat(prep[key][:, None], n, axis=1) for prep, n in zip(preps, sizes)])

    first = preps[0]
    joint = {"preps": preps, "ends": np.cumsum([0] + sizes).tolist(), "c": first["c"], "u": first["u"],
             "o": first["o"], "data_c": np.hstack([prep["data_c"] for prep in preps]), "minus_denom_c": -along("denom_c"),
             "data_u": np.hstack([prep["data_u"] for prep in preps]), "same_u": along("same_u"),
             "other_u": along("other_u")}
    kept[len(kdes)] = joint
    return joint


def _joint_pdf(joint: dict, points: np.ndarray) -> np.ndarray:
    """(KDEs, points) densities under each KDE of _joint_prep."""
    preps, ends = joint["preps"], joint["ends"]
    kernels = np.empty((preps[0]["data"].shape[1], points.shape[0], ends[-1]))
    with np.errstate(all="ignore"):
        cont = joint["c"]
        if cont.size:  # gaussian: exp(-(xi - x) ** 2 / (h ** 2 * 2.0)), per dimension's own h, in place
            diff = joint["data_c"][:, None, :] - points[:, cont].T[:, :, None]
            np.square(diff, out=diff)
            np.divide(diff, joint["minus_denom_c"][:, None, :], out=diff)  # -(a) / b is a / (-b)
            np.exp(diff, out=diff)
            kernels[cont] = np.multiply(diff, _GAUSS, out=diff)
        unordered = joint["u"]
        if unordered.size:
            same = joint["data_u"][:, None, :] == points[:, unordered].T[:, :, None]
            kernels[unordered] = np.where(same, joint["same_u"][:, None, :], joint["other_u"][:, None, :])
        for dim in joint["o"]:  # each KDE's own scalar bandwidth
            for prep, start, end in zip(preps, ends, ends[1:]):
                xi, x, h = prep["data"][:, dim][None, :], points[:, dim][:, None], prep["bw"][dim]
                kernels[dim][:, start:end] = np.where(xi == x, 1 - h, 0.5 * (1 - h) * h ** np.abs(xi - x))
        values = np.multiply.reduce(kernels, axis=0)  # in dimension order, one product at a time
        return np.vstack([(values[:, start:end] / prep["bw_prod"]).sum(axis=1) / (end - start)
                          for prep, start, end in zip(preps, ends, ends[1:])])


def _zeroed_vectors(source) -> np.ndarray:
    """The table's vectors with inactive (NaN) dimensions as 0, as kde_pdf scores them; once
    per source."""
    zeroed = source.__dict__.get("_nasalloc_zeroed")
    if zeroed is None or zeroed[0] is not source.vectors:
        zeroed = (source.vectors, np.nan_to_num(source.vectors, nan=0.0))
        source.__dict__["_nasalloc_zeroed"] = zeroed
    return zeroed[1]


class NormalReferenceKDE:
    """What BOHB needs of statsmodels' ``KDEMultivariate(data, var_type,
    bw='normal_reference')``: its ``data``, ``var_type`` and bandwidths, computed by the same
    expression (Scott's rule, ``1.06 * std * nobs ** (-1 / (4 + k_vars))``), so the bandwidths
    are statsmodels' to the last bit (tests/simulator/test_bohb.py), without importing
    statsmodels (about 0.3 s per process) or building its estimator per refit. Evaluate it
    with :func:`kde_pdf`."""

    def __init__(self, data: np.ndarray, var_type: str):
        self.var_type = var_type
        self.k_vars = len(var_type)
        self.data = np.reshape(np.asarray(data), (-1, self.k_vars))
        self.nobs = self.data.shape[0]
        if self.nobs <= self.k_vars:
            raise ValueError("The number of observations must be larger than the number of variables.")
        with np.errstate(all="ignore"):  # (nobs > k_vars: std's degrees-of-freedom warning cannot come)
            self.bw = 1.06 * np.std(self.data, axis=0) * self.nobs ** (-1.0 / (4 + self.data.shape[1]))


def _kernel_prep(kde) -> dict:
    """The per-KDE constants of kde_pdf, kept on the KDE (recomputed if its data or bw object
    is replaced, as _kde_pair does once when it clips the bandwidths)."""
    prep = kde.__dict__.get("_nasalloc_prep")
    if prep is not None and prep["bw_of"] is kde.bw and prep["data_of"] is kde.data:
        return prep
    data = np.asarray(kde.data, dtype=float)
    bw = np.asarray(kde.bw, dtype=float)
    cont, unordered, ordered, continuous = _kinds(kde.var_type)
    # the scalars exactly as the per-dimension formula computes them (numpy float64 each)
    denom_c = np.array([bw[dim] ** 2 * 2.0 for dim in cont], dtype=float)
    data_u = np.ascontiguousarray(data[:, unordered].T)
    if np.isnan(data_u).any():
        levels = [np.unique(data[:, dim]).size for dim in unordered]
    else:  # distinct values as np.unique counts them (no NaN: -0.0 and 0.0 are one value)
        levels = [len(set(values)) for values in data_u.tolist()]
    same_u = np.array([1 - bw[dim] for dim in unordered], dtype=float)
    with np.errstate(all="ignore"):
        other_u = np.array([bw[dim] / (count - 1) for dim, count in zip(unordered, levels)], dtype=float)
    prep = {"bw_of": kde.bw, "data_of": kde.data, "data": data, "bw": bw,
            "c": cont, "u": unordered, "o": ordered,
            "data_c": np.ascontiguousarray(data[:, cont].T), "denom_c": denom_c,
            "data_u": data_u, "same_u": same_u, "other_u": other_u,
            "bw_prod": np.prod(bw[continuous])}
    kde.__dict__["_nasalloc_prep"] = prep
    return prep


_KINDS: dict = {}


def _kinds(var_type: str) -> tuple:
    """Indices of the 'c', 'u' and 'o' dimensions and the mask of the 'c' ones, per var_type."""
    if var_type not in _KINDS:
        kinds = np.array(list(var_type))
        _KINDS[var_type] = (np.flatnonzero(kinds == "c"), np.flatnonzero(kinds == "u"),
                            np.flatnonzero(kinds == "o"), kinds == "c")
    return _KINDS[var_type]
