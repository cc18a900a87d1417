"""What a sweep tells the user: plan.json, the records of the best and worst split, plots and
the terminal summary.

Per algorithm and split the makespan is summarised over seeds by its mean and a 95% Student-t
interval (mean +- t(0.975, n-1) * sd / sqrt(n); with one seed the interval is the mean itself).
Objective ``makespan``: the best split has the lowest mean makespan, the worst the highest.
Objective ``deadline``: splits are ranked by the mean best metric any trial reached by the
deadline (from the epoch records), then by makespan.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from nasalloc.io import atomic_write_json, write_lines

PLAN_NAME = "plan.json"
PLOTS = ("makespan.png", "best_so_far.png", "occupancy.png")
INTERVAL = "95% Student-t interval of the mean over seeds (t(0.975, n-1) * sd / sqrt(n))"


def t_interval(values: list, clip_at_zero: bool = True) -> tuple:
    """(mean, low, high) of a 95% t-interval; (mean, mean, mean) for one value. A makespan is
    never negative, so the low end is clipped at 0 (a wide interval on few seeds)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, max(0.0, mean - half) if clip_at_zero else mean - half, mean + half


def _mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


def summarize_splits(rows: list, spec) -> dict:
    """algorithm -> list of per-split summaries (ordered by GPUs per trial)."""
    out: dict = {}
    for algorithm in spec.algorithms:
        splits = []
        for g in spec.splits:
            runs = [r for r in rows if r["algorithm"] == algorithm and float(r["gpus_per_trial"]) == float(g)]
            if not runs:
                continue
            mean, low, high = t_interval([float(r["makespan_s"]) for r in runs])
            splits.append({
                "gpus_per_trial": float(g), "parallel_trials": int(runs[0]["parallel_trials"]),
                "idle_gpus": int(runs[0]["idle_gpus"]), "seeds": len(runs),
                "makespan_s": mean, "makespan_ci95_s": [low, high],
                "best_metric": _mean([r["best_metric"] for r in runs]),
                "best_test_metric": _mean([r["best_test_metric"] for r in runs]),
                "utilization": _mean([r["utilization"] for r in runs]),
                "lower_bound_s": _mean([r["lower_bound_s"] for r in runs]),
                "trials": _mean([r["trials"] for r in runs]), "epochs": _mean([r["epochs"] for r in runs]),
                "deadline_metric": _mean([r.get("deadline_metric") for r in runs]),
            })
        out[algorithm] = splits
    return out


def choose(splits: list, objective: str, mode: str) -> tuple:
    """(best, worst) split summaries for the objective."""
    if objective == "deadline":
        sign = 1.0 if mode == "max" else -1.0

        def rank(s):  # higher is better
            metric = s["deadline_metric"]
            return (-math.inf if metric is None else sign * metric, -s["makespan_s"])
    else:
        def rank(s):
            return (-s["makespan_s"], -s["gpus_per_trial"])
    ordered = sorted(splits, key=rank)
    return ordered[-1], ordered[0]


def split_label(g: float) -> str:
    if g < 1:
        return f"1/{round(1 / g)} GPU"
    return f"{int(g)} GPU" + ("s" if g > 1 else "")


