"""Record a learning-curve benchmark: N random configs of a workload's space, each trained on
one CPU rank (one thread) for the full budget, every epoch's val/test metric and seconds
written to a trace (docs/formats.md).

    python -m nasalloc.workloads.benchmark --configs 250 --epochs 81 --seed 0 \\
        --out nasalloc/data/digits_curves.csv.gz --jobs 1

Resumable: each finished config's rows are appended to a plain-CSV working file
(``FILE`` without ``.gz``); a rerun skips the configs complete there and drops a config a
killed run left half written. At the end the trace is gzipped atomically into ``FILE`` and
the working file removed. The relative-cost model of the workload is checked against the
measured epoch times (printed, and returned by :func:`cost_check`).

``epoch_seconds`` here is the CPU time of the epoch (training + evaluation) of the
single-threaded process: on a dedicated core that is its wall time, and unlike wall time it
does not grow when other processes share the cores (on a shared 2-core machine wall time came
out 3x too long and noisy; CPU time varies by ~1%). ``start_s``/``end_s`` are wall clock.
"""

from __future__ import annotations

import gzip
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError
from ..trace import Curves, TraceWriter, read_trace, write_trace

FLOAT_DIGITS = 6       # significant digits of float hyperparameters (rounded before training)
METRIC_DECIMALS = 5    # accuracies are counts over a few hundred samples
SECONDS_DECIMALS = 5


def round_config(config: dict) -> dict:
    """Floats to FLOAT_DIGITS significant digits, numpy scalars to Python ones."""
    plain = {}
    for name, value in config.items():
        value = value.item() if hasattr(value, "item") else value
        if isinstance(value, float):
            value = float(f"{value:.{FLOAT_DIGITS}g}")
        plain[name] = value
    return plain


def sample_configs(workload, count: int, seed: int) -> list[dict]:
    """``count`` random configs of the workload's space; the same for the same seed."""
    space = workload.search_space(seed=seed)
    sampled = space.sample_configuration(count) if count > 1 else [space.sample_configuration()]
    return [round_config(dict(c)) for c in sampled[:count]]


def train_curve(workload_spec: str, config: dict, seed: int, epochs: int, run_began: float) -> list[dict]:
    """Train one config on this process for ``epochs`` epochs; one trace row per epoch."""
    import torch

    from .registry import load_workload

    torch.set_num_threads(1)
    workload = load_workload(workload_spec)
    trainer = workload.make_trainer(config, seed=seed, device="cpu")
    rows = []
    for _ in range(epochs):
        start = time.time() - run_began
        cpu_began = time.process_time()
        result = trainer.train_epoch()
        seconds = time.process_time() - cpu_began  # see the module note: CPU, not wall, time
        rows.append(dict(
            epoch=result.epoch, config=config, val_metric=round(result.val_metric, METRIC_DECIMALS),
            test_metric=None if result.test_metric is None else round(result.test_metric, METRIC_DECIMALS),
            metric_name=workload.metric_name, mode=workload.mode,
            epoch_seconds=round(seconds, SECONDS_DECIMALS), gpus_per_trial=1,
            start_s=round(start, 3), end_s=round(time.time() - run_began, 3), workload=workload.name))
    return rows


def _train_job(args) -> tuple[int, list[dict], float]:
    trial_id, workload_spec, config, seed, epochs, run_began = args
    began = time.perf_counter()
    rows = train_curve(workload_spec, config, seed, epochs, run_began)
    for row in rows:
        row["trial_id"] = trial_id
        row["train_seed"] = seed  # so a validation can train this config exactly as recorded
    return trial_id, rows, time.perf_counter() - began


def _complete_trials(working: Path, epochs: int, sampled: list[dict]) -> set[int]:
    """Trial ids with all epochs in the working file; rewrites it without partial trials.

    A recorded trial must have the config sampled for its id now (same --seed, same
    --configs: ConfigSpace draws a different sequence for another count)."""
    if not working.exists() or working.stat().st_size == 0:
        return set()
    frame = read_trace(working)
    counts = frame.groupby("trial_id")["epoch"].nunique()
    complete = set(int(t) for t in counts[counts >= epochs].index)
    if len(complete) < len(counts):
        kept = frame[frame["trial_id"].isin(complete)]
        write_trace(working, kept)
        frame = kept
    recorded = Curves.from_trace(frame, str(working)) if complete else None
    for trial_id, config in zip(recorded.trial_ids if recorded else [], recorded.configs if recorded else []):
        if trial_id < len(sampled) and not _same_config(config, sampled[trial_id]):
            raise UserError(f"{working}: trial {trial_id} was recorded with another config than --seed/--configs "
                            f"sample now; resume with the original arguments or choose another --out")
    return complete


