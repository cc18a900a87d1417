"""The per-epoch trace (docs/formats.md): written by the validation runner and the digits
benchmark, read by the simulator as learning curves and per-epoch seconds.

One CSV row per trial and epoch. :class:`TraceWriter` appends and flushes each row, so a
killed run loses at most its last row (a torn last line is dropped on reading and cut off
before a resumed run appends). :func:`read_trace` validates a trace (ours or a user's) with
one-line errors; :class:`Curves` turns it into one learning curve per trial.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .errors import UserError
from .io import AppendOnlyText

CONFIG_PREFIX = "config."
# Columns of docs/formats.md in file order; config.<name> columns go after trial_id.
TRACE_COLUMNS = ["trial_id", "epoch", "val_metric", "test_metric", "metric_name", "mode",
                 "epoch_seconds", "gpus_per_trial", "start_s", "end_s", "workload", "train_seed"]
REQUIRED_COLUMNS = ["trial_id", "epoch", "val_metric", "epoch_seconds", "metric_name", "mode"]
# Optional columns and the value a trace without them gets.
OPTIONAL_DEFAULTS = {"test_metric": np.nan, "gpus_per_trial": 1.0, "start_s": np.nan,
                     "end_s": np.nan, "workload": "", "train_seed": np.nan}
MODES = ("max", "min")
DEFAULT_CURVES = "digits_curves.csv.gz"


def trace_header(config_names: Sequence[str]) -> list[str]:
    return ["trial_id"] + [CONFIG_PREFIX + n for n in config_names] + TRACE_COLUMNS[1:]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


class TraceWriter(AppendOnlyText):
    """Append trace rows to ``path`` (CSV), one flushed line per row.

    ``config_names`` fixes the ``config.*`` columns (pass every hyperparameter of the space:
    a conditional one is empty where inactive). A file that exists already is appended to,
    keeping its header; its config columns then win and must cover every row's config.
    """

    def __init__(self, path, config_names: Optional[Sequence[str]] = None, fsync: bool = False):
        path = Path(path)
        if path.suffix == ".gz":
            raise UserError(f"trace {path}: TraceWriter appends plain CSV; compress a finished trace afterwards")
        super().__init__(path, fsync=fsync, newline="")  # cuts a torn last row first
        self._header: Optional[list[str]] = None
        if self.path.stat().st_size > 0:
            self._header = self._resume_header()
        elif config_names is not None:
            self._header = trace_header(list(config_names))
            self._write_line(self._header)

    def _resume_header(self) -> list[str]:
        with open(self.path, encoding="utf-8", newline="") as handle:
            header = next(csv.reader([handle.readline()]))
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            self.close()
            raise UserError(f"trace {self.path} exists but is not a trace (no column {missing[0]!r}); choose another file")
        return header

    @property
    def config_names(self) -> list[str]:
        return [c[len(CONFIG_PREFIX):] for c in (self._header or []) if c.startswith(CONFIG_PREFIX)]

    @property
    def header(self) -> list[str]:
        return list(self._header or [])

    def write(self, row: dict) -> None:
        """Append one row: the trace columns plus ``config`` (a dict) or ``config.<name>`` keys."""
        flat = {k: v for k, v in row.items() if k != "config"}
        for name, value in (row.get("config") or {}).items():
            flat[CONFIG_PREFIX + name] = value
        if self._header is None:
            names = [k[len(CONFIG_PREFIX):] for k in flat if k.startswith(CONFIG_PREFIX)]
            self._header = trace_header(names)
            self._write_line(self._header)
        unknown = [k for k in flat if k not in self._header]
        if unknown:
            raise ValueError(f"trace {self.path}: row has column {unknown[0]!r} the header lacks")
        self._write_line([_cell(flat.get(column)) for column in self._header])

    def write_many(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.write(row)

    def _write_line(self, cells: list[str]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        self.append(buffer.getvalue())


def trace_csv_text(frame) -> str:
    """A trace DataFrame as CSV text; integer config columns with empty cells stay integers."""
    frame = frame.copy()
    for column in frame.columns:
        if column.startswith(CONFIG_PREFIX) and _whole_numbers(frame[column]) \
                and frame[column].dtype.kind == "f":
            frame[column] = frame[column].astype("Int64")
    return frame.to_csv(index=False)


def write_trace(path, frame) -> None:
    """Write a whole trace atomically, gzipped when ``path`` ends in .gz (reproducibly: no mtime)."""
    from .io import atomic_write_bytes, atomic_write_text

    text = trace_csv_text(frame)
    if str(path).endswith(".gz"):
        atomic_write_bytes(Path(path), gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        atomic_write_text(Path(path), text)


def _read_text(path: Path) -> str:
    try:  # read_bytes: also works for package data inside a zip (importlib.resources)
        data = path.read_bytes()
        return (gzip.decompress(data) if path.name.endswith(".gz") else data).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise UserError(f"trace {path} cannot be read ({type(err).__name__}: {err})") from None


def read_trace(path) -> "pd.DataFrame":
    """Load and validate a trace (.csv or .csv.gz); a torn last line is dropped."""
    import pandas as pd

    where = str(path)
    if not hasattr(path, "read_bytes"):
        path = Path(path)
    if not path.is_file():
        raise UserError(f"trace not found: {where}")
    text = _read_text(path)
    if text.lstrip()[:1] in ("{", "["):
        raise UserError(f"trace {where} is a JSON file, not a CSV trace (a trace is the trace.csv nasalloc "
                        f"validate writes, or the CSV of docs/formats.md)")
    if text and not text.endswith("\n") and "\n" in text:
        text = text[: text.rfind("\n") + 1]  # the row a killed writer was writing
    if not text.strip():
        raise UserError(f"trace {where} is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype={"metric_name": str, "mode": str, "workload": str})
    except (pd.errors.ParserError, ValueError) as err:
        raise UserError(f"trace {where} is not valid CSV ({str(err).splitlines()[0]})") from None
    return validate_trace(frame, where)


def validate_trace(frame, where: str = "trace"):
    """Check columns and types of a trace DataFrame; returns it with optional columns filled."""
    import pandas as pd

    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            raise UserError(f"trace {where} has no column {column!r} (needs {', '.join(REQUIRED_COLUMNS)})")
    if frame.empty:
        raise UserError(f"trace {where} has a header but no rows")
    frame = frame.copy()
    for column, default in OPTIONAL_DEFAULTS.items():
        if column not in frame.columns:
            frame[column] = default
    for column in ("trial_id", "epoch"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if column == "epoch":
            bad |= values < 1
        _fail_on(bad, frame[column], where, column, "an integer" + (" >= 1" if column == "epoch" else ""))
        frame[column] = values.astype("int64")
    for column, allow_empty in (("val_metric", False), ("epoch_seconds", False), ("test_metric", True),
                                ("gpus_per_trial", False), ("start_s", True), ("end_s", True)):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & (frame[column].notna() | (not allow_empty))
        bad |= np.isinf(values)
        positive = column in ("epoch_seconds", "gpus_per_trial")  # measured seconds, GPUs: never <= 0
        if positive:
            bad |= values <= 0
        _fail_on(bad, frame[column], where, column,
                 "a finite number" + (" > 0" if positive else "") + ("" if not allow_empty else " or empty"))
        frame[column] = values.astype("float64")
    seeds = pd.to_numeric(frame["train_seed"], errors="coerce")
    bad = (seeds.isna() & frame["train_seed"].notna()) | (seeds.notna() & ((seeds != seeds.round()) | (seeds < 0)))
    _fail_on(bad, frame["train_seed"], where, "train_seed", "an integer >= 0 or empty")
    frame["train_seed"] = seeds.astype("float64")
    modes = frame["mode"].astype(str)
    _fail_on(~modes.isin(MODES), frame["mode"], where, "mode", "'max' or 'min'")
    for column in ("mode", "metric_name"):
        if frame[column].nunique(dropna=False) > 1:
            found = sorted(frame[column].astype(str).unique())[:3]
            raise UserError(f"trace {where}: column {column!r} must be the same on every row, found {found}")
    frame["workload"] = frame["workload"].fillna("").astype(str)
    return frame


def _fail_on(bad, values, where: str, column: str, expected: str) -> None:
    if bool(bad.any()):
        position = int(np.flatnonzero(bad.to_numpy())[0])
        value = values.iloc[position]
        value = value.item() if hasattr(value, "item") else value
        raise UserError(f"trace {where}: column {column!r} row {position + 2} is {value!r}, "
                        f"expected {expected}")


@dataclass
class Curves:
    """Learning curves: per trial its config, val/test metric by epoch and seconds per epoch.

    ``val[i][e]`` is the validation metric of trial ``trial_ids[i]`` after epoch ``e + 1``.
    Curves may have different lengths (trials stopped early); a duplicate (trial, epoch) row
    keeps the last one written.
    """

    trial_ids: list
    configs: list          # dicts, config.* columns without the prefix (inactive ones left out)
    val: list              # np.ndarray per trial
    test: list             # np.ndarray per trial (NaN where the trace has none)
    epoch_seconds: list    # np.ndarray per trial
    metric_name: str
    mode: str
    workload: str = ""
    train_seeds: list = field(default_factory=list)  # per trial: the seed it was trained with, or None

    @property
    def n_configs(self) -> int:
        return len(self.trial_ids)

    @property
    def max_epochs(self) -> int:
        return max(len(v) for v in self.val)

    @property
    def config_names(self) -> list[str]:
        names: dict[str, None] = {}
        for config in self.configs:
            names.update(dict.fromkeys(config))
        return list(names)

    def val_matrix(self) -> np.ndarray:
        """(n_configs, max_epochs) validation metrics, NaN after a curve's last epoch."""
        return _pad(self.val, self.max_epochs)

    def test_matrix(self) -> np.ndarray:
        return _pad(self.test, self.max_epochs)

    def seconds_matrix(self) -> np.ndarray:
        return _pad(self.epoch_seconds, self.max_epochs)

    @classmethod
    def from_trace(cls, frame, where: str = "trace") -> "Curves":
        frame = validate_trace(frame, where).drop_duplicates(["trial_id", "epoch"], keep="last")
        frame = frame.sort_values(["trial_id", "epoch"], kind="stable")
        config_columns = [c for c in frame.columns if c.startswith(CONFIG_PREFIX)]
        # An integer column with empty cells (an inactive conditional value) reads as float.
        whole = {c for c in config_columns if _whole_numbers(frame[c])}
        trial_ids, configs, val, test, seconds, train_seeds = [], [], [], [], [], []
        for trial_id, rows in frame.groupby("trial_id", sort=True):
            epochs = rows["epoch"].to_numpy()
            if not np.array_equal(epochs, np.arange(1, len(epochs) + 1)):
                raise UserError(f"trace {where}: trial {trial_id} has epochs {list(epochs[:6])}..., "
                                f"expected 1, 2, ... without gaps")
            first = rows.iloc[0]
            configs.append({c[len(CONFIG_PREFIX):]: _plain(first[c], c in whole) for c in config_columns
                            if not _is_missing(first[c])})
            trial_ids.append(int(trial_id))
            val.append(rows["val_metric"].to_numpy(dtype=float))
            test.append(rows["test_metric"].to_numpy(dtype=float))
            seconds.append(rows["epoch_seconds"].to_numpy(dtype=float))
            seed = rows["train_seed"].dropna()
            train_seeds.append(int(seed.iloc[-1]) if len(seed) else None)
        return cls(trial_ids, configs, val, test, seconds, metric_name=str(frame["metric_name"].iloc[0]),
                   mode=str(frame["mode"].iloc[0]), workload=str(frame["workload"].iloc[0]),
                   train_seeds=train_seeds)

    @classmethod
    def load(cls, path=None) -> "Curves":
        """Curves of a trace file; with no path, the shipped digits benchmark."""
        if path is None:
            from .data import data_path

            path = data_path(DEFAULT_CURVES)
        return cls.from_trace(read_trace(path), str(path))

    def config_space(self, space=None):
        """The search space these configs come from.

        ``space`` if given; else the space of the named workload when the trace names a
        built-in one; else a space covering the recorded values (ranges and categories, no
        conditions).
        """
        if space is not None:
            return space
        if self.workload:
            from .workloads.registry import WORKLOADS, load_workload

            if self.workload in WORKLOADS:
                return load_workload(self.workload).search_space()
        return space_from_values(self.configs)

    def nearest(self, config: dict) -> int:
        """Index of the recorded config closest to ``config`` (numbers scaled by their recorded
        range, on a log scale when all positive and spanning >= 100x; categories 0/1)."""
        best, best_distance = 0, math.inf
        scales = self._scales()
        for index, recorded in enumerate(self.configs):
            distance = 0.0
            for name in set(recorded) | set(config):
                distance += _distance(recorded.get(name), config.get(name), scales.get(name))
            if distance < best_distance:
                best, best_distance = index, distance
        return best

    def _scales(self) -> dict:
        if not hasattr(self, "_scale_cache"):
            scales = {}
            for name in self.config_names:
                values = [c[name] for c in self.configs if name in c]
                if values and all(_is_number(v) for v in values):
                    low, high = float(min(values)), float(max(values))
                    log = low > 0 and high / low >= 100
                    span = (math.log(high) - math.log(low)) if log else (high - low)
                    scales[name] = (log, span or 1.0)
            self._scale_cache = scales
        return self._scale_cache


