"""Learning curves under another global batch: statistical efficiency from the noise scale.

With the ``per_gpu`` batch policy a trial on g GPUs trains with a global batch B = (per-GPU
batch) x g, not the B0 its learning curve was recorded with. McCandlish et al. 2018 ("An
Empirical Model of Large-Batch Training") model the steps S and examples E needed to reach a
given loss as (S/S_min - 1)(E/E_min - 1) = 1 with E = E_min (1 + B / B_noise), where B_noise
= tr(Sigma)/|G|^2 is the gradient noise scale (the critical batch is about B_noise). Epochs are
examples over the training set, so reaching a point of the curve costs

    epochs at B / epochs at B0 = (1 + B/B_noise) / (1 + B0/B_noise)

and, with B_noise changing along training (it grows as the loss falls), the epoch axis is
stretched locally: a recorded epoch interval du at position u costs r(u) du epochs at B, with
r(u) = (1 + B/B_noise(u)) / (1 + B0/B_noise(u)). The stretched curve at epoch t is the
recorded curve at the u where the integral of r from 0 to u equals t.

Assumptions (read them before trusting a prediction):

* The learning rate is tuned at every B (McCandlish's relation is for the best step size at
  each batch; in practice linear scaling of the LR for SGD up to about B_noise, square-root
  scaling for Adam). Nothing here changes the learning rate: the stretch says what a tuned
  run can reach, not what the same LR does at a 16x batch.
* B_noise is the profiled config's (``noise_scale`` of ``nasalloc profile``), measured at a few
  epochs of its own training and interpolated linearly in log B_noise against the recorded
  epoch (held constant before the first and after the last point); every config of the
  curves is given it (the noise scale is a property of the model and data; configs differ).
* Curves were recorded with the config's ``batch_size`` as the global batch (true of the
  shipped digits curves: one core, one rank). With the ``per_gpu`` policy a trial of g >= 1
  GPUs has B = batch_size x g; a trial sharing a GPU (g < 1) has one rank, B = B0.
* Before the first recorded epoch the curve starts at the worst first-epoch value of all the
  curves (a stand-in for an untrained model) and rises linearly to its own first value; past
  its last recorded epoch a curve keeps its last value (a plateau). So a stretched curve
  reaches the recorded final value, later; it never exceeds what was recorded.
* B_simple (the Hessian and the optimizer's preconditioning are ignored), as measured.

With the ``global`` policy the global batch does not depend on the GPUs: nothing changes (the
table is returned as it is). Pure numpy; no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from nasalloc.errors import UserError

POLICIES = ("global", "per_gpu")
SUBSTEPS = 16          # integration steps per recorded epoch


@dataclass(frozen=True)
class NoiseScaleCurve:
    """B_noise measured at some epochs of training, interpolated between them."""

    epochs: tuple
    b_noise: tuple
    source: str = ""

    @classmethod
    def from_profile(cls, profile: Optional[dict]) -> Optional["NoiseScaleCurve"]:
        """The profile's ``noise_scale`` points with a finite positive B_noise, else None."""
        noise = (profile or {}).get("noise_scale") or {}
        points = [p for p in noise.get("points") or []
                  if isinstance(p.get("b_noise"), (int, float)) and math.isfinite(p["b_noise"]) and p["b_noise"] > 0]
        if not points:
            return None
        points.sort(key=lambda p: p["epoch"])
        return cls(tuple(float(p["epoch"]) for p in points), tuple(float(p["b_noise"]) for p in points),
                   source=f"profile noise_scale ({len(points)} points, batches {noise.get('batch_small')} vs "
                          f"{noise.get('batch_big')})")

    def at(self, epoch) -> np.ndarray:
        epoch = np.asarray(epoch, dtype=float)
        if len(self.epochs) == 1:
            return np.full(epoch.shape, self.b_noise[0])
        return np.exp(np.interp(epoch, self.epochs, np.log(self.b_noise)))

    def final(self) -> float:
        return self.b_noise[-1]


def stretch_factor(batch, batch0, b_noise):
    """Epochs at ``batch`` per epoch at ``batch0`` to reach the same point: (1+B/Bn)/(1+B0/Bn)."""
    b_noise = np.asarray(b_noise, dtype=float)
    return (1.0 + batch / b_noise) / (1.0 + batch0 / b_noise)


def _work_axis(batch0: float, batch: float, noise: NoiseScaleCurve, length: int) -> tuple:
    """(grid over recorded epochs u, epochs at ``batch`` to reach each grid point, final rate)."""
    grid = np.linspace(0.0, length, length * SUBSTEPS + 1)
    rate = stretch_factor(batch, batch0, noise.at(grid))
    tau = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2 * np.diff(grid))])
    return grid, tau, float(rate[-1])


