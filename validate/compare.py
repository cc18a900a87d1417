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

A run under an adaptive policy (``validate --policy``) trained on several GPU counts; it is
re-simulated under the same policy (:func:`~nasalloc.simulator.adaptive.simulate_policy`) with
the costs it measured at each count: ``rel_cost`` is a config's seconds per epoch at the smallest
count measured, the epoch at another count g takes ``epoch_factors[g]`` times that (the median
over trials that ran on both of their mean epoch at g over their mean at the smallest; a count no
trial shares with it: the ratio of the medians over trials), and start-up, resumed start-up and
checkpoint save are the measured means per count (:class:`~nasalloc.simulator.timemodel.TimeModel`
``per_gpus``; a count never measured takes the nearest measured one).
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
    resizes: int = 0         # segments an adaptive policy ended to go on on another GPU count
    roundtrip_s: float = 0.0  # per epoch: from the runner's receipt of an epoch to the next one's start
    # per GPU count the run trained on (several under an adaptive policy): epoch seconds relative
    # to the smallest count, and the mean start-up, resumed start-up and save seconds measured there
    epoch_factors: dict = field(default_factory=dict)
    startup_by_gpus: dict = field(default_factory=dict)
    resume_startup_by_gpus: dict = field(default_factory=dict)
    save_by_gpus: dict = field(default_factory=dict)


def _events(run_dir: Path) -> list[Event]:
    return [Event.from_dict(r) for r in read_jsonl(Path(run_dir) / "events.jsonl")]


def measure(run_dir: Path, mode: str = "max") -> Measured:
    events = _events(run_dir)
    sign = 1.0 if mode == "max" else -1.0
    last: dict[int, Event] = {}          # last reported (non-replay) epoch of each trial
    seconds: dict[int, list] = {}        # trial -> [(GPUs, seconds)] of its epochs
    rows: dict[int, int] = {}
    opened: dict[int, tuple] = {}        # trial -> (kind, time) of its open segment, until first epoch
    startups, resume_startups, saves, loads = [], [], [], []  # (GPUs, seconds)
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
                (startups if kind == "start" else resume_startups).append((_gpus(e), e.began_s - launched))
            elif e.trial_id in epoch_end and e.began_s is not None:
                gaps.append(max(0.0, e.began_s - epoch_end[e.trial_id]))
            if e.extra.get("load_s") is not None:
                loads.append(float(e.extra["load_s"]))
            duration = (e.extra.get("train_s") or 0) + (e.extra.get("eval_s") or 0)
            if not duration and e.began_s is not None:
                duration = e.time_s - e.began_s
            seconds.setdefault(e.trial_id, []).append((_gpus(e), float(duration)))
            epoch_end[e.trial_id] = e.time_s
            if not e.extra.get("replay"):
                last[e.trial_id] = e
        elif e.kind in ("pause", "stop", "complete", "fail"):
            # a trial's last record that is not an interruption says how it ended (a pause
            # that is never resumed: the scheduler stopped it later, docs/formats.md)
            opened.pop(e.trial_id, None)
            if e.kind == "pause" and not e.extra.get("interrupted") and e.trial_id in epoch_end:
                saves.append((_gpus(e), e.time_s - epoch_end[e.trial_id]))
            if not e.extra.get("interrupted"):
                status[e.trial_id] = e.kind
    ends = [e.time_s for e in events if e.kind in ("stop", "complete", "fail", "pause")]
    best = max(last.values(), key=lambda e: (sign * e.metric, -e.trial_id), default=None)
    factors = epoch_factors(seconds)
    return Measured(
        makespan_s=max(ends, default=0.0),
        best_metric=best.metric if best else math.nan,
        best_test_metric=(best.test_metric if best and best.test_metric is not None else math.nan),
        best_trial_id=best.trial_id if best else None,
        trials=len({e.trial_id for e in events if e.kind == "start"}),
        finished=sum(1 for s in status.values() if s in ("stop", "complete", "pause")),
        failed=sum(1 for s in status.values() if s == "fail"),
        epochs=sum(1 for e in events if e.kind == "epoch" and not e.extra.get("replay")),
        epoch_seconds={t: float(np.mean([s / factors[g] for g, s in v])) for t, v in seconds.items() if v},
        rows=rows,
        startup_s=_mean(startups, math.nan),
        resume_startup_s=_mean(resume_startups, math.nan),
        save_s=_mean(saves, 0.0),
        load_s=float(np.mean(loads)) if loads else 0.0,
        restarts=sum(1 for e in events if e.kind in ("start", "resume") and e.extra.get("restart")),
        resizes=sum(1 for e in events if e.kind == "pause" and e.extra.get("resize") is not None),
        roundtrip_s=float(np.mean(gaps)) if gaps else 0.0,
        epoch_factors=factors,
        startup_by_gpus=_by_gpus(startups), resume_startup_by_gpus=_by_gpus(resume_startups),
        save_by_gpus=_by_gpus(saves),
    )


