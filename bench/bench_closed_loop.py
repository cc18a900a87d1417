"""The closed loop on this machine: profile -> simulate -> validate, and how close the
prediction came.

    python bench/bench_closed_loop.py [--out DIR] [--budget 2] [--splits 0.5,1,2] [--max-epochs 9]
    python bench/bench_closed_loop.py --executor ray --algorithms hyperband,asha,bohb --brackets 2   # Ray Tune decides

Profiles the digits workload on CPU ranks (the GPU counts of the splits), simulates HyperBand
and ASHA on every split of the budget, runs every split for real (``--which all``), and prints
per split the predicted, re-simulated and measured makespan with the relative errors:
``error`` = (predicted - measured) / measured, split into ``model`` (predicted vs
re-simulated with the measured costs: the time model's error) and ``sched`` (re-simulated vs
measured: the scheduling model's error). Ratios, measured side by side in one run; on a
shared 2-core machine start-up times vary run to run, so read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path


def nasalloc(*args) -> None:
    command = [sys.executable, "-m", "nasalloc", *map(str, args)]
    print("$ nasalloc " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for profile, plan and validation (default: a temp dir)")
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--splits", default="0.5,1,2", help="GPUs per trial (CPU ranks) to simulate and run")
    parser.add_argument("--algorithms", default="hyperband,asha")
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--brackets", type=int, default=1)
    parser.add_argument("--curves", default=None, help="learning curves (default: the shipped digits curves)")
    parser.add_argument("--executor", default="local", help="validate --executor: local, or ray (Ray Tune's own "
                        "schedulers run the splits; then profile with --launcher ray)")
    parser.add_argument("--launcher", default=None, help="profile --launcher [default: ray with --executor ray, "
                        "else local]")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="nasalloc-closed-loop-"))
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    gpus = sorted({g.strip() for g in args.splits.split(",")} | {"1"}, key=lambda g: float(Fraction(g)))
    nasalloc("profile", "--gpus", ",".join(gpus), "--device", "cpu", "--workload", "digits",
             "--launcher", args.launcher or ("ray" if args.executor == "ray" else "local"), "--noise-epochs", "none",
             "--out", out / "profile.json")
    curves = ["--curves", args.curves] if args.curves else []
    nasalloc("simulate", "--profile", out / "profile.json", "--budget", args.budget, "--gpus-per-node",
             args.budget, "--gpus-per-trial", args.splits, "--algorithms", args.algorithms,
             "--max-epochs", args.max_epochs, "--eta", 3, "--brackets", args.brackets, "--seeds", 3,
             *curves, "--out", out / "simulate", "--quiet")
    nasalloc("validate", "--plan", out / "simulate" / "plan.json", "--which", "all", "--device", "cpu",
             "--executor", args.executor, "--out", out / "validate", "--quiet")

    report = json.loads((out / "validate" / "report.json").read_text())
    print()
    print(f"closed loop on this machine (digits, budget {args.budget} CPU ranks, max_t {args.max_epochs}, "
          f"{args.brackets} bracket(s), {args.executor} executor); {time.monotonic() - began:.0f} s in all; files in {out}")
    print(f"{'algorithm':<10} {'g':>4} {'predicted s':>11} {'resim s':>8} {'measured s':>10} "
          f"{'error':>7} {'model':>7} {'sched':>7}")
    for r in report["splits"]:
        print(f"{r['algorithm']:<10} {r['gpus_per_trial']:>4g} {r['predicted_makespan_s']:>11.1f} "
              f"{_f(r['resimulated_makespan_s']):>8} {r['measured_makespan_s']:>10.1f} "
              f"{_pct(r['makespan_rel_error']):>7} {_pct(r['time_model_error']):>7} {_pct(r['scheduling_error']):>7}")
    for algorithm, a in report["algorithms"].items():
        print(f"{algorithm}: predicted order {a['predicted_order']}, measured order {a['measured_order']}"
              + (f"; speedup best/worst predicted {a['predicted_speedup']:.2f}x measured {a['measured_speedup']:.2f}x"
                 if a.get("predicted_speedup") else ""))
    errors = [abs(r["makespan_rel_error"]) for r in report["splits"] if r["makespan_rel_error"] is not None]
    if errors:
        print(f"mean |relative error| of the predicted makespan: {100 * sum(errors) / len(errors):.0f}% "
              f"over {len(errors)} split(s)")
    return 0


def _f(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:+.0f}%"


if __name__ == "__main__":
    sys.exit(main())
