"""Measure a workload on each requested GPU count, fit the scaling model, write profile.json.

:func:`run_profile` takes a checked :class:`~nasalloc.profiler.request.ProfileRequest`
(:func:`nasalloc.profiler.request.prepare`) and measures one GPU count after the other:

* g >= 1: one DDP job of g ranks per repeat (:mod:`nasalloc.profiler.worker`);
* g = 1/k < 1: k independent single-rank trials at once on one device (co-located), giving the
  per-trial slowdown of sharing against the g = 1 epoch (measured first, added if not asked).

After each g the profile is rewritten (atomically, ``"complete": false`` until the end), so a
run that is interrupted keeps what it measured. A g whose job runs out of memory is skipped
with its reason (``skipped`` in the profile); any other failure stops the run with the failing
rank's last lines.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nasalloc.io import atomic_write_json

from . import fit as fitting
from .launch import DDPJob, LocalLauncher
from .request import WORKER_MODULE, ProfileRequest, _g
from .worker import TEARDOWN_MARKER

SCHEMA = "nasalloc.profile/1"
PORT_TAKEN_MARKERS = ("address already in use", "eaddrinuse")
OOM_MARKERS = ("out of memory", "outofmemoryerror", "cuda error: out of memory", "cannot allocate memory")


class ProfileFailed(RuntimeError):
    """A measuring job failed for a reason other than the hardware's capacity."""


def _worker_args(request: ProfileRequest, result: Path, checkpoint: Path) -> list:
    return ["--result", str(result), "--workload", request.workload, "--config", json.dumps(request.config),
            "--options", json.dumps(request.workload_options), "--seed", str(request.seed),
            "--device", request.device, "--warmup", str(request.warmup), "--epochs", str(request.epochs),
            "--checkpoint", str(checkpoint)] + (["--ddp-noise"] if request.noise_epochs else [])