def _distance(a, b, scale) -> float:
    if a is None or b is None:
        return 0.0 if a is b else 1.0
    if scale is not None and _is_number(a) and _is_number(b):
        log, span = scale
        if log and a > 0 and b > 0:
            return abs(math.log(a) - math.log(b)) / span
        return abs(float(a) - float(b)) / span
    return 0.0 if str(a) == str(b) else 1.0


def space_from_values(configs: list, seed: int = 0):
    """A ConfigSpace space spanning recorded config values (used for a user's trace)."""
    from ConfigSpace import Categorical, ConfigurationSpace, Constant, Float, Integer

    space = ConfigurationSpace(seed=seed)
    names: dict[str, None] = {}
    for config in configs:
        names.update(dict.fromkeys(config))
    for name in names:
        values = [c[name] for c in configs if name in c]
        unique = sorted(set(values), key=str)
        if len(unique) == 1:
            space.add(Constant(name, unique[0] if isinstance(unique[0], (int, float, str)) else str(unique[0])))
        elif all(_is_number(v) for v in values):
            low, high = min(values), max(values)
            log = low > 0 and high / low >= 100
            if all(float(v).is_integer() for v in values):
                space.add(Integer(name, (int(low), int(high)), log=log))
            else:
                # ConfigSpace rounds bounds to ~13 significant digits; widen by a hair so
                # every recorded value stays inside the space.
                pad = 1e-9 * max(abs(float(low)), abs(float(high)), 1e-300)
                low_f = float(low) - pad if not log else float(low) * (1 - 1e-9)
                space.add(Float(name, (low_f, float(high) + pad), log=log))
        else:
            space.add(Categorical(name, [str(v) for v in unique]))
    return space


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _whole_numbers(column) -> bool:
    import pandas as pd

    values = column.dropna()
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) \
        and bool((values == values.round()).all())


def _plain(value, whole: bool):
    # numpy scalars -> Python; a whole-number column -> int.
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if whole and isinstance(value, float):
        return int(value)
    return value


def _pad(arrays: list, width: int) -> np.ndarray:
    matrix = np.full((len(arrays), width), np.nan)
    for row, values in enumerate(arrays):
        matrix[row, : len(values)] = values
    return matrix
