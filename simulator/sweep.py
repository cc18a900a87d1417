"""Simulate every (algorithm, GPUs per trial, seed) of a plan, in parallel processes.

Results do not depend on ``jobs``: each run is a pure function of its parameters (the
scheduler and the epoch-time noise are seeded with the run's seed). ``simulations.csv`` gets
one row per finished run, appended and flushed, so an interrupted sweep keeps what it finished;
running the same sweep into the same folder again skips the rows already there (a folder
holding a sweep of other settings is refused). When all runs are in, the file is rewritten
atomically in a fixed order (so it is identical whatever ``jobs`` was). A run that fails with a
user's error (an allocation model under which no work can be kept, say) fails every time the
same sweep is run: then the file is put back as it was before this sweep began (atomically; no
file where there was none), so nothing half-written stays behind it.

The event records of the first seed of every split come back in memory (the report plots them
and writes those of the best and worst split); on a resumed sweep they are simulated again for
the splits whose rows were already on disk (deterministic, so identical).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from nasalloc.errors import UserError

from .cluster import make_split
from .batchscaling import BatchScaling, stretched_table
from .curvetable import CurveTable
from .allocation import AllocationModel
from .engine import simulate
from .simresult import CHAIN_COLUMNS
from .schedulers import hyperband_brackets, make_scheduler
from .schedulers.sampling import TableSource
from .timemodel import TimeModel

CSV_NAME = "simulations.csv"
COLUMNS = [
    "algorithm", "semantics", "budget", "gpus_per_node", "gpus_per_trial", "parallel_trials", "idle_gpus",
    "seed", "makespan_s", "gpu_hours", "busy_gpu_hours", "utilization", "trials", "epochs", "best_metric",
    "best_test_metric", "best_trial_id", "lower_bound_s", "deadline_s", "deadline_metric",
    "deadline_test_metric", "max_t", "min_t", "eta", "trials_limit", "brackets_limit", "model_based_trials",
    "sweep_key",
]


@dataclass(frozen=True)
class SweepSpec:
    """Everything a sweep depends on; ``key`` identifies it in ``simulations.csv``."""

    budget: int
    gpus_per_node: int
    splits: tuple            # GPUs per trial
    algorithms: tuple
    seeds: tuple             # the seeds run (base seed + 0..n-1)
    max_t: int
    min_t: int = 1
    eta: int = 3
    semantics: str = "ray"
    mode: str = "max"
    trials: Optional[int] = None      # as given by the user (None: from brackets)
    brackets: Optional[int] = None
    deadline_s: Optional[float] = None
    ray_pending: Optional[int] = None  # trials Ray's controller creates ahead (None: Ray's default)
    profile_sha256: str = ""
    curves_sha256: str = ""
    batch_scaling: str = ""  # BatchScaling.key(): '' when curves are used as recorded
    allocation: str = ""     # AllocationModel.key(): '' without time limits, failures or extra checkpoints
    version: str = field(default_factory=lambda: __import__("nasalloc").__version__)  # rows of other code differ
    # the engine's numbering of the same inputs: 2 = epoch-time noise drawn per trial at its
    # start, same-time events ordered by trial id (docs/engine.md); a 0.2.0 folder is refused
    engine: int = 2

    def limits(self, algorithm: str) -> dict:
        """``trials``/``brackets`` for ``make_scheduler``: see :func:`scheduler_limits`."""
        limits = scheduler_limits(algorithm, self.max_t, self.min_t, self.eta, self.semantics,
                                  self.trials, self.brackets)
        if self.ray_pending is not None and algorithm != "asha":
            limits["pending"] = self.ray_pending
        return limits

    @property
    def key(self) -> str:
        fields = asdict(self)
        fields.pop("seeds")      # more seeds extend a sweep; they do not change its rows
        fields.pop("splits")
        fields.pop("algorithms")
        if not fields["batch_scaling"]:
            fields.pop("batch_scaling")  # rows without batch scaling keep the key they always had
        if not fields["allocation"]:
            fields.pop("allocation")  # nor do rows without an allocation model
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def runs(self) -> list:
        return [(a, g, s) for a in self.algorithms for g in self.splits for s in self.seeds]

    def allocation_model(self) -> Optional[AllocationModel]:
        return AllocationModel(**json.loads(self.allocation)) if self.allocation else None

    @property
    def columns(self) -> list:
        """The columns of its simulations.csv: the chain's only under an allocation model."""
        return COLUMNS[:-1] + list(CHAIN_COLUMNS) + COLUMNS[-1:] if self.allocation else COLUMNS