def epoch_positions(batch0: float, batch: float, noise: NoiseScaleCurve, length: int, count: int,
                    start: float = 0.0) -> np.ndarray:
    """Where on the recorded epoch axis (u) a trial is after each of ``count`` more epochs at
    ``batch``, starting at position ``start`` (0: untrained; the u of its last epoch when it
    continues at a new batch). Past the recorded length u keeps growing at the last rate."""
    grid, tau, last_rate = _work_axis(batch0, batch, noise, length)
    done = float(np.interp(start, grid, tau)) if start <= length else tau[-1] + (start - length) * last_rate
    t = done + np.arange(1, count + 1, dtype=float)
    u = np.interp(t, tau, grid)
    beyond = t > tau[-1]
    u[beyond] = length + (t[beyond] - tau[-1]) / last_rate
    return u


def curve_at(values, positions, initial: float) -> np.ndarray:
    """The recorded curve (``values[e-1]`` after epoch e, ``initial`` at u = 0) read at positions
    u, held at its last value past the recorded length."""
    values = np.asarray(values, dtype=float)
    knots = np.arange(0, len(values) + 1, dtype=float)
    return np.interp(np.minimum(positions, len(values)), knots, np.concatenate([[initial], values]))


def stretch_curve(values, batch0: float, batch: float, noise: NoiseScaleCurve, initial: Optional[float] = None,
                  horizon: Optional[int] = None) -> np.ndarray:
    """The curve recorded at global batch ``batch0`` (``values[e-1]`` after epoch e) as expected
    at global batch ``batch``, for epochs 1..``horizon`` (default: as many as recorded)."""
    values = np.asarray(values, dtype=float)
    length = len(values)
    horizon = length if horizon is None else int(horizon)
    if batch == batch0 or length == 0:
        out = np.full(horizon, values[-1] if length else np.nan)
        out[:min(horizon, length)] = values[:horizon]
        return out
    start = values[0] if initial is None else float(initial)
    return curve_at(values, epoch_positions(batch0, batch, noise, length, horizon), start)


def epochs_to_target(curve, target: float, mode: str = "max") -> Optional[int]:
    """First 1-based epoch at which ``curve`` reaches ``target`` (None: never)."""
    curve = np.asarray(curve, dtype=float)
    reached = curve >= target if mode == "max" else curve <= target
    hits = np.flatnonzero(reached)
    return int(hits[0]) + 1 if hits.size else None


