"""Does the noise-scale model predict how many epochs a larger global batch needs? (issue 13)

On one CPU rank, real torch training of digits' reference config (a small CNN, Adam) at a base
global batch B0 and at 4x, 16x and 64x it:

1. ``nasalloc profile`` measures the gradient noise scale of the config at B0 along training
   (``noise_scale`` of profile.json, epochs 0, 1, 3, 9, 27, 81);
2. at every batch B the learning rate is tuned the cheap way the model assumes is done: the
   square-root rule for Adam (lr0 * sqrt(B/B0)) times each multiplier of ``--lr-grid``, the
   multiplier with the fewest mean epochs to the target kept (``--optimizer sgd``: SGD with
   momentum 0.9 and the linear rule, where McCandlish et al. derive the model);
3. the target is the best of the mean B0 curve (over seeds, 81 epochs, base lr) minus
   ``--tolerance``; a run's epochs-to-target is the first epoch its validation accuracy reaches it;
4. predicted epochs-to-target at B: each seed's B0 curve (tuned lr) stretched by
   ``nasalloc.simulator.batchscaling.stretch_curve`` with the profiled B_noise, exactly as
   ``nasalloc simulate`` stretches curves for a per_gpu split.

It prints measured against predicted per batch, with the error, and beside it the two naive
predictions (today's: the same epochs at every batch; noise-free: B/B0 times the epochs), and
writes the table with its provenance to ``--out`` (.csv and .md).

    nice -n 10 python bench/bench_batch_scaling.py            # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-batch", type=int, default=16)
    parser.add_argument("--multiples", default="1,4,16,64")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr-grid", default="0.5,1,2", help="multipliers of the scaled lr tried at each batch")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help="the reference config's optimizer (adam) or SGD with momentum 0.9")
    parser.add_argument("--lr", type=float, default=None, help="lr at B0 [default: the reference config's]")
    parser.add_argument("--lr-rule", choices=("sqrt", "linear"), default=None,
                        help="how the lr grows with the batch [default: sqrt for adam, linear for sgd]")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--base-epochs", type=int, default=81, help="epochs of the recorded B0 curves")
    parser.add_argument("--cap", type=int, default=600, help="most epochs a run at a larger batch may train")
    parser.add_argument("--noise-steps", type=int, default=32)
    parser.add_argument("--ranks", type=int, default=2,
                        help="also train per_gpu (batch B0 per rank) on 1 and this many gloo ranks (0: skip)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "data" / "batch_scaling"))
    return parser.parse_args(argv)


def profile_noise(config: dict, steps: int, scratch: Path) -> tuple:
    out = scratch / "profile.json"
    command = [sys.executable, "-m", "nasalloc", "profile", "--gpus", "1", "--device", "cpu", "--workload", "digits",
               "--config", json.dumps(config), "--warmup", "0", "--epochs", "1",
               "--noise-epochs", "0,1,3,9,27,81", "--noise-steps", str(steps), "--out", str(out)]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"profile failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text()), time.perf_counter() - began, " ".join(command[1:])


def train(config: dict, seed: int, epochs: int, target=None) -> list:
    """Validation accuracy after each epoch (stops at the first epoch reaching ``target``)."""
    from nasalloc.workloads.digits import DigitsWorkload

    trainer = DigitsWorkload().make_trainer(config, seed=seed)
    curve = []
    for _ in range(epochs):
        curve.append(trainer.train_epoch().val_metric)
        if target is not None and curve[-1] >= target:
            break
    return curve


def _ddp_rank(rank: int, world: int, port: int, config: dict, seed: int, epochs: int, target: float, out: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    from nasalloc.workloads.digits import DigitsWorkload
    from nasalloc.workloads.distributed import init_from_env

    ctx = init_from_env("cpu")
    trainer = DigitsWorkload(batch_policy="per_gpu").make_trainer(config, seed=seed)
    curve = []
    for _ in range(epochs):
        curve.append(trainer.train_epoch().val_metric)   # every rank gets the same metric
        if curve[-1] >= target:
            break
    if rank == 0:
        Path(out).write_text(json.dumps({"curve": curve, "global_batch": trainer.global_batch}))
    ctx.destroy()


def train_ddp(config: dict, seed: int, ranks: int, epochs: int, target: float) -> tuple:
    """A real gloo DDP run of ``ranks`` one-thread processes with the per_gpu policy."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as scratch:
        out = str(Path(scratch) / "curve.json")
        mp.start_processes(_ddp_rank, args=(ranks, port, config, seed, epochs, target, out), nprocs=ranks,
                           start_method="spawn")
        data = json.loads(Path(out).read_text())
    return data["curve"], data["global_batch"]


