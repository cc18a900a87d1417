"""The sweep's plots (seaborn PNGs, saved atomically):

* ``makespan.png``: mean makespan against GPUs per trial (log2 axis), a line per algorithm with
  its 95% t-interval band;
* ``best_so_far.png``: the best metric reached so far against time (log axis), a line per
  split in a discrete palette (one colour per split, the same in every panel, one legend for
  the figure), a panel per algorithm, for the seed the title names;
* ``occupancy.png``: GPUs busy over time for the best and the worst split of each algorithm,
  for the seed the title names, against the labelled budget line.

Times are in the unit that reads best for the plot (s, min or h), as in the terminal table.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from nasalloc.io import atomic_save_figure

from .labels import MIN_SEEDS_FOR_INTERVAL, split_label, split_tick, time_unit


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def best_so_far(events: list, mode: str) -> tuple:
    """(times, best metric so far) as a step function (``where="post"``): a point where the best
    improves and one at the last epoch record, so the line reaches the run's end: the same steps
    as a point after every epoch record, in tens of points instead of thousands (the plot's time
    is its text and tick layout either way; this keeps the figure's data small)."""
    times, values, best, last = [0.0], [float("nan")], None, None
    for e in events:
        if e["kind"] != "epoch" or e.get("metric") is None:
            continue
        metric, last = e["metric"], e["time_s"]
        if best is None or (metric > best if mode == "max" else metric < best):
            best = metric
            times.append(last)
            values.append(best)
    if last is not None and last != times[-1]:
        times.append(last)
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


def split_palette(sns, splits: list) -> dict:
    """One clearly different colour per split (tab10 holds 10; tab20 beyond), the same in every panel."""
    ordered = sorted(set(float(g) for g in splits))
    colors = sns.color_palette("tab10" if len(ordered) <= 10 else "tab20", n_colors=len(ordered))
    return dict(zip(ordered, colors))


def plot_all(out_dir, plan: dict, events: dict, mode: str, metric_name: str, jobs: int = 1) -> list:
    """The three figures (their names, in FIGURES order); with ``jobs`` >= 2 the slowest is drawn
    in a forked process while this one draws the other two (drawing is matplotlib's text and tick
    layout: about a second of one core for the three)."""
    _pyplot()  # imported and themed before the fork: the child inherits both
    global _FIGURE_INPUT
    _FIGURE_INPUT = (Path(out_dir), plan, events, mode, metric_name)
    try:
        if jobs < 2 or "fork" not in multiprocessing.get_all_start_methods():
            return [_draw(name) for name in FIGURES]
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_end_with_parent, initargs=(os.getpid(),)) as pool:
            # the inputs reach the child by the fork, not by pickling (the records are megabytes)
            slowest = pool.submit(_draw, "best_so_far.png")
            for name in FIGURES:
                if name != "best_so_far.png":
                    _draw(name)
            slowest.result()  # its error, if any, is this call's
        return list(FIGURES)
    finally:
        _FIGURE_INPUT = None


FIGURES = ("makespan.png", "best_so_far.png", "occupancy.png")
_FIGURE_INPUT = None  # (out_dir, plan, events, mode, metric_name) while plot_all runs


def _end_with_parent(parent_pid: int) -> None:
    from nasalloc.lifetime import end_with_parent

    end_with_parent(parent_pid)  # a figure process must not outlive the sweep


def _draw(name: str) -> str:
    """Draw and save one of FIGURES (atomically); its name."""
    plt, sns = _pyplot()
    out_dir, plan, events, mode, metric_name = _FIGURE_INPUT
    figure = {"makespan.png": _makespan_figure, "best_so_far.png": _best_so_far_figure,
              "occupancy.png": _occupancy_figure}[name](plt, sns, plan, events, mode, metric_name)
    atomic_save_figure(out_dir / name, figure, tight_layout=True)  # figure.tight_layout(), one pass fewer
    plt.close(figure)
    return name


def _shown_seeds(plan: dict) -> tuple:
    shown_seed = {a: plan["algorithms"][a]["events"]["seed"] for a in plan["algorithms"]}
    return shown_seed, ", ".join(sorted({str(s) for s in shown_seed.values()}))


