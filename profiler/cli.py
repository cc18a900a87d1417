"""``nasalloc profile``: measure DDP epochs on each GPU count, fit the scaling model, write
profile.json (schema nasalloc.profile/1), its plot and a summary table."""

from __future__ import annotations

import shlex
import sys

import click

from nasalloc.options import quiet_option, seed_option

DEFAULT_GPUS = "1,2,4,8,16"


@click.command("profile")
@click.option("--gpus", default=DEFAULT_GPUS, show_default=True,
              help="GPU counts per trial to measure, comma-separated; fractions 1/k (0.5, 0.25, 1/8) run k "
                   "trials sharing one GPU (co-located).")
@click.option("--workload", default=None,
              help="resnet | digits | module:factory. Default: resnet on CUDA, digits on CPU.")
@click.option("--config", default=None, help="Config to time, a JSON object or a JSON file; it updates the "
                                             "workload's reference config (the default).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Epochs trained and discarded first.")
@click.option("--epochs", type=int, default=3, show_default=True, help="Measured epochs per job.")
@click.option("--steps", type=int, default=None, help="Training steps per epoch (cap, for large datasets).")
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Jobs per GPU count (each launched afresh, so start-up is measured each time), in rounds: "
                   "every GPU count once, then again.")
@click.option("--launcher", type=click.Choice(["auto", "local", "slurm", "ray"]), default="auto", show_default=True,
              help="local: processes on this node; slurm: job steps in the current allocation; ray: each job "
                   "from a fresh Ray actor, so start-up includes Ray's (for plans of Ray Tune runs); auto: slurm "
                   "inside an allocation.")
@click.option("--gpus-per-node", type=int, default=None, help="GPUs per node (default: what the launcher sees).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="cuda: NCCL, one GPU per rank; cpu: gloo, one thread per rank (CPU ranks are not GPUs).")
@click.option("--data-dir", type=click.Path(), default=None, help="Dataset folder (resnet).")
@click.option("--out", default="results/profile.json", show_default=True,
              help="Profile file to write; the plot goes beside it (.png).")
@click.option("--timeout", "timeout_s", type=float, default=None,
              help="Seconds one measuring job may take before it is stopped (default: no limit).")
@click.option("--noise-epochs", default="auto", show_default=True,
              help="Epochs at which one rank measures the gradient noise scale of the config (0: before "
                   "training): a list, auto (1, 3, 9, ... up to the workload's max_epochs) or none.")
@click.option("--noise-steps", type=int, default=32, show_default=True,
              help="Steps (big batches of --noise-micro-batches micro-batches) per noise-scale point.")
@click.option("--noise-micro-batches", type=int, default=8, show_default=True,
              help="Micro-batches of the config's batch per big batch (the two sizes of the estimator).")
@click.option("--batch-policy", type=click.Choice(["global", "per_gpu"]), default=None,
              help="The workload's batch policy [default: the workload's own].")
@seed_option
@quiet_option
def profile(gpus, workload, config, warmup, epochs, steps, repeats, launcher, gpus_per_node, device, data_dir,
            out, timeout_s, noise_epochs, noise_steps, noise_micro_batches, batch_policy, seed, quiet):
    """Measure real DDP epochs of a workload on each GPU count and fit the scaling model.

    \b
    nasalloc profile --gpus 1,2 --device cpu --workload digits --epochs 2
    nasalloc profile --gpus 1,2,4,8,0.5,0.25 --device cuda --workload resnet --data-dir DIR
    """
    from nasalloc.extras import require_torch

    require_torch("profile")
    from .launch import get_launcher
    from .request import prepare
    from .run import ProfileFailed, run_profile

    from nasalloc.workloads.distributed import resolve_device

    echo = (lambda line: None) if quiet else (lambda line: click.echo(line))
    # the resolved device: on CPU an allocation without GPUs lends its cores as slots
    chosen_launcher = get_launcher(launcher, gpus_per_node, device=resolve_device(device))
    if workload is None:
        workload = "resnet" if resolve_device(device) == "cuda" else "digits"
    request = prepare(gpus=gpus, workload=workload, config=config, warmup=warmup, epochs=epochs, steps=steps,
                      repeats=repeats, launcher=chosen_launcher, device=device, data_dir=data_dir, out=out,
                      seed=seed, gpus_per_node=gpus_per_node, timeout_s=timeout_s,
                      command=_command_line(click.get_current_context()), noise_epochs=noise_epochs,
                      noise_steps=noise_steps, noise_micro_batches=noise_micro_batches, batch_policy=batch_policy)
    from nasalloc.io import file_output_lock

    with file_output_lock(request.out):  # one run writes a profile at a time
        echo(f"profiling {workload} on {request.device} with the {chosen_launcher.name} launcher: g = "
             + ", ".join(f"{g:g}" for g in request.gpus)
             + f" ({request.warmup} warm-up + {request.epochs} measured epoch(s), {request.repeats} repeat(s))")
        try:
            result = run_profile(request, echo)
        except ProfileFailed as err:
            click.echo(f"nasalloc profile: error: {err}", err=True)
            sys.exit(1)
        from .plot import plot_profile
        from .summary import format_summary

        plot = plot_profile(result, request.plot_path)
        if result.get("noise_scale", {}).get("points"):
            from .noiseplot import plot_noise_scale

            plot = f"{plot} and {plot_noise_scale(result, request.noise_plot_path)}"
        click.echo(format_summary(result))
        measured = len({m["gpus"] for m in result["measurements"]})
        click.echo(f"profiled {measured} GPU count(s), skipped {len(result['skipped'])} in {result['elapsed_s']:.1f} s: "
                   f"wrote {request.out} and {plot}")


def _command_line(ctx: click.Context) -> str:
    """The command as run, every option spelled out (the profile's ``source``)."""
    words = ["nasalloc", "profile"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value is False:
            continue
        flag = max(param.opts, key=len)
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words)
