"""The profile's second plot: the measured gradient noise scale B_noise against the epoch of
training, with its 95% bootstrap interval, and the global batch the config trained with (a
global batch above B_noise is past the critical batch: more samples per step buy little)."""

from __future__ import annotations

from pathlib import Path

from nasalloc.io import atomic_save_figure


def plot_noise_scale(profile: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    noise = profile["noise_scale"]
    points = [p for p in noise["points"] if p.get("b_noise") is not None]
    sns.set_theme(style="whitegrid", context="notebook")
    figure, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p["epoch"] for p in points]
    ys = [p["b_noise"] for p in points]
    low = [p["b_noise"] - (p["b_noise_ci95"][0] if p["b_noise_ci95"][0] is not None else p["b_noise"]) for p in points]
    high = [(p["b_noise_ci95"][1] if p["b_noise_ci95"][1] is not None else p["b_noise"]) - p["b_noise"] for p in points]
    ax.errorbar(xs, ys, yerr=[low, high], marker="o", color="C0", capsize=4, label="B_noise (95% bootstrap)")
    batch = noise.get("global_batch")
    if batch:
        ax.axhline(batch, color="C3", ls="--", lw=1.2, label=f"global batch of the config ({batch})")
    if xs and min(xs) >= 1:
        ax.set_xscale("log")
    else:  # epoch 0 (before training) on the axis too
        ax.set_xscale("symlog", linthresh=1, linscale=0.3)
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("epoch of training (reference config, one rank)")
    ax.set_ylabel("gradient noise scale B_noise (samples)")
    name = profile.get("workload", {}).get("name", "workload")
    ax.set_title(f"{name}: gradient noise scale along training (batches {noise['batch_small']} vs "
                 f"{noise['batch_big']}, {noise['steps']} steps per point)", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    atomic_save_figure(Path(path), figure)
    plt.close(figure)
    return Path(path)
