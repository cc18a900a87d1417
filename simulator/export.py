"""``nasalloc export --plan plan.json --format ray-tune``: the planned search as a runnable Ray
Tune script, with the exact scheduler parameters the plan simulated.

The script keeps what the simulation assumed:

* the scheduler class of the plan's algorithm (``ASHAScheduler`` with ``grace_period=min_t``
  and one bracket, ``HyperBandScheduler``, ``HyperBandForBOHB`` + ``TuneBOHB``) with its
  ``max_t``, ``reduction_factor`` and the metric and mode;
* ``num_samples`` as many trials as the simulated search created (``--brackets N``: the trials
  of Ray's first N brackets);
* each trial's GPUs (``resources_per_trial``); ``max_concurrent_trials`` is left unset on
  purpose: the GPUs already cap how many trials run, and setting it makes Ray's default
  searcher create trials only as others end, which is not what was simulated;
* ``TUNE_MAX_PENDING_TRIALS_PG`` when the plan was simulated with ``--ray-pending``.

The search space is the plan's (the workload's ConfigSpace space, or the one built from the
curves); for BOHB it is handed to TuneBOHB as ConfigSpace, conditions included; for HyperBand
and ASHA as Tune's sampling functions, where conditions cannot be written (the script lists
them: the trainable should ignore an inactive value).

``--demo`` in the generated script replaces the trainable's body by a stand-in that reports a
synthetic metric and runs on CPUs with a custom resource standing for the GPUs, so the planned
search itself can be dry-run anywhere (the tests do).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from nasalloc.errors import UserError

FORMATS = ("ray-tune",)


def _space_code(space) -> tuple[str, list[str]]:
    """Tune sampling functions for the space's hyperparameters, and its conditions as text."""
    from ConfigSpace import (CategoricalHyperparameter, Constant, OrdinalHyperparameter,
                             UniformFloatHyperparameter, UniformIntegerHyperparameter)

    lines = []
    for hp in space.values():
        if isinstance(hp, CategoricalHyperparameter):
            code = f"tune.choice({list(hp.choices)!r})"
        elif isinstance(hp, OrdinalHyperparameter):
            code = f"tune.choice({list(hp.sequence)!r})"
        elif isinstance(hp, UniformFloatHyperparameter):
            code = f"tune.{'loguniform' if hp.log else 'uniform'}({hp.lower!r}, {hp.upper!r})"
        elif isinstance(hp, UniformIntegerHyperparameter):  # Tune's upper bound is exclusive
            code = f"tune.{'lograndint' if hp.log else 'randint'}({hp.lower!r}, {hp.upper + 1!r})"
        elif isinstance(hp, Constant):
            code = repr(hp.value)
        else:
            raise UserError(f"hyperparameter {hp.name!r} ({type(hp).__name__}) has no Ray Tune "
                            "counterpart here; export supports categorical, ordinal, float, "
                            "integer and constant ones")
        lines.append(f"    {hp.name!r}: {code},")
    return "{\n" + "\n".join(lines) + "\n}", [str(c) for c in space.conditions]


def ray_scheduler(algorithm: str, scheduler: dict) -> tuple[str, dict]:
    """The Ray Tune scheduler class (in ``ray.tune.schedulers``) and its keyword arguments that
    run what the plan's ``scheduler`` entry simulated: the export writes it, ``validate
    --executor ray`` builds it."""
    max_t, eta, min_t = int(scheduler["max_t"]), int(scheduler["eta"]), int(scheduler.get("min_t", 1))
    arguments = {"time_attr": "training_iteration", "max_t": max_t}
    if algorithm == "asha":
        return "ASHAScheduler", {**arguments, "grace_period": min_t, "reduction_factor": eta, "brackets": 1}
    if algorithm == "hyperband":
        return "HyperBandScheduler", {**arguments, "reduction_factor": eta}
    if algorithm == "bohb":
        return "HyperBandForBOHB", {**arguments, "reduction_factor": eta}
    raise UserError(f"algorithm {algorithm!r} has no Ray Tune scheduler here; expected asha, hyperband or bohb")


