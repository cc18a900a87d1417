"""The validation report: predicted against measured, per split and per algorithm.

Files in ``--out``: ``report.json`` (everything), ``comparison.csv`` (one row per split),
``comparison.png`` (seaborn: predicted, re-simulated and measured makespan per split) and a
table on the terminal.

Errors are relative: ``(predicted - measured) / measured``. The total error splits into
``time_model_error`` = (predicted - resimulated) / resimulated and ``scheduling_error`` =
(resimulated - measured) / measured (see :mod:`nasalloc.validate.compare`).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from nasalloc.io import atomic_save_figure, atomic_write_csv, atomic_write_json
from nasalloc.simulator.labels import duration

from .compare import relative_error

COLUMNS = ["algorithm", "which", "policy", "gpus_per_trial", "parallel_trials", "status",
           "predicted_makespan_s", "resimulated_makespan_s", "measured_makespan_s",
           "makespan_rel_error", "time_model_error", "scheduling_error",
           "predicted_best_metric", "measured_best_metric", "resimulated_best_metric",
           "trials", "finished", "failed", "epochs", "measured_startup_s", "run_dir"]


def comparison_row(*, algorithm: str, which: str, gpus_per_trial: float, parallel_trials: int, status: str,
                   predicted_makespan_s: float, predicted_best_metric: float, measured, resim,
                   run_dir: Path) -> dict:
    resim_makespan = resim.makespan_s if resim is not None else math.nan
    # an unfinished run's makespan is only the time so far: no error against it
    measured_makespan = measured.makespan_s if status == "finished" else math.nan
    return {
        "algorithm": algorithm, "which": which, "gpus_per_trial": gpus_per_trial,
        "parallel_trials": parallel_trials, "status": status,
        "predicted_makespan_s": predicted_makespan_s, "resimulated_makespan_s": resim_makespan,
        "measured_makespan_s": measured.makespan_s,
        "makespan_rel_error": relative_error(predicted_makespan_s, measured_makespan),
        "time_model_error": relative_error(predicted_makespan_s, resim_makespan),
        "scheduling_error": relative_error(resim_makespan, measured_makespan),
        "predicted_best_metric": predicted_best_metric, "measured_best_metric": measured.best_metric,
        "resimulated_best_metric": resim.best_metric if resim is not None else math.nan,
        "trials": measured.trials, "finished": measured.finished, "failed": measured.failed,
        "epochs": measured.epochs, "measured_startup_s": measured.startup_s, "run_dir": str(run_dir),
    }


def split_key(algorithm: str, gpus_per_trial: float, policy=None) -> tuple:
    """What names one validated split of an algorithm: its policy, else its GPUs per trial (a
    policy's gpus_per_trial is its smallest count, which a static split may share)."""
    return algorithm, split_name({"gpus_per_trial": gpus_per_trial, "policy": policy})


def split_name(row: dict):
    """A row's split in the orders of the report: its policy (a string), else its GPUs per trial."""
    return row.get("policy") or float(row["gpus_per_trial"])


def split_label(row: dict) -> str:
    """How a table or plot names a row's split: ``best g=2``, ``g=0.5``, ``policy double:1,2``."""
    which = row["which"]
    return which if which.startswith(("g=", "policy ")) else f"{which} g={row['gpus_per_trial']:g}"


def summarize_algorithms(rows: list[dict]) -> dict:
    """Per algorithm: speedup of best over worst, predicted and measured; did the order hold?"""
    out = {}
    for algorithm in dict.fromkeys(r["algorithm"] for r in rows):
        by_which = {r["which"]: r for r in rows if r["algorithm"] == algorithm}
        best, worst = by_which.get("best"), by_which.get("worst")
        entry: dict = {}
        if best and worst:
            predicted = _ratio(worst["predicted_makespan_s"], best["predicted_makespan_s"])
            done = all(r.get("status", "finished") == "finished" for r in (best, worst))
            measured = _ratio(worst["measured_makespan_s"], best["measured_makespan_s"]) if done else math.nan
            resim = _ratio(worst["resimulated_makespan_s"], best["resimulated_makespan_s"])
            entry = {"best_gpus_per_trial": best["gpus_per_trial"], "worst_gpus_per_trial": worst["gpus_per_trial"],
                     "predicted_speedup": predicted, "measured_speedup": measured,
                     "resimulated_speedup": resim,
                     "speedup_rel_error": relative_error(predicted, measured),
                     "order_held": bool(measured > 1.0) if math.isfinite(measured) else None}
        ordered = sorted((r for r in rows if r["algorithm"] == algorithm), key=lambda r: r["predicted_makespan_s"])
        measured_order = [split_name(r) for r in sorted(ordered, key=lambda r: r["measured_makespan_s"])]
        entry["predicted_order"] = [split_name(r) for r in ordered]
        entry["measured_order"] = measured_order
        entry["all_orders_held"] = entry["predicted_order"] == measured_order if all(
            r.get("status", "finished") == "finished" for r in ordered) else None
        out[algorithm] = entry
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def write_report(out: Path, rows: list[dict], *, plan_path: str, complete: bool,
                 notes: Optional[list] = None) -> dict:
    import pandas as pd

    report = {**report_head(plan_path, complete), "splits": rows, "algorithms": summarize_algorithms(rows),
              "notes": list(notes or [])}
    return save_report(out, report, pd.DataFrame(rows, columns=COLUMNS), plot_comparison)


def report_head(plan_path: str, complete: bool) -> dict:
    return {"schema": "nasalloc.validation/1", "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "plan": plan_path, "complete": complete}


def save_report(out: Path, report: dict, table, plot) -> dict:
    """report.json, comparison.csv (``table``) and comparison.png (``plot(path, splits)``), atomically."""
    out = Path(out)
    atomic_write_json(out / "report.json", finite_json(report))
    atomic_write_csv(out / "comparison.csv", table)
    if report["splits"]:
        plot(out / "comparison.png", report["splits"])
    return report


def finite_json(value):
    """``value`` with every non-finite float as None (JSON has no NaN: null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


def plot_comparison(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    long = []
    for r in rows:
        label = f"{r['algorithm']}\n{split_label(r)}"
        for kind, column in (("predicted", "predicted_makespan_s"), ("re-simulated", "resimulated_makespan_s"),
                             ("measured", "measured_makespan_s")):
            value = r[column]
            if value is not None and math.isfinite(value):
                long.append({"split": label, "makespan (s)": value, "": kind})
    figure, axis = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 2), 4.0))
    sns.barplot(data=pd.DataFrame(long), x="split", y="makespan (s)", hue="", ax=axis,
                palette={"predicted": "#4c72b0", "re-simulated": "#8172b2", "measured": "#dd8452"})
    axis.set_title("Search makespan: predicted vs measured")
    axis.set_xlabel("")
    figure.tight_layout()
    atomic_save_figure(path, figure)
    plt.close(figure)


def format_table(report: dict) -> str:
    def num(v, fmt=None):  # durations by default, in the unit that reads best (s, min, h)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        return duration(v) if fmt is None else fmt.format(v)

    def pct(v):
        return num(v if v is None else 100 * v, "{:+.0f}%")

    header = (f"{'algorithm':<10} {'split':<11} {'predicted':>9} {'resim':>8} {'measured':>9} {'error':>6} "
              f"{'model':>6} {'sched':>6} {'metric pred/meas':>17} {'trials':>6} {'failed':>6}")
    lines = [header, "-" * len(header)]
    for r in report["splits"]:
        metric = f"{num(r['predicted_best_metric'], '{:.3f}')}/{num(r['measured_best_metric'], '{:.3f}')}"
        split = split_label(r)
        lines.append(f"{r['algorithm']:<10} {split:<11} "
                     f"{num(r['predicted_makespan_s']):>9} {num(r['resimulated_makespan_s']):>8} "
                     f"{num(r['measured_makespan_s']):>9} {pct(r['makespan_rel_error']):>6} "
                     f"{pct(r['time_model_error']):>6} {pct(r['scheduling_error']):>6} {metric:>17} "
                     f"{r['trials']:>6} {r['failed']:>6}" + ("" if r["status"] == "finished" else f"  ({r['status']})"))
    for algorithm, a in report["algorithms"].items():
        if "predicted_speedup" in a:
            held = {True: "held", False: "did NOT hold", None: "unknown"}[a["order_held"]]
            lines.append(f"{algorithm}: speedup best over worst predicted {num(a['predicted_speedup'], '{:.2f}x')}, "
                         f"measured {num(a['measured_speedup'], '{:.2f}x')}; predicted order {held}")
    return "\n".join(lines)
