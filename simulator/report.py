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

from .labels import MIN_SEEDS_FOR_INTERVAL, duration, interval, split_label

PLAN_NAME = "plan.json"
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
                "model_based_share": _mean([float(r["model_based_trials"]) / float(r["trials"]) for r in runs
                                            if r.get("model_based_trials") not in (None, "")
                                            and float(r["trials"]) > 0]),
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


def metric_difference(rows: list, algorithm: str, best: dict, worst: dict) -> dict:
    """Best minus worst split's best metric, paired by seed: mean, 95% interval, seeds.

    ``mean`` is None when no seed measured the metric for both splits (then it is absent,
    never printed as zero)."""
    def by_seed(g: float) -> dict:
        return {int(r["seed"]): r["best_metric"] for r in rows
                if r["algorithm"] == algorithm and float(r["gpus_per_trial"]) == float(g)
                and r.get("best_metric") is not None and not (isinstance(r["best_metric"], float)
                                                              and math.isnan(r["best_metric"]))}
    ours, theirs = by_seed(best["gpus_per_trial"]), by_seed(worst["gpus_per_trial"])
    differences = [float(ours[s]) - float(theirs[s]) for s in sorted(set(ours) & set(theirs))]
    if not differences:
        return {"mean": None, "ci95": None, "seeds": 0}
    mean, low, high = t_interval(differences, clip_at_zero=False)
    return {"mean": mean, "ci95": [low, high] if len(differences) >= MIN_SEEDS_FOR_INTERVAL else None,
            "seeds": len(differences)}


def build_plan(spec, sweep, profile, table, objective: str, notes: list) -> dict:
    summaries = summarize_splits(sweep.rows, spec)
    algorithms = {}
    for algorithm, splits in summaries.items():
        if not splits:
            continue
        best, worst = choose(splits, objective, table.mode)
        difference = metric_difference(sweep.rows, algorithm, best, worst)
        algorithms[algorithm] = {
            "scheduler": {"algorithm": algorithm, "semantics": spec.semantics, "max_t": spec.max_t,
                          "min_t": spec.min_t, "eta": spec.eta, "mode": spec.mode, **spec.limits(algorithm)},
            "best": best, "worst": worst,
            "speedup": worst["makespan_s"] / best["makespan_s"] if best["makespan_s"] > 0 else None,
            # best - worst best_metric, the mean over seeds (paired) and its interval (>= 3 seeds)
            "accuracy_difference": difference["mean"],
            "accuracy_difference_ci95": difference["ci95"],
            "accuracy_difference_seeds": difference["seeds"],
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
                      "mode": spec.mode, "trials": spec.trials, "brackets": spec.brackets,
                      "ray_pending": spec.ray_pending},
        "profile": {"path": profile.path, "sha256": profile.sha256, "embedded": profile.embedded,
                    "source": profile.data.get("source"), "content": profile.data},
        "curves": {"path": table.path, "sha256": table.sha256, "configs": table.rows,
                   "max_epochs": table.max_epochs, "reference": table.reference_note},
        "sweep_key": spec.key,
        "algorithms": algorithms,
        "notes": list(notes),
        "warnings": planner_warnings(algorithms),
    }


# BOHB proposes from its model with probability 1 - random_fraction (2/3 by default) once a
# budget has a model; a split below half of that ran mostly as random search.
MODEL_SHARE_WARNING = 1 / 3


def planner_warnings(algorithms: dict) -> list:
    """What a user of the plan should know that the makespan does not say."""
    warnings = []
    bohb = algorithms.get("bohb")
    if bohb:
        low = [s for s in bohb["splits"] if s.get("model_based_share") is not None
               and s["model_based_share"] < MODEL_SHARE_WARNING]
        if low:
            shares = ", ".join(f"{split_label(s['gpus_per_trial'])} x{s['parallel_trials']}: "
                               f"{s['model_based_share']:.0%}" for s in low)
            warnings.append(f"bohb: at {shares} of configs came from BOHB's model; the rest were random "
                            "(most trials started before any budget had min_points_in_model results), so "
                            "those splits ran close to HyperBand with random sampling")
    for name, entry in algorithms.items():
        # more slots than the search has trials: some GPUs never run anything, whatever happens
        wide = [s for s in entry["splits"] if s.get("trials") and s["parallel_trials"] > s["trials"]]
        if wide:
            where = ", ".join(f"{split_label(s['gpus_per_trial'])} x{s['parallel_trials']} ({s['trials']:g} trials, "
                              f"{s['parallel_trials'] - s['trials']:g} slot(s) idle)" for s in wide)
            warnings.append(f"{name}: at {where} the search has fewer trials than it runs at once, so GPUs idle "
                            "by construction; add trials or brackets (--trials, --brackets) or give each trial more GPUs")
    return warnings