def _run_jobs(request: ProfileRequest, jobs: list, label: str, attempt: int = 0, runner=None) -> Optional[str]:
    """Run jobs together; None when all succeeded, else the reason to skip (out of memory).
    ``runner``: the echo runner (:mod:`nasalloc.validate.roundtrip`) their rank 0 reports to."""
    running = [request.launcher.start(job) for job in jobs]
    deadline = None if request.timeout_s is None else time.monotonic() + request.timeout_s
    try:
        while True:
            codes = [job.poll() for job in running]
            if any(code not in (None, 0) for code in codes):
                # co-located trials wait for each other: one failing must end them all
                for job in running:
                    job.terminate("stopped: another job of the same measurement failed")
                break
            if all(code is not None for code in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                for job in running:
                    job.terminate(f"timed out after {request.timeout_s:g} s")
                break
            if runner is not None:
                runner.serve(0.1)  # answers epochs at once, as the validation runner does
            else:
                time.sleep(0.1)
    finally:
        for job in running:
            if job.poll() is None:
                job.terminate("interrupted")
    failed = sorted((job for job in running if job.returncode != 0),
                    key=lambda job: "stopped: another" in (job.failure or ""))  # the cause first
    if not failed:
        return None
    first = failed[0]
    tail = first.stderr_tail(40)
    if TEARDOWN_MARKER in tail and all(_result_of(job).is_file() for job in jobs):
        # A rank crashed while shutting down after measuring: the measurement is whole.
        return None
    if attempt == 0 and TEARDOWN_MARKER in tail:
        return _run_jobs(request, jobs, label, attempt + 1, runner)
    if attempt == 0 and any(marker in tail.lower() for marker in PORT_TAKEN_MARKERS):
        # Another program took the free port between our check and the rendezvous: once more.
        return _run_jobs(request, jobs, label, attempt + 1, runner)
    if any(marker in tail.lower() for marker in OOM_MARKERS):
        return f"out of memory ({first.failure})"
    raise ProfileFailed(f"{label} failed: {first.failure}\n{tail}")


def _result_of(job: DDPJob) -> Path:
    args = list(job.args)
    return Path(args[args.index("--result") + 1])


def _cpu_cores(request: ProfileRequest, cores) -> Optional[list]:
    """On CPU with the local launcher a "GPU" is one core: rank r runs on core r, and trials
    sharing a "GPU" share core 0, as the validation runner places them."""
    if request.device != "cpu" or not isinstance(request.launcher, LocalLauncher):
        return None
    return list(cores)


def _runner_env(runner) -> dict:
    return {} if runner is None else runner.env(runner.token())


def _measure_ddp(request: ProfileRequest, g: float, repeat: int, scratch: Path, runner=None) -> dict:
    ranks = int(g)
    tag = f"g{ranks}-r{repeat}"
    result = scratch / f"{tag}.json"
    job = DDPJob(module=WORKER_MODULE, args=_worker_args(request, result, scratch / f"{tag}.ckpt"),
                 ranks=ranks, nodes=request.nodes[g], device=request.device, log_dir=scratch / "logs" / tag,
                 name=f"profile-{tag}", cpu_cores=_cpu_cores(request, range(ranks)), env=_runner_env(runner))
    skip = _run_jobs(request, [job], f"g={ranks}", runner=runner)
    if skip:
        return {"skip": skip}
    data = json.loads(result.read_text())
    return {"gpus": ranks, "kind": "ddp", "nodes": request.nodes[g], "repeat": repeat, **_common(data)}


def _measure_colocated(request: ProfileRequest, g: float, repeat: int, scratch: Path, runner=None) -> dict:
    k = round(1 / g)
    tag = f"coloc{k}-r{repeat}"
    group = scratch / tag
    shared = None
    if request.device == "cuda":
        ids = getattr(request.launcher, "visible_gpu_ids", lambda: [])()
        shared = [ids[0]] if ids else None
    jobs = []
    for i in range(k):
        args = _worker_args(request, scratch / f"{tag}-{i}.json", scratch / f"{tag}-{i}.ckpt")
        args += ["--group-dir", str(group), "--group-size", str(k), "--group-index", str(i)]
        jobs.append(DDPJob(module=WORKER_MODULE, args=args, ranks=1, device=request.device, gpu_ids=shared,
                           log_dir=scratch / "logs" / f"{tag}-{i}", name=f"profile-{tag}-{i}",
                           cpu_cores=_cpu_cores(request, [0]), env=_runner_env(runner)))
    skip = _run_jobs(request, jobs, f"g={g:g} ({k} co-located trials)", runner=runner)
    if skip:
        return {"skip": skip}
    trials = [json.loads((scratch / f"{tag}-{i}.json").read_text()) for i in range(k)]
    merged = {key: [x for t in trials for x in t[key]]
              for key in ("epoch_seconds", "train_seconds", "eval_seconds", "samples", "samples_per_second",
                          "sync_fraction", "val_metric")}
    means = {key: _mean([t.get(key) for t in trials]) for key in ("startup_s", "checkpoint_save_s",
                                                                  "checkpoint_load_s", "eval_s", "roundtrip_s")}
    return {"gpus": g, "kind": "colocated", "trials_per_gpu": k, "nodes": 1, "repeat": repeat,
            "shared_device": (f"one CUDA GPU (id {shared[0]})" if shared else
                              "cpu: co-located processes on this machine's cores, not a GPU"),
            **merged, **means,
            "trial_epoch_seconds": [t["epoch_seconds"] for t in trials],
            "peak_memory_mb": max(t["peak_memory_mb"] for t in trials),
            "peak_memory_kind": trials[0]["peak_memory_kind"], "ranks": 1,
            "environment": trials[0]["environment"], "workload": trials[0]["workload"],
            "global_batch": trials[0]["global_batch"], "steps_per_epoch": trials[0]["steps_per_epoch"]}


def _common(data: dict) -> dict:
    keep = ("epoch_seconds", "samples_per_second", "sync_fraction", "startup_s", "checkpoint_save_s",
            "checkpoint_load_s", "eval_s", "peak_memory_mb", "peak_memory_kind", "train_seconds",
            "eval_seconds", "samples", "val_metric", "ranks", "backend", "global_batch", "steps_per_epoch",
            "environment", "workload", "torch_threads", "noise_scale", "roundtrip_s", "roundtrip_seconds")
    out = {key: data.get(key) for key in keep}
    for key in ("noise_scale", "roundtrip_s", "roundtrip_seconds"):
        if not out[key]:
            out.pop(key)  # noise: one rank, no warm-up, or not asked for; round trip: no echo runner
    return out


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def describe_measurement(m: dict, alone_epoch_s: Optional[float]) -> str:
    """The progress line of one measured g."""
    epochs = np.array(m["epoch_seconds"])
    cv = float(epochs.std() / epochs.mean()) if len(epochs) > 1 else 0.0
    if m["kind"] == "colocated":
        where = "GPU" if m["shared_device"].startswith("one CUDA") else "CPU cores, not a GPU"
        slow = f", slowdown {epochs.mean() / alone_epoch_s:.2f}x vs alone" if alone_epoch_s else ""
        return (f"g={m['gpus']:g}: {m['trials_per_gpu']} trials sharing one device ({where}): "
                f"per-trial epoch {epochs.mean():.3f} s ±{cv:.0%}{slow}")
    sync = [s for s in m["sync_fraction"] if s is not None]
    sync_text = f", sync {np.mean(sync):.0%}" if sync and m["gpus"] > 1 else ""
    return (f"g={_g(m['gpus'])}: {int(m['gpus'])} rank(s) on {m['nodes']} node(s): epoch {epochs.mean():.3f} s "
            f"±{cv:.0%}, {np.mean(m['samples_per_second']):.0f} samples/s, start-up {m['startup_s']:.1f} s"
            f"{sync_text}, peak {m['peak_memory_mb']:.0f} MB")


def _measure_noise(request: ProfileRequest, scratch: Path, echo: Callable[[str], None]) -> dict:
    """One single-rank job that trains the config and measures its gradient noise scale at
    ``request.noise_epochs`` (:mod:`nasalloc.profiler.noisescale`)."""
    result = scratch / "noise.json"
    args = _worker_args(request, result, scratch / "noise.ckpt")
    args += ["--noise-epochs", ",".join(map(str, request.noise_epochs)), "--noise-steps", str(request.noise_steps),
             "--noise-micro-batches", str(request.noise_micro_batches)]
    job = DDPJob(module=WORKER_MODULE, args=args, ranks=1, device=request.device, log_dir=scratch / "logs" / "noise",
                 name="profile-noise", cpu_cores=_cpu_cores(request, [0]))
    began = time.monotonic()
    skip = _run_jobs(request, [job], "noise scale")
    if skip:
        echo(f"noise scale: skipped, {skip}")
        return {"skipped": skip}
    noise = json.loads(result.read_text())
    noise["elapsed_s"] = time.monotonic() - began
    for p in noise["points"]:
        low, high = p["b_noise_ci95"]
        interval = "" if low is None or high is None else f" [{low:.0f}, {high:.0f}]"
        value = "n/a (no signal)" if p["b_noise"] is None else f"{p['b_noise']:.0f}"
        echo(f"noise scale at epoch {p['epoch']}: B_noise {value}{interval} (95% bootstrap), "
             f"at batch {noise['batch_small']} vs {noise['batch_big']}")
    echo(f"noise scale: {len(noise['points'])} point(s) in {noise['elapsed_s']:.1f} s (training "
         f"{noise['train_seconds']:.1f} s, measuring {noise['measure_seconds']:.1f} s)")
    return noise


def _report_g(request: ProfileRequest, measurements: list, measured: list, seconds: float,
              echo: Callable[[str], None]) -> None:
    """The progress line (and notes) of one measured g, its repeats pooled."""
    if measurements[0] is measured[0] and (measured[0].get("workload") or {}).get("synthetic_data"):
        echo(f"note: {(measured[0]['workload'].get('data') or 'the workload trains on synthetic data')}")
    steps = measured[0].get("steps_per_epoch")
    if request.workload_options.get("steps_per_epoch") and steps and steps > request.workload_options["steps_per_epoch"]:
        echo(f"note: workload {request.workload!r} does not take --steps; it trained {steps} steps per epoch")
    alone = _mean(e for m in measurements if m["kind"] == "ddp" and m["gpus"] == 1
                  for e in m["epoch_seconds"])
    pooled = dict(measured[0], epoch_seconds=[e for m in measured for e in m["epoch_seconds"]],
                  samples_per_second=[x for m in measured for x in m["samples_per_second"]],
                  sync_fraction=[x for m in measured for x in m["sync_fraction"]],
                  startup_s=_mean(m["startup_s"] for m in measured))
    echo(f"{describe_measurement(pooled, alone)}  [{seconds:.1f} s]")
    for m in measured:
        noise = m.get("noise_scale")
        if noise:
            value = "n/a (no signal)" if noise["b_noise"] is None else f"{noise['b_noise']:.0f}"
            low, high = noise["b_noise_ci95"]
            interval = "" if low is None or high is None else f" [{low:.0f}, {high:.0f}]"
            echo(f"  noise scale over the warm-up epoch(s), local vs all-reduced gradients "
                 f"({noise['batch_small']} vs {noise['batch_big']}, {noise['steps']} steps): B_noise {value}{interval}")


def build_profile(request: ProfileRequest, measurements: list, skipped: list, complete: bool) -> dict:
    """The profile.json object (docs/formats.md) of what was measured so far."""
    model, report = fitting.fit_profile(measurements)
    first = measurements[0]
    env = first["environment"]
    capacity = request.launcher.capacity(request.device)
    workload = dict(first["workload"] or {})
    if "samples_per_epoch" in workload:
        workload["train_set_samples"] = workload.pop("samples_per_epoch")
    workload.update(spec=request.workload, config=request.config, options=request.workload_options,
                    global_batch=first["global_batch"], steps_per_epoch=first["steps_per_epoch"],
                    samples_per_epoch=first["samples"][0] if first["samples"] else None)
    workload.setdefault("synthetic_data", False)
    overheads = {name: _mean(m.get(name) for m in measurements if m["kind"] == "ddp")
                 for name in ("startup_s", "checkpoint_save_s", "checkpoint_load_s", "eval_s", "roundtrip_s")}
    cv = fitting.epoch_cv(measurements)
    variability = {"epoch_cv": cv} if cv is not None else {}
    for name, value in (("startup_cv", fitting.startup_cv(measurements)), ("run_cv", fitting.run_cv(measurements))):
        if value is not None:
            variability[name] = value
    public = [{k: v for k, v in m.items() if k not in ("environment", "workload", "global_batch",
                                                       "steps_per_epoch")} for m in measurements]
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": request.command or "nasalloc profile",
        "complete": complete,
        "hardware": {"device": request.device, "device_names": env["device_names"],
                     "device_count": capacity.gpus if request.device == "cuda" else 0,
                     "gpus_per_node": request.gpus_per_node or (capacity.gpus_per_node or None),
                     "nodes": max(m["nodes"] for m in measurements), "hostname": env["hostname"],
                     "cpu_count": env["cpu_count"], "launcher": request.launcher.name,
                     "ranks_are": "GPUs (one per rank)" if request.device == "cuda"
                     else "CPU processes with one thread each (not GPUs)"},
        "software": {k: env[k] for k in ("python", "torch", "cuda", "nccl")},
        "workload": workload,
        "settings": {"gpus": [int(g) if g >= 1 else g for g in request.gpus], "warmup": request.warmup, "epochs": request.epochs,
                     "repeats": request.repeats, "seed": request.seed,
                     "baseline_added": request.added_baseline},
        "measurements": public,
        "skipped": skipped,
        "overheads": {k: v for k, v in overheads.items() if v is not None},
        "variability": variability,
        "model": model.to_dict(),
        "fit": report,
    }


