"""``simulate --policies``: adaptive allocation policies beside the static splits.

Each (algorithm, adaptive policy, seed) is simulated with the same scheduler seed, noise seed,
profile and curves as the static sweep's runs, into ``policies.csv`` (rewritten atomically when
all are in; it is recomputed on every call, the static rows resume as before). The report adds
to ``plan.json`` a ``policies`` section per algorithm: the best static split (the plan's best),
the best adaptive policy (lowest mean makespan), the gain (static / adaptive makespan, paired
by seed: mean and 95% t-interval) and the mean best metric of both; and prints one table row
per algorithm. ``occupancy_policies.png`` shows GPUs busy over time for both, first seed.
"""

from __future__ import annotations

import csv
import io
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from nasalloc.errors import UserError
from nasalloc.io import atomic_write_json, atomic_write_text

from .adaptive import simulate_policy
from .labels import MIN_SEEDS_FOR_INTERVAL, duration, interval, split_label
from .policies import Policy
from .report import t_interval
from .schedulers import make_scheduler
from .schedulers.sampling import TableSource

CSV_NAME = "policies.csv"
COLUMNS = ["algorithm", "policy", "budget", "gpus_per_node", "seed", "makespan_s", "gpu_hours", "busy_gpu_hours",
           "utilization", "trials", "epochs", "resizes", "best_metric", "best_test_metric", "sweep_key"]


def check_policies(spec, statics, adaptive, scaling) -> list:
    """Refuse what the policy sweep cannot run (one line each); returns notes."""
    notes = []
    for g in statics:
        if float(g) not in [float(s) for s in spec.splits]:
            raise UserError(f"--policies static:{g:g} is not among the sweep's splits; add it to --gpus-per-trial")
    if scaling is not None and scaling.active and adaptive:
        notes.append("policies under per_gpu: a resized trial's curve continues from where it was at the new "
                     "global batch (noise-scale stretch per segment); validate scales its learning rate by RASDA's "
                     "rule (x ranks for SGD, x sqrt(ranks) for Adam)")
    if any(p.kind == "fill" for p in adaptive) and "asha" in spec.algorithms:
        notes.append("policy fill is for synchronous brackets: not simulated for asha")
    return notes


def _runs(spec, adaptive):
    return [(a, p, s) for a in spec.algorithms for p in adaptive
            if not (p.kind == "fill" and a == "asha") for s in spec.seeds]


def run_one(spec, time_model, table, algorithm: str, policy: Policy, seed: int, keep_events: bool, scaling=None):
    scheduler = make_scheduler(algorithm, source=TableSource(table.space, table.configs), max_t=spec.max_t,
                               min_t=spec.min_t, eta=spec.eta, semantics=spec.semantics, mode=spec.mode, seed=seed,
                               **spec.limits(algorithm))
    result = simulate_policy(scheduler, policy, time_model, table, seed=seed, algorithm=algorithm,
                             record_events=keep_events, scaling=scaling)
    base = result.row()
    row = {"algorithm": algorithm, "policy": policy.name, "budget": spec.budget, "gpus_per_node": spec.gpus_per_node,
           "seed": seed, **{k: base[k] for k in ("makespan_s", "gpu_hours", "busy_gpu_hours", "utilization", "trials",
                                                  "epochs", "best_metric", "best_test_metric")},
           "resizes": result.resizes, "sweep_key": spec.key}
    events = [{k: v for k, v in vars(e).items() if v is not None and v != {}} for e in result.events] \
        if keep_events else None
    return row, events


def _star(args):
    return run_one(*args)


def run_policies(spec, time_model, table, adaptive, out_dir, jobs: int = 1, progress=None, scaling=None):
    """Every adaptive run; returns (rows, events of the first seed per (algorithm, policy))."""
    runs = _runs(spec, adaptive)
    tasks = [(spec, time_model, table, a, p, s, s == spec.seeds[0], scaling) for a, p, s in runs]
    results = []
    if jobs > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
            for k, done in enumerate(pool.map(_star, tasks)):
                results.append(done)
                if progress:
                    progress(k + 1, len(tasks), done[0])
    else:
        for k, task in enumerate(tasks):
            results.append(run_one(*task))
            if progress:
                progress(k + 1, len(tasks), results[-1][0])
    rows = [r for r, _ in results]
    events = {(r["algorithm"], r["policy"]): e for r, e in results if e is not None}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(out_dir) / CSV_NAME, text.getvalue())
    return rows, events


def _mean(values):
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(values) / len(values) if values else None


