"""Turn ``nasalloc simulate``'s options into a checked sweep, writing nothing.

Every user mistake raises a one-line :class:`UserError` here, before the output folder exists;
``notes`` collects each default the simulation falls back on, to be printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nasalloc.errors import UserError
from nasalloc.io import check_writable, folder_lock

from .cluster import (check_budget, default_gpus_per_trial, make_split, parse_gpus_per_trial)
from .timemodel import FALLBACK_GPUS_PER_NODE, LoadedProfile, TimeModel, load_profile


#: upper limits of the sizes a user gives, refused above (one line naming the limit). Memory
#: grows with trials x splits (the first seed's event records of every split are kept for the
#: report: ~60 KB per trial and split) and time with seeds x splits x trials.
LIMITS = {"--seeds": 1_000, "--trials": 5_000, "--brackets": 100, "--jobs": 256}


def parse_algorithms(text: str) -> tuple:
    from .schedulers import ALGORITHMS

    names = [item.strip().lower() for item in str(text).split(",") if item.strip()]
    if not names:
        raise UserError(f"--algorithms {text!r} is empty (expected a list of {', '.join(ALGORITHMS)})")
    for name in names:
        if name not in ALGORITHMS:
            raise UserError(f"--algorithms: unknown algorithm {name!r} (expected {', '.join(ALGORITHMS)})")
    return tuple(dict.fromkeys(names))


@dataclass
class PreparedSweep:
    spec: object               # sweep.SweepSpec
    time_model: TimeModel
    table: object              # curvetable.CurveTable (truncated to max_epochs)
    profile: LoadedProfile
    jobs: int
    notes: list
    source_line: str
    scaling: object = None     # batchscaling.BatchScaling
    tolerance: float = 0.01    # --tolerance (objective accuracy-time, epochs to target)


def allocation_model(time_limit=None, signal_lead="300s", grace="60s", requeue_wait=None, node_mtbf=None,
                     checkpoint_every=None, max_restarts=3, allocation_start=None):
    """The AllocationModel of the simulate flags (checked; see allocation.py)."""
    from .allocation import AllocationModel, parse_duration, parse_wait

    if time_limit is None:
        for flag, value, default in (("--requeue-wait", requeue_wait, None), ("--signal-lead", signal_lead, "300s"),
                                     ("--grace", grace, "60s"), ("--allocation-start", allocation_start, None)):
            if value != default:
                raise UserError(f"{flag} {value} only applies with --time-limit")
    limit = parse_duration(time_limit, "--time-limit") if time_limit is not None else None
    if limit is not None and limit <= 0:
        raise UserError(f"--time-limit {time_limit!r}: expected a duration > 0")
    wait, spread = parse_wait(requeue_wait) if requeue_wait is not None else (0.0, 0.0)
    if node_mtbf is not None:
        try:
            node_mtbf = float(node_mtbf)
        except ValueError:
            raise UserError(f"--node-mtbf {node_mtbf!r}: expected hours > 0") from None
    return AllocationModel(time_limit_s=limit, signal_lead_s=parse_duration(signal_lead, "--signal-lead"),
                           grace_s=parse_duration(grace, "--grace"), requeue_wait_s=wait, requeue_spread_s=spread,
                           node_mtbf_h=node_mtbf, checkpoint_every=checkpoint_every, max_restarts=max_restarts,
                           allocation_start_s=(parse_duration(allocation_start, "--allocation-start")
                                               if allocation_start is not None else 0.0))


def prepare(*, budget, profile_path=None, curves_path=None, algorithms="hyperband,asha,bohb",
            gpus_per_trial=None, gpus_per_node=None, max_epochs=None, min_epochs=1, eta=3, trials=None,
            brackets=None, semantics="ray", ray_pending=None, seeds=10, seed=0, objective="makespan", deadline=None,
            out="results/simulate", jobs=None, batch_policy=None, tolerance=0.01, time_limit=None,
            signal_lead="300s", grace="60s", requeue_wait=None, node_mtbf=None, checkpoint_every=None,
            max_restarts=3, allocation_start=None) -> PreparedSweep:
    from .curvetable import load_curve_table
    from .schedulers import make_scheduler
    from .schedulers.brackets import check_budget as check_epochs
    from .schedulers.sampling import TableSource
    from .sweep import SweepSpec, default_jobs, read_done_rows

    notes: list[str] = []
    names = parse_algorithms(algorithms)
    budget = check_budget(budget)
    for flag, value in (("--seeds", seeds), ("--jobs", jobs), ("--trials", trials), ("--brackets", brackets)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value!r} must be a whole number >= 1")
        if value is not None and value > LIMITS[flag]:
            raise UserError(f"{flag} {value:,} is above the limit of {LIMITS[flag]:,}")
    if trials is not None and brackets is not None:
        raise UserError(f"--trials {trials} and --brackets {brackets}: give one or the other")
    if ray_pending is not None and (semantics != "ray" or ray_pending < 1):
        raise UserError(f"--ray-pending {ray_pending!r}: expected a whole number >= 1 with --semantics ray "
                        f"(got --semantics {semantics}); reference semantics create a trial when a slot asks")
    if objective == "deadline" and (deadline is None or not deadline > 0):
        raise UserError(f"--objective deadline needs --deadline SECONDS > 0 (got {deadline!r})")
    if objective != "deadline" and deadline is not None:
        raise UserError(f"--deadline {deadline:g} only applies with --objective deadline")
    if tolerance is None or not tolerance >= 0:
        raise UserError(f"--tolerance {tolerance!r} must be a number >= 0 (metric units, e.g. 0.01)")

    allocation = allocation_model(time_limit, signal_lead, grace, requeue_wait, node_mtbf, checkpoint_every,
                                  max_restarts, allocation_start)
    profile = load_profile(profile_path)
    model = profile.model
    if profile.embedded:  # its assumptions state every default it rests on
        notes.extend(f"default profile assumes: {a}" for a in profile.data.get("assumptions", []))
    else:
        notes.extend(model.notes)
    if gpus_per_node is None:
        if model.gpus_per_node is not None:
            gpus_per_node = model.gpus_per_node
        else:
            gpus_per_node = FALLBACK_GPUS_PER_NODE
            notes.append(f"profile has no hardware.gpus_per_node: default {FALLBACK_GPUS_PER_NODE} GPUs per node")
    elif gpus_per_node < 1:
        raise UserError(f"--gpus-per-node {gpus_per_node!r} must be a whole number >= 1")

    if gpus_per_trial is None:
        splits = default_gpus_per_trial(budget, gpus_per_node, model.scaling.colocation)
        if not any(g < 1 for g in splits):
            notes.append("no co-location measurements in the profile: fractional splits (trials sharing a GPU) are "
                         "left out of the default list; --gpus-per-trial 0.5,... simulates them time-sliced")
    else:
        splits = parse_gpus_per_trial(gpus_per_trial)
    normalised = sorted({make_split(budget, gpus_per_node, g).gpus_per_trial for g in splits})
    outside = [g for g in normalised if g > 1 and model.scaling.extrapolated(g)]
    if outside:
        measured = (f"measured {model.scaling.measured_min_gpus:g}-{model.scaling.measured_max_gpus:g} GPUs"
                    if model.scaling.measured_max_gpus is not None else "measured range (not stated)")
        notes.append(f"{', '.join(f'{g:g}' for g in outside)} GPUs per trial lie outside the profile's {measured}: "
                     f"the scaling model extrapolates")

    table = load_curve_table(curves_path, profile.data)
    if max_epochs is None:
        max_epochs = table.max_epochs
    try:
        max_epochs, min_epochs, eta = check_epochs(max_epochs, min_epochs, eta)
    except UserError as err:
        raise UserError(str(err).replace("max_t=", "--max-epochs ").replace("min_t=", "--min-epochs ")
                        .replace("eta=", "--eta ")) from None
    table = table.truncated(max_epochs)
    TableSource(table.space, table.configs)  # every config must lie in the space
    notes.append(table.reference_note)
    from .batchscaling import scaling_from

    scaling, scaling_notes = scaling_from(profile.data, batch_policy)
    notes.extend(scaling_notes)

    spec = SweepSpec(budget=budget, gpus_per_node=gpus_per_node, splits=tuple(normalised), algorithms=names,
                     seeds=tuple(seed + i for i in range(seeds)), max_t=max_epochs, min_t=min_epochs, eta=eta,
                     semantics=semantics, mode=table.mode, trials=trials, brackets=brackets,
                     ray_pending=ray_pending, deadline_s=float(deadline) if deadline is not None else None,
                     profile_sha256=profile.sha256, curves_sha256=table.sha256, batch_scaling=scaling.key(),
                     allocation=allocation.key())
    if allocation.active:
        notes.append(f"allocation model: {allocation.describe()}")
    for name in names:  # scheduler arguments are checked by building each once
        make_scheduler(name, source=TableSource(table.space, table.configs[:1]), max_t=spec.max_t,
                       min_t=spec.min_t, eta=spec.eta, semantics=semantics, mode=spec.mode, seed=0,
                       **spec.limits(name))
    check_writable(out, "--out")
    folder_lock(out).refuse_if_held()  # a sweep running there now is named before its rows are read
    read_done_rows(Path(out), spec)  # a folder holding another sweep is refused here

    if profile.embedded:
        profile_text = f"embedded default profile ({profile.data.get('source', '')})"
    else:
        profile_text = f"profile {profile.path} (sha256 {profile.sha256[:12]})"
    curves_text = (f"{'embedded ' if table.path.startswith('<') else ''}curves {table.path} "
                   f"({table.workload or 'unnamed workload'}, {table.rows} configs x {table.max_epochs} epochs)")
    source_line = f"used: {profile_text}; {curves_text}"
    return PreparedSweep(spec=spec, time_model=model, table=table, profile=profile,
                         jobs=jobs if jobs is not None else default_jobs(), notes=notes, source_line=source_line,
                         scaling=scaling, tolerance=float(tolerance))