def _makespan_figure(plt, sns, plan: dict, events: dict, mode: str, metric_name: str):
    algorithms = list(plan["algorithms"])
    seeds = len(plan["seeds"])
    figure, axis = plt.subplots(figsize=(7, 4.5))
    palette = dict(zip(algorithms, sns.color_palette(n_colors=len(algorithms))))
    longest = max(s["makespan_s"] for a in algorithms for s in plan["algorithms"][a]["splits"])
    divisor, unit = time_unit(longest)
    for algorithm in algorithms:
        splits = plan["algorithms"][algorithm]["splits"]
        xs = [s["gpus_per_trial"] for s in splits]
        sns.lineplot(x=xs, y=[s["makespan_s"] / divisor for s in splits], marker="o", label=algorithm,
                     color=palette[algorithm], ax=axis)
        if seeds >= MIN_SEEDS_FOR_INTERVAL:  # fewer seeds give no interval worth drawing
            axis.fill_between(xs, [s["makespan_ci95_s"][0] / divisor for s in splits],
                              [s["makespan_ci95_s"][1] / divisor for s in splits], color=palette[algorithm], alpha=0.2)
    axis.set_xscale("log", base=2)
    ticks = sorted({s["gpus_per_trial"] for a in algorithms for s in plan["algorithms"][a]["splits"]})
    axis.set_xticks(ticks, [split_tick(g) for g in ticks])
    axis.minorticks_off()
    axis.set_xlabel("GPUs per trial")
    axis.set_ylabel(f"makespan ({unit})")
    spread = (f"mean makespan and 95% interval over {seeds} seeds" if seeds >= MIN_SEEDS_FOR_INTERVAL
              else f"mean makespan over {seeds} seed{'s' if seeds != 1 else ''} (no interval below "
                   f"{MIN_SEEDS_FOR_INTERVAL})")
    axis.set_title(f"Budget {plan['budget']} GPUs: {spread}")
    return figure


def _best_so_far_figure(plt, sns, plan: dict, events: dict, mode: str, metric_name: str):
    algorithms = list(plan["algorithms"])
    _, seed_text = _shown_seeds(plan)
    every_split = [s["gpus_per_trial"] for a in algorithms for s in plan["algorithms"][a]["splits"]]
    colors = split_palette(sns, every_split)
    ends = [e["time_s"] for key, evs in events.items() for e in evs if e["kind"] == "epoch"] or [1.0]
    divisor, unit = time_unit(max(ends))
    figure, axes = plt.subplots(1, len(algorithms), figsize=(5.5 * len(algorithms), 4.2), squeeze=False,
                                sharey=True)
    for axis, algorithm in zip(axes[0], algorithms):
        splits = [s["gpus_per_trial"] for s in plan["algorithms"][algorithm]["splits"]]
        for g in splits:
            times, values = best_so_far(events[(algorithm, float(g))], mode)
            # from the first result on: a log time axis shows the early race and the long tail
            axis.step([t / divisor for t in times[1:]], values[1:], where="post", color=colors[float(g)],
                      label=split_label(g))
        axis.set_xscale("log")
        axis.set_title(algorithm)
        axis.set_xlabel(f"time ({unit}, log scale)")
    axes[0][0].set_ylabel(f"best {metric_name} so far")
    handles = [plt.Line2D([], [], color=colors[g], label=split_label(g)) for g in sorted(colors)]
    figure.suptitle(f"Best {metric_name} so far, seed {seed_text} (one run per split)")
    figure.legend(handles=handles, title="GPUs per trial", loc="center left", bbox_to_anchor=(1.0, 0.5),
                  fontsize="small")
    return figure


def _occupancy_figure(plt, sns, plan: dict, events: dict, mode: str, metric_name: str):
    algorithms = list(plan["algorithms"])
    seeds = len(plan["seeds"])
    shown_seed, seed_text = _shown_seeds(plan)
    figure, axes = plt.subplots(len(algorithms), 2, figsize=(11, 2.8 * len(algorithms)), squeeze=False)
    for row, algorithm in enumerate(algorithms):
        entry = plan["algorithms"][algorithm]
        for column, which in enumerate(("best", "worst")):
            g = entry[which]["gpus_per_trial"]
            times, held = occupancy(events[(algorithm, float(g))])
            divisor, unit = time_unit(max(times))
            axis = axes[row][column]
            axis.step([t / divisor for t in times], held, where="post", color="C0" if which == "best" else "C3")
            axis.axhline(plan["budget"], color="grey", linestyle="--", linewidth=1)
            axis.annotate(f"budget: {plan['budget']} GPUs", xy=(0.99, plan["budget"]), xycoords=("axes fraction", "data"),
                          xytext=(0, 2), textcoords="offset points", ha="right", va="bottom", fontsize="x-small",
                          color="dimgrey")
            axis.set_ylim(0, plan["budget"] * 1.18)
            axis.set_title(f"{algorithm}, {which} split: {split_label(g)} per trial, seed {shown_seed[algorithm]}")
            axis.set_xlabel(f"time ({unit})")
            axis.set_ylabel("GPUs busy" if g >= 1 else "GPUs busy (shares)")
    figure.suptitle(f"GPUs busy over time for seed {seed_text}: one run, the table's makespan is the mean over "
                    f"{seeds} seed{'s' if seeds != 1 else ''}")
    return figure