def compare(plan: dict, static_rows: list, rows: list) -> dict:
    """algorithm -> the best static split against the best adaptive policy (see the module docstring)."""
    out = {}
    for algorithm, entry in plan["algorithms"].items():
        mine = [r for r in rows if r["algorithm"] == algorithm]
        if not mine:
            continue
        policies = []
        for name in dict.fromkeys(r["policy"] for r in mine):
            runs = [r for r in mine if r["policy"] == name]
            mean, low, high = t_interval([float(r["makespan_s"]) for r in runs])
            policies.append({"policy": name, "seeds": len(runs), "makespan_s": mean, "makespan_ci95_s": [low, high],
                             "best_metric": _mean(r["best_metric"] for r in runs),
                             "resizes": _mean(r["resizes"] for r in runs),
                             "utilization": _mean(r["utilization"] for r in runs)})
        best_adaptive = min(policies, key=lambda p: p["makespan_s"])
        best = entry["best"]
        g = float(best["gpus_per_trial"])
        static_by_seed = {int(r["seed"]): float(r["makespan_s"]) for r in static_rows
                          if r["algorithm"] == algorithm and float(r["gpus_per_trial"]) == g}
        ratios = [static_by_seed[int(r["seed"])] / float(r["makespan_s"]) for r in mine
                  if r["policy"] == best_adaptive["policy"] and int(r["seed"]) in static_by_seed
                  and float(r["makespan_s"]) > 0]
        gain, low, high = t_interval(ratios, clip_at_zero=False) if ratios else (None, None, None)
        if len(ratios) >= 3:  # a winner only where the paired interval leaves 1x out
            winner = "adaptive" if low > 1 else "static" if high < 1 else "either"
        else:
            winner = "adaptive" if best_adaptive["makespan_s"] < best["makespan_s"] else "static"
        out[algorithm] = {
            "best_static": {"gpus_per_trial": g, "makespan_s": best["makespan_s"],
                            "makespan_ci95_s": best["makespan_ci95_s"], "best_metric": best.get("best_metric")},
            "best_adaptive": best_adaptive, "gain": gain, "gain_ci95": [low, high], "gain_seeds": len(ratios),
            "recommended": best_adaptive["policy"] if winner == "adaptive" else winner,
            "policies": policies,
        }
    return out


def add_to_plan(out_dir, plan: dict, comparison: dict, notes: list) -> dict:
    plan["policies"] = {"csv": CSV_NAME, "gain": "best static makespan / best adaptive makespan, paired by seed",
                        "algorithms": comparison, "notes": notes}
    atomic_write_json(Path(out_dir) / "plan.json", plan)
    return plan


def policy_table(plan: dict) -> str:
    section = plan.get("policies", {}).get("algorithms", {})
    seeds = len(plan["seeds"])
    metric = plan["metric"]["name"] or "metric"
    header = ["algorithm", "best static (mean, 95% CI)", "best adaptive (mean, 95% CI)", "gain (95% CI)",
              f"{metric} static / adaptive", "recommended"]
    lines = []
    for algorithm, c in section.items():
        s, a = c["best_static"], c["best_adaptive"]
        gain = "n/a" if c["gain"] is None else (
            f"{c['gain']:.2f}x" + (f" [{c['gain_ci95'][0]:.2f}, {c['gain_ci95'][1]:.2f}]"
                                   if c["gain_seeds"] >= MIN_SEEDS_FOR_INTERVAL else f" (n/a: {c['gain_seeds']} seeds)"))
        acc = " / ".join("n/a" if v is None else f"{v:.4f}" for v in (s["best_metric"], a["best_metric"]))
        lines.append([algorithm,
                      f"{split_label(s['gpus_per_trial'])}: {duration(s['makespan_s'])} "
                      f"{interval(*s['makespan_ci95_s'], seeds)}",
                      f"{a['policy']}: {duration(a['makespan_s'])} {interval(*a['makespan_ci95_s'], seeds)}",
                      gain, acc, {"static": "static", "either": "either (interval spans 1x)"}.get(
                          c["recommended"], f"adaptive ({c['recommended']})")])
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in lines]
    return "\n".join(line.rstrip() for line in out)


def plot_occupancy(out_dir, plan: dict, static_events: dict, policy_events: dict) -> None:
    """GPUs busy over time, best static against best adaptive, a panel per algorithm."""
    from nasalloc.io import atomic_save_figure

    from .labels import time_unit
    from .plots import _pyplot, occupancy

    section = plan["policies"]["algorithms"]
    if not section:
        return
    plt, _ = _pyplot()
    fig, axes = plt.subplots(1, len(section), figsize=(5 * len(section), 3.6), squeeze=False)
    for ax, (algorithm, c) in zip(axes[0], section.items()):
        pairs = [(f"static {split_label(c['best_static']['gpus_per_trial'])}",
                  static_events.get((algorithm, c["best_static"]["gpus_per_trial"])) or []),
                 (c["best_adaptive"]["policy"], policy_events.get((algorithm, c["best_adaptive"]["policy"])) or [])]
        longest = max([e["time_s"] for _, events in pairs for e in events] or [1.0])
        scale, unit = time_unit(longest)
        for label, events in pairs:
            times, held = occupancy(events)
            ax.step([t / scale for t in times], held, where="post", label=label)
        ax.axhline(plan["budget"], color="grey", linestyle="--", linewidth=1, label=f"budget {plan['budget']}")
        ax.set_title(f"{algorithm} (seed {plan['seeds'][0]})")
        ax.set_xlabel(f"time ({unit})")
        ax.set_ylabel("GPUs busy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(Path(out_dir) / "occupancy_policies.png", fig)
    plt.close(fig)