def num_samples(scheduler: dict, algorithm: str) -> int:
    """How many trials the plan's search creates (Ray's ``num_samples``)."""
    if scheduler.get("trials") is not None:
        return int(scheduler["trials"])
    from .schedulers import hyperband_brackets

    shapes = hyperband_brackets(int(scheduler["max_t"]), int(scheduler["eta"]), int(scheduler.get("min_t", 1)),
                                "ray", "bohb" if algorithm == "bohb" else "hyperband")
    return sum(shapes[k % len(shapes)][0][0] for k in range(int(scheduler["brackets"])))


def _pick(entry: dict, split: str, algorithm: str) -> dict:
    if split in ("best", "worst"):
        return entry[split]
    try:
        wanted = float(split)
    except ValueError:
        raise UserError(f"--split {split!r}: expected best, worst or a GPUs-per-trial value") from None
    for summary in entry["splits"]:
        if float(summary["gpus_per_trial"]) == wanted:
            return summary
    have = ", ".join(f"{float(s['gpus_per_trial']):g}" for s in entry["splits"])
    raise UserError(f"--split {split}: the plan's {algorithm} has no such split (it has {have})")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def render_ray_tune(plan: dict, algorithm: str, split: str, space, plan_path: str) -> str:
    from nasalloc import __version__

    entries = plan.get("algorithms") or {}
    if algorithm not in entries:
        raise UserError(f"--algorithm {algorithm!r}: the plan has {', '.join(entries) or 'none'}")
    entry = entries[algorithm]
    scheduler, chosen = entry["scheduler"], _pick(entry, split, algorithm)
    gpus = float(chosen["gpus_per_trial"])
    budget, metric, mode = int(plan["budget"]), plan["metric"]["name"], plan["metric"]["mode"]
    max_t, eta, min_t = int(scheduler["max_t"]), int(scheduler["eta"]), int(scheduler.get("min_t", 1))
    space_code, conditions = _space_code(space)
    low, high = chosen.get("makespan_ci95_s") or (None, None)
    interval = (f"95% interval {_hours(low)}..{_hours(high)} over {chosen.get('seeds')} seeds"
                if low is not None else f"no interval ({chosen.get('seeds')} seeds)")
    pending = (plan.get("scheduler") or {}).get("ray_pending")
    notes = []
    if scheduler.get("semantics") != "ray":
        notes.append("The plan was simulated with --semantics reference: Ray's brackets and "
                     "decisions differ; simulate with --semantics ray for a prediction of this run.")
    if algorithm == "hyperband" and min_t != 1:
        notes.append(f"Ray's HyperBandScheduler has no min_t; the plan's min_t {min_t} is not expressed.")
    if conditions and algorithm != "bohb":
        notes.append("Conditions Tune's param_space cannot express (ignore an inactive value in "
                     "train_fn): " + "; ".join(conditions))
    class_name, arguments = ray_scheduler(algorithm, scheduler)
    sched = f"{class_name}(" + ", ".join(f"{k}={json.dumps(v)}" for k, v in arguments.items()) + ")"
    serialized = json.dumps(space.to_serialized_dict(), sort_keys=True)
    note_lines = "".join(f"# NOTE: {n}\n" for n in notes)
    search = ("    search_alg = TuneBOHB(space=ConfigurationSpace.from_serialized_dict(json.loads(SPACE_JSON)),\n"
              "                          metric=METRIC, mode=MODE, seed=0)\n"
              "    param_space = None\n") if algorithm == "bohb" else \
             ("    search_alg = None\n"
              "    param_space = PARAM_SPACE\n")
    bohb_imports = ("from ConfigSpace import ConfigurationSpace\n"
                    "from ray.tune.search.bohb import TuneBOHB  # needs hpbandster and ConfigSpace\n") \
        if algorithm == "bohb" else ""
    pending_line = (f'os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "{int(pending)}")  '
                    "# as simulated (--ray-pending)\n") if pending is not None else ""
    return f'''"""Ray Tune search planned by nasalloc {__version__} from {plan_path}.

{algorithm}, {gpus:g} GPU(s) per trial, up to {chosen.get("parallel_trials")} trials at once on {budget} GPUs.
Predicted makespan: {_hours(float(chosen["makespan_s"]))} ({interval}), with the plan's profile
and curves (nasalloc simulate). Replace train_fn's body with your training: build the model
from `config`, train, and report `{metric}` once per epoch (training_iteration counts epochs).

    python {{this file}}            # your search on your cluster (ray.init() finds it)
    python {{this file}} --demo     # a dry run on CPUs: a stand-in trainable, virtual GPUs
"""

import json
import math
import os
import random
import sys
import time

{pending_line}from ray import tune
from ray.tune.schedulers import {class_name}
{bohb_imports}
{note_lines}METRIC, MODE = {metric!r}, {mode!r}
MAX_T, ETA, MIN_T = {max_t}, {eta}, {min_t}
NUM_SAMPLES = {num_samples(scheduler, algorithm)}
GPUS_PER_TRIAL, BUDGET = {gpus!r}, {budget}
PARAM_SPACE = {space_code}
SPACE_JSON = {serialized!r}
DEMO = "--demo" in sys.argv


def train_fn(config):
    if DEMO:  # a stand-in: a saturating curve per config, a few milliseconds per epoch
        level = random.Random(json.dumps(config, sort_keys=True, default=str)).random()
        for epoch in range(1, MAX_T + 1):
            time.sleep(0.005)
            value = level * (1 - math.exp(-epoch / 3))
            tune.report({{METRIC: value if MODE == "max" else 1 - value}})
        return
    raise NotImplementedError("replace train_fn's body with your training loop")


def main():
    import ray

    if DEMO:  # virtual GPUs: a custom resource, so the planned concurrency runs on CPUs
        ray.init(num_cpus=2, resources={{"gpu_slot": BUDGET}}, include_dashboard=False,
                 log_to_driver=False, object_store_memory=80_000_000)
        resources = {{"cpu": 0.01, "gpu_slot": GPUS_PER_TRIAL}}
    else:
        ray.init()
        resources = {{"cpu": 1, "gpu": GPUS_PER_TRIAL}}
        # more than one GPU per trial: run DDP inside train_fn, or use Ray Train's
        # TorchTrainer(train_loop, scaling_config=ScalingConfig(num_workers=int(GPUS_PER_TRIAL),
        # use_gpu=True)) as the trainable; the split stays the same
{search}    scheduler = {sched}
    tuner = tune.Tuner(
        tune.with_resources(train_fn, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, num_samples=NUM_SAMPLES,
                                    scheduler=scheduler, search_alg=search_alg),
        run_config=tune.RunConfig(name="nasalloc_{algorithm}_{gpus:g}gpu", verbose=0 if DEMO else 1),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(f"best {{METRIC}}: {{best.metrics[METRIC]:.6g}} with {{best.config}}")
    return results


if __name__ == "__main__":
    main()
'''


