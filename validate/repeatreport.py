"""The report of a validation with ``--repeats N`` (N >= 2): intervals, not single numbers.

Every chosen split ran N times with the plan's seed (the same search: same configs, same
trial seeds), so the measured runs differ only by timing: the machine's run-to-run variation
and the races of asynchronous stopping. The prediction of one run is the plan's simulation of
that search drawn again with fresh epoch-time noise (``draws`` runs, see cli.predict_draws).

Per split (``report.json`` ``splits``, ``comparison.csv``, the table):

* measured mean and 95% t-interval of the mean (``intervals.t_interval``);
* predicted mean, the 95% interval of the mean of N runs and of one run (``predicted_intervals``);
* ``mean_inside``: the measured mean lies in the predicted interval of the mean;
* ``runs_inside``: the fraction of measured runs inside the predicted interval of one run (the
  check that the simulator's noise covers the real run-to-run variation);
* the relative error of the means, split as in the single-run report into time-model error
  (predicted vs the mean re-simulation) and scheduling error (re-simulation vs measured).

Per algorithm (``algorithms``): the measured speedup of best over worst with its interval
(``ratio_interval``) beside the predicted one; ``order_held_fraction``, the share of the N
rounds (run k of every split) whose measured order of the splits is the predicted one; and
``best_held``: the split with the lowest measured mean is the predicted best (``None`` when
the measured intervals of the two fastest splits overlap, so the runs cannot tell).
Every run's own row is kept in ``runs``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from nasalloc.io import atomic_save_figure
from nasalloc.simulator.labels import duration

from .compare import relative_error
from .intervals import fraction, predicted_intervals, ratio_interval, t_interval
from .report import split_key, split_label, split_name

COLUMNS = ["algorithm", "which", "policy", "gpus_per_trial", "parallel_trials", "repeats", "runs_finished",
           "predicted_mean_s", "predicted_low_s", "predicted_high_s", "predicted_run_low_s", "predicted_run_high_s",
           "measured_mean_s", "measured_low_s", "measured_high_s", "mean_inside", "runs_inside",
           "makespan_rel_error", "resimulated_mean_s", "time_model_error", "scheduling_error",
           "predicted_best_metric", "measured_best_metric", "plan_mean_makespan_s"]


def _key(row: dict) -> tuple:
    return split_key(row["algorithm"], row["gpus_per_trial"], row.get("policy"))


def summarize_splits(runs: list[dict], draws: dict, repeats: int) -> list[dict]:
    """One row per split from its runs' rows and the predicted draws (key: (algorithm, g), or
    (algorithm, policy) for an adaptive policy: report.split_key)."""
    out = []
    for key in dict.fromkeys(_key(r) for r in runs):
        mine = [r for r in runs if _key(r) == key]
        done = [r for r in mine if r["status"] == "finished"]
        values = [r["measured_makespan_s"] for r in done]
        measured = t_interval(values)
        one_run, of_mean = predicted_intervals(draws.get(key, []), max(len(values), 1))
        resim = t_interval([r["resimulated_makespan_s"] for r in done])
        metrics = t_interval([r["measured_best_metric"] for r in done])
        first = mine[0]
        out.append({
            "algorithm": key[0], "which": first["which"], "gpus_per_trial": float(first["gpus_per_trial"]),
            **({"policy": first["policy"]} if first.get("policy") else {}),
            "parallel_trials": first["parallel_trials"], "repeats": repeats, "runs_finished": len(done),
            "predicted_mean_s": of_mean.mean, "predicted_low_s": of_mean.low, "predicted_high_s": of_mean.high,
            "predicted_run_low_s": one_run.low, "predicted_run_high_s": one_run.high,
            "measured_mean_s": measured.mean, "measured_low_s": measured.low, "measured_high_s": measured.high,
            "mean_inside": of_mean.contains(measured.mean),
            "runs_inside": fraction([one_run.contains(v) for v in values]),
            "makespan_rel_error": relative_error(of_mean.mean, measured.mean),
            "resimulated_mean_s": resim.mean,
            "time_model_error": relative_error(of_mean.mean, resim.mean),
            "scheduling_error": relative_error(resim.mean, measured.mean),
            "predicted_best_metric": first["predicted_best_metric"], "measured_best_metric": metrics.mean,
            "plan_mean_makespan_s": first.get("predicted_mean_makespan_s"),
            "measured_runs_s": values,
        })
    return out


def summarize_algorithms(splits: list[dict], runs: list[dict]) -> dict:
    out = {}
    for algorithm in dict.fromkeys(s["algorithm"] for s in splits):
        mine = [s for s in splits if s["algorithm"] == algorithm]
        predicted_order = [split_name(s) for s in sorted(mine, key=lambda s: s["predicted_mean_s"])]
        entry: dict = {"predicted_order": predicted_order}
        by_which = {s["which"]: s for s in mine}
        best, worst = by_which.get("best"), by_which.get("worst")
        if best and worst:
            speedup = ratio_interval(worst["measured_runs_s"], best["measured_runs_s"])
            predicted = worst["predicted_mean_s"] / best["predicted_mean_s"] if best["predicted_mean_s"] else math.nan
            entry.update(best_gpus_per_trial=best["gpus_per_trial"], worst_gpus_per_trial=worst["gpus_per_trial"],
                         predicted_speedup=predicted, measured_speedup=speedup.mean,
                         measured_speedup_low=speedup.low, measured_speedup_high=speedup.high,
                         speedup_rel_error=relative_error(predicted, speedup.mean))
        rounds = _rounds(runs, algorithm)
        held = [None if order is None else order == predicted_order for order in rounds]
        entry["order_held_fraction"] = fraction(held)
        entry["order_rounds"] = len([h for h in held if h is not None])
        entry["measured_order"] = [split_name(s) for s in sorted(
            mine, key=lambda s: s["measured_mean_s"] if math.isfinite(s["measured_mean_s"]) else math.inf)]
        entry["best_held"] = _best_held(mine)
        out[algorithm] = entry
    return out


def _rounds(runs: list[dict], algorithm: str) -> list[Optional[list]]:
    """Per round k (run k of every split): the measured order of the splits (None: one unfinished)."""
    mine = [r for r in runs if r["algorithm"] == algorithm]
    splits = list(dict.fromkeys(split_name(r) for r in mine))
    out = []
    for k in sorted({r.get("repeat", 1) for r in mine}):
        this = [r for r in mine if r.get("repeat", 1) == k]
        if len(this) != len(splits) or any(r["status"] != "finished" for r in this):
            out.append(None)
            continue
        out.append([split_name(r) for r in sorted(this, key=lambda r: r["measured_makespan_s"])])
    return out


def _best_held(splits: list[dict]) -> Optional[bool]:
    measured = sorted((s for s in splits if math.isfinite(s["measured_mean_s"])), key=lambda s: s["measured_mean_s"])
    if len(measured) < 2 or len(measured) != len(splits):
        return None
    first, second = measured[0], measured[1]
    if not (math.isfinite(first["measured_high_s"]) and math.isfinite(second["measured_low_s"])):
        return None
    if first["measured_high_s"] >= second["measured_low_s"]:
        return None  # the runs cannot tell the two fastest apart
    predicted_best = min(splits, key=lambda s: s["predicted_mean_s"])
    return split_name(predicted_best) == split_name(first)


def write_repeat_report(out: Path, runs: list[dict], draws: dict, repeats: int, *, plan_path: str,
                        complete: bool, notes: Optional[list] = None) -> dict:
    import pandas as pd

    from .report import report_head, save_report

    splits = summarize_splits(runs, draws, repeats)
    report = {**report_head(plan_path, complete), "repeats": repeats,
              "interval": "95%: measured = t-interval of the mean of the runs; predicted = normal interval of "
                          "the mean of as many simulated runs, and 2.5-97.5 percentiles of one simulated run",
              "splits": splits, "algorithms": summarize_algorithms(splits, runs), "runs": runs,
              "notes": list(notes or [])}
    return save_report(out, report, pd.DataFrame(splits, columns=COLUMNS), plot_intervals)


def plot_intervals(path: Path, splits: list[dict]) -> None:
    """Per split: predicted and measured mean with their 95% intervals, and every measured run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    labels = [f"{s['algorithm']}\n{split_label(s)}" for s in splits]
    runs = pd.DataFrame([{"split": label, "makespan (s)": v} for label, s in zip(labels, splits)
                         for v in s["measured_runs_s"]])
    with sns.axes_style("whitegrid"):  # not set_theme: the style of other plots stays as it was
        figure, axis = plt.subplots(figsize=(max(5.0, 1.5 * len(splits) + 2), 4.2))
    colors = {"predicted": "#4c72b0", "measured": "#dd8452"}
    for i, s in enumerate(splits):
        for offset, kind in ((-0.12, "predicted"), (0.12, "measured")):
            mean, low, high = (s[f"{kind}_mean_s"], s[f"{kind}_low_s"], s[f"{kind}_high_s"])
            if not math.isfinite(mean):
                continue
            error = [[mean - low], [high - mean]] if math.isfinite(low) else None
            axis.errorbar(i + offset, mean, yerr=error, fmt="o", capsize=5, color=colors[kind],
                          label=f"{kind} mean, 95% interval" if i == 0 else None)
        if math.isfinite(s["predicted_run_low_s"]):
            axis.vlines(i - 0.12, s["predicted_run_low_s"], s["predicted_run_high_s"], color=colors["predicted"],
                        alpha=0.3, linewidth=8, label="predicted single run, 95%" if i == 0 else None)
    if len(runs):
        sns.stripplot(data=runs, x="split", y="makespan (s)", order=labels, ax=axis, color=colors["measured"],
                      alpha=0.45, size=4, jitter=0.05, dodge=False, label="measured runs", legend=False)
    handles, names = axis.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    axis.legend(unique.values(), unique.keys(), loc="best", fontsize="small")
    axis.set_xticks(range(len(labels)), labels)
    axis.set_xlabel("algorithm and split (GPUs per trial)")
    axis.set_ylabel("search makespan (s)")
    axis.set_title(f"Makespan: predicted vs measured, {splits[0]['repeats']} runs per split")
    figure.tight_layout()
    atomic_save_figure(path, figure)
    plt.close(figure)