def scheduler_limits(algorithm: str, max_t: int, min_t: int, eta: int, semantics: str,
                     trials: Optional[int], brackets: Optional[int]) -> dict:
    """How long each algorithm searches.

    ``--trials N``: every algorithm creates N trials. Otherwise ``--brackets N`` (default: one
    full HyperBand iteration, s_max + 1 brackets): HyperBand and BOHB run N brackets and ASHA
    creates as many trials as N HyperBand brackets start (so all three sample the same number of
    configs, up to BOHB's slightly different bracket sizes in reference semantics).
    """
    if trials is not None:
        return {"trials": int(trials)}
    shapes = hyperband_brackets(max_t, eta, min_t, semantics, "hyperband")
    count = int(brackets) if brackets is not None else len(shapes)
    if algorithm == "asha":
        return {"trials": sum(shapes[i % len(shapes)][0][0] for i in range(count))}
    return {"brackets": count}


# -- one run -----------------------------------------------------------------------------------
@dataclass
class _Context:
    spec: SweepSpec
    time_model: TimeModel
    table: CurveTable
    space: object
    source: Optional[TableSource] = field(default=None)
    scaling: Optional[BatchScaling] = None   # curves under each split's global batch (per_gpu)
    tables: dict = field(default_factory=dict)

    def table_source(self) -> TableSource:
        if self.source is None:
            self.source = TableSource(self.space, self.table.configs)
        return self.source

    def table_for(self, gpus_per_trial: float) -> CurveTable:
        """The curves as a trial of this split sees them (the recorded ones unless per_gpu)."""
        if gpus_per_trial not in self.tables:
            self.tables[gpus_per_trial] = stretched_table(self.table, gpus_per_trial, self.scaling)
        return self.tables[gpus_per_trial]


_CONTEXT: Optional[_Context] = None


def _init_worker(context: _Context, parent_pid: Optional[int] = None) -> None:
    global _CONTEXT
    from nasalloc.lifetime import end_with_parent

    end_with_parent(parent_pid)  # a worker must not outlive the sweep (SIGKILL of it included)
    _CONTEXT = context


def run_one(context: _Context, algorithm: str, gpus_per_trial: float, seed: int, keep_events: bool):
    """Simulate one run; returns its CSV row and (if asked) its event records as dicts."""
    spec = context.spec
    split = make_split(spec.budget, spec.gpus_per_node, gpus_per_trial)
    scheduler = make_scheduler(algorithm, source=context.table_source(), max_t=spec.max_t, min_t=spec.min_t,
                               eta=spec.eta, semantics=spec.semantics, mode=spec.mode, seed=seed,
                               **spec.limits(algorithm))
    model = spec.allocation_model()
    result = simulate(scheduler, split, context.time_model, context.table_for(float(gpus_per_trial)), seed=seed, algorithm=algorithm,
                      record_events=keep_events, deadline_s=spec.deadline_s, allocation=model)
    if model is not None:  # the same run without the model: what the plan would say without it
        free = make_scheduler(algorithm, source=context.table_source(), max_t=spec.max_t, min_t=spec.min_t,
                              eta=spec.eta, semantics=spec.semantics, mode=spec.mode, seed=seed,
                              **spec.limits(algorithm))
        result.chain["free_makespan_s"] = simulate(
            free, split, context.time_model, context.table_for(float(gpus_per_trial)), seed=seed,
            algorithm=algorithm, record_events=False, deadline_s=spec.deadline_s).makespan_s
    limits = spec.limits(algorithm)
    row = {**result.row(), "semantics": spec.semantics, "gpus_per_node": spec.gpus_per_node,
           "max_t": spec.max_t, "min_t": spec.min_t, "eta": spec.eta, "trials_limit": limits.get("trials"),
           "brackets_limit": limits.get("brackets"), "sweep_key": spec.key}
    events = [_event_dict(e) for e in result.events] if keep_events else None
    return row, events


def _event_dict(event) -> dict:
    """``Event.to_dict`` without dataclasses.asdict's deep copy (the costliest part of a run
    with records); the engine never shares a mutable field between records it later changes."""
    return {k: v for k, v in vars(event).items() if v is not None and v != {}}


def _run_in_worker(algorithm: str, gpus_per_trial: float, seed: int, keep_events: bool):
    return run_one(_CONTEXT, algorithm, gpus_per_trial, seed, keep_events)


# -- the CSV -----------------------------------------------------------------------------------
def read_done_rows(out_dir: Path, spec: SweepSpec) -> list:
    """Rows of an earlier run of this sweep in ``out_dir`` (a torn last line is dropped)."""
    path = Path(out_dir) / CSV_NAME
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and (set(COLUMNS) - set(rows[0])):
        raise UserError(f"{path} is not a nasalloc simulations file; choose another --out")
    other = {r["sweep_key"] for r in rows} - {spec.key}
    if other:
        raise UserError(f"{path} holds simulations of other settings (sweep {sorted(other)[0]}, this one is "
                        f"{spec.key}); choose another --out or remove it")
    return [_typed(r) for r in rows]


