"""One rank of a profiling job: ``python -m nasalloc.profiler.worker --result FILE ...``.

Started by a launcher (``nasalloc.profiler.launch``) with the torchrun environment. Every rank
joins the process group, builds the workload's trainer and trains; rank 0 writes one JSON
result (atomically) that the profiler reads:

* ``startup_s``: from ``NASALLOC_LAUNCH_TIME`` (when the launcher started the job) until every
  rank is ready to take its first training step (imports, process group, data, model, DDP);
* warm-up epochs are discarded; for each measured epoch its wall seconds (training plus
  evaluation), training and evaluation seconds, samples, throughput, and the fraction of
  training time this job's ranks waited for gradient all-reduce (mean over ranks);
* ``roundtrip_s``: after every measured epoch, the runner's round trip as a validation trial
  pays it (report over the channel, the runner's bookkeeping, the decision broadcast to every
  rank; :mod:`nasalloc.validate.roundtrip`), against the profiler's echo runner; slowest rank;
* checkpoint save and load seconds (slowest rank), and peak memory (largest rank):
  ``torch.cuda.max_memory_allocated`` on CUDA, the process's max RSS on CPU.

Co-located trials (``--group-dir``, ``--group-size``, ``--group-index``) are independent
single-rank jobs sharing one device. They start their warm-up together (a file barrier) and
keep training, unmeasured, until every member has finished its measured epochs, so every
measured epoch ran with the whole group contending.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from nasalloc.io import atomic_write_json

from .launch import LAUNCH_TIME_ENV

GROUP_TIMEOUT_S = 900.0
#: printed by every rank once its measurement is complete, before tearing the group down
TEARDOWN_MARKER = "nasalloc-worker: measured, shutting down"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nasalloc.profiler.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--result", required=True, help="JSON file rank 0 writes")
    parser.add_argument("--workload", default="digits")
    parser.add_argument("--config", default="{}", help="the config to train, as JSON")
    parser.add_argument("--options", default="{}", help="workload options (load_workload keywords), as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checkpoint", default=None, help="file to time a checkpoint save and load with")
    parser.add_argument("--group-dir", default=None)
    parser.add_argument("--group-size", type=int, default=1)
    parser.add_argument("--group-index", type=int, default=0)
    parser.add_argument("--noise-epochs", default=None,
                        help="measure the gradient noise scale at these epochs (e.g. 1,9,27) instead of timing")
    parser.add_argument("--ddp-noise", action="store_true",
                        help="with 2+ ranks: estimate the noise scale from the local and all-reduced gradients "
                             "of the warm-up epochs")
    parser.add_argument("--noise-steps", type=int, default=32)
    parser.add_argument("--noise-micro-batches", type=int, default=8)
    return parser.parse_args(argv)


def _launch_time() -> float:
    raw = os.environ.get(LAUNCH_TIME_ENV)
    if raw:
        return float(raw)
    # Started by hand: count from this process's own start.
    with open("/proc/self/stat") as handle:
        ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as handle:
        uptime = float(handle.read().split()[0])
    return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")


class FileBarrier:
    """All members of a co-located group touch ``<name>.<index>``; wait() returns when all did."""

    def __init__(self, directory: str, size: int, index: int):
        self.directory, self.size, self.index = Path(directory), size, index

    def arrive(self, name: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"{name}.{self.index}").touch()

    def count(self, name: str) -> int:
        return len(list(self.directory.glob(f"{name}.*")))

    def wait(self, name: str, timeout: float = GROUP_TIMEOUT_S) -> None:
        self.arrive(name)
        deadline = time.monotonic() + timeout
        while self.count(name) < self.size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"co-located group: only {self.count(name)} of {self.size} reached {name!r}")
            time.sleep(0.02)


def peak_memory_mb(device: str) -> tuple:
    """(megabytes, what was measured) of this process's peak memory."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated(device) / 2 ** 20, "cuda_max_memory_allocated"
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_max_rss"


