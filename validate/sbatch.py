"""A ready sbatch script that runs ``nasalloc validate`` for a plan inside one allocation.

The script asks for the plan's nodes and GPUs per node (one task and ``cpus_per_task`` CPUs
per GPU, so every rank's step fits), a time limit, and ``--signal=B:TERM@<lead>``: SLURM sends
SIGTERM to the batch shell ``lead`` seconds before the time limit. The last line ``exec``\\ s
``nasalloc validate ... --executor slurm --resume``, so that signal reaches the runner itself
(a shell would die of it and leave the runner to be killed): the runner pauses its trials at
their next epoch (checkpointing them), writes its state and exits. ``--requeue`` lets the
cluster requeue it, and resubmitting the same file continues the run: the script adds
``--resume`` once ``--out`` holds a run (its ``validation.json``).

``nasalloc sbatch --plan plan.json --out DIR`` (:func:`sbatch`) writes the script; it takes
validate's options (passed on to the command the script runs) and the allocation's.

:func:`sbatch_script` is pure (a golden-file test pins its text); :func:`request_from_plan`
reads the shape from a plan; :func:`write_sbatch` writes it atomically.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from nasalloc.errors import UserError
from nasalloc.io import atomic_write_text

#: what an ``#SBATCH`` value may hold: sbatch splits its lines on white space and knows no
#: shell quoting there, so anything else could cut a value or add an option
SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:@%/+=~-]+")
#: control characters (newlines first): in any field they would add lines to the script
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_script_field(flag: str, value: str, sbatch_option: bool = False) -> None:
    """Refuse a value that would change the script's meaning (a newline, or for an ``#SBATCH``
    option anything beyond letters, digits and ``_.,:@%/+=~-``); one line naming it."""
    text = str(value)
    bad = CONTROL.search(text)
    if bad:
        raise UserError(f"{flag} {text!r} contains {bad.group()!r}: a script field cannot hold control "
                        f"characters or newlines")
    if sbatch_option and not SBATCH_VALUE.fullmatch(text):
        odd = next(c for c in text if not SBATCH_VALUE.fullmatch(c))
        raise UserError(f"{flag} {text!r} contains {odd!r}: an #SBATCH value may hold only letters, digits "
                        f"and _.,:@%/+=~-")


#: seconds before the time limit that SLURM signals the runner (pause at the next epoch +
#: checkpoint + state must fit; the runner kills what has not paused after its grace time)
DEFAULT_SIGNAL_LEAD_S = 300
#: margin on the plan's predicted makespans when no --time is given
TIME_MARGIN = 1.5
MIN_TIME_S = 15 * 60


def parse_time_limit(text: str) -> int:
    """SLURM's time formats -> seconds: 'MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS'."""
    raw = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", raw)
    if not match:
        raise UserError(f"--time {text!r} is not a SLURM time limit (expected e.g. 90, 02:00:00 or 1-12:00:00)")
    days, a, b, c = match.groups()
    a, b, c = int(a), int(b or 0), int(c or 0)
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + a * 3600 + b * 60 + c
    elif match.group(4) is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif match.group(3) is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # MM
        seconds = a * 60
    if seconds <= 0:
        raise UserError(f"--time {text!r} must be longer than zero")
    return seconds


