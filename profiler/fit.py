"""Fit the scaling model (``nasalloc.simulator.scaling.ScalingModel``) to measured epochs.

With ``gamma = 1`` the model is linear in its parameters given the GPU count g::

    epoch_s = t_fixed * 1 + t_compute * (1/g) + s0 * [g > 1] * m + s1 * max(g - 2, 0) * m

(``m`` = ``inter_node`` for points whose ranks span nodes, else 1), so the fit is a
non-negative least-squares regression (scikit-learn ``LinearRegression(positive=True)``) on
the mean epoch seconds of each measured (g, nodes). The data can only identify as many
parameters as there are distinct points, so they enter in the order
``t_compute, s0, t_fixed, s1`` while each adds a new direction (1 point: ``t_compute``;
2: + ``s0``; 3: + ``t_fixed``; 4+: + ``s1``); the rest are held at 0 and listed in ``fixed``.
``inter_node`` is fitted (a 1-D search around the linear fit) only when some point spans
nodes. With 5 or more points the overlap exponent ``gamma`` is tried on a small grid and kept
when it lowers the leave-one-out error.

Quality: R^2 over every measured epoch, and the leave-one-out relative error of each point
(refit without it, predict it), both null with a reason when too few points exist.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional

import numpy as np

from nasalloc.simulator.scaling import PARAMS, ScalingModel

LINEAR_ORDER = ("t_compute", "s0", "t_fixed", "s1")
GAMMA_GRID = (1.0, 1.5, 2.0, 4.0)
MIN_POINTS_FOR_GAMMA = 5
INTER_NODE_RANGE = (1.0, 50.0)


@dataclass
class Point:
    """All measured epochs of one (GPU count, nodes)."""

    gpus: float
    nodes: int
    epochs: list

    @property
    def mean(self) -> float:
        return float(np.mean(self.epochs))


def points_from_measurements(measurements: list) -> list:
    """Group the DDP measurements (g >= 1) of a profile into fit points, ordered by g."""
    grouped = defaultdict(list)
    for m in measurements:
        if m.get("kind", "ddp") == "ddp" and m.get("epoch_seconds"):
            grouped[(float(m["gpus"]), int(m.get("nodes", 1)))].extend(float(x) for x in m["epoch_seconds"])
    return [Point(g, n, epochs) for (g, n), epochs in sorted(grouped.items())]


def _features(gpus: float, nodes: int, inter_node: float) -> dict:
    m = inter_node if nodes > 1 else 1.0
    return {"t_fixed": 1.0, "t_compute": 1.0 / gpus,
            "s0": (1.0 if gpus > 1 else 0.0) * m, "s1": max(gpus - 2.0, 0.0) * m}


def _design(points: list, columns, inter_node: float = 1.0) -> np.ndarray:
    return np.array([[_features(p.gpus, p.nodes, inter_node)[c] for c in columns] for p in points])


def identifiable_columns(points: list, budget: Optional[int] = None) -> list:
    """The linear parameters these points can identify, in LINEAR_ORDER, at most ``budget``."""
    budget = len(points) if budget is None else budget
    chosen: list = []
    rank = 0
    for column in LINEAR_ORDER:
        if len(chosen) >= budget:
            break
        trial = chosen + [column]
        new_rank = np.linalg.matrix_rank(_design(points, trial))
        if new_rank > rank:
            chosen, rank = trial, new_rank
    return chosen


def _nnls(points: list, columns, inter_node: float) -> dict:
    from sklearn.linear_model import LinearRegression

    X = _design(points, columns, inter_node)
    y = np.array([p.mean for p in points])
    reg = LinearRegression(positive=True, fit_intercept=False).fit(X, y)
    params = {c: float(max(v, 0.0)) for c, v in zip(columns, reg.coef_)}
    if params.get("t_compute", 0.0) + params.get("t_fixed", 0.0) <= 0:
        params["t_compute"] = float(min(p.mean * p.gpus for p in points))  # keep the model valid
    return params


def _model(params: dict, gamma: float = 1.0, inter_node: float = 1.0) -> ScalingModel:
    base = {"t_fixed": 0.0, "t_compute": 0.0, "s0": 0.0, "s1": 0.0}
    base.update(params)
    return ScalingModel(gamma=gamma, inter_node=inter_node, **base)


def _sse(model: ScalingModel, points: list) -> float:
    return float(sum((model.epoch_seconds(p.gpus, p.nodes) - p.mean) ** 2 for p in points))


def _fit_linear(points: list) -> tuple:
    """(params, inter_node, fitted names) of the gamma = 1 fit."""
    multi = any(p.nodes > 1 for p in points)
    budget = len(points) - 1 if multi and len(points) > 1 else len(points)
    columns = identifiable_columns(points, budget)
    if not multi or not {"s0", "s1"} & set(columns):
        return _nnls(points, columns, 1.0), 1.0, columns
    from scipy.optimize import minimize_scalar

    best = minimize_scalar(lambda m: _sse(_model(_nnls(points, columns, m), inter_node=m), points),
                           bounds=INTER_NODE_RANGE, method="bounded")
    inter_node = float(best.x)
    return _nnls(points, columns, inter_node), inter_node, columns + ["inter_node"]


def _fit_gamma(points: list, gamma: float) -> tuple:
    """Least-squares fit of the same parameters with the overlap exponent fixed at ``gamma``."""
    params, inter_node, fitted = _fit_linear(points)
    if gamma == 1.0:
        return params, inter_node, fitted
    from scipy.optimize import least_squares

    names = [c for c in fitted if c != "inter_node"]
    x0 = np.array([max(params[c], 1e-9) for c in names])

    def residuals(x):
        model = _model(dict(zip(names, np.maximum(x, 0.0))), gamma, inter_node)
        return [model.epoch_seconds(p.gpus, p.nodes) - p.mean for p in points]

    result = least_squares(residuals, x0, bounds=(0.0, np.inf))
    fitted_params = {c: float(max(v, 0.0)) for c, v in zip(names, result.x)}
    if fitted_params.get("t_compute", 0.0) + fitted_params.get("t_fixed", 0.0) <= 0:
        return params, inter_node, fitted
    return fitted_params, inter_node, fitted


def _loo(points: list, gamma: float) -> list:
    """Leave-one-out prediction of every point (refit without it)."""
    predictions = []
    for i, point in enumerate(points):
        rest = points[:i] + points[i + 1:]
        params, inter_node, _ = _fit_gamma(rest, gamma)
        predictions.append(_model(params, gamma, inter_node).epoch_seconds(point.gpus, point.nodes))
    return predictions


def _mean_rel_error(predicted: list, points: list) -> float:
    return float(np.mean([abs(q - p.mean) / p.mean for q, p in zip(predicted, points)]))


def colocation_slowdowns(measurements: list, alone_epoch_s: Optional[float]) -> dict:
    """Co-located trials k -> mean per-trial epoch seconds over the alone (g = 1) epoch."""
    if not alone_epoch_s:
        return {}
    per_k = defaultdict(list)
    for m in measurements:
        if m.get("kind") == "colocated" and m.get("epoch_seconds"):
            per_k[int(m["trials_per_gpu"])].extend(float(x) for x in m["epoch_seconds"])
    return {str(k): float(np.mean(v)) / alone_epoch_s for k, v in sorted(per_k.items())}


def fit_profile(measurements: list) -> tuple:
    """Fit the scaling model to a profile's measurements: ``(ScalingModel, fit report)``.

    The report is the profile's ``fit`` object (docs/formats.md).
    """
    points = points_from_measurements(measurements)
    if not points:
        raise ValueError("no DDP measurement to fit: every GPU count failed or was skipped")
    n = len(points)

    loo_reason = None
    candidates = {}
    gammas = GAMMA_GRID if n >= MIN_POINTS_FOR_GAMMA else (1.0,)
    if n >= 2:
        for gamma in gammas:
            predictions = _loo(points, gamma)
            candidates[gamma] = (_mean_rel_error(predictions, points), predictions)
        # gamma != 1 only when it beats the simpler model out of sample
        gamma = min(candidates, key=lambda g: (candidates[g][0], g != 1.0, g))
    else:
        gamma = 1.0
        loo_reason = "one GPU count measured: leave-one-out needs at least two"

    params, inter_node, fitted = _fit_gamma(points, gamma)
    if gamma != 1.0:
        fitted = fitted + ["gamma"]
    model = _model(params, gamma, inter_node)
    model.fixed = [p for p in PARAMS if p not in fitted]
    colocated = [float(m["gpus"]) for m in measurements if m.get("kind") == "colocated" and m.get("epoch_seconds")]
    all_g = [p.gpus for p in points] + colocated
    model.measured_min_gpus, model.measured_max_gpus = min(all_g), max(all_g)
    alone = next((p.mean for p in points if p.gpus == 1 and p.nodes == 1), None)
    model.colocation = colocation_slowdowns(measurements, alone)

    predicted = [model.epoch_seconds(p.gpus, p.nodes) for p in points]
    r2, r2_reason = _r2(points, model)
    loo_predictions = candidates[gamma][1] if candidates else [None] * n
    report = {
        "kind": "pollux" if gamma != 1.0 else "nnls-linear",
        "r2": r2,
        "r2_reason": r2_reason,
        "loo_rel_error": candidates[gamma][0] if candidates else None,
        "loo_max_rel_error": (max(abs(q - p.mean) / p.mean for q, p in zip(loo_predictions, points))
                              if candidates else None),
        "loo_reason": loo_reason,
        "fitted": fitted,
        "fixed": model.fixed,
        "gamma_loo_rel_error": {str(g): c[0] for g, c in candidates.items()} if len(candidates) > 1 else None,
        "points": [
            {"gpus": int(p.gpus) if p.gpus == int(p.gpus) else p.gpus, "nodes": p.nodes, "epochs": len(p.epochs), "measured_s": p.mean,
             "predicted_s": q, "rel_error": abs(q - p.mean) / p.mean,
             "loo_predicted_s": lq, "loo_rel_error": None if lq is None else abs(lq - p.mean) / p.mean}
            for p, q, lq in zip(points, predicted, loo_predictions)
        ],
    }
    return model, report


def _r2(points: list, model: ScalingModel) -> tuple:
    """R^2 of the model over every measured epoch (not just the means it was fitted to)."""
    if len(points) < 2:
        return None, "one GPU count measured: R^2 needs at least two"
    y = np.array([e for p in points for e in p.epochs])
    yhat = np.array([model.epoch_seconds(p.gpus, p.nodes) for p in points for _ in p.epochs])
    total = float(np.sum((y - y.mean()) ** 2))
    if total <= 0:
        return None, "every measured epoch took the same time: R^2 is undefined"
    return 1.0 - float(np.sum((y - yhat) ** 2)) / total, None


def epoch_cv(measurements: list) -> Optional[float]:
    """Coefficient of variation of measured epoch times, pooled within each (g, nodes)."""
    ratios = []
    for p in points_from_measurements(measurements):
        if len(p.epochs) >= 2 and p.mean > 0:
            ratios.extend((np.array(p.epochs) - p.mean) / p.mean)
    if len(ratios) < 2:
        return None
    return float(math.sqrt(np.mean(np.square(ratios))))


def startup_cv(measurements: list) -> Optional[float]:
    """Coefficient of variation of start-up between launches of the same g (``--repeats`` >= 2):
    the pooled sample variance of the relative deviations from each g's mean (n - 1 per g);
    None when no g was launched more than once."""
    by_g: dict = {}
    for m in measurements:
        if m.get("startup_s") is not None and m.get("kind", "ddp") in ("ddp", "colocated"):
            by_g.setdefault((m["gpus"], m.get("nodes", 1)), []).append(float(m["startup_s"]))
    squares, dof = 0.0, 0
    for values in by_g.values():
        mean = float(np.mean(values))
        if len(values) >= 2 and mean > 0:
            squares += float(np.sum(np.square((np.array(values) - mean) / mean)))
            dof += len(values) - 1
    return math.sqrt(squares / dof) if dof else None


def run_cv(measurements: list) -> Optional[float]:
    """Coefficient of variation of a whole job's mean epoch time between jobs of the same g
    (``--repeats`` >= 2), beyond what the epoch-to-epoch noise explains: the machine being
    faster or slower for a while, which every epoch of a run then shares. Per g: the sample
    variance of the jobs' relative mean epoch times less the within-job variance of a mean of
    their epochs; pooled over the g (by degrees of freedom), floored at 0. None when no g ran
    twice."""
    by_g: dict = {}
    for m in measurements:
        epochs = m.get("epoch_seconds") or []
        if len(epochs) and m.get("kind", "ddp") in ("ddp", "colocated"):
            by_g.setdefault((m["gpus"], m.get("nodes", 1)), []).append(np.asarray(epochs, dtype=float))
    between, dof = 0.0, 0
    for jobs in by_g.values():
        if len(jobs) < 2:
            continue
        means = np.array([j.mean() for j in jobs])
        grand = means.mean()
        if grand <= 0:
            continue
        within = np.mean([j.var(ddof=1) / len(j) for j in jobs if len(j) > 1] or [0.0]) / grand ** 2
        between += max(0.0, float(np.var(means / grand, ddof=1)) - within) * (len(jobs) - 1)
        dof += len(jobs) - 1
    return math.sqrt(between / dof) if dof else None