def software_and_hardware(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__.split("+")[0],
            "torch_build": torch.__version__, "cuda": torch.version.cuda, "nccl": None,
            "hostname": platform.node(), "device_names": [], "cpu_count": os.cpu_count()}
    if device.startswith("cuda") and torch.cuda.is_available():
        version = torch.cuda.nccl.version()
        info["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        info["device_names"] = [torch.cuda.get_device_name(torch.device(device))]
    else:
        info["device_names"] = [_cpu_name()]
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(args: argparse.Namespace) -> tuple:
    """Train and time on this rank: (its DistContext, the job's result on rank 0 else None)."""
    launched = _launch_time()
    import torch

    from nasalloc.workloads.distributed import init_from_env
    from nasalloc.workloads.registry import load_workload

    ctx = init_from_env(args.device)
    workload = load_workload(args.workload, **json.loads(args.options))
    trainer = workload.make_trainer(json.loads(args.config), seed=args.seed, device=args.device)
    ctx.barrier()
    startup_s, = ctx.all_reduce_max([time.time() - launched])

    group = FileBarrier(args.group_dir, args.group_size, args.group_index) if args.group_dir else None
    if group is not None:
        group.wait("ready")

    probe = None
    if args.ddp_noise and ctx.world_size > 1 and args.warmup > 0 and hasattr(trainer, "noise_probe"):
        from .noisescale import DDPNoiseProbe

        probe = trainer.noise_probe = DDPNoiseProbe()  # warm-up epochs only: the timed ones stay untouched
    for _ in range(args.warmup):
        trainer.train_epoch()
    ddp_noise = None
    if probe is not None:
        trainer.noise_probe = None
        estimate = probe.estimate(ctx, trainer.global_batch, seed=args.seed)
        if estimate is not None:
            ddp_noise = {**estimate.to_dict(), "epochs": list(range(1, args.warmup + 1)),
                         "method": "DDP: each rank's local gradient vs the all-reduced one, warm-up epochs"}

    link = _runner_link(ctx)
    epochs = []
    for _ in range(args.epochs):
        began = time.perf_counter()
        result = trainer.train_epoch()
        seconds = time.perf_counter() - began
        roundtrip = None
        if link is not False:  # the runner's per-epoch round trip, paid as a trial pays it
            from nasalloc.validate.roundtrip import timed_report

            _, roundtrip = timed_report(link, ctx, result)
        sync = None
        if result.sync_seconds is not None and result.train_seconds > 0:
            sync = ctx.all_reduce_sum([result.sync_seconds / result.train_seconds])[0] / ctx.world_size
        epochs.append({"seconds": seconds, "train": result.train_seconds, "eval": result.eval_seconds,
                       "samples": result.samples, "sync_fraction": sync, "val_metric": result.val_metric,
                       "roundtrip": roundtrip})
    if link:
        link.close()

    save_s = load_s = None
    if args.checkpoint:
        began = time.perf_counter()
        trainer.save_checkpoint(args.checkpoint)
        save_s = time.perf_counter() - began
        began = time.perf_counter()
        trainer.load_checkpoint(args.checkpoint)
        load_s = time.perf_counter() - began
        save_s, load_s = ctx.all_reduce_max([save_s, load_s])
        if ctx.is_main:
            Path(args.checkpoint).unlink(missing_ok=True)

    if group is not None:  # keep the others' measured epochs contended
        group.arrive("done")
        deadline = time.monotonic() + GROUP_TIMEOUT_S
        while group.count("done") < group.size and time.monotonic() < deadline:
            trainer.train_epoch()

    memory, memory_kind = peak_memory_mb(ctx.device)
    memory, = ctx.all_reduce_max([memory])
    backend = ctx.backend
    if not ctx.is_main:
        return ctx, None
    describe = workload.describe()
    return ctx, {
        "ranks": ctx.world_size,
        "backend": backend,
        "device": "cuda" if ctx.device.startswith("cuda") else "cpu",
        "epoch_seconds": [e["seconds"] for e in epochs],
        "train_seconds": [e["train"] for e in epochs],
        "eval_seconds": [e["eval"] for e in epochs],
        "samples": [e["samples"] for e in epochs],
        # Throughput over the whole epoch (evaluation included), so it is samples / epoch_seconds.
        "samples_per_second": [e["samples"] / e["seconds"] for e in epochs],
        "sync_fraction": [e["sync_fraction"] for e in epochs],
        "val_metric": [e["val_metric"] for e in epochs],
        "startup_s": startup_s,
        "checkpoint_save_s": save_s,
        "checkpoint_load_s": load_s,
        "eval_s": sum(e["eval"] for e in epochs) / len(epochs) if epochs else None,
        "roundtrip_seconds": [e["roundtrip"] for e in epochs if e["roundtrip"] is not None],
        "roundtrip_s": _mean_or_none([e["roundtrip"] for e in epochs if e["roundtrip"] is not None]),
        "peak_memory_mb": memory,
        "peak_memory_kind": memory_kind,
        "global_batch": getattr(trainer, "global_batch", None),
        "steps_per_epoch": trainer.steps() if hasattr(trainer, "steps") else None,
        "workload": describe,
        "environment": software_and_hardware(ctx.device),
        "torch_threads": torch.get_num_threads(),
        "noise_scale": ddp_noise,
    }


def _runner_link(ctx):
    """Rank 0's link to the profiler's echo runner (None on other ranks); False when the
    profiler runs none (the worker started by hand)."""
    from nasalloc.validate.channel import RUNNER_ENV
    from nasalloc.validate.roundtrip import connect_from_env

    if not os.environ.get(RUNNER_ENV):
        return False
    return connect_from_env(ctx)


def _mean_or_none(values: list):
    return sum(values) / len(values) if values else None


def measure_noise(args: argparse.Namespace) -> tuple:
    """A noise-scale job (one rank): train the config, measure B_noise at ``--noise-epochs``."""
    launched = _launch_time()
    from nasalloc.workloads.distributed import init_from_env
    from nasalloc.workloads.registry import load_workload

    from .noisescale import noise_along_training, parse_epochs

    ctx = init_from_env(args.device)
    workload = load_workload(args.workload, **json.loads(args.options))
    trainer = workload.make_trainer(json.loads(args.config), seed=args.seed, device=args.device)
    startup_s = time.time() - launched
    result = noise_along_training(trainer, parse_epochs(args.noise_epochs), micro_batches=args.noise_micro_batches,
                                  steps=args.noise_steps, seed=args.seed,
                                  echo=lambda line: print(line, file=sys.stderr, flush=True))
    result["startup_s"] = startup_s
    return ctx, result


def exit_when_orphaned() -> None:
    """End this rank if the launcher that started it dies (its siblings would hang otherwise)."""
    from nasalloc.lifetime import end_with_parent, launcher_pid_from

    end_with_parent(launcher_pid_from(os.environ))


def main(argv=None) -> int:
    args = parse_args(argv)
    exit_when_orphaned()
    ctx, result = measure_noise(args) if args.noise_epochs else measure(args)
    if result is not None:
        atomic_write_json(Path(args.result), result)
    # The result is safe before the process group is torn down: gloo can abort a rank
    # ("terminate called without an active exception") when its peers exit first.
    print(f"{TEARDOWN_MARKER} rank {ctx.rank}", file=sys.stderr, flush=True)
    ctx.destroy()  # meets the peers in a barrier first
    return 0


if __name__ == "__main__":
    sys.exit(main())