def space_of_plan(plan: dict, plan_path: Path):
    from nasalloc.validate.plan import curves_of

    from .curvetable import load_curve_table

    shown = str((plan.get("curves") or {}).get("path", "<embedded>"))
    path = curves_of(plan_path, shown)
    return load_curve_table(None if path is None else str(path), (plan.get("profile") or {}).get("content")).space


@click.command()
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), required=True, help="plan.json of nasalloc simulate.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="ray-tune", show_default=True)
@click.option("--algorithm", default=None, help="Which algorithm of the plan [default: its first].")
@click.option("--split", default="best", show_default=True, help="best, worst, or a GPUs-per-trial value of the plan.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Also write the script here (.py) [default: print only].")
def export(plan_path, fmt, algorithm, split, out):
    """Print the planned search as a runnable script for another tool (Ray Tune)."""
    from nasalloc.io import atomic_write_text, check_writable, read_json

    if out is not None:
        check_writable(out, "--out", folder=False)
    plan = read_json(Path(plan_path), "plan")
    if not isinstance(plan, dict) or not plan.get("algorithms"):
        raise UserError(f"plan {plan_path} has no algorithms: is it a nasalloc plan.json?")
    algorithm = algorithm or next(iter(plan["algorithms"]))
    try:
        text = render_ray_tune(plan, algorithm, split, space_of_plan(plan, Path(plan_path)), plan_path)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"plan {plan_path} is missing or has a malformed field ({type(err).__name__}: {err})") from None
    if out is not None:
        try:
            atomic_write_text(Path(out), text)
        except OSError as err:
            raise UserError(f"--out {out} cannot be written ({err.strerror})") from None
    click.echo(text, nl=False)
