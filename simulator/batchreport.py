"""What batch scaling adds to a sweep's report (``per_gpu`` workloads with a measured noise scale).

Per algorithm and split, ``plan.json`` gets ``batch_scaling``: the split's global batch (for the
reference config), whether it is past the critical batch (B > B_noise at the end of training),
the predicted final metric of the search (the mean ``best_metric`` over seeds, simulated on the
stretched curves) and of the reference config at ``max_t``, and the epochs the reference config
needs to come within ``tolerance`` of its recorded best.

Objective ``accuracy-time``: among the splits whose predicted final metric (mean best metric
over seeds) is within ``tolerance`` of the best split's, the best is the one with the lowest
mean makespan; the worst is the split with the highest mean makespan (as for ``makespan``).
Without batch scaling (``global`` policy) the predicted metrics are those of the recorded
curves, so the objective still means "fastest at (about) equal accuracy".

``batch_scaling.png`` shows the makespan and the predicted final metric against GPUs per
trial, splits past the critical batch marked (the makespan plot itself is left as it is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .batchscaling import BatchScaling, split_prediction

OBJECTIVE = "accuracy-time"
PLOT_NAME = "batch_scaling.png"


def within_tolerance(splits: list, tolerance: float, mode: str) -> list:
    """The splits whose mean best metric is within ``tolerance`` of the best one's."""
    known = [s for s in splits if s.get("best_metric") is not None]
    if not known:
        return list(splits)
    sign = 1.0 if mode == "max" else -1.0
    top = max(sign * s["best_metric"] for s in known)
    return [s for s in known if top - sign * s["best_metric"] <= tolerance + 1e-12]


def choose_accuracy_time(splits: list, tolerance: float, mode: str) -> tuple:
    """(best, worst): the fastest split at equal accuracy, and the slowest split."""
    eligible = within_tolerance(splits, tolerance, mode)
    best = min(eligible, key=lambda s: (s["makespan_s"], s["gpus_per_trial"]))
    worst = max(splits, key=lambda s: (s["makespan_s"], -s["gpus_per_trial"]))
    return best, worst


def annotate_plan(plan: dict, table, scaling: Optional[BatchScaling], tolerance: float) -> dict:
    """Add the batch-scaling columns to every split of ``plan``; with objective
    ``accuracy-time`` choose best and worst again. Changes ``plan`` in place and returns it."""
    scaling = scaling or BatchScaling(policy="global")
    plan["batch_scaling"] = {
        "policy": scaling.policy, "active": scaling.active, "tolerance": tolerance,
        "batch_key": scaling.batch_key,
        "noise_scale": ({"epochs": list(scaling.noise.epochs), "b_noise": list(scaling.noise.b_noise),
                         "source": scaling.noise.source} if scaling.noise is not None else None),
        "model": "epochs stretched by (1 + B/B_noise)/(1 + B0/B_noise) (McCandlish et al. 2018); "
                 "assumes a tuned learning rate at each batch (simulator/batchscaling.py)",
    }
    for entry in plan["algorithms"].values():
        for split in entry["splits"]:
            prediction = split_prediction(table, split["gpus_per_trial"], scaling, tolerance) or {}
            split["batch_scaling"] = {"predicted_final_metric": split.get("best_metric"), **prediction}
        if plan["objective"] == OBJECTIVE:
            best, worst = choose_accuracy_time(entry["splits"], tolerance, table.mode)
            entry["best"], entry["worst"] = best, worst
            entry["speedup"] = worst["makespan_s"] / best["makespan_s"] if best["makespan_s"] > 0 else None
            entry["accuracy_difference"] = (best["best_metric"] - worst["best_metric"]
                                            if best["best_metric"] is not None and worst["best_metric"] is not None
                                            else None)
            entry["eligible_splits"] = [s["gpus_per_trial"] for s in within_tolerance(entry["splits"], tolerance,
                                                                                      table.mode)]
    return plan


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def batch_table(plan: dict) -> str:
    """Per algorithm and split: makespan, global batch, predicted final metric, epochs to
    target, past the critical batch (printed when batch scaling is active)."""
    header = ["algorithm", "GPUs/trial", "global batch", "makespan", "pred. best metric", "ref. final",
              "ref. epochs to target", "past critical batch"]
    lines = []
    for algorithm, entry in plan["algorithms"].items():
        for s in entry["splits"]:
            b = s.get("batch_scaling") or {}
            g = s["gpus_per_trial"]
            mark = "*" if s is entry["best"] or s == entry["best"] else ""
            etl = b.get("epochs_to_target")
            lines.append([algorithm, (f"1/{round(1 / g)}" if g < 1 else f"{int(g)}") + mark,
                          "-" if b.get("global_batch") is None else f"{b['global_batch']:.0f}",
                          _hours(s["makespan_s"]),
                          "-" if s.get("best_metric") is None else f"{s['best_metric']:.4f}",
                          "-" if b.get("reference_final_metric") is None else f"{b['reference_final_metric']:.4f}",
                          "-" if not b else ("never" if etl is None else
                                             f"{etl} (recorded {b.get('epochs_to_target_recorded')})"),
                          "-" if not b else ("yes" if b.get("past_critical_batch") else "no")])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    info = plan["batch_scaling"]
    noise = info.get("noise_scale") or {}
    title = (f"batch scaling ({info['policy']}): curves stretched with B_noise "
             f"{', '.join(f'{b:.0f}@{e:g}' for e, b in zip(noise.get('epochs', []), noise.get('b_noise', [])))} "
             f"(value@epoch); target = reference config's recorded best - {info['tolerance']:g}; * = chosen")
    return "\n".join([title, render(header), render(["-" * w for w in widths]), *map(render, lines)])


def plot_batch_scaling(out_dir, plan: dict, metric_name: str) -> Path:
    """Makespan and predicted final metric against GPUs per trial; past-critical splits marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from nasalloc.io import atomic_save_figure

    sns.set_theme(style="whitegrid", context="notebook")
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (algorithm, entry) in enumerate(plan["algorithms"].items()):
        color = f"C{i}"
        splits = entry["splits"]
        xs = [s["gpus_per_trial"] for s in splits]
        left.plot(xs, [s["makespan_s"] / 3600 for s in splits], marker="o", color=color, label=algorithm)
        right.plot(xs, [s["best_metric"] for s in splits], marker="o", color=color, label=algorithm)
        past = [s for s in splits if (s.get("batch_scaling") or {}).get("past_critical_batch")]
        for axis, value in ((left, lambda s: s["makespan_s"] / 3600), (right, lambda s: s["best_metric"])):
            axis.scatter([s["gpus_per_trial"] for s in past], [value(s) for s in past], s=140, facecolors="none",
                         edgecolors="red", linewidths=1.5, zorder=4,
                         label="past the critical batch" if i == 0 and past else None)
    ticks = sorted({s["gpus_per_trial"] for e in plan["algorithms"].values() for s in e["splits"]})
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [f"1/{round(1 / g)}" if g < 1 else f"{int(g)}" for g in ticks])
        axis.minorticks_off()
        axis.set_xlabel("GPUs per trial")
        axis.legend(fontsize=8)
    left.set_ylabel("mean makespan (hours)")
    right.set_ylabel(f"predicted best {metric_name} (mean over seeds)")
    figure.suptitle(f"Budget {plan['budget']} GPUs, batch policy {plan['batch_scaling']['policy']}: "
                    f"global batch grows with the GPUs per trial", fontsize=10)
    figure.tight_layout()
    path = Path(out_dir) / PLOT_NAME
    atomic_save_figure(path, figure)
    plt.close(figure)
    return path