def format_time_limit(seconds: int) -> str:
    """Seconds -> 'HH:MM:SS' (or 'D-HH:MM:SS' from one day on), whole minutes rounded up."""
    minutes = math.ceil(seconds / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{days}-" if days else "") + f"{hours:02d}:{minutes:02d}:00"


@dataclass
class SbatchRequest:
    """Everything the script says; :func:`request_from_plan` fills it from a plan."""

    command: Sequence[str]          # the validate command line the script execs
    nodes: int
    gpus_per_node: int
    time_s: int
    cpus_per_task: int = 1          # CPUs per GPU rank
    signal_lead_s: int = DEFAULT_SIGNAL_LEAD_S
    job_name: str = "nasalloc-validate"
    output: str = "slurm-%j.out"
    partition: Optional[str] = None
    account: Optional[str] = None
    chdir: Optional[str] = None     # where the job runs (relative paths in command/output start here)
    resume_marker: Optional[str] = None  # a file that exists once a run has begun: then add --resume
    notes: list = field(default_factory=list)  # comment lines at the top (what the plan predicts)

    def __post_init__(self) -> None:
        for name in ("nodes", "gpus_per_node", "cpus_per_task", "time_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"sbatch {name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        for name in ("job_name", "output", "partition", "account", "chdir"):
            if getattr(self, name) is not None:
                check_script_field(f"--{name.replace('_', '-')}", getattr(self, name), sbatch_option=True)
        for part in [*self.command, self.resume_marker or "", *self.notes]:
            check_script_field("a script field", part)
        if not 0 < self.signal_lead_s < self.time_s:
            raise UserError(f"--signal-lead {self.signal_lead_s} s must be > 0 and shorter than the time limit "
                            f"({self.time_s} s)")


def sbatch_script(request: SbatchRequest) -> str:
    """The text of the sbatch script (pure)."""
    options = [
        f"--job-name={request.job_name}",
        f"--nodes={request.nodes}",
        f"--gpus-per-node={request.gpus_per_node}",
        f"--ntasks-per-node={request.gpus_per_node}",
        f"--cpus-per-task={request.cpus_per_task}",
        f"--time={format_time_limit(request.time_s)}",
        f"--signal=B:TERM@{request.signal_lead_s}",
        "--requeue",
        "--open-mode=append",
        f"--output={request.output}",
    ]
    if request.chdir:
        options.append(f"--chdir={request.chdir}")
    if request.partition:
        options.append(f"--partition={request.partition}")
    if request.account:
        options.append(f"--account={request.account}")
    command = "exec " + shlex.join([str(part) for part in request.command])
    resume = []
    if request.resume_marker:
        resume = ["# --resume once a run has begun here: a requeued or resubmitted job continues it",
                  'resume=""',
                  f"if [[ -e {shlex.quote(request.resume_marker)} ]]; then resume=--resume; fi"]
        command += " $resume"
    lines = ["#!/bin/bash",
             "# nasalloc validate inside one SLURM allocation (written by `nasalloc sbatch`).",
             *(f"# {note}" for note in request.notes),
             "# Submit with `sbatch FILE`; submit the same file again after the time limit and it",
             "# resumes the run without re-running finished work.",
             *(f"#SBATCH {option}" for option in options),
             "",
             "# Trials run as job steps (srun) that nasalloc places itself, one rank per GPU.",
             f"# SLURM sends SIGTERM to this shell {request.signal_lead_s} s before the time limit (--signal above);",
             "# `exec` makes nasalloc this shell, so it gets the signal, pauses and checkpoints the",
             "# running trials and writes its state before the allocation ends.",
             "set -euo pipefail",
             *resume,
             command,
             ""]
    return "\n".join(lines)


def this_nasalloc() -> list:
    """This interpreter's nasalloc by absolute path: the batch shell's PATH may lack the venv."""
    return [os.path.abspath(sys.executable), "-m", "nasalloc"]


def validate_command(plan: str, out: str, extra: Sequence[str] = (), program: Optional[Sequence[str]] = None) -> list:
    """The command line the script runs (the slurm executor; the script adds --resume when due);
    ``program`` defaults to :func:`this_nasalloc`."""
    program = this_nasalloc() if program is None else program
    return [*program, "validate", "--plan", str(plan), "--out", str(out), *map(str, extra), "--executor", "slurm"]


def plan_shape(plan: dict) -> tuple:
    """(nodes, gpus_per_node) the plan's budget needs."""
    try:
        budget, gpus_per_node = int(plan["budget"]), int(plan.get("gpus_per_node") or plan["budget"])
    except (KeyError, TypeError, ValueError):
        raise UserError("the plan names no budget and gpus_per_node; is it a nasalloc plan.json?") from None
    if budget < 1 or gpus_per_node < 1:
        raise UserError(f"the plan's budget {budget} and gpus_per_node {gpus_per_node} must be >= 1")
    return math.ceil(budget / gpus_per_node), min(budget, gpus_per_node)


def predicted_seconds(plan: dict, algorithms: Optional[Sequence[str]] = None) -> float:
    """Sum of the predicted makespans of the splits validate runs (best and worst per algorithm)."""
    total = 0.0
    for name, entry in (plan.get("algorithms") or {}).items():
        if algorithms and name not in algorithms:
            continue
        for which in ("best", "worst"):
            total += float((entry.get(which) or {}).get("makespan_s") or 0.0)
    return total


def request_from_plan(plan: dict, command: Sequence[str], time_limit: Optional[str] = None,
                      cpus_per_task: int = 1, signal_lead_s: int = DEFAULT_SIGNAL_LEAD_S,
                      output: str = "slurm-%j.out", algorithms: Optional[Sequence[str]] = None,
                      **options) -> SbatchRequest:
    """The request for ``plan``: its nodes and GPUs per node, and ``time_limit`` or, without one,
    the predicted makespans x1.5 plus the signal lead (at least 15 minutes)."""
    nodes, gpus_per_node = plan_shape(plan)
    predicted = predicted_seconds(plan, algorithms)
    if time_limit is not None:
        time_s = parse_time_limit(time_limit)
    else:
        time_s = max(MIN_TIME_S, math.ceil(predicted * TIME_MARGIN) + signal_lead_s)
    notes = [f"Plan: budget {plan.get('budget')} GPUs on {nodes} node(s) of {gpus_per_node}; "
             f"predicted makespans of the validated splits sum to {predicted / 60:.1f} min."]
    return SbatchRequest(command=list(command), nodes=nodes, gpus_per_node=gpus_per_node, time_s=time_s,
                         cpus_per_task=cpus_per_task, signal_lead_s=signal_lead_s, output=output,
                         notes=notes, **options)


def write_sbatch(path: Path, text: str) -> Path:
    """Write the script atomically and make it executable."""
    path = Path(path)
    atomic_write_text(path, text)
    os.chmod(path, 0o755)
    return path


# -- the command ----------------------------------------------------------------------------
import click  # noqa: E402  (the pure part above does not need it)


@click.command("sbatch")
@click.option("--plan", "plan_path", required=True, type=str, help="plan.json written by nasalloc simulate.")
@click.option("--out", default="results/validate", show_default=True, help="validate's --out (records, report).")
@click.option("--algorithms", default=None, help="Passed to validate: a subset of the plan's algorithms.")
@click.option("--which", default=None, help="Passed to validate: best,worst | all | GPUs per trial list.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Passed to validate.")
@click.option("--grace", type=float, default=None, help="Passed to validate: seconds trials get to checkpoint.")
@click.option("--time", "time_limit", default=None,
              help="Time limit (SLURM format, e.g. 04:00:00) [default: predicted makespans x1.5 + signal lead].")
@click.option("--signal-lead", type=int, default=None,
              help="Seconds before the time limit SLURM sends SIGTERM (must cover --grace + one epoch) "
                   "[default: the plan's allocation model's, else 300].")
@click.option("--cpus-per-task", type=int, default=1, show_default=True, help="CPUs per GPU rank.")
@click.option("--partition", default=None, help="#SBATCH --partition.")
@click.option("--account", default=None, help="#SBATCH --account.")
@click.option("--job-name", default="nasalloc-validate", show_default=True)
@click.option("--script", "script_path", default=None, help="Where to write the script [default: OUT/validate.sbatch].")
@click.option("--chain", "chain", type=int, default=None,
              help="Also write OUT/submit_chain.sh submitting the script N times, each --dependency=afterany on "
                   "the last [default: with a plan simulated under --time-limit, its predicted allocations + 1; "
                   "else no chain].")
def sbatch(plan_path, out, algorithms, which, device, grace, time_limit, signal_lead, cpus_per_task, partition,
           account, job_name, script_path, chain):
    """Write a ready sbatch script that runs nasalloc validate for a plan as SLURM job steps."""
    from nasalloc.io import check_writable

    from .cli import INVOCATION
    from .plan import Plan

    for flag, value in (("--plan", plan_path), ("--out", out), ("--script", script_path), ("--which", which),
                        ("--algorithms", algorithms), ("--partition", partition), ("--account", account),
                        ("--job-name", job_name)):
        if value is not None:
            check_script_field(flag, value)  # newlines first; #SBATCH values are checked in full below
    check_writable(out, "--out")
    if script_path:
        check_writable(script_path, "--script", folder=False)
    checked = Plan(plan_path)
    checked.choose(algorithms, which or "best,worst")  # what validate would refuse when the job starts
    plan = checked.data
    model = plan.get("allocation") or {}
    if model.get("time_limit_s"):  # the chain the plan simulated: its limit, lead and grace
        if time_limit is None:
            time_limit = format_time_limit(int(model["time_limit_s"]))
        if signal_lead is None:
            signal_lead = int(round(model["signal_lead_s"]))
        if grace is None:
            grace = float(model["grace_s"])
    if signal_lead is None:
        signal_lead = DEFAULT_SIGNAL_LEAD_S
    from .chain import chain_jobs, chain_script, which_splits

    algorithm_list = algorithms.split(",") if algorithms else None
    jobs = chain_jobs(plan, chain, algorithm_list, which_splits(which))
    if grace is not None and grace >= signal_lead:
        raise UserError(f"--grace {grace:g} s must be shorter than --signal-lead {signal_lead} s, or the allocation "
                        f"ends before the trials have checkpointed")
    extra = []
    for flag, value in (("--algorithms", algorithms), ("--which", which), ("--device", device), ("--grace", grace)):
        if value is not None:
            extra += [flag, f"{value:g}" if isinstance(value, float) else value]
    if model.get("time_limit_s"):  # the runner pauses at limit - lead of its own clock (see chain.py)
        extra += ["--time-limit", f"{float(model['time_limit_s']) - signal_lead:g}"]
    if model.get("checkpoint_every"):  # the checkpoint policy the plan priced
        extra += ["--checkpoint-every", str(int(model["checkpoint_every"]))]
    if model.get("node_mtbf_h") is not None:  # the restarts the plan priced
        extra += ["--max-restarts", str(int(model["max_restarts"]))]
    command = validate_command(plan_path, out, extra)  # this nasalloc, by absolute path
    request = request_from_plan(plan, command, time_limit, cpus_per_task=cpus_per_task, signal_lead_s=signal_lead,
                                output=str(Path(out) / "slurm-%j.out"),
                                algorithms=algorithm_list,
                                partition=partition, account=account, job_name=job_name, chdir=os.getcwd(),
                                resume_marker=str(Path(out) / INVOCATION))
    Path(out).mkdir(parents=True, exist_ok=True)  # SLURM does not create the --output folder
    path = write_sbatch(Path(script_path) if script_path else Path(out) / "validate.sbatch", sbatch_script(request))
    click.echo(f"wrote {path}: {request.nodes} node(s) x {request.gpus_per_node} GPU(s), "
               f"--time={format_time_limit(request.time_s)}, SIGTERM {signal_lead} s before; submit with: sbatch {path}")
    if jobs is not None:
        from .chain import predicted_allocations

        predicted = predicted_allocations(plan, algorithm_list, which_splits(which))
        note = "" if predicted is None else f"The plan predicts {predicted:.2f} allocation(s) for the validated splits."
        submit = write_sbatch(path.parent / "submit_chain.sh", chain_script(str(path), jobs, note))
        click.echo(f"wrote {submit}: {jobs} chained job(s) (--dependency=afterany); submit with: bash {submit}")