def run_profile(request: ProfileRequest, echo: Callable[[str], None] = print) -> dict:
    """Measure every requested g, fit, and write the profile (and return it)."""
    request.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".profile-", dir=request.out.parent))
    measurements, skipped = [], []
    began = time.monotonic()
    if request.added_baseline:
        echo("g=1 added: co-location slowdowns are measured against one trial alone on one device")
    if request.device == "cpu":
        echo(f"device cpu: each rank is a process with one thread ({os.cpu_count()} cores here); "
             "CPU ranks stand in for GPUs")
    runner = _echo_runner(request, scratch)
    try:
        _warm_launch(request, scratch)
        # Repeats run in rounds (every g once, then every g again): a passing load on the machine
        # then slows a repeat of every g alike, not all repeats of one g (which would bias the
        # comparison between splits the simulation is for).
        per_g = {g: [] for g in request.gpus}
        seconds = dict.fromkeys(request.gpus, 0.0)
        skipping: set = set()
        for repeat in range(request.repeats):
            for g in [g for g in request.gpus if g not in skipping]:
                g_began = time.monotonic()
                measure = _measure_ddp if g >= 1 else _measure_colocated
                m = measure(request, g, repeat, scratch, runner)
                seconds[g] += time.monotonic() - g_began
                if "skip" in m:
                    skipping.add(g)
                    skipped.append({"gpus": int(g) if g >= 1 else g, "reason": m["skip"]})
                    echo(f"g={_g(g)}: skipped, the hardware cannot hold it: {m['skip']}")
                    if per_g[g]:  # measured in earlier rounds: those stay, the profile says why no more
                        _report_g(request, measurements, per_g[g], seconds[g], echo)
                else:
                    per_g[g].append(m)
                    measurements.append(m)
                    if repeat == request.repeats - 1:
                        _report_g(request, measurements, per_g[g], seconds[g], echo)
                    else:
                        echo(f"g={_g(g)}: repeat {repeat + 1} of {request.repeats}: start-up {m['startup_s']:.1f} "
                             f"s, epoch {np.mean(m['epoch_seconds']):.3f} s  [{time.monotonic() - g_began:.1f} s]")
                if any(m["kind"] == "ddp" for m in measurements):
                    atomic_write_json(request.out, build_profile(request, measurements, skipped, complete=False))
        if not any(m["kind"] == "ddp" for m in measurements):
            raise ProfileFailed("no GPU count could be measured: " + "; ".join(s["reason"] for s in skipped))
        noise = _measure_noise(request, scratch, echo) if request.noise_epochs else None
        profile = build_profile(request, measurements, skipped, complete=True)
        if noise is not None:
            profile["noise_scale"] = noise
        profile["elapsed_s"] = time.monotonic() - began
        atomic_write_json(request.out, profile)
        return profile
    finally:
        if runner is not None:
            runner.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _warm_launch(request: ProfileRequest, scratch: Path) -> None:
    """One unmeasured launch first, so the first measured start-up is not a cold one (profiler/warm.py)."""
    job = DDPJob(module="nasalloc.profiler.warm", args=[request.workload, json.dumps(request.workload_options)],
                 ranks=1, device=request.device, log_dir=scratch / "logs" / "warm", name="profile-warm",
                 cpu_cores=_cpu_cores(request, [0]))
    running = request.launcher.start(job)
    deadline = time.monotonic() + (request.timeout_s or 600.0)
    while running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if running.poll() is None:
        running.terminate("warm-up launch timed out")


def _echo_runner(request: ProfileRequest, scratch: Path):
    """The runner's side of the per-epoch round trip, hosted here while jobs run."""
    import socket

    from nasalloc.validate.roundtrip import EchoRunner

    host = "127.0.0.1" if isinstance(request.launcher, LocalLauncher) else socket.gethostname()
    return EchoRunner(host, scratch / "echo")
