"""The time model the simulator runs on, loaded from a profile (``nasalloc.profile/1``).

A profile gives the scaling model (epoch seconds of the reference config against its GPUs, see
:mod:`nasalloc.simulator.scaling`), the overheads of a trial's life (start-up, checkpoint save
and load, evaluation), the variability of epoch times and the GPUs per node of the cluster.

Overheads: where the profile's ``measurements`` hold a value per GPU count (``startup_s`` grows
with ranks: process launch and distributed init), the value for a trial of g GPUs is
interpolated linearly in log2(g) between the measured counts and held constant beyond them;
otherwise the profile's ``overheads`` mean is used; where neither has it, a stated default is
used and a note says so (the CLI prints every note). ``resume_s``, the start-up of a resumed
segment, is optional: without it a resume pays ``startup_s``. ``roundtrip_s``, the runner's
per-epoch round trip, is optional too (0 without it) and is charged after every epoch.

Evaluation: the scaling model's epoch time already includes evaluation (``t_fixed`` and the
measured epochs are training + evaluation, see ``scaling.py``), so ``eval_s`` is reported but not
added again, unless the profile says ``"model_includes_eval": false``.

Epoch-time variability: every simulated epoch is multiplied by a lognormal factor of mean 1 and
coefficient of variation ``variability.epoch_cv``; every start-up (fresh or resumed) by one of
CV ``variability.startup_cv`` (optional, 0 without it: the profile measured each g once); and
all epochs of one simulated run by one shared factor of CV ``variability.run_cv`` (optional: the
machine running faster or slower for a while, which iid epoch noise averages away).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nasalloc.errors import UserError

from .scaling import ScalingModel

SCHEMA = "nasalloc.profile/1"
OVERHEADS = ("startup_s", "checkpoint_save_s", "checkpoint_load_s", "eval_s")
# Optional: the start-up of a resumed segment where it differs from a fresh start (Ray Tune
# runs here started a resumed trial in 1.1-1.8 s against 2-8 s for fresh trials starting
# together); without it a resume pays startup_s.
RESUME = "resume_s"
# Optional: the per-epoch round trip a trial pays its runner (report the result, the runner's
# decision and bookkeeping, the decision broadcast to every rank), measured by the profiler
# against a stand-in runner. Charged after every epoch; without it, 0 (not modelled).
ROUNDTRIP = "roundtrip_s"
OPTIONAL = (RESUME, ROUNDTRIP)
DEFAULT_PROFILE_NAME = "default_profile.json"

# Used only where a profile lacks the value; each use is printed.
DEFAULT_OVERHEAD_S = 0.0
DEFAULT_EPOCH_CV = 0.0
FALLBACK_GPUS_PER_NODE = 4


@dataclass
class TimeModel:
    scaling: ScalingModel
    overheads: dict                      # name -> seconds (profile mean or default)
    epoch_cv: float = 0.0
    gpus_per_node: Optional[int] = None  # None: the profile does not say
    startup_cv: float = 0.0              # of each start-up (and resume) between launches
    run_cv: float = 0.0                  # of a factor every epoch of one run shares
    per_gpus: dict = field(default_factory=dict)  # name -> [(gpus, seconds)] sorted by gpus
    add_eval: bool = False
    source: str = ""
    notes: list = field(default_factory=list)

    def overhead(self, name: str, gpus: float) -> float:
        """Seconds of overhead ``name`` for a trial of ``gpus`` GPUs.

        A fraction uses what was measured with that many trials sharing a GPU (start-up is
        slower when co-located processes launch together), else the 1-GPU figure.
        """
        if name == RESUME and name not in self.overheads:
            return self.overhead("startup_s", gpus)
        if name == ROUNDTRIP and name not in self.overheads:
            return 0.0
        points = self.per_gpus.get(name)
        if points and gpus < 1:
            shared = dict(points).get(gpus)
            if shared is not None:
                return shared
        points = [p for p in points or [] if p[0] >= 1]
        if not points:
            return self.overheads[name]
        x = math.log2(max(gpus, 1.0))
        xs = [math.log2(g) for g, _ in points]
        if x <= xs[0]:
            return points[0][1]
        if x >= xs[-1]:
            return points[-1][1]
        for (x0, (_, y0)), (x1, (_, y1)) in zip(zip(xs, points), zip(xs[1:], points[1:])):
            if x0 <= x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        raise AssertionError("unreachable")

    def reference_epoch_seconds(self, gpus: float, nodes: int = 1) -> float:
        """Mean seconds of one epoch (training + evaluation) of the reference config."""
        seconds = self.scaling.epoch_seconds(gpus, nodes)
        if self.add_eval:
            seconds += self.overhead("eval_s", gpus)
        return seconds

    def noise_sigma(self) -> float:
        """Sigma of the lognormal epoch-time factor with mean 1 and the profile's CV."""
        return math.sqrt(math.log1p(self.epoch_cv ** 2))

    def startup_sigma(self) -> float:
        """Sigma of the lognormal start-up factor with mean 1 and the profile's start-up CV."""
        return math.sqrt(math.log1p(self.startup_cv ** 2))

    def run_sigma(self) -> float:
        """Sigma of the lognormal factor of mean 1 that all epochs of one run share."""
        return math.sqrt(math.log1p(self.run_cv ** 2))


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UserError(f"profile field {where}={value!r} must be a finite number >= 0")
    return float(value)


