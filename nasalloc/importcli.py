"""``nasalloc import ray DIR``: a past Ray Tune experiment as a trace for ``simulate --curves``."""

from __future__ import annotations

import click

from .errors import UserError


@click.group(name="import")
def import_() -> None:
    """Turn another tool's results into a trace (docs/formats.md) that simulate replays."""


@import_.command(name="ray")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--metric", required=True, help="The result key the search optimised (e.g. val_acc).")
@click.option("--mode", type=click.Choice(["max", "min"]), required=True, help="Whether larger is better.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Trace file to write (.csv or .csv.gz).")
@click.option("--gpu-resource", default="GPU", show_default=True,
              help="Resource that stood for GPUs in resources_per_trial (a custom one, if you used one).")
@click.option("--gpus-per-trial", type=float, default=None,
              help="GPUs per trial where the experiment state does not say [default: 1].")
@click.option("--partial", type=click.Choice(["drop", "hold"]), default="drop", show_default=True,
              help="Early-stopped trials: leave their curves partial, or extend them at their last value.")
def ray(folder, metric, mode, out, gpu_resource, gpus_per_trial, partial):
    """Read Ray Tune experiment FOLDER (params.json, result.json or progress.csv per trial)."""
    from .io import check_writable
    from .rayimport import read_ray_experiment
    from .trace import validate_trace, write_trace

    target = check_writable(out, "--out", folder=False)
    if gpus_per_trial is not None and not gpus_per_trial > 0:
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g}: expected a number > 0")
    found = read_ray_experiment(folder, metric, mode, gpu_resource=gpu_resource,
                                gpus_per_trial=gpus_per_trial, partial=partial)
    validate_trace(found.frame, f"imported from {folder}")
    try:
        write_trace(target, found.frame)
    except OSError as err:
        raise UserError(f"--out {out} cannot be written ({err.strerror})") from None
    for line in found.summary():
        click.echo(line, err=True)
    click.echo(f"wrote {out}: replay it with  nasalloc simulate --budget N --curves {out}")
