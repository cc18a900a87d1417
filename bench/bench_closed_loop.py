"""The closed loop on this machine: profile -> simulate -> validate --repeats N, and how close
the prediction came, per algorithm and split, with intervals.

    python bench/bench_closed_loop.py --out DIR [--setting digits|digits-long] [--algorithms hyperband,asha,bohb]
                                      [--repeats 3] [--print-only]
    python bench/bench_closed_loop.py --out DIR --setting digits --executor ray --brackets 2 --repeats 1
                                      # Ray Tune's own schedulers run the splits

Two settings, both budget 2 (CPU ranks stand in for GPUs), splits 0.5, 1 and 2, max_t 9, one
bracket:

* ``digits``: epochs of a few hundredths of a second, so start-up dominates every trial;
* ``digits-long``: the same space with 20 passes per epoch (epochs of ~1 s), its own recorded
  curves (bench/data/digits_long_curves.csv.gz), so training weighs against start-up and the
  runner's round trip about as it does on a GPU cluster.

Per setting it profiles once (``--repeats 3`` launches per g: start-up mean and its CV; the
runner's round trip), simulates every algorithm once, and runs ``nasalloc validate --which all
--repeats N`` per algorithm into ``DIR/<setting>/validate_<algorithm>`` (run the algorithms as
separate invocations to keep each under a quarter of an hour; what exists is reused, a
validation in progress resumes). Then it prints, from every validation found in DIR, per
algorithm and split: measured mean +- half-width of its 95% t-interval, predicted mean +- the
95% interval of the mean of N simulated runs, the relative error of the means, whether the
measured mean lies inside the predicted interval, the share of runs inside the predicted
interval of one run, the time-model / scheduling split of the error, and per algorithm the
share of rounds whose measured order of splits is the predicted one. ``--print-only`` prints
without running anything.

``--executor ray`` validates with Ray Tune itself (Ray's schedulers decide; the profile is taken
with ``--launcher ray`` and the plan simulated with the default ``--semantics ray``) into
``DIR/<setting>-ray``; ``--brackets`` sets the plan's number of brackets (default 1).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "digits": {"workload": "digits", "curves": None},
    "digits-long": {"workload": "digits-long",
                    "curves": str(Path(__file__).resolve().parent / "data" / "digits_long_curves.csv.gz")},
}
SPLITS = "0.5,1,2"


def nasalloc(*args) -> None:
    print("$ nasalloc " + " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "nasalloc", *map(str, args)], check=True)


def prepare(root: Path, setting: str, args) -> Path:
    """Profile and simulate a setting once; the plan's path."""
    spec = SETTINGS[setting]
    ray = args.executor == "ray"
    root.mkdir(parents=True, exist_ok=True)
    profile = root / "profile.json"
    if not profile.exists():
        launcher = args.launcher or ("ray" if ray else "local")
        nasalloc("profile", "--gpus", "0.5,1,2", "--device", "cpu", "--workload", spec["workload"],
                 "--launcher", launcher, "--noise-epochs", "none", "--repeats", args.profile_repeats,
                 "--out", profile)
    plan = root / "simulate" / "plan.json"
    if not plan.exists():
        curves = ["--curves", spec["curves"]] if spec["curves"] else []
        nasalloc("simulate", "--profile", profile, "--budget", 2, "--gpus-per-node", 2, "--gpus-per-trial", SPLITS,
                 "--algorithms", "hyperband,asha,bohb", "--max-epochs", args.max_epochs, "--eta", 3,
                 "--brackets", args.brackets, "--seeds", 3, *curves,
                 "--out", root / "simulate", "--quiet")
    return plan


