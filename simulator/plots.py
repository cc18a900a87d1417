"""The sweep's plots (seaborn PNGs, saved atomically):

* ``makespan.png``: mean makespan against GPUs per trial (log2 axis), a line per algorithm with
  its 95% t-interval band;
* ``best_so_far.png``: the best metric reached so far against time (log axis), a line per
  split, a panel per algorithm (first seed);
* ``occupancy.png``: GPUs busy over time for the best and the worst split of each algorithm.
"""

from __future__ import annotations

from pathlib import Path

from nasalloc.io import atomic_save_figure

from .report import split_label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def best_so_far(events: list, mode: str) -> tuple:
    """(times, best metric so far) after each epoch record."""
    times, values, best = [0.0], [float("nan")], None
    for e in events:
        if e["kind"] != "epoch" or e.get("metric") is None:
            continue
        metric = e["metric"]
        if best is None or (metric > best if mode == "max" else metric < best):
            best = metric
        times.append(e["time_s"])
        values.append(best)
    return times, values


def occupancy(events: list) -> tuple:
    """(times, GPUs held) as a step function: a segment holds its GPUs from start/resume to its end."""
    changes = []
    for e in events:
        if e["kind"] in ("start", "resume"):
            changes.append((e["time_s"], e["gpus"]))
        elif e["kind"] in ("pause", "stop", "complete", "fail"):
            changes.append((e["time_s"], -e["gpus"]))
    changes.sort(key=lambda c: (c[0], c[1]))
    times, held, level = [0.0], [0.0], 0.0
    for time_s, delta in changes:
        level += delta
        times.append(time_s)
        held.append(level)
    return times, held


def plot_all(out_dir, plan: dict, events: dict, mode: str, metric_name: str) -> list:
    plt, sns = _pyplot()
    out_dir = Path(out_dir)
    algorithms = list(plan["algorithms"])
    written = []

    figure, axis = plt.subplots(figsize=(7, 4.5))
    palette = dict(zip(algorithms, sns.color_palette(n_colors=len(algorithms))))
    for algorithm in algorithms:
        splits = plan["algorithms"][algorithm]["splits"]
        xs = [s["gpus_per_trial"] for s in splits]
        hours = [s["makespan_s"] / 3600 for s in splits]
        sns.lineplot(x=xs, y=hours, marker="o", label=algorithm, color=palette[algorithm], ax=axis)
        axis.fill_between(xs, [s["makespan_ci95_s"][0] / 3600 for s in splits],
                          [s["makespan_ci95_s"][1] / 3600 for s in splits], color=palette[algorithm], alpha=0.2)
    axis.set_xscale("log", base=2)
    ticks = sorted({s["gpus_per_trial"] for a in algorithms for s in plan["algorithms"][a]["splits"]})
    axis.set_xticks(ticks, [f"1/{round(1 / g)}" if g < 1 else f"{int(g)}" for g in ticks])
    axis.minorticks_off()
    axis.set_xlabel("GPUs per trial")
    axis.set_ylabel("makespan (hours)")
    axis.set_title(f"Budget {plan['budget']} GPUs: mean makespan and 95% interval over {len(plan['seeds'])} seeds")
    figure.tight_layout()
    atomic_save_figure(out_dir / "makespan.png", figure)
    plt.close(figure)
    written.append("makespan.png")

    figure, axes = plt.subplots(1, len(algorithms), figsize=(5.5 * len(algorithms), 4.2), squeeze=False,
                                sharey=True)
    for axis, algorithm in zip(axes[0], algorithms):
        splits = [s["gpus_per_trial"] for s in plan["algorithms"][algorithm]["splits"]]
        colors = sns.color_palette("viridis", n_colors=len(splits))
        for color, g in zip(colors, splits):
            times, values = best_so_far(events[(algorithm, float(g))], mode)
            # from the first result on: a log time axis shows the early race and the long tail
            axis.step([t / 3600 for t in times[1:]], values[1:], where="post", color=color, label=split_label(g))
        axis.set_xscale("log")
        axis.set_title(algorithm)
        axis.set_xlabel("time (hours, log scale)")
    axes[0][0].set_ylabel(f"best {metric_name} so far")
    axes[0][-1].legend(title="per trial", fontsize="small")
    figure.tight_layout()
    atomic_save_figure(out_dir / "best_so_far.png", figure)
    plt.close(figure)
    written.append("best_so_far.png")

    figure, axes = plt.subplots(len(algorithms), 2, figsize=(11, 2.8 * len(algorithms)), squeeze=False)
    for row, algorithm in enumerate(algorithms):
        entry = plan["algorithms"][algorithm]
        for column, which in enumerate(("best", "worst")):
            g = entry[which]["gpus_per_trial"]
            times, held = occupancy(events[(algorithm, float(g))])
            axis = axes[row][column]
            axis.step([t / 3600 for t in times], held, where="post", color="C0" if which == "best" else "C3")
            axis.axhline(plan["budget"], color="grey", linestyle="--", linewidth=1)
            axis.set_ylim(0, plan["budget"] * 1.05)
            axis.set_title(f"{algorithm}, {which} split: {split_label(g)} per trial")
            axis.set_xlabel("time (hours)")
            axis.set_ylabel("GPUs busy" if g >= 1 else "GPUs busy (shares)")
    figure.tight_layout()
    atomic_save_figure(out_dir / "occupancy.png", figure)
    plt.close(figure)
    written.append("occupancy.png")
    return written
