"""What the plan says about a chain of allocations: per split, time to result and what was lost.

Under an allocation model (``nasalloc simulate --time-limit ... --node-mtbf ...``) a split's
``makespan_s`` in the plan *is* its time to result: wall time from the first allocation's start
to the last result, queue waits included. :func:`annotate_chain` adds to every split summary
the means over seeds of the rest (``compute_s``: time inside allocations; ``allocations``;
GPU-hours lost to checkpoints, restarts, node failures, and idle), and to every algorithm the
split that would have been best without the model (``best_without_model``), so the summary can
say when the recommendation changes.
"""

from __future__ import annotations

from .labels import duration, split_label

FIELDS = ("free_makespan_s", "compute_s", "allocations", "failures", "failed_trials", "lost_checkpoint_gpu_h",
          "lost_restart_gpu_h", "lost_failure_gpu_h", "idle_gpu_h")


def _mean(values) -> float:
    values = [float(v) for v in values if v not in (None, "")]
    return sum(values) / len(values) if values else float("nan")


def annotate_chain(plan: dict, rows: list, model) -> None:
    """Add the chain's columns to ``plan`` (in place); see the module docstring."""
    from dataclasses import asdict

    plan["allocation"] = {**asdict(model), "description": model.describe()}
    for algorithm, entry in plan["algorithms"].items():
        for split in entry["splits"]:
            runs = [r for r in rows if r["algorithm"] == algorithm
                    and float(r["gpus_per_trial"]) == split["gpus_per_trial"]]
            split["time_to_result_s"] = split["makespan_s"]
            for name in FIELDS:
                split[name] = _mean(r.get(name) for r in runs)
        for which in ("best", "worst"):  # the plan's copies of the chosen splits
            chosen = next(s for s in entry["splits"] if s["gpus_per_trial"] == entry[which]["gpus_per_trial"])
            entry[which] = chosen
        free = min(entry["splits"], key=lambda s: (s["free_makespan_s"], s["gpus_per_trial"]))
        entry["best_without_model"] = {"gpus_per_trial": free["gpus_per_trial"],
                                       "parallel_trials": free["parallel_trials"],
                                       "makespan_s": free["free_makespan_s"]}


def chain_lines(plan: dict) -> str:
    """The per-split table of the chain and a line per algorithm whose best split changed."""
    header = ["algorithm", "split", "time to result", "compute", "allocations", "lost: checkpoints",
              "restarts", "failures", "idle GPU-h", "no limits"]
    lines = []
    for algorithm, entry in plan["algorithms"].items():
        for s in entry["splits"]:
            best = " <- best" if s["gpus_per_trial"] == entry["best"]["gpus_per_trial"] else ""
            lines.append([algorithm, f"{split_label(s['gpus_per_trial'])} x{s['parallel_trials']}",
                          duration(s["time_to_result_s"]) + best, duration(s["compute_s"]),
                          f"{s['allocations']:.1f}", f"{s['lost_checkpoint_gpu_h']:.2f} GPU-h",
                          f"{s['lost_restart_gpu_h']:.2f} GPU-h", f"{s['lost_failure_gpu_h']:.2f} GPU-h",
                          f"{s['idle_gpu_h']:.1f}", duration(s["free_makespan_s"])])
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    render = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [f"allocation model: {plan['allocation']['description']}", render(header),
           render(["-" * w for w in widths]), *map(render, lines)]
    for algorithm, entry in plan["algorithms"].items():
        free, best = entry["best_without_model"], entry["best"]
        if plan["objective"] == "makespan" and free["gpus_per_trial"] != best["gpus_per_trial"]:
            out.append(f"{algorithm}: the best split changes under the allocation model: "
                       f"{split_label(best['gpus_per_trial'])} x{best['parallel_trials']} "
                       f"({duration(best['time_to_result_s'])} to result) instead of "
                       f"{split_label(free['gpus_per_trial'])} x{free['parallel_trials']} "
                       f"({duration(free['makespan_s'])} without limits or failures)")
        elif plan["objective"] == "makespan":
            out.append(f"{algorithm}: the best split is the same with and without the allocation model "
                       f"({split_label(best['gpus_per_trial'])} x{best['parallel_trials']})")
    return "\n".join(out)