def untrained_accuracy(config: dict, seed: int) -> float:
    from nasalloc.workloads.digits import DigitsWorkload

    trainer = DigitsWorkload().make_trainer(config, seed=seed)
    return trainer._accuracy(trainer.data.val_x, trainer.data.val_y)


def first_hit(curve, target):
    hits = [i + 1 for i, v in enumerate(curve) if v >= target]
    return hits[0] if hits else None


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from nasalloc.simulator.batchscaling import NoiseScaleCurve, epochs_to_target, stretch_curve
    from nasalloc.workloads.digits import DigitsWorkload
    from nasalloc.workloads.training import lr_scale

    began = time.perf_counter()
    multiples = [int(m) for m in args.multiples.split(",")]
    grid = [float(m) for m in args.lr_grid.split(",")]
    seeds = list(range(args.seeds))
    base = dict(DigitsWorkload().reference_config(), batch_size=args.base_batch, optimizer=args.optimizer)
    if args.lr is not None:
        base["lr"] = args.lr
    lr0 = float(base["lr"])
    rule = args.lr_rule or ("sqrt" if args.optimizer == "adam" else "linear")
    changed = {k: base[k] for k in ("batch_size", "optimizer", "lr")
               if base[k] != DigitsWorkload().reference_config()[k]}

    with tempfile.TemporaryDirectory() as scratch:
        profile, profile_s, profile_command = profile_noise(changed, args.noise_steps, Path(scratch))
    noise = NoiseScaleCurve.from_profile(profile)
    points = profile["noise_scale"]["points"]
    print(f"profiled B_noise of digits' reference config at B0={args.base_batch} in {profile_s:.0f} s "
          f"(noise job {profile['noise_scale']['elapsed_s']:.0f} s):")
    for p in points:
        print(f"  epoch {p['epoch']:>2}: B_noise {p['b_noise']:8.1f}  95% [{p['b_noise_ci95'][0]:.1f}, "
              f"{p['b_noise_ci95'][1]:.1f}]")

    def config_at(batch: int, multiplier: float) -> dict:
        scale = batch / args.base_batch
        return dict(base, batch_size=batch, lr=lr0 * (math.sqrt(scale) if rule == "sqrt" else scale) * multiplier)

    # B0 curves at the base lr define the target.
    t0 = time.perf_counter()
    base_curves = {m: [train(config_at(args.base_batch, m), s, args.base_epochs) for s in seeds] for m in grid}
    mean_base = np.mean(base_curves[1.0] if 1.0 in base_curves else base_curves[grid[0]], axis=0)
    target = float(mean_base.max()) - args.tolerance
    initial = float(np.mean([untrained_accuracy(config_at(args.base_batch, 1.0), s) for s in seeds]))
    print(f"target: validation accuracy {target:.4f} (best of the mean B0 curve {mean_base.max():.4f} - "
          f"{args.tolerance:g}); untrained accuracy {initial:.3f}; B0 curves {time.perf_counter() - t0:.0f} s")

    def mean_hits(curves, cap):
        hits = [first_hit(c, target) for c in curves]
        return float(np.mean([h if h is not None else cap for h in hits])), hits

    base_choice = min(grid, key=lambda m: mean_hits(base_curves[m], args.base_epochs)[0])
    recorded = base_curves[base_choice]
    rows = []
    for multiple in multiples:
        batch = args.base_batch * multiple
        t0 = time.perf_counter()
        if multiple == 1:
            tried = {m: base_curves[m] for m in grid}
        else:
            tried = {m: [train(config_at(batch, m), s, args.cap, target) for s in seeds] for m in grid}
        choice = min(grid, key=lambda m: mean_hits(tried[m], args.cap)[0])
        measured, hits = mean_hits(tried[choice], args.cap)
        predicted_each = []
        for curve in recorded:
            horizon = int(math.ceil(len(curve) * multiple)) + 2
            stretched = stretch_curve(curve, args.base_batch, batch, noise, initial=initial, horizon=horizon)
            hit = epochs_to_target(stretched, target)
            predicted_each.append(hit if hit is not None else horizon)
        predicted = float(np.mean(predicted_each))
        unchanged = mean_hits(recorded, args.base_epochs)[0]
        rows.append({"batch": batch, "multiple": multiple, "lr": config_at(batch, choice)["lr"],
                     "lr_multiplier": choice, "measured_epochs": measured,
                     "measured_per_seed": hits, "predicted_epochs": predicted, "predicted_per_seed": predicted_each,
                     "error": (predicted - measured) / measured,
                     "unchanged_error": (unchanged - measured) / measured,
                     "linear_error": (unchanged * multiple - measured) / measured,
                     "b_over_bnoise_final": batch / noise.final(), "seconds": time.perf_counter() - t0})
        r = rows[-1]
        print(f"B={batch:5d} ({multiple:2d}x): lr {r['lr']:.4f} (x{choice:g}), measured {measured:6.1f} epochs "
              f"{hits}, predicted {predicted:6.1f} {predicted_each}, error {r['error']:+.0%}  [{r['seconds']:.0f} s]",
              flush=True)

    if args.ranks > 1:
        # per_gpu on ranks: each rank keeps B0, the global batch is ranks x B0 (real DDP, gloo)
        batch = args.base_batch * args.ranks
        t0 = time.perf_counter()
        tried = {}
        for m in grid:
            # the trainer itself scales a per_gpu config's one-rank lr by RASDA's rule at its world size
            # (lr_scale): give it the one-rank lr that lands on the rate tried here
            tried_lr = config_at(batch, m)["lr"] / lr_scale(base["optimizer"], "per_gpu", args.ranks)
            runs = [train_ddp(config_at(batch, m) | {"batch_size": args.base_batch, "lr": tried_lr}, s, args.ranks,
                              args.cap, target) for s in seeds]
            assert all(b == batch for _, b in runs), "the per_gpu policy did not give ranks x B0"
            tried[m] = [c for c, _ in runs]
        choice = min(grid, key=lambda m: mean_hits(tried[m], args.cap)[0])
        measured, hits = mean_hits(tried[choice], args.cap)
        predicted_each = []
        for curve in recorded:
            horizon = int(math.ceil(len(curve) * args.ranks)) + 2
            hit = epochs_to_target(stretch_curve(curve, args.base_batch, batch, noise, initial=initial,
                                                 horizon=horizon), target)
            predicted_each.append(hit if hit is not None else horizon)
        predicted = float(np.mean(predicted_each))
        unchanged = mean_hits(recorded, args.base_epochs)[0]
        rows.append({"batch": batch, "multiple": args.ranks, "ranks": args.ranks,
                     "lr": config_at(batch, choice)["lr"], "lr_multiplier": choice, "measured_epochs": measured,
                     "measured_per_seed": hits, "predicted_epochs": predicted, "predicted_per_seed": predicted_each,
                     "error": (predicted - measured) / measured, "unchanged_error": (unchanged - measured) / measured,
                     "linear_error": (unchanged * args.ranks - measured) / measured,
                     "b_over_bnoise_final": batch / noise.final(), "seconds": time.perf_counter() - t0})
        r = rows[-1]
        print(f"B={batch:5d} per_gpu on {args.ranks} gloo ranks: lr {r['lr']:.4f} (x{choice:g}), measured "
              f"{measured:6.1f} epochs {hits}, predicted {predicted:6.1f} {predicted_each}, error {r['error']:+.0%}  "
              f"[{r['seconds']:.0f} s]", flush=True)

    elapsed = time.perf_counter() - began
    header = (f"{'batch':>6} {'x B0':>5} {'ranks':>5} {'lr':>8} {'measured ep.':>12} {'predicted ep.':>13} {'error':>7} "
              f"{'same-epochs err':>15} {'B/B0-epochs err':>15} {'B/B_noise(end)':>14}")
    lines = [header] + [f"{r['batch']:>6} {r['multiple']:>5} {r.get('ranks', 1):>5} {r['lr']:>8.4f} {r['measured_epochs']:>12.1f} "
                        f"{r['predicted_epochs']:>13.1f} {r['error']:>+7.0%} {r['unchanged_error']:>+15.0%} "
                        f"{r['linear_error']:>+15.0%} {r['b_over_bnoise_final']:>14.2f}" for r in rows]
    table = "\n".join(lines)
    print()
    print(table)
    larger = [r for r in rows if r["multiple"] > 1 and r.get("ranks", 1) == 1]
    summary = (f"one rank, mean |error| over the larger batches: noise-scale prediction "
               f"{np.mean([abs(r['error']) for r in larger]):.0%}, same-epochs "
               f"{np.mean([abs(r['unchanged_error']) for r in larger]):.0%}, B/B0-epochs "
               f"{np.mean([abs(r['linear_error']) for r in larger]):.0%}; {elapsed:.0f} s in all")
    print(summary)
    write_results(Path(args.out), args, rows, table, summary, points, profile_command, target, initial, elapsed,
                  lr0, rule)
    return 0


