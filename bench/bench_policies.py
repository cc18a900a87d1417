"""Predicted makespans of adaptive allocation policies against the best static split.

On the embedded default scenario (published ResNet-50 A100 profile, shipped digits curves, Ray
semantics, one full HyperBand iteration of brackets; ASHA as many trials), for HyperBand, ASHA
and BOHB at each budget: the mean makespan over seeds of every static power-of-two split (the
best is shown), of ``double:G0,eta`` from every start G0 (RASDA's rule with S = eta) and
``double:G0,2``, and of ``fill`` (HyperBand/BOHB), and the gains: best static / policy paired
by seed (the same search and noise seed on both), mean and 95% t-interval, and for ``double``
static:G0 / policy (RASDA's own comparison: ASHA kept on its starting allocation).

    python bench/bench_policies.py [--budgets 64,1024] [--seeds 10] [--jobs 2] [--scenario saturating]

``--scenario saturating``: the same, on a communication-bound variant of the default profile
(constructed, not published: the all-reduce latency s0 raised to t_compute / 8, so a trial on
8 GPUs runs at 50% efficiency and no trial runs more than 8x faster than on one GPU, about
5-6x across nodes); written to ``--out`` as ``saturating_profile.json`` and used like a
``--profile``. ``--profile PATH`` runs any other profile (e.g. the committed CPU profile
results/reference/digits_cpu_profile.json, where two ranks are slower than one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor

from nasalloc.simulator.policies import Policy, placeable
from nasalloc.simulator.policysweep import run_one as run_policy
from nasalloc.simulator.report import t_interval
from nasalloc.simulator.setup import prepare
from nasalloc.simulator.sweep import _Context, run_one as run_static


def _static(args):
    prepared, algorithm, g, seed = args
    context = _Context(prepared.spec, prepared.time_model, prepared.table, prepared.table.space)
    return ("static", algorithm, g, seed, run_static(context, algorithm, g, seed, False)[0]["makespan_s"])


def _policy(args):
    prepared, algorithm, policy, seed = args
    row, _ = run_policy(prepared.spec, prepared.time_model, prepared.table, algorithm, policy, seed, False)
    return ("policy", algorithm, policy.name, seed, row["makespan_s"])


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def saturating_profile(out_dir: Path) -> Path:
    """The default profile with s0 = t_compute / 8 (see the module docstring)."""
    from importlib.resources import files

    profile = json.loads(files("nasalloc").joinpath("data/default_profile.json").read_text())
    model = profile["model"]
    model["s0"] = model["t_compute"] / 8
    profile["source"] = ("constructed for bench/bench_policies.py --scenario saturating: the embedded default "
                         "profile with the all-reduce latency s0 raised to t_compute / 8 (50% efficiency at 8 GPUs)")
    profile["fit"] = {"kind": "constructed", "r2": None, "loo_rel_error": None, "points": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "saturating_profile.json"
    path.write_text(json.dumps(profile, indent=1))
    return path


def bench(budget: int, seeds: int, jobs: int, profile=None, label: str = "default profile") -> None:
    prepared = prepare(budget=budget, seeds=seeds, out="/tmp/nasalloc-bench-policies",
                       profile_path=None if profile is None else str(profile))
    spec = prepared.spec
    eta = spec.eta
    sizes = placeable(budget, spec.gpus_per_node)
    policies = [Policy("double", budget, spec.gpus_per_node, g, s) for s in sorted({eta, 2}) for g in sizes
                if g < sizes[-1]] + [Policy("fill", budget, spec.gpus_per_node)]
    tasks = [(_static, (prepared, a, g, s)) for a in spec.algorithms for g in spec.splits for s in spec.seeds]
    tasks += [(_policy, (prepared, a, p, s)) for a in spec.algorithms for p in policies
              if not (p.kind == "fill" and a == "asha") for s in spec.seeds]
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_call, tasks))
    elapsed = time.perf_counter() - began
    by_seed: dict = {}
    for kind, algorithm, what, seed, makespan in results:
        by_seed.setdefault((algorithm, kind, what), {})[seed] = makespan
    means = {k: sum(v.values()) / len(v) for k, v in by_seed.items()}
    speedups = ", ".join(f"{g:g}: {prepared.time_model.reference_epoch_seconds(1, 1) / _epoch(prepared, g):.1f}x"
                         for g in sizes if g > 1)
    print(f"\n== budget {budget} GPUs ({spec.gpus_per_node} per node), {seeds} seeds, {label}, default curves; "
          f"epoch speedup over 1 GPU {speedups} ({len(results)} runs in {elapsed:.0f} s) ==")
    for algorithm in spec.algorithms:
        statics = {what: m for (a, kind, what), m in means.items() if a == algorithm and kind == "static"}
        best_g = min(statics, key=statics.get)
        best = by_seed[(algorithm, "static", best_g)]
        print(f"{algorithm}: best static {best_g:g} GPUs/trial {hours(statics[best_g])}")
        line = []
        for (a, kind, what), runs in by_seed.items():
            if a == algorithm and kind == "policy":
                gain, low, high = t_interval([best[s] / runs[s] for s in runs], clip_at_zero=False)
                start = float(what.split(":")[1].split(",")[0]) if what.startswith("double") else None
                own = f", {statics[start] / means[(a, kind, what)]:.2f}x static:{start:g}" if start in statics else ""
                line.append(f"{what} {hours(means[(a, kind, what)])} ({gain:.2f}x [{low:.2f}, {high:.2f}] best{own})")
        for k in range(0, len(line), 2):
            print("    " + "; ".join(line[k:k + 2]))


def _epoch(prepared, g: int) -> float:
    n = prepared.spec.gpus_per_node
    return prepared.time_model.reference_epoch_seconds(g, 1 if g <= n else g // n)


def _call(task):
    function, args = task
    return function(args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="64,1024")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--scenario", choices=("default", "saturating"), default="default")
    parser.add_argument("--profile", default=None, help="any profile.json instead of the scenario's")
    parser.add_argument("--out", default="/tmp/nasalloc-bench-policies")
    args = parser.parse_args()
    profile, label = None, "default profile"
    if args.profile:
        profile, label = Path(args.profile), f"profile {args.profile}"
    elif args.scenario == "saturating":
        profile, label = saturating_profile(Path(args.out)), "saturating profile (s0 = t_compute/8, constructed)"
    for budget in (int(b) for b in args.budgets.split(",")):
        bench(budget, args.seeds, args.jobs, profile, label)


if __name__ == "__main__":
    main()