@dataclass(frozen=True)
class BatchScaling:
    """How the simulator turns recorded curves into the curves of each split."""

    policy: str                           # "global" (nothing changes) or "per_gpu"
    noise: Optional[NoiseScaleCurve] = None
    batch_key: str = "batch_size"

    @property
    def active(self) -> bool:
        return self.policy == "per_gpu" and self.noise is not None

    def key(self) -> str:
        """What the sweep's rows depend on ('' when inactive: rows as without the feature)."""
        if not self.active:
            return ""
        text = json.dumps([self.policy, self.batch_key, self.noise.epochs, self.noise.b_noise])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def global_batch(self, batch0: float, gpus_per_trial: float) -> float:
        if self.policy != "per_gpu" or gpus_per_trial < 1:
            return float(batch0)
        return float(batch0) * int(round(gpus_per_trial))

    def row_batch(self, config: dict) -> Optional[float]:
        value = config.get(self.batch_key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def initial_value(table) -> float:
    """The worst first-epoch value of all curves (the start of every stretched curve)."""
    first = table.val[:, 0]
    first = first[np.isfinite(first)]
    if first.size == 0:
        return math.nan
    return float(first.min() if table.mode == "max" else first.max())


def initial_test_value(table) -> float:
    """The worst first-epoch test value of all curves (the start of every stretched test curve)."""
    first = table.test[:, 0][np.isfinite(table.test[:, 0])]
    return float(first.min() if table.mode == "max" else first.max()) if first.size else math.nan


def stretched_table(table, gpus_per_trial: float, scaling: Optional[BatchScaling]):
    """``table`` with every curve stretched to the split's global batch; the very same table
    object when nothing changes (``global`` policy, no noise scale, or B = B0 for every row)."""
    if scaling is None or not scaling.active:
        return table
    start_val, start_test = initial_value(table), initial_test_value(table)
    val, test, changed = table.val.copy(), table.test.copy(), False
    for row, config in enumerate(table.configs):
        batch0 = scaling.row_batch(config)
        if batch0 is None:
            continue
        batch = scaling.global_batch(batch0, gpus_per_trial)
        if batch == batch0 or not np.all(np.isfinite(val[row])):
            continue
        val[row] = stretch_curve(table.val[row], batch0, batch, scaling.noise, start_val)
        if np.all(np.isfinite(table.test[row])):
            test[row] = stretch_curve(table.test[row], batch0, batch, scaling.noise, start_test)
        changed = True
    if not changed:
        return table
    return replace(table, val=val, test=test)


class ResizedCurves:
    """Curves of trials whose global batch changes between segments (``per_gpu`` under an
    adaptive policy): from the trial's position u on the recorded epoch axis when a segment
    begins, its next epochs advance u at that segment's batch (:func:`epoch_positions`), so a
    trial that trains its whole life at one batch gets exactly :func:`stretched_table`'s curve."""

    def __init__(self, table, scaling: BatchScaling):
        self.table, self.scaling = table, scaling
        self.start_val, self.start_test = initial_value(table), initial_test_value(table)

    def continue_row(self, row: int, gpus: float, epoch: int, position: float) -> Optional[tuple]:
        """(positions, val, test) for epochs ``epoch``+1.. to the table's end when the trial, at
        ``position`` after ``epoch`` epochs, trains on at ``gpus`` GPUs' global batch; None where
        the row's curve does not depend on the batch (no batch size, unfinished curve)."""
        batch0 = self.scaling.row_batch(self.table.configs[row])
        val = self.table.val[row]
        if batch0 is None or not np.all(np.isfinite(val)):
            return None
        batch, count = self.scaling.global_batch(batch0, gpus), len(val) - epoch
        if batch == batch0:  # one recorded epoch per epoch: the recorded values where u is whole
            positions = position + np.arange(1, count + 1, dtype=float)
        else:
            positions = epoch_positions(batch0, batch, self.scaling.noise, len(val), count, position)
        test = self.table.test[row]
        test_out = (curve_at(test, positions, self.start_test) if np.all(np.isfinite(test))
                    else test[epoch:])
        return positions.tolist(), curve_at(val, positions, self.start_val).tolist(), test_out.tolist()


def scaling_from(profile: Optional[dict], policy: Optional[str] = None, batch_key: str = "batch_size") -> tuple:
    """(BatchScaling, notes) for a profile and an explicit policy (None: the profile's
    workload's ``batch_policy``, else ``global``)."""
    notes = []
    if policy is not None and policy not in POLICIES:
        raise UserError(f"--batch-policy {policy!r} is not one of {', '.join(POLICIES)}")
    if policy is None:
        policy = ((profile or {}).get("workload") or {}).get("batch_policy") or "global"
        if policy not in POLICIES:
            raise UserError(f"profile field workload.batch_policy={policy!r} is not one of {', '.join(POLICIES)}")
    noise = NoiseScaleCurve.from_profile(profile)
    if policy == "per_gpu":
        if noise is None:
            notes.append("batch policy per_gpu but the profile has no noise_scale: learning curves are used as "
                         "recorded (a larger global batch is assumed to cost nothing; run `nasalloc profile` "
                         "to measure the noise scale)")
        else:
            notes.append(f"batch policy per_gpu: each curve is stretched for the split's global batch with the "
                         f"measured gradient noise scale (B_noise {min(noise.b_noise):.0f}-{max(noise.b_noise):.0f} "
                         f"over epochs {noise.epochs[0]:g}-{noise.epochs[-1]:g}; {noise.source}); assumes a learning "
                         f"rate tuned at each batch (simulator/batchscaling.py)")
    return BatchScaling(policy=policy, noise=noise, batch_key=batch_key), notes


def split_prediction(table, gpus_per_trial: float, scaling: BatchScaling, tolerance: float) -> Optional[dict]:
    """For the reference config's curve (the profiled one): its global batch at this split,
    whether that is past the critical batch (B > B_noise at the end of training), the predicted
    final metric at max_t and the epochs to reach the target (its recorded best within
    ``tolerance``), on a horizon long enough to reach it."""
    if not scaling.active or table.reference_row is None:
        return None
    row = table.reference_row
    batch0 = scaling.row_batch(table.configs[row])
    if batch0 is None:
        return None
    batch = scaling.global_batch(batch0, gpus_per_trial)
    recorded = table.val[row]
    sign = 1.0 if table.mode == "max" else -1.0
    best = float(np.nanmax(recorded) if table.mode == "max" else np.nanmin(recorded))
    target = best - sign * tolerance
    final_noise = scaling.noise.at(table.max_epochs)
    longest = int(math.ceil(table.max_epochs * float(np.max(stretch_factor(
        batch, batch0, scaling.noise.at(np.linspace(0, table.max_epochs, 64))))))) + 1
    curve = stretch_curve(recorded, batch0, batch, scaling.noise, initial_value(table), horizon=longest)
    return {"global_batch": batch, "reference_batch": batch0, "b_noise_final": float(final_noise),
            "past_critical_batch": bool(batch > final_noise), "target_metric": target,
            "epochs_to_target": epochs_to_target(curve, target, table.mode),
            "epochs_to_target_recorded": epochs_to_target(recorded, target, table.mode),
            "reference_final_metric": float(curve[table.max_epochs - 1])}