def format_repeat_table(report: dict) -> str:
    def num(v, fmt=None):
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        return duration(v) if fmt is None else fmt.format(v)

    def span(mean, low, high):
        return f"{num(mean)} [{num(low)}, {num(high)}]"

    def pct(v):
        return num(v if v is None else 100 * v, "{:+.0f}%")

    def yes(v):
        return {True: "yes", False: "no", None: "-"}[v]

    header = (f"{'algorithm':<10} {'split':<11} {'runs':>4} {'predicted mean [95%]':>26} {'measured mean [95%]':>26} "
              f"{'error':>6} {'inside':>6} {'runs in':>7} {'model':>6} {'sched':>6}")
    lines = [header, "-" * len(header)]
    for s in report["splits"]:
        split = split_label(s)
        runs_in = "-" if s["runs_inside"] is None else f"{100 * s['runs_inside']:.0f}%"
        lines.append(f"{s['algorithm']:<10} {split:<11} {s['runs_finished']:>4} "
                     f"{span(s['predicted_mean_s'], s['predicted_low_s'], s['predicted_high_s']):>26} "
                     f"{span(s['measured_mean_s'], s['measured_low_s'], s['measured_high_s']):>26} "
                     f"{pct(s['makespan_rel_error']):>6} {yes(s['mean_inside']):>6} {runs_in:>7} "
                     f"{pct(s['time_model_error']):>6} {pct(s['scheduling_error']):>6}")
    for algorithm, a in report["algorithms"].items():
        text = f"{algorithm}: "
        if "predicted_speedup" in a:
            text += (f"speedup best over worst predicted {num(a['predicted_speedup'], '{:.2f}x')}, measured "
                     f"{num(a['measured_speedup'], '{:.2f}x')} [{num(a['measured_speedup_low'], '{:.2f}')}, "
                     f"{num(a['measured_speedup_high'], '{:.2f}')}]; ")
        held = "-" if a["order_held_fraction"] is None else f"{100 * a['order_held_fraction']:.0f}%"
        text += f"predicted order held in {held} of {a['order_rounds']} round(s); best split {yes(a['best_held'])}"
        lines.append(text)
    return "\n".join(lines)