def _typed(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if key in ("algorithm", "semantics", "sweep_key"):
            out[key] = value
        elif value in ("", None):
            out[key] = None
        else:
            number = float(value)
            out[key] = int(number) if key in ("budget", "gpus_per_node", "parallel_trials", "idle_gpus", "seed",
                                              "trials", "epochs", "best_trial_id", "max_t", "min_t", "eta",
                                              "trials_limit", "brackets_limit", "model_based_trials",
                                              "allocations", "failures", "failed_trials") else number
    return out


def _run_id(row: dict) -> tuple:
    return row["algorithm"], float(row["gpus_per_trial"]), int(row["seed"])


class _CsvAppender:
    """simulations.csv, one flushed line per finished run (a torn last line is cut first)."""

    def __init__(self, path: Path, columns: list = COLUMNS):
        self.path, self.columns = path, columns
        fresh = not path.is_file() or path.stat().st_size == 0
        if not fresh:
            data = path.read_bytes()
            if not data.endswith(b"\n"):
                with open(path, "rb+") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
        self.handle = open(path, "a", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=columns, lineterminator="\n")
        if fresh:
            self.writer.writeheader()
            self.handle.flush()

    def write(self, row: dict) -> None:
        self.writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in self.columns})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _sorted_rows(rows: list, spec: SweepSpec) -> list:
    order = {a: i for i, a in enumerate(spec.algorithms)}
    return sorted(rows, key=lambda r: (order.get(r["algorithm"], 99), float(r["gpus_per_trial"]), int(r["seed"])))


def write_csv_atomically(path: Path, rows: list, columns: list = COLUMNS) -> None:
    from nasalloc.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    atomic_write_text(path, buffer.getvalue())


# -- the sweep ---------------------------------------------------------------------------------
@dataclass
class SweepResult:
    rows: list                 # every row of this sweep, in a fixed order
    events: dict               # (algorithm, gpus_per_trial) -> event dicts of the first seed
    simulated: int             # runs simulated now (the rest were on disk)
    epochs: int                # trial-epochs simulated now


def run_sweep(spec: SweepSpec, time_model: TimeModel, table: CurveTable, space, out_dir, jobs: int = 1,
              progress: Optional[Callable[[int, int, dict], None]] = None,
              scaling: Optional[BatchScaling] = None) -> SweepResult:
    """Run every missing run of ``spec``; ``progress(done, total, row)`` after each one.
    ``scaling``: curves stretched to each split's global batch (``per_gpu``; its key must be
    ``spec.batch_scaling``)."""
    out_dir = Path(out_dir)
    if (scaling.key() if scaling is not None else "") != spec.batch_scaling:
        raise ValueError("run_sweep: scaling does not match spec.batch_scaling")
    context = _Context(spec, time_model, table, space, scaling=scaling)
    on_disk = {_run_id(r): r for r in read_done_rows(out_dir, spec)}
    wanted = {(a, float(g), int(s)) for a, g, s in spec.runs()}
    done_rows = {run: r for run, r in on_disk.items() if run in wanted}
    first_seed = spec.seeds[0]
    todo = [(a, g, s) for a, g, s in spec.runs() if (a, float(g), int(s)) not in done_rows]
    # Small splits first: most slots, longest runs, so the parallel workers finish together.
    todo.sort(key=lambda run: (run[1], run[0], run[2]))
    total, finished = len(spec.runs()), len(spec.runs()) - len(todo)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / CSV_NAME
    before = csv_path.read_bytes() if csv_path.is_file() else None
    appender = _CsvAppender(csv_path, spec.columns)
    rows = dict(on_disk)  # rows of other seeds or splits of this sweep stay in the file
    events: dict = {}
    epochs = 0

    def collect(row: dict, run_events) -> None:
        nonlocal finished, epochs
        appender.write(row)
        rows[_run_id(row)] = row
        if run_events is not None:
            events[(row["algorithm"], float(row["gpus_per_trial"]))] = run_events
        finished += 1
        epochs += int(row["epochs"])
        if progress:
            progress(finished, total, row)

    try:
        if jobs <= 1 or len(todo) <= 1:
            for a, g, s in todo:
                collect(*run_one(context, a, g, s, s == first_seed))
        else:
            with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), initializer=_init_worker,
                                     initargs=(context, os.getpid())) as pool:
                futures = [pool.submit(_run_in_worker, a, g, s, s == first_seed) for a, g, s in todo]
                try:
                    for future in as_completed(futures):
                        collect(*future.result())
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    except UserError:
        appender.close()
        _put_back(csv_path, before)
        raise
    finally:
        appender.close()
    # Records of the first seed of splits finished by an earlier invocation: simulate again.
    for a in spec.algorithms:
        for g in spec.splits:
            if (a, float(g)) not in events:
                events[(a, float(g))] = run_one(context, a, g, first_seed, True)[1]
    write_csv_atomically(out_dir / CSV_NAME, _sorted_rows(list(rows.values()), spec), spec.columns)
    ordered = _sorted_rows([r for run, r in rows.items() if run in wanted], spec)
    return SweepResult(rows=ordered, events=events, simulated=len(todo), epochs=epochs)


def _put_back(path: Path, before: Optional[bytes]) -> None:
    """``path`` as it was before the sweep (``before``: its bytes, None: there was none)."""
    from nasalloc.io import atomic_write_bytes

    if before is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_bytes(path, before)


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)
