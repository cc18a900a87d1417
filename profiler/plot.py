"""The profile's plot: measured throughput against GPUs, the fitted model and ideal scaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nasalloc.io import atomic_save_figure
from nasalloc.simulator.scaling import ScalingModel


def throughput_frame(profile: dict):
    """One row per measured epoch: gpus, samples/s (per trial when co-located), kind."""
    import pandas as pd

    rows = []
    for m in profile["measurements"]:
        label = "DDP job" if m["kind"] == "ddp" else "co-located trial (per trial)"
        if m["kind"] == "ddp" and m.get("nodes", 1) > 1:
            label = "DDP job, several nodes"
        rows += [{"gpus": float(m["gpus"]), "samples_per_s": float(x), "measured": label}
                 for x in m["samples_per_second"]]
    return pd.DataFrame(rows)


def plot_profile(profile: dict, path: Path) -> Path:
    """Write the throughput plot of ``profile`` as a PNG at ``path`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    model = ScalingModel.from_dict(profile["model"])
    samples = profile["workload"].get("samples_per_epoch")
    frame = throughput_frame(profile)
    sns.set_theme(style="whitegrid", context="notebook")
    figure, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=frame, x="gpus", y="samples_per_s", hue="measured", style="measured", s=45,
                    alpha=0.8, ax=ax, zorder=3)
    high = max(frame["gpus"].max() * 2, 2.0)
    if samples:
        # whole GPU counts only: the model steps at g = 1 -> 2 (synchronisation starts)
        grid = np.arange(1, int(high) + 1, dtype=float)
        fitted = samples / np.array([model.epoch_seconds(g) for g in grid])
        inside = np.array([not model.extrapolated(g) for g in grid])
        last_inside = int(np.flatnonzero(inside).max()) if inside.any() else 0
        ax.plot(grid[:last_inside + 1], fitted[:last_inside + 1], color="C3", lw=2, marker=".",
                label="fitted model")
        ax.plot(grid[last_inside:], fitted[last_inside:], color="C3", lw=2, ls="--", marker=".",
                label="fitted model (extrapolated)")
        alone = samples / model.epoch_seconds(1.0)
        ax.plot(grid, alone * grid, color="grey", lw=1.2, ls=":", label="ideal linear scaling")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # ideal linear scaling is a straight line on log-log axes
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ticks = sorted({*frame["gpus"].tolist(), *[2.0 ** i for i in range(0, int(np.log2(high)) + 1)]})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    unit = "GPUs" if profile["hardware"]["device"] == "cuda" else "CPU ranks (one thread each, not GPUs)"
    ax.set_xlabel(f"{unit} per trial")
    ax.set_ylabel("training samples / s (whole epoch)")
    fit = profile["fit"]
    quality = f"R² {fit['r2']:.3f}" if fit.get("r2") is not None else "R² n/a"
    if fit.get("loo_rel_error") is not None:
        quality += f", LOO error {fit['loo_rel_error']:.1%}"
    ax.set_title(f"{profile['workload'].get('name', 'workload')} on {profile['hardware']['device']}: "
                 f"throughput vs {unit.split(' (')[0]} ({quality})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    atomic_save_figure(Path(path), figure)
    plt.close(figure)
    return Path(path)
