"""A Ray Tune experiment folder read as a trace (docs/formats.md), so a Ray user's past search
replays in ``nasalloc simulate --curves``.

What is read, per trial folder (Ray 2.x layout: ``EXPERIMENT/<trainable>_<id>_.../``):

* ``result.json`` (one JSON result per line), else ``progress.csv``: ``training_iteration``
  becomes the epoch, ``time_this_iter_s`` its seconds, the metric the user names its value;
  a repeated iteration (a trial restored from a checkpoint) keeps the last one reported;
* ``params.json`` (else the results' ``config``): the config; nested dicts are flattened with
  ``/`` as Ray's progress.csv does, lists and other values kept as JSON text;
* ``experiment_state-*.json`` (the experiment's own record, newest file): each trial's
  placement group, whose bundles give the GPUs it had (the sum of ``--gpu-resource``, default
  ``GPU``, over its bundles: Ray Train's workers included). It is a pickle: read by an
  unpickler that imports nothing (every class becomes a plain record), so neither Ray nor
  anything the file names is loaded.

Early-stopped trials have partial curves; :func:`read_ray_experiment` reports how many and
``partial="hold"`` extends each at its last value and mean epoch time (an assumption, said in
the summary); the simulator otherwise keeps only configs whose curve reaches ``--max-epochs``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import UserError

PARTIAL = ("drop", "hold")
_SAFE_BUILTINS = {"set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bytes",
                  "bool", "complex", "bytearray"}


@dataclass
class RayImport:
    frame: object                     # pandas DataFrame in the trace format
    trials: int
    results: int
    max_iteration: int
    full_trials: int                  # trials whose curve reaches max_iteration
    metric_range: tuple
    gpus: dict                        # gpus per trial -> trials
    notes: list = field(default_factory=list)

    def summary(self) -> list[str]:
        low, high = self.metric_range
        gpus = ", ".join(f"{g:g} GPU(s): {n}" for g, n in sorted(self.gpus.items()))
        lines = [f"{self.trials} trials, {self.results} results, iterations 1..{self.max_iteration}, "
                 f"metric {low:.6g}..{high:.6g}; GPUs per trial: {gpus}",
                 f"{self.full_trials} of {self.trials} trials reached iteration {self.max_iteration}; "
                 f"{self.trials - self.full_trials} were stopped early (partial curves)"]
        return lines + self.notes


class _Record:
    """Whatever class a pickle names: its arguments and state, nothing run."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        return type(name, (_Record,), {})


def _bundles(hex_pickle: str) -> list:
    try:
        record = _InertUnpickler(io.BytesIO(bytes.fromhex(hex_pickle))).load()
    except Exception:  # not a placement group we can read: the caller falls back
        return []
    state = getattr(record, "state", None)
    bundles = state.get("_bundles") if isinstance(state, dict) else None
    return bundles if isinstance(bundles, list) else []