def build_plan(spec, sweep, profile, table, objective: str, notes: list) -> dict:
    summaries = summarize_splits(sweep.rows, spec)
    algorithms = {}
    for algorithm, splits in summaries.items():
        if not splits:
            continue
        best, worst = choose(splits, objective, table.mode)
        accuracy_difference = None
        if best["best_metric"] is not None and worst["best_metric"] is not None:
            accuracy_difference = best["best_metric"] - worst["best_metric"]
        algorithms[algorithm] = {
            "scheduler": {"algorithm": algorithm, "semantics": spec.semantics, "max_t": spec.max_t,
                          "min_t": spec.min_t, "eta": spec.eta, "mode": spec.mode, **spec.limits(algorithm)},
            "best": best, "worst": worst,
            "speedup": worst["makespan_s"] / best["makespan_s"] if best["makespan_s"] > 0 else None,
            "accuracy_difference": accuracy_difference,
            "events": {"best": f"events_best_{algorithm}.jsonl", "worst": f"events_worst_{algorithm}.jsonl",
                       "seed": spec.seeds[0]},
            "splits": splits,
        }
    return {
        "schema": "nasalloc.plan/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "objective": objective, "deadline_s": spec.deadline_s, "interval": INTERVAL,
        "budget": spec.budget, "gpus_per_node": spec.gpus_per_node, "splits": list(spec.splits),
        "seeds": list(spec.seeds), "workload": table.workload or None,
        "metric": {"name": table.metric_name, "mode": table.mode},
        "scheduler": {"semantics": spec.semantics, "max_t": spec.max_t, "min_t": spec.min_t, "eta": spec.eta,
                      "mode": spec.mode, "trials": spec.trials, "brackets": spec.brackets},
        "profile": {"path": profile.path, "sha256": profile.sha256, "embedded": profile.embedded,
                    "source": profile.data.get("source"), "content": profile.data},
        "curves": {"path": table.path, "sha256": table.sha256, "configs": table.rows,
                   "max_epochs": table.max_epochs, "reference": table.reference_note},
        "sweep_key": spec.key,
        "algorithms": algorithms,
        "notes": list(notes),
    }


def write_report(out_dir, spec, sweep, profile, table, objective: str, notes: list, plots: bool = True,
                 annotate=None) -> dict:
    """plan.json, events_{best,worst}_<algorithm>.jsonl and the plots; returns the plan.
    ``annotate(plan)``, if given, may add to the plan (and choose again) before it is written."""
    out_dir = Path(out_dir)
    plan = build_plan(spec, sweep, profile, table, objective, notes)
    if annotate is not None:
        annotate(plan)
    for algorithm, entry in plan["algorithms"].items():
        for which in ("best", "worst"):
            g = entry[which]["gpus_per_trial"]
            write_lines(out_dir / entry["events"][which], sweep.events[(algorithm, float(g))])
    atomic_write_json(out_dir / PLAN_NAME, plan)
    if plots:
        from .plots import plot_all

        plot_all(out_dir, plan, sweep.events, table.mode, table.metric_name)
    return plan


def summary_table(plan: dict) -> str:
    """Per algorithm: best split, worst split, speedup, accuracy difference (with the deadline
    objective: the metric reached by the deadline and its gain instead of the speedup)."""
    deadline = plan["objective"] == "deadline"

    def describe(s: dict) -> str:
        low, high = s["makespan_ci95_s"]
        if deadline:
            metric = s["deadline_metric"]
            text = (f"{split_label(s['gpus_per_trial'])} x{s['parallel_trials']}: "
                    f"{'-' if metric is None else f'{metric:.4f}'} (makespan {_hours(s['makespan_s'])})")
        else:
            text = (f"{split_label(s['gpus_per_trial'])} x{s['parallel_trials']}: {_hours(s['makespan_s'])} "
                    f"[{_hours(low)}, {_hours(high)}]")
        return text + (f" ({s['idle_gpus']} idle)" if s["idle_gpus"] else "")

    if deadline:
        header = ["algorithm", f"best split (mean best metric by {_hours(plan['deadline_s'])})", "worst split",
                  "metric gain", "speedup"]
    else:
        header = ["algorithm", "best split (mean makespan, 95% CI)", "worst split", "speedup", "accuracy diff"]
    lines = []
    for algorithm, entry in plan["algorithms"].items():
        diff = entry["accuracy_difference"]
        speedup = f"{entry['speedup']:.2f}x" if entry["speedup"] else "-"
        if deadline:
            best, worst = entry["best"]["deadline_metric"], entry["worst"]["deadline_metric"]
            gain = "-" if best is None or worst is None else f"{best - worst:+.4f}"
            lines.append([algorithm, describe(entry["best"]), describe(entry["worst"]), gain, speedup])
        else:
            lines.append([algorithm, describe(entry["best"]), describe(entry["worst"]), speedup,
                          "-" if diff is None else f"{diff:+.4f}"])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"
