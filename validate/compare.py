"""What a measured run says, and its re-simulation with the measured times.

:func:`measure` reads a run's ``events.jsonl`` and ``trace.csv``: makespan, best metric, trial
counts, and the measured time costs (per config mean epoch seconds, start-up, checkpoint
save/load).

:func:`resimulate` replays the same scheduler (same class, parameters, seed and config table)
in the simulator's SimPy engine, but with the *measured* costs instead of the profile's
scaling model: every config's epoch takes its measured mean seconds, start-up and checkpoint
costs are the measured means, and the learning curves are the measured metrics where the run
has them (the recorded curves elsewhere). So

* prediction vs re-simulation = error of the time model (profile, scaling fit, overheads);
* re-simulation vs measurement = error of the scheduling model (runner latency, contention
  between concurrent trials, variance of epoch times, failures: the engine has none).

The adapter is small: a :class:`TimeModel` whose reference epoch takes 1 s at the split's
GPUs (``t_fixed = 1``), a table whose ``rel_cost`` of a row is its measured seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from nasalloc.io import read_jsonl
from nasalloc.records import Event

ROW_KEY = "_row"


@dataclass
class Measured:
    makespan_s: float
    best_metric: float
    best_test_metric: float
    best_trial_id: Optional[int]
    trials: int
    finished: int
    failed: int
    epochs: int
    epoch_seconds: dict = field(default_factory=dict)   # trial_id -> mean seconds of its epochs
    rows: dict = field(default_factory=dict)            # trial_id -> table row (when the plan had a table)
    startup_s: float = math.nan
    resume_startup_s: float = math.nan
    save_s: float = 0.0
    load_s: float = 0.0
    restarts: int = 0        # segments re-run after an interruption (their cost is in makespan_s)
    roundtrip_s: float = 0.0  # per epoch: from the runner's receipt of an epoch to the next one's start


def _events(run_dir: Path) -> list[Event]:
    return [Event.from_dict(r) for r in read_jsonl(Path(run_dir) / "events.jsonl")]


def measure(run_dir: Path, mode: str = "max") -> Measured:
    events = _events(run_dir)
    sign = 1.0 if mode == "max" else -1.0
    last: dict[int, Event] = {}          # last reported (non-replay) epoch of each trial
    seconds: dict[int, list] = {}
    rows: dict[int, int] = {}
    opened: dict[int, tuple] = {}        # trial -> (kind, time) of its open segment, until first epoch
    startups, resume_startups, saves, loads = [], [], [], []
    status: dict[int, str] = {}
    epoch_end: dict[int, float] = {}
    gaps = []                            # the round trip between consecutive epochs of a segment
    for e in events:
        if e.kind in ("start", "resume"):
            if e.kind == "start" and "row" in e.extra:
                rows[e.trial_id] = int(e.extra["row"])
            opened[e.trial_id] = (e.kind, e.time_s)
        elif e.kind == "epoch":
            if e.trial_id in opened and e.began_s is not None:
                kind, launched = opened.pop(e.trial_id)
                (startups if kind == "start" else resume_startups).append(e.began_s - launched)
            elif e.trial_id in epoch_end and e.began_s is not None:
                gaps.append(max(0.0, e.began_s - epoch_end[e.trial_id]))
            if e.extra.get("load_s") is not None:
                loads.append(float(e.extra["load_s"]))
            duration = (e.extra.get("train_s") or 0) + (e.extra.get("eval_s") or 0)
            if not duration and e.began_s is not None:
                duration = e.time_s - e.began_s
            seconds.setdefault(e.trial_id, []).append(float(duration))
            epoch_end[e.trial_id] = e.time_s
            if not e.extra.get("replay"):
                last[e.trial_id] = e
        elif e.kind in ("pause", "stop", "complete", "fail"):
            # a trial's last record that is not an interruption says how it ended (a pause
            # that is never resumed: the scheduler stopped it later, docs/formats.md)
            opened.pop(e.trial_id, None)
            if e.kind == "pause" and not e.extra.get("interrupted") and e.trial_id in epoch_end:
                saves.append(e.time_s - epoch_end[e.trial_id])
            if not e.extra.get("interrupted"):
                status[e.trial_id] = e.kind
    ends = [e.time_s for e in events if e.kind in ("stop", "complete", "fail", "pause")]
    best = max(last.values(), key=lambda e: (sign * e.metric, -e.trial_id), default=None)
    return Measured(
        makespan_s=max(ends, default=0.0),
        best_metric=best.metric if best else math.nan,
        best_test_metric=(best.test_metric if best and best.test_metric is not None else math.nan),
        best_trial_id=best.trial_id if best else None,
        trials=len({e.trial_id for e in events if e.kind == "start"}),
        finished=sum(1 for s in status.values() if s in ("stop", "complete", "pause")),
        failed=sum(1 for s in status.values() if s == "fail"),
        epochs=sum(1 for e in events if e.kind == "epoch" and not e.extra.get("replay")),
        epoch_seconds={t: float(np.mean(v)) for t, v in seconds.items() if v},
        rows=rows,
        startup_s=float(np.mean(startups)) if startups else math.nan,
        resume_startup_s=float(np.mean(resume_startups)) if resume_startups else math.nan,
        save_s=float(np.mean(saves)) if saves else 0.0,
        load_s=float(np.mean(loads)) if loads else 0.0,
        restarts=sum(1 for e in events if e.kind in ("start", "resume") and e.extra.get("restart")),
        roundtrip_s=float(np.mean(gaps)) if gaps else 0.0,
    )


def measured_time_model(measured: Measured, gpus_per_trial: float, gpus_per_node: Optional[int]):
    """A TimeModel whose reference epoch is 1 s on this split, with the measured overheads."""
    from nasalloc.simulator.scaling import ScalingModel
    from nasalloc.simulator.timemodel import TimeModel

    colocation = {}
    if gpus_per_trial < 1:  # measured epochs already include the co-location slowdown
        colocation = {str(round(1 / gpus_per_trial)): 1.0}
    startup = measured.startup_s if math.isfinite(measured.startup_s) else 0.0
    resume = measured.resume_startup_s if math.isfinite(measured.resume_startup_s) else startup
    # the engine charges start-up + load for a resume; the measured resume start-up holds both
    load = max(0.0, resume - startup)
    return TimeModel(scaling=ScalingModel(t_fixed=1.0, t_compute=0.0, colocation=colocation),
                     overheads={"startup_s": startup, "checkpoint_save_s": measured.save_s,
                                "checkpoint_load_s": load, "eval_s": 0.0, "roundtrip_s": measured.roundtrip_s},
                     epoch_cv=0.0, gpus_per_node=gpus_per_node, source="measured run")


def measured_table(table, measured: Measured, run_dir: Path):
    """The plan's table with the run's measured metrics and measured seconds per config."""
    from nasalloc.simulator.curvetable import CurveTable
    from nasalloc.trace import read_trace

    val, test = table.val.copy(), table.test.copy()
    trace_path = Path(run_dir) / "trace.csv"
    if trace_path.exists() and trace_path.stat().st_size:
        frame = read_trace(trace_path)
        for rec in frame.itertuples(index=False):
            row = measured.rows.get(int(rec.trial_id))
            if row is not None and rec.epoch <= table.max_epochs:
                val[row, rec.epoch - 1] = rec.val_metric
                test[row, rec.epoch - 1] = rec.test_metric
    rel_cost = np.array(table.rel_cost, dtype=float)
    pairs = [(row, measured.epoch_seconds[t]) for t, row in measured.rows.items() if t in measured.epoch_seconds]
    if pairs:
        # configs the run never trained: their predicted cost scaled by the run's typical ratio
        ratio = float(np.median([s / rel_cost[row] for row, s in pairs if rel_cost[row] > 0]))
        rel_cost = rel_cost * ratio
        for row, s in pairs:
            rel_cost[row] = s
    return CurveTable(val=val, test=test, rel_cost=rel_cost, configs=list(table.configs),
                      metric_name=table.metric_name, mode=table.mode, workload=table.workload,
                      reference_row=table.reference_row, reference_note="measured seconds per config",
                      path=str(trace_path), trial_ids=list(table.trial_ids), train_seeds=list(table.train_seeds))


def resimulate(make_scheduler, split, table, measured: Measured, run_dir: Path, *, seed: int = 0,
               algorithm: str = "", allocation=None):
    """The engine's run of a fresh scheduler with the measured costs and metrics (under the
    allocation model ``allocation``, when given: a chain of allocations)."""
    from nasalloc.simulator.engine import simulate

    model = measured_time_model(measured, split.gpus_per_trial, split.gpus_per_node)
    return simulate(make_scheduler(), split, model, measured_table(table, measured, run_dir),
                    seed=seed, algorithm=algorithm, record_events=allocation is None, allocation=allocation)


def last_epochs(events) -> dict:
    """trial_id -> (table row or None, the last epoch it trained) from a run's or a simulation's records."""
    out: dict = {}
    for e in events:
        e = e if isinstance(e, Event) else Event.from_dict(e)
        row, epoch = out.get(e.trial_id, (None, 0))
        if e.kind == "start" and "row" in e.extra:
            row = int(e.extra["row"])
        if e.kind == "epoch" and not e.extra.get("replay"):
            epoch = max(epoch, e.epoch)
        out[e.trial_id] = (row, epoch)
    return out


def decision_agreement(run_dir: Path, resim) -> Optional[tuple]:
    """(trials that ended at the same epoch in the run and in its re-simulation, trials compared):
    the trials whose id has the same table row in both. A scheduler model that decides as the
    scheduler that ran agrees on every trial whose metrics it was given; None when no trial compares."""
    measured, replayed = last_epochs(_events(run_dir)), last_epochs(resim.events)
    both = [t for t, (row, _) in measured.items() if row is not None and replayed.get(t, (None,))[0] == row]
    if not both:
        return None
    return sum(measured[t][1] == replayed[t][1] for t in both), len(both)


def relative_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured; NaN when either is missing."""
    if predicted is None or measured is None or not measured or not math.isfinite(predicted) \
            or not math.isfinite(measured):
        return math.nan
    return (predicted - measured) / measured
