"""What ``nasalloc profile`` is asked to do, checked before anything runs or is written.

:func:`prepare` validates every input (GPU counts, epochs, config, workload, device, launcher
capacity, output path) and returns a :class:`ProfileRequest`, or raises a one-line
``UserError`` naming the bad value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional

from nasalloc.errors import UserError
from nasalloc.io import check_writable, file_output_lock

from .launch import DDPJob, Launcher

WORKER_MODULE = "nasalloc.profiler.worker"
#: co-located CPU trials allowed per core (they time-slice; more says little and costs memory)
CPU_COLOCATION_PER_CORE = 4


def parse_gpus(text: str) -> list:
    """'1,2,4,0.5' -> [1, 2, 4, 0.5]: whole GPU counts >= 1 or fractions 1/k of one GPU."""
    values = []
    for token in str(text).split(","):
        token = token.strip()
        try:
            value = Fraction(token)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"--gpus value {token!r} is not a number (expected e.g. 1,2,4 or 0.5)") from None
        if value <= 0:
            raise UserError(f"--gpus value {token!r} must be > 0")
        if value >= 1 and value.denominator != 1:
            raise UserError(f"--gpus value {token!r} is not a whole number of GPUs or a fraction 1/k of one")
        if value < 1:
            k = round(1 / value)
            if abs(float(value) * k - 1) > 2e-3:  # accepts 0.333 for 1/3, refuses 0.4
                raise UserError(f"--gpus value {token!r} is not a fraction 1/k of a GPU (k trials sharing it)")
            values.append(1.0 / k)
        else:
            values.append(float(int(value)))
    return sorted(set(values), key=lambda g: (g < 1, g if g >= 1 else -g))


def load_config(text: Optional[str], reference: dict, known: Optional[list] = None) -> dict:
    """The config to time: the reference, updated by a JSON object given inline or as a file
    whose keys must be among ``known`` (the search space's hyperparameters) when given."""
    if text is None:
        return dict(reference)
    source = "--config"
    if not text.lstrip().startswith(("{", "[")):
        path = Path(text)
        if not path.is_file():
            raise UserError(f"--config {text!r} is neither a JSON object nor a file")
        source, text = f"--config file {path}", path.read_text(encoding="utf-8")
    try:
        given = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{source} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(given, dict):
        raise UserError(f"{source} must be a JSON object of hyperparameters, got {type(given).__name__}")
    allowed = set(reference) | set(known or [])
    unknown = sorted(set(given) - allowed)
    if known is not None and unknown:
        raise UserError(f"{source}: {unknown[0]!r} is not a hyperparameter of the workload "
                        f"(expected some of {', '.join(sorted(allowed))})")
    return {**reference, **given}


@dataclass
class ProfileRequest:
    gpus: list
    workload: str
    workload_options: dict
    config: dict
    device: str
    launcher: Launcher
    out: Path
    warmup: int = 1
    epochs: int = 3
    repeats: int = 1
    seed: int = 0
    timeout_s: Optional[float] = None
    gpus_per_node: Optional[int] = None
    command: str = ""
    nodes: dict = field(default_factory=dict)   # g -> nodes its job spans
    added_baseline: bool = False                # g = 1 added for co-location's baseline
    noise_epochs: list = field(default_factory=list)  # epochs to measure the gradient noise scale at
    noise_steps: int = 32
    noise_micro_batches: int = 8

    @property
    def plot_path(self) -> Path:
        return self.out.with_suffix(".png")

    @property
    def noise_plot_path(self) -> Path:
        return self.out.with_name(self.out.stem + "_noise.png")


def prepare(*, gpus: str, workload: str, config: Optional[str], warmup: int, epochs: int,
            steps: Optional[int], repeats: int, launcher: Launcher, device: str, data_dir: Optional[str],
            out: str, seed: int, gpus_per_node: Optional[int] = None, timeout_s: Optional[float] = None,
            command: str = "", noise_epochs: Optional[str] = None, noise_steps: int = 32,
            noise_micro_batches: int = 8, batch_policy: Optional[str] = None) -> ProfileRequest:
    """Validate every input (nothing is run or written yet) and return the request."""
    from nasalloc.workloads.distributed import resolve_device
    from nasalloc.workloads.registry import load_workload

    counts = parse_gpus(gpus)
    for name, value, low in (("--warmup", warmup, 0), ("--epochs", epochs, 1), ("--repeats", repeats, 1)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if timeout_s is not None and timeout_s <= 0:
        raise UserError(f"--timeout must be > 0 seconds, got {timeout_s:g}")
    out_path = Path(out)
    if out_path.is_dir():
        raise UserError(f"--out {out!r} is a folder; give the profile's file name (e.g. results/profile.json)")
    if out_path.suffix != ".json":
        raise UserError(f"--out {out!r} must end in .json")
    check_writable(out_path, "--out", folder=False)
    file_output_lock(out_path).refuse_if_held()
    options = {}
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise UserError(f"--data-dir {data_dir!r} is not a folder")
        options["data_dir"] = str(Path(data_dir).resolve())
    if steps is not None:
        options["steps_per_epoch"] = steps
    if batch_policy is not None:
        from nasalloc.workloads.training import BATCH_POLICIES

        if batch_policy not in BATCH_POLICIES:
            raise UserError(f"--batch-policy {batch_policy!r} is not one of {', '.join(BATCH_POLICIES)}")
        options["batch_policy"] = batch_policy
    chosen = load_workload(workload, **options)
    if batch_policy is not None and getattr(chosen, "batch_policy", None) != batch_policy:
        raise UserError(f"--batch-policy {batch_policy}: workload {workload!r} does not take a batch policy")
    epochs_list = _noise_epochs(noise_epochs, chosen)
    for name, value in (("--noise-steps", noise_steps), ("--noise-micro-batches", noise_micro_batches)):
        if value < 2:
            raise UserError(f"{name} must be >= 2, got {value}")
    resolved = resolve_device(device)
    request = ProfileRequest(gpus=counts, workload=workload, workload_options=options,
                             config=load_config(config, chosen.reference_config(), _hyperparameters(chosen)),
                             device=resolved,
                             launcher=launcher, out=out_path, warmup=warmup, epochs=epochs, repeats=repeats,
                             seed=seed, timeout_s=timeout_s, gpus_per_node=gpus_per_node, command=command,
                             noise_epochs=epochs_list, noise_steps=noise_steps,
                             noise_micro_batches=noise_micro_batches)
    if any(g < 1 for g in counts) and 1.0 not in counts:
        request.gpus = [1.0] + counts  # co-location slowdown is against a trial alone on one GPU
        request.added_baseline = True
    _check_capacity(request)
    return request


def _noise_epochs(text: Optional[str], workload) -> list:
    """``--noise-epochs``: 'auto' (powers of 3 up to the workload's max_epochs, else 81),
    'none', or a list of epochs >= 0."""
    from .noisescale import default_epochs, parse_epochs

    if text is None or str(text).strip().lower() == "auto":
        return default_epochs(int(getattr(workload, "max_epochs", 81) or 81))
    try:
        return parse_epochs(text)
    except ValueError as err:
        raise UserError(f"--noise-epochs value {str(err)!r} is not a whole number of epochs >= 0 "
                        f"(expected e.g. 1,9,27, auto or none)") from None


def _hyperparameters(workload) -> Optional[list]:
    try:
        return list(workload.search_space().keys())
    except Exception:  # a user's space that is not a ConfigSpace mapping: do not guess
        return None


def _check_capacity(request: ProfileRequest) -> None:
    launcher, device = request.launcher, request.device
    capacity = launcher.capacity(device)
    for g in request.gpus:
        if g >= 1:
            ranks = int(g)
            nodes = launcher.nodes_for(ranks, device)
            probe = DDPJob(module=WORKER_MODULE, ranks=ranks, nodes=min(nodes, ranks), device=device)
            try:
                launcher.check(probe)
            except UserError as err:
                raise UserError(f"--gpus value {_g(g)}: {err}") from None
            request.nodes[g] = probe.nodes
        else:
            k = round(1 / g)
            if device == "cuda" and capacity.gpus < 1:
                raise UserError(f"--gpus value {_g(g)}: no GPU visible to share")
            limit = CPU_COLOCATION_PER_CORE * capacity.cpus
            if device == "cpu" and k > limit:
                raise UserError(f"--gpus value {_g(g)}: {k} co-located CPU trials exceed {limit} "
                                f"({CPU_COLOCATION_PER_CORE} per core of {capacity.cpus})")
            request.nodes[g] = 1


def _g(g: float) -> str:
    return str(int(g)) if g >= 1 else f"{g:g}"