def _same_config(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    return all(math.isclose(a[k], b[k], rel_tol=1e-9) if isinstance(b[k], float) else str(a[k]) == str(b[k])
               for k in a)


def cost_check(curves: Curves, workload) -> dict:
    """How well ``workload.relative_cost`` predicts the measured epoch seconds of the curves.

    Compares each config's median epoch seconds over the median of all configs with its
    relative cost scaled the same way (so the machine's speed cancels out).
    """
    from scipy.stats import pearsonr, spearmanr

    measured = np.array([np.median(s) for s in curves.epoch_seconds])
    predicted = np.array([workload.relative_cost(c) for c in curves.configs])
    ratio = (predicted / np.median(predicted)) / (measured / np.median(measured))
    if len(measured) < 3:  # no correlation to speak of
        pearsonr = spearmanr = lambda x, y: (float("nan"),)  # noqa: E731
    return {
        "configs": int(len(measured)),
        "pearson": float(pearsonr(predicted, measured)[0]),
        "spearman": float(spearmanr(predicted, measured)[0]),
        "pearson_log": float(pearsonr(np.log(predicted), np.log(measured))[0]),
        "median_abs_rel_error": float(np.median(np.abs(ratio - 1.0))),
        "measured_seconds_range": [float(measured.min()), float(measured.max())],
    }


def run_benchmark(out: Path, configs: int, epochs: int = 81, seed: int = 0, jobs: int = 1,
                  workload_spec: str = "digits", echo=print) -> Curves:
    from .registry import load_workload

    out = Path(out)
    if configs < 1 or epochs < 1 or jobs < 1:
        raise UserError(f"--configs {configs}, --epochs {epochs} and --jobs {jobs} must all be >= 1")
    workload = load_workload(workload_spec)
    working = out.with_suffix("") if out.suffix == ".gz" else out
    if out.suffix == ".gz" and out.exists() and not working.exists():
        working.write_bytes(gzip.decompress(out.read_bytes()))  # extend a finished benchmark
    sampled = sample_configs(workload, configs, seed)
    done = _complete_trials(working, epochs, sampled)
    todo = [t for t in range(configs) if t not in done]
    echo(f"{workload.name}: {configs} configs x {epochs} epochs, seed {seed}; "
         f"{len(done & set(range(configs)))} already complete in {working}, {len(todo)} to train with {jobs} process(es)")
    run_began = time.time()
    began = time.perf_counter()
    jobs_args = [(t, workload_spec, sampled[t], seed * 100_003 + t, epochs, run_began) for t in todo]
    names = list(workload.search_space().keys())
    with TraceWriter(working, config_names=names) as writer:
        seeded = "train_seed" in writer.header  # a file begun before traces had the column stays without
        for finished, (trial_id, rows, seconds) in enumerate(_run_jobs(jobs_args, jobs), 1):
            writer.write_many(rows if seeded else [{k: v for k, v in r.items() if k != "train_seed"} for r in rows])
            elapsed = time.perf_counter() - began
            eta = elapsed / finished * (len(todo) - finished)
            vals = [r["val_metric"] for r in rows]
            echo(f"[{finished}/{len(todo)}] trial {trial_id}: val {vals[0]:.3f} -> {vals[-1]:.3f} "
                 f"(best {max(vals):.3f}), test {rows[-1]['test_metric']}, {seconds:.1f} s; "
                 f"elapsed {elapsed:.0f} s, eta {eta:.0f} s")
    frame = read_trace(working)
    frame = frame[frame["trial_id"] < configs]
    if out != working:
        write_trace(out, frame)
        working.unlink()
    curves = Curves.from_trace(frame, str(out))
    check = cost_check(curves, workload)
    final = np.array([v[-1] for v in curves.val])
    echo(f"done: {curves.n_configs} configs x {curves.max_epochs} epochs in {time.perf_counter() - began:.0f} s -> "
         f"{out} ({out.stat().st_size / 1e6:.2f} MB); final val {final.min():.3f}..{final.max():.3f} "
         f"(median {np.median(final):.3f}); relative_cost vs measured: pearson {check['pearson']:.3f}, "
         f"spearman {check['spearman']:.3f}, median |error| {100 * check['median_abs_rel_error']:.0f}%")
    return curves


def _run_jobs(jobs_args: list, jobs: int):
    if jobs == 1:
        for args in jobs_args:
            yield _train_job(args)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_train_job, args) for args in jobs_args]
        for future in as_completed(futures):
            yield future.result()


def main(argv: Optional[list] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nasalloc.workloads.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, required=True, help="number of random configs")
    parser.add_argument("--epochs", type=int, default=81, help="epochs per config (the full budget)")
    parser.add_argument("--seed", type=int, default=0, help="seed of config sampling and training")
    parser.add_argument("--out", required=True, help="trace to write (.csv or .csv.gz)")
    parser.add_argument("--jobs", type=int, default=1, help="configs trained at once (one core each)")
    parser.add_argument("--workload", default="digits", help="workload spec (name or module:factory)")
    args = parser.parse_args(argv)
    try:
        run_benchmark(Path(args.out), args.configs, args.epochs, args.seed, args.jobs, args.workload,
                      echo=lambda line: print(line, flush=True))
    except UserError as err:
        print(f"nasalloc benchmark: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