def validate(root: Path, plan: Path, algorithm: str, repeats: int, time_limit=None, executor="local") -> None:
    out = root / f"validate_{algorithm}"
    if (out / "report.json").exists() and json.loads((out / "report.json").read_text()).get("complete") \
            and json.loads((out / "report.json").read_text()).get("repeats") == repeats:
        return
    resume = ["--resume"] if (out / "validation.json").exists() else []
    limit = ["--time-limit", time_limit] if time_limit else []
    command = ["validate", "--plan", plan, "--algorithms", algorithm, "--which", "all", "--device", "cpu",
               "--repeats", repeats, "--executor", executor, "--out", out, "--quiet", *resume, *limit]
    print("$ nasalloc " + " ".join(map(str, command)), flush=True)
    code = subprocess.run([sys.executable, "-m", "nasalloc", *map(str, command)]).returncode
    if code == 124:
        print(f"{algorithm}: time limit reached; run the bench again to resume", flush=True)
    elif code:
        raise SystemExit(f"nasalloc validate exited {code}")


def print_table(out: Path) -> None:
    print(f"{'setting':<12} {'algorithm':<10} {'g':>4} {'measured s (95%)':>17} {'predicted s (95%)':>18} "
          f"{'error':>6} {'inside':>6} {'runs in':>7} {'model':>6} {'sched':>6}")
    held = []
    for setting in [*SETTINGS, *(f"{name}-ray" for name in SETTINGS)]:
        for algorithm in ("hyperband", "asha", "bohb"):
            path = out / setting / f"validate_{algorithm}" / "report.json"
            if not path.exists():
                continue
            report = json.loads(path.read_text())
            for s in report["splits"]:
                print(f"{setting:<12} {algorithm:<10} {s['gpus_per_trial']:>4g} "
                      f"{_pm(s['measured_mean_s'], s['measured_low_s'], s['measured_high_s']):>17} "
                      f"{_pm(s['predicted_mean_s'], s['predicted_low_s'], s['predicted_high_s']):>18} "
                      f"{_pct(s['makespan_rel_error']):>6} {_yes(s['mean_inside']):>6} {_share(s['runs_inside']):>7} "
                      f"{_pct(s['time_model_error']):>6} {_pct(s['scheduling_error']):>6}")
            a = report["algorithms"][algorithm]
            speedup = (f"speedup best/worst measured {a['measured_speedup']:.2f}x "
                       f"[{_num(a.get('measured_speedup_low'))}, {_num(a.get('measured_speedup_high'))}], "
                       f"predicted {a['predicted_speedup']:.2f}x; " if a.get("measured_speedup") else "")
            held.append(f"{setting:<12} {algorithm:<10} {speedup}predicted order {a['predicted_order']} held in "
                        f"{_share(a['order_held_fraction'])} of {a['order_rounds']} round(s); best split "
                        f"{_yes(a['best_held'])}")
    print("\n".join(held))


def _pm(mean, low, high) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f} ± {(high - low) / 2:.1f}" if low is not None and high is not None else f"{mean:.1f}"


def _pct(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:+.0f}%"


def _share(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _yes(value) -> str:
    return {True: "yes", False: "no", None: "-"}[value]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for profiles, plans and validations (reused)")
    parser.add_argument("--setting", default="digits,digits-long", help="digits, digits-long or both")
    parser.add_argument("--algorithms", default="hyperband,asha,bohb")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile-repeats", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per validation; it then checkpoints and a rerun resumes it")
    parser.add_argument("--brackets", type=int, default=1)
    parser.add_argument("--executor", default="local", help="validate --executor: local, or ray (Ray Tune's own "
                        "schedulers run the splits)")
    parser.add_argument("--launcher", default=None, help="profile --launcher [default: ray with --executor ray, "
                        "else local]")
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    began = time.monotonic()
    if not args.print_only:
        for setting in [s.strip() for s in args.setting.split(",") if s.strip()]:
            root = out / (setting if args.executor == "local" else f"{setting}-{args.executor}")
            plan = prepare(root, setting, args)
            for algorithm in [a.strip() for a in args.algorithms.split(",") if a.strip()]:
                validate(root, plan, algorithm, args.repeats, args.time_limit, args.executor)
        print(f"\n{time.monotonic() - began:.0f} s in all; files in {out}")
    print(f"\nclosed loop on this machine (budget 2 CPU ranks, splits {SPLITS}, max_t {args.max_epochs}, {args.brackets} bracket(s), "
          f"{args.repeats} runs per split; 95% intervals: measured t-interval, predicted interval of the mean)")
    print_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