def write_results(out: Path, args, rows, table, summary, points, profile_command, target, initial, elapsed,
                  lr0, rule):
    import csv

    from nasalloc.io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    import io

    buffer = io.StringIO()
    keys = ["batch", "multiple", "ranks", "lr", "lr_multiplier", "measured_epochs", "measured_per_seed", "predicted_epochs",
            "predicted_per_seed", "error", "unchanged_error", "linear_error", "b_over_bnoise_final", "seconds"]
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        r = {"ranks": 1, **r}
        writer.writerow({k: (json.dumps(r[k]) if isinstance(r[k], list) else r[k]) for k in keys})
    atomic_write_text(out.with_suffix(".csv"), buffer.getvalue())
    import torch

    ranks_text = (f" The row with ranks > 1 is the per_gpu policy for real: {args.ranks} gloo DDP ranks "
                  f"(one thread each) with B0 per rank." if args.ranks > 1 else "")
    noise_lines = "\n".join(f"| {p['epoch']} | {p['b_noise']:.1f} | [{p['b_noise_ci95'][0]:.1f}, "
                            f"{p['b_noise_ci95'][1]:.1f}] | {p['val_metric'] if p['val_metric'] is not None else '-'} |"
                            for p in points)
    text = f"""# Batch scaling on digits: measured against predicted epochs-to-target

Written by `python bench/bench_batch_scaling.py {' '.join(sys.argv[1:])}` on
{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, commit {commit}{' (with uncommitted changes)' if dirty else ''},
{platform.node()} ({os.cpu_count()} cores, one torch thread), Python {platform.python_version()},
torch {torch.__version__}; {elapsed:.0f} s in all.

Setup: digits' reference config (CNN, depth 2, 32 channels) with {args.optimizer}, lr {lr0:g} at B0, on one
CPU rank; base global batch B0 = {args.base_batch}; at each batch the lr is {rule}-scaled and tuned over the
multipliers {args.lr_grid}; {args.seeds} seeds per (batch, lr).{ranks_text} Target: validation accuracy
{target:.4f} (best of the mean B0 curve over {args.base_epochs} epochs minus {args.tolerance:g}); untrained
accuracy {initial:.3f} (the stretched curves start there). Predicted: each seed's B0 curve stretched
with the profiled B_noise by `nasalloc.simulator.batchscaling.stretch_curve`.

Noise scale (`{profile_command}`):

| epoch | B_noise | 95% bootstrap | val accuracy |
|---|---|---|---|
{noise_lines}

Printed:

```
{table}
{summary}
```

Columns: `same-epochs err` is the error of what nasalloc predicted before issue 13 (a larger
global batch needs the same epochs); `B/B0-epochs err` that of a noise-free model (epochs grow
with the batch). Per-seed epochs are in the .csv beside this file.
"""
    atomic_write_text(out.with_suffix(".md"), text)
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    sys.exit(main())