def _placements(folder: Path, resource: str) -> dict:
    """trial_id -> GPUs (sum of ``resource`` over its bundles), from the newest experiment state."""
    states = sorted(folder.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        out = {}
        for entry in data.get("trial_data", []):
            trial = json.loads(entry[0]) if isinstance(entry, list) else json.loads(entry)
            bundles = _bundles(trial.get("placement_group_factory", ""))
            if bundles:
                out[str(trial.get("trial_id"))] = sum(float(b.get(resource, 0) or 0) for b in bundles)
        return out
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        return {}


def _results(trial_dir: Path) -> tuple[list[dict], Path]:
    result_json, progress = trial_dir / "result.json", trial_dir / "progress.csv"
    if result_json.is_file():
        rows, lines = [], result_json.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines):
                    break  # a torn last line (the run was killed while writing it)
                raise UserError(f"{result_json} line {number} is not JSON") from None
        return rows, result_json
    if progress.is_file():
        with open(progress, newline="") as handle:
            rows = [{k: _number_or_text(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        return rows, progress
    raise UserError(f"{result_json} not found (nor progress.csv): not a finished Ray Tune trial folder")


def _number_or_text(value: str):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        else:
            out[name] = json.dumps(value, sort_keys=True, default=str)
    return out


def _finite(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_ray_experiment(folder, metric: str, mode: str, *, gpu_resource: str = "GPU",
                        gpus_per_trial: Optional[float] = None, partial: str = "drop") -> RayImport:
    """Read a Ray Tune experiment folder into a trace; every problem is one UserError line."""
    import pandas as pd

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"Ray Tune experiment folder not found: {folder}")
    if mode not in ("max", "min"):
        raise UserError(f"--mode {mode!r}: expected max or min")
    if partial not in PARTIAL:
        raise UserError(f"--partial {partial!r}: expected {' or '.join(PARTIAL)}")
    trial_dirs = sorted(p for p in folder.iterdir() if p.is_dir()
                        and any((p / f).is_file() for f in ("params.json", "result.json", "progress.csv")))
    if not trial_dirs:
        raise UserError(f"{folder} holds no Ray Tune trial folders (none has params.json, result.json "
                        "or progress.csv); give the experiment folder, e.g. ~/ray_results/NAME")
    placements = _placements(folder, gpu_resource)
    notes, records, gpus_count = [], [], {}
    fallback_gpus = 0
    for number, trial_dir in enumerate(trial_dirs):
        rows, source = _results(trial_dir)
        rows = [r for r in rows if _finite(r.get("training_iteration")) is not None]
        if not rows:
            raise UserError(f"{source} has no results with a training_iteration")
        if not any(metric in r for r in rows):
            numeric = sorted(k for k, v in rows[-1].items() if _finite(v) is not None)
            raise UserError(f"{source}: metric {metric!r} not found (numeric results there: "
                            f"{', '.join(numeric[:12])})")
        params = trial_dir / "params.json"
        try:
            config = json.loads(params.read_text()) if params.is_file() else rows[-1].get("config", {})
        except json.JSONDecodeError:
            raise UserError(f"{params} is not valid JSON") from None
        if not isinstance(config, dict):
            raise UserError(f"{params}: expected a JSON object of hyperparameters")
        trial_id = str(rows[-1].get("trial_id", trial_dir.name))
        gpus = placements.get(trial_id)
        if not gpus:
            gpus = gpus_per_trial if gpus_per_trial is not None else 1.0
            fallback_gpus += 1
        gpus_count[gpus] = gpus_count.get(gpus, 0) + 1
        by_iteration = {}
        for row in rows:  # a restored trial repeats iterations: the last report wins
            by_iteration[int(float(row["training_iteration"]))] = row
        flat = _flatten(config)
        for iteration in sorted(by_iteration):
            row = by_iteration[iteration]
            value, seconds = _finite(row.get(metric)), _finite(row.get("time_this_iter_s"))
            if value is None:
                raise UserError(f"{source}: iteration {iteration} has {metric}={row.get(metric)!r}, "
                                "expected a finite number")
            if seconds is None or seconds <= 0:
                raise UserError(f"{source}: iteration {iteration} has time_this_iter_s="
                                f"{row.get('time_this_iter_s')!r}, expected a number > 0")
            records.append({"trial_id": number, **{f"config.{k}": v for k, v in flat.items()},
                            "epoch": iteration, "val_metric": value, "metric_name": metric,
                            "mode": mode, "epoch_seconds": seconds, "gpus_per_trial": gpus,
                            "workload": ""})
    frame = pd.DataFrame.from_records(records)
    last = frame.groupby("trial_id")["epoch"].max()
    first = frame.groupby("trial_id")["epoch"].min()
    if (first != 1).any():
        bad = int(first[first != 1].index[0])
        raise UserError(f"{trial_dirs[bad]}: its results start at iteration {int(first[bad])}, "
                        "expected 1 (the folder holds only part of the trial)")
    max_iteration = int(last.max())
    full = int((last == max_iteration).sum())
    if fallback_gpus:
        given = f"--gpus-per-trial {gpus_per_trial:g}" if gpus_per_trial is not None else "1 (default)"
        notes.append(f"{fallback_gpus} trial(s) without {gpu_resource!r} in a readable placement group in "
                     f"experiment_state-*.json: GPUs per trial taken as {given}")
    if partial == "hold" and full < len(last):
        frame = _hold(frame, max_iteration)
        notes.append(f"--partial hold: {len(last) - full} stopped curve(s) extended to iteration "
                     f"{max_iteration} at their last value and mean epoch time (an assumption: a "
                     "stopped config would not have improved)")
    elif full < len(last):
        notes.append(f"nasalloc simulate keeps only configs whose curve reaches --max-epochs (default "
                     f"{max_iteration}: {full} of {len(last)} here); pass a smaller --max-epochs, or "
                     "import with --partial hold")
    values = frame["val_metric"]
    return RayImport(frame=frame, trials=len(last), results=len(records), max_iteration=max_iteration,
                     full_trials=full, metric_range=(float(values.min()), float(values.max())),
                     gpus=gpus_count, notes=notes)


def _hold(frame, max_iteration: int):
    import pandas as pd

    extra = []
    for _, rows in frame.groupby("trial_id", sort=True):
        last = rows.iloc[-1].to_dict()
        mean_seconds = float(rows["epoch_seconds"].mean())
        for epoch in range(int(last["epoch"]) + 1, max_iteration + 1):
            extra.append({**last, "epoch": epoch, "epoch_seconds": mean_seconds})
    if not extra:
        return frame
    held = pd.concat([frame, pd.DataFrame.from_records(extra)], ignore_index=True)
    return held.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