def _measured_seconds(value, where: str) -> float:
    """A measured time: finite and > 0 (a zero or negative measurement is a broken profile)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"profile field {where} is {value!r}: expected a finite number > 0 (seconds measured)")
    return float(value)


def _check_measured_times(measurements: list, origin: str) -> None:
    """Every time a measurement holds (epoch seconds, overheads) is finite and > 0."""
    for i, m in enumerate(measurements):
        if not isinstance(m, dict):
            continue
        try:
            for name in ("epoch_seconds", "train_seconds", "eval_seconds"):
                values = m.get(name)
                for j, value in enumerate(values if isinstance(values, list) else [] if values is None else [values]):
                    _measured_seconds(value, f"measurements[{i}].{name}[{j}]")
            for j, trial in enumerate(m.get("trial_epoch_seconds") or []):
                for k, value in enumerate(trial if isinstance(trial, list) else [trial]):
                    _measured_seconds(value, f"measurements[{i}].trial_epoch_seconds[{j}][{k}]")
            for name in OVERHEADS + (ROUNDTRIP,):
                if m.get(name) is not None:
                    _measured_seconds(m[name], f"measurements[{i}].{name}")
        except UserError as err:
            raise UserError(f"{origin}: {err}") from None


def time_model_from_profile(profile: dict, origin: str = "profile") -> TimeModel:
    """Validate a profile dict and build its :class:`TimeModel` (one-line UserError otherwise)."""
    if not isinstance(profile, dict):
        raise UserError(f"{origin}: a profile must be a JSON object, got {type(profile).__name__}")
    schema = profile.get("schema")
    if schema is None:
        raise UserError(f"{origin} is missing field 'schema' (expected {SCHEMA!r})")
    if schema != SCHEMA:
        raise UserError(f"{origin}: schema {schema!r} is not supported (expected {SCHEMA!r})")
    if "model" not in profile:
        raise UserError(f"{origin} is missing field 'model' (the fitted scaling model)")
    try:
        scaling = ScalingModel.from_dict(profile["model"])
    except UserError as err:
        raise UserError(f"{origin}: {err}") from None
    notes: list[str] = []

    overheads_in = profile.get("overheads") or {}
    if not isinstance(overheads_in, dict):
        raise UserError(f"{origin}: field 'overheads' must be an object")
    if isinstance(profile.get("measurements"), list):
        _check_measured_times(profile["measurements"], origin)
    per_gpus = _per_gpus_overheads(profile.get("measurements") or [], origin)
    overheads = {}
    for name in OVERHEADS + OPTIONAL:
        if name in overheads_in:
            overheads[name] = _number(overheads_in[name], f"overheads.{name}")
        elif name in per_gpus:
            points = per_gpus[name]
            overheads[name] = sum(v for _, v in points) / len(points)
        elif name not in OPTIONAL:
            overheads[name] = DEFAULT_OVERHEAD_S
            if name != "eval_s":  # evaluation is inside the scaling model anyway
                notes.append(f"profile has no {name}: default {DEFAULT_OVERHEAD_S:g} s used (cost not modelled)")

    variability = profile.get("variability") or {}
    if "epoch_cv" in variability:
        epoch_cv = _number(variability["epoch_cv"], "variability.epoch_cv")
    else:
        epoch_cv = DEFAULT_EPOCH_CV
        notes.append(f"profile has no variability.epoch_cv: default {DEFAULT_EPOCH_CV:g} used (epoch times without noise)")

    # optional (0 without it, no note): measured by `nasalloc profile --repeats 2` or more
    startup_cv = _number(variability["startup_cv"], "variability.startup_cv") if "startup_cv" in variability else 0.0
    run_cv = _number(variability["run_cv"], "variability.run_cv") if "run_cv" in variability else 0.0

    hardware = profile.get("hardware") or {}
    gpus_per_node = hardware.get("gpus_per_node")
    if gpus_per_node is not None and (isinstance(gpus_per_node, bool) or not isinstance(gpus_per_node, int)
                                      or gpus_per_node < 1):
        raise UserError(f"profile field hardware.gpus_per_node={gpus_per_node!r} must be a positive integer")

    if not scaling.colocation:
        notes.append("profile has no co-location measurements: k trials sharing a GPU are assumed "
                     "time-sliced (each k times slower)")
    add_eval = profile.get("model_includes_eval", True) is False
    return TimeModel(scaling=scaling, overheads=overheads, epoch_cv=epoch_cv, startup_cv=startup_cv, run_cv=run_cv,
                     gpus_per_node=gpus_per_node,
                     per_gpus=per_gpus, add_eval=add_eval, source=str(profile.get("source", "")), notes=notes)


def _per_gpus_overheads(measurements: list, origin: str) -> dict:
    """Mean of each overhead per GPU count over the measurements that have it (fractional
    counts come from the co-located measurements)."""
    if not isinstance(measurements, list):
        raise UserError(f"{origin}: field 'measurements' must be a list")
    sums: dict[str, dict[float, list]] = {}
    for i, m in enumerate(measurements):
        if not isinstance(m, dict) or m.get("kind", "ddp") not in ("ddp", "colocated") or "gpus" not in m:
            continue
        gpus = _number(m["gpus"], f"measurements[{i}].gpus")
        for name in OVERHEADS + OPTIONAL:
            if m.get(name) is not None:
                sums.setdefault(name, {}).setdefault(gpus, []).append(_number(m[name], f"measurements[{i}].{name}"))
    return {name: sorted((g, sum(v) / len(v)) for g, v in by_g.items() if g > 0)
            for name, by_g in sums.items()}


@dataclass
class LoadedProfile:
    data: dict
    model: TimeModel
    path: str          # the file, or "<embedded default>"
    sha256: str        # of the file's bytes
    embedded: bool


def load_profile(path: Optional[str] = None) -> LoadedProfile:
    """Read and validate a profile file; ``None`` loads the embedded default profile."""
    if path is None:
        from nasalloc.data import data_path

        raw = data_path(DEFAULT_PROFILE_NAME).read_bytes()
        origin, shown, embedded = "embedded default profile", f"<embedded {DEFAULT_PROFILE_NAME}>", True
    else:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"profile not found: {path}")
        raw = file.read_bytes()
        origin, shown, embedded = f"profile {path}", str(path), False
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{origin} is not valid JSON ({err})") from None
    model = time_model_from_profile(data, origin)
    return LoadedProfile(data=data, model=model, path=shown, sha256=hashlib.sha256(raw).hexdigest(), embedded=embedded)