def write_report(out_dir, spec, sweep, profile, table, objective: str, notes: list, plots: bool = True,
                 annotate=None, jobs: int = 1) -> dict:
    """plan.json, events_{best,worst}_<algorithm>.jsonl and the plots; returns the plan.
    ``annotate(plan)``, if given, may add to the plan (and choose again) before it is written;
    ``jobs`` >= 2 draws the plots in two processes."""
    out_dir = Path(out_dir)
    plan = build_plan(spec, sweep, profile, table, objective, notes)
    if spec.allocation:
        from .chainreport import annotate_chain

        annotate_chain(plan, sweep.rows, spec.allocation_model())
    if annotate is not None:
        annotate(plan)
    for algorithm, entry in plan["algorithms"].items():
        for which in ("best", "worst"):
            g = entry[which]["gpus_per_trial"]
            write_lines(out_dir / entry["events"][which], sweep.events[(algorithm, float(g))])
    atomic_write_json(out_dir / PLAN_NAME, plan)
    if plots:
        from .plots import plot_all

        plot_all(out_dir, plan, sweep.events, table.mode, table.metric_name, jobs=jobs)
    return plan


def summary_table(plan: dict) -> str:
    """Per algorithm: best split, worst split, speedup, the metric's difference best - worst
    (with the deadline objective: the metric reached by the deadline and its gain instead of
    the speedup). Durations in the unit that reads best (s, min, h); intervals need 3 seeds."""
    deadline = plan["objective"] == "deadline"
    metric = (plan.get("metric") or {}).get("name") or "metric"

    def describe(s: dict) -> str:
        low, high = s["makespan_ci95_s"]
        if deadline:
            reached = s["deadline_metric"]
            text = (f"{split_label(s['gpus_per_trial'])} x{s['parallel_trials']}: "
                    f"{'-' if reached is None else f'{reached:.4f}'} (makespan {duration(s['makespan_s'])})")
        else:
            text = (f"{split_label(s['gpus_per_trial'])} x{s['parallel_trials']}: {duration(s['makespan_s'])} "
                    f"{interval(low, high, s['seeds'])}")
        return text + (f" ({s['idle_gpus']} idle)" if s["idle_gpus"] else "")

    def difference(entry: dict) -> str:
        mean, seeds = entry["accuracy_difference"], entry.get("accuracy_difference_seeds", 0)
        if mean is None:
            return "-"
        ci = entry.get("accuracy_difference_ci95")
        if ci is not None and mean == 0 and ci[0] == ci[1] == 0:  # sd 0: every seed found the same
            return f"0 (equal in all {seeds} seeds)"
        return f"{mean:+.4f} " + interval(*(ci or (None, None)), seeds, form=lambda v: f"{v:+.4f}")

    measured = any(e["accuracy_difference"] is not None for e in plan["algorithms"].values())
    if deadline:
        header = ["algorithm", f"best split (mean best metric by {duration(plan['deadline_s'])})", "worst split",
                  "metric gain", "speedup"]
    else:
        time_name = "time to result" if plan.get("allocation") else "makespan"  # a chain: waits included
        header = ["algorithm", f"best split (mean {time_name}, 95% CI)", "worst split", "speedup"]
        if measured:  # absent, not zero, where the runs measured no metric
            header.append(f"{metric} best - worst (mean, 95% CI)")
    lines = []
    for algorithm, entry in plan["algorithms"].items():
        speedup = f"{entry['speedup']:.2f}x" if entry["speedup"] else "-"
        if deadline:
            best, worst = entry["best"]["deadline_metric"], entry["worst"]["deadline_metric"]
            gain = "-" if best is None or worst is None else f"{best - worst:+.4f}"
            lines.append([algorithm, describe(entry["best"]), describe(entry["worst"]), gain, speedup])
        else:
            lines.append([algorithm, describe(entry["best"]), describe(entry["worst"]), speedup]
                         + ([difference(entry)] if measured else []))
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])
