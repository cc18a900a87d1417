"""Benchmark: what `nasalloc profile` costs beyond plain training, and how well its fit predicts.

Measured side by side in one run, alternating so machine load hits both alike:

* plain: the same DDP jobs (g = 1 and 2 ranks, gloo on CPU, digits' reference config) doing
  only warm-up + measured epochs through the same launcher, with no profiling around them;
* profile: ``nasalloc profile --gpus 1,2`` with the same epochs (which also times start-up and a
  checkpoint, fits the model, writes the profile and its plot).

Printed: wall-clock ratio profile / plain (whole command), the ratio of mean epoch seconds
inside the profiler to those of the plain loop (the measurement's own overhead), and the fit's
leave-one-out relative error and R² on each CPU profile.

    python bench/bench_profiler.py [--rounds 2] [--warmup 1] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plain_rank(args) -> None:
    """One rank of the plain loop: build the trainer, train, rank 0 writes epoch seconds."""
    from nasalloc.workloads.distributed import init_from_env
    from nasalloc.workloads.registry import load_workload

    ctx = init_from_env("cpu")
    workload = load_workload("digits")
    trainer = workload.make_trainer(workload.reference_config(), seed=0, device="cpu")
    seconds = []
    for _ in range(args.warmup + args.epochs):
        began = time.perf_counter()
        trainer.train_epoch()
        seconds.append(time.perf_counter() - began)
    ctx.destroy()
    if ctx.is_main:
        Path(args.result).write_text(json.dumps(seconds[args.warmup:]))


def run_plain(ranks: int, warmup: int, epochs: int, scratch: Path) -> tuple:
    from nasalloc.profiler.launch import DDPJob, LocalLauncher, run_job

    result = scratch / f"plain{ranks}.json"
    job = DDPJob(module="bench_profiler", args=["--plain-rank", "--result", str(result), "--warmup", str(warmup),
                                                 "--epochs", str(epochs)],
                 ranks=ranks, env={"PYTHONPATH": str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")},
                 name=f"plain{ranks}")
    began = time.perf_counter()
    running = run_job(LocalLauncher(), job, timeout=600)
    wall = time.perf_counter() - began
    if running.returncode != 0:
        raise SystemExit(f"plain loop failed: {running.failure}\n{running.stderr_tail()}")
    return wall, statistics.mean(json.loads(result.read_text()))


def run_profile(warmup: int, epochs: int, scratch: Path) -> tuple:
    out = scratch / "profile.json"
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nasalloc", "profile", "--gpus", "1,2", "--device", "cpu",
                           "--workload", "digits", "--warmup", str(warmup), "--epochs", str(epochs), "--quiet",
                           "--noise-epochs", "none",  # the timing profiler's overhead only (noise: bench_batch_scaling)
                           "--out", str(out)], capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"profile failed:\n{done.stderr}")
    return wall, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--plain-rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_rank:
        plain_rank(args)
        return

    wall_ratios, epoch_ratios, loo, r2 = [], {1: [], 2: []}, [], []
    with tempfile.TemporaryDirectory(prefix="bench-profiler-") as tmp:
        scratch = Path(tmp)
        for round_ in range(args.rounds):
            plain_wall, plain_epoch = 0.0, {}
            for ranks in (1, 2):
                wall, epoch = run_plain(ranks, args.warmup, args.epochs, scratch)
                plain_wall += wall
                plain_epoch[ranks] = epoch
            profile_wall, profile = run_profile(args.warmup, args.epochs, scratch)
            wall_ratios.append(profile_wall / plain_wall)
            for m in profile["measurements"]:
                epoch_ratios[m["gpus"]].append(statistics.mean(m["epoch_seconds"]) / plain_epoch[m["gpus"]])
            loo.append(profile["fit"]["loo_rel_error"])
            r2.append(profile["fit"]["r2"])
            print(f"round {round_ + 1}/{args.rounds}: plain {plain_wall:.1f} s "
                  f"(epoch {plain_epoch[1]:.3f} s at g=1, {plain_epoch[2]:.3f} s at g=2), "
                  f"profile {profile_wall:.1f} s; fit LOO error {loo[-1]:.1%}, R² {r2[-1]:.3f}", flush=True)
    print(f"profiler wall time / plain training of the same epochs: {statistics.median(wall_ratios):.2f}x "
          f"(median of {args.rounds}; includes start-up and checkpoint timing, fit and plot)")
    for g, ratios in epoch_ratios.items():
        print(f"epoch seconds inside the profiler / plain loop at g={g}: {statistics.median(ratios):.3f}x")
    print(f"fit leave-one-out relative error on the CPU profile (g=1,2): median {statistics.median(loo):.1%}; "
          f"R² median {statistics.median(r2):.3f}")


if __name__ == "__main__":
    main()