def _gpus(event: Event) -> float:
    return float(event.gpus) if event.gpus else 1.0


def _mean(pairs: list, empty: float) -> float:
    return float(np.mean([s for _, s in pairs])) if pairs else empty


def _by_gpus(pairs: list) -> dict:
    """GPU count -> mean seconds of the ``(GPUs, seconds)`` pairs measured at it."""
    out: dict = {}
    for g, s in pairs:
        out.setdefault(float(g), []).append(s)
    return {g: float(np.mean(v)) for g, v in sorted(out.items())}


def epoch_factors(seconds: dict) -> dict:
    """GPU count -> epoch seconds there relative to the smallest count the run trained on (1 for
    it), from ``{trial: [(GPUs, seconds)]}`` (see the module docstring)."""
    per_trial = {t: _by_gpus(v) for t, v in seconds.items() if v}
    counts = sorted({g for means in per_trial.values() for g in means})
    if not counts:
        return {}
    base = counts[0]
    factors = {base: 1.0}
    for g in counts[1:]:
        ratios = [m[g] / m[base] for m in per_trial.values() if g in m and base in m and m[base] > 0]
        if not ratios:
            at_g = [m[g] for m in per_trial.values() if g in m]
            at_base = [m[base] for m in per_trial.values() if base in m]
            ratios = [float(np.median(at_g)) / float(np.median(at_base))]
        factors[g] = float(np.median(ratios))
    return factors


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


@dataclass
class MeasuredScaling:
    """Epoch seconds of the reference config at g GPUs: the measured factors, interpolated in
    log2(g) between measured counts and held beyond them (:meth:`epoch_seconds` is all a
    TimeModel asks of its scaling)."""

    factors: dict

    def epoch_seconds(self, gpus: float, nodes: int = 1) -> float:
        counts = sorted(self.factors)
        return float(np.interp(math.log2(gpus), [math.log2(g) for g in counts], [self.factors[g] for g in counts]))


def measured_policy_time_model(measured: Measured, gpus_per_node: Optional[int]):
    """The TimeModel of a run on several GPU counts: measured epoch factors and per-count overheads."""
    from nasalloc.simulator.timemodel import TimeModel

    startup = measured.startup_s if math.isfinite(measured.startup_s) else 0.0
    resume = measured.resume_startup_s if math.isfinite(measured.resume_startup_s) else startup
    per_gpus = {name: sorted(values.items()) for name, values in (
        ("startup_s", measured.startup_by_gpus), ("resume_s", measured.resume_startup_by_gpus),
        ("checkpoint_save_s", measured.save_by_gpus)) if values}
    # a measured resumed start-up holds the checkpoint load: the engine's load is 0 on top of it
    return TimeModel(scaling=MeasuredScaling(dict(measured.epoch_factors) or {1.0: 1.0}),
                     overheads={"startup_s": startup, "resume_s": resume, "checkpoint_save_s": measured.save_s,
                                "checkpoint_load_s": 0.0, "eval_s": 0.0, "roundtrip_s": measured.roundtrip_s},
                     per_gpus=per_gpus, epoch_cv=0.0, gpus_per_node=gpus_per_node, source="measured run")


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
               algorithm: str = "", policy=None, allocation=None):
    """The engine's run of a fresh scheduler with the measured costs and metrics; under the
    run's adaptive ``policy`` (a :class:`~nasalloc.simulator.policies.Policy`) when it had one,
    else under the allocation model ``allocation`` when given (a chain of allocations)."""
    table = measured_table(table, measured, run_dir)
    if policy is not None and policy.adaptive:
        from nasalloc.simulator.adaptive import simulate_policy

        model = measured_policy_time_model(measured, split.gpus_per_node)
        return simulate_policy(make_scheduler(), policy, model, table, seed=seed, algorithm=algorithm,
                               record_events=True)
    from nasalloc.simulator.engine import simulate

    model = measured_time_model(measured, split.gpus_per_trial, split.gpus_per_node)
    return simulate(make_scheduler(), split, model, table, seed=seed, algorithm=algorithm,
                    record_events=allocation is None, allocation=allocation)


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
