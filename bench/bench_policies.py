"""Predicted makespans of adaptive allocation policies against the best static split.

On the embedded default scenario (published ResNet-50 A100 profile, shipped digits curves, Ray
semantics, one full HyperBand iteration of brackets; ASHA as many trials), for HyperBand, ASHA
and BOHB at each budget: the mean makespan over seeds of every static power-of-two split (the
best is shown), of ``double:G0,eta`` from every start G0 (RASDA's rule with S = eta) and
``double:G0,2``, and of ``fill`` (HyperBand/BOHB), and the gains best static / policy and, for
``double``, static:G0 / policy (RASDA's own comparison: ASHA kept on its starting allocation).

    python bench/bench_policies.py [--budgets 64,1024] [--seeds 3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

from nasalloc.simulator.policies import Policy, placeable
from nasalloc.simulator.policysweep import run_one as run_policy
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


def bench(budget: int, seeds: int, jobs: int) -> None:
    prepared = prepare(budget=budget, seeds=seeds, out="/tmp/nasalloc-bench-policies")
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
    means: dict = {}
    for kind, algorithm, what, _, makespan in results:
        means.setdefault((algorithm, kind, what), []).append(makespan)
    means = {k: sum(v) / len(v) for k, v in means.items()}
    print(f"\n== budget {budget} GPUs ({spec.gpus_per_node} per node), {seeds} seeds, default profile and curves "
          f"({len(results)} runs in {elapsed:.0f} s) ==")
    for algorithm in spec.algorithms:
        statics = {what: m for (a, kind, what), m in means.items() if a == algorithm and kind == "static"}
        best_g = min(statics, key=statics.get)
        best = statics[best_g]
        print(f"{algorithm}: best static {best_g:g} GPUs/trial {hours(best)}")
        line = []
        for (a, kind, what), m in means.items():
            if a == algorithm and kind == "policy":
                start = float(what.split(":")[1].split(",")[0]) if what.startswith("double") else None
                own = f", {statics[start] / m:.2f}x static:{start:g}" if start in statics else ""
                line.append(f"{what} {hours(m)} ({best / m:.2f}x best{own})")
        for k in range(0, len(line), 3):
            print("    " + "; ".join(line[k:k + 3]))


def _call(task):
    function, args = task
    return function(args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="64,1024")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    for budget in (int(b) for b in args.budgets.split(",")):
        bench(budget, args.seeds, args.jobs)


if __name__ == "__main__":
    main()
