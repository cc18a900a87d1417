"""The chain of allocations a plan assumes, as SLURM jobs: one script, N submissions.

A plan simulated under an allocation model (``nasalloc simulate --time-limit ...``) predicts
how many allocations each split needs. ``nasalloc sbatch`` then writes the job script with the
plan's time limit, signal lead and grace (the model's) and passes validate ``--time-limit
LIMIT-LEAD``, so the runner begins to pause its trials exactly where the simulation did, counted
from its own start (SLURM delivers ``--signal`` up to a minute early, by its own
documentation; the signal stays as the backstop), and, next to it, ``submit_chain.sh``: it submits the script once and then
``N - 1`` more times, each with ``--dependency=afterany:<previous job>``. Every job resumes the
run (the script adds ``--resume``); one that finds it finished prints so and exits, so a spare
submission costs a moment. (The script also carries ``--requeue``: a job SLURM requeues after
a node failure resumes the same way.)

:func:`chain_script` is pure (a golden-file test pins its text); :func:`predicted_allocations`
reads the plan.
"""

from __future__ import annotations

import math
import shlex
from typing import Optional, Sequence

from nasalloc.errors import UserError

#: submissions beyond the predicted allocations (a late epoch, a slower node)
SPARE_JOBS = 1
MAX_JOBS = 100


def predicted_allocations(plan: dict, algorithms: Optional[Sequence[str]] = None,
                          which: Sequence[str] = ("best", "worst")) -> Optional[float]:
    """Allocations validate needs for the validated splits (best and worst of each algorithm, run
    one after another): their predicted compute time over the time inside one allocation that
    trains (limit minus lead, minus the runner's start in each allocation). None when the plan
    has no allocation model."""
    model = plan.get("allocation")
    if not model or not model.get("time_limit_s"):
        return None
    usable = (float(model["time_limit_s"]) - float(model["signal_lead_s"])
              - float(model.get("allocation_start_s") or 0.0))
    compute = 0.0
    for name, entry in (plan.get("algorithms") or {}).items():
        if algorithms and name not in algorithms:
            continue
        for name_of in which:
            split = entry.get(name_of) or {}
            compute += float(split.get("compute_s") or split.get("makespan_s") or 0.0)
    return compute / usable if usable > 0 else None


def chain_jobs(plan: dict, jobs: Optional[int], algorithms: Optional[Sequence[str]] = None,
               which: Sequence[str] = ("best", "worst")) -> Optional[int]:
    """``--chain N`` as given, or from the plan's prediction plus a spare; None: no chain."""
    if jobs is not None:
        if not 1 <= jobs <= MAX_JOBS:
            raise UserError(f"--chain {jobs!r}: expected a whole number of jobs from 1 to {MAX_JOBS}")
        return jobs
    predicted = predicted_allocations(plan, algorithms, which)
    if predicted is None:
        return None
    return min(MAX_JOBS, max(1, math.ceil(predicted)) + SPARE_JOBS)


def which_splits(which: Optional[str]) -> tuple:
    """The plan entries (best, worst) validate runs for ``--which`` (other lists: both)."""
    return ("best",) if which == "best" else ("worst",) if which == "worst" else ("best", "worst")


def chain_script(script: str, jobs: int, note: str = "") -> str:
    """The text of submit_chain.sh (pure): ``jobs`` submissions of ``script``, each after the last."""
    quoted = shlex.quote(str(script))
    lines = ["#!/bin/bash",
             f"# Submit {script} as a chain of {jobs} SLURM job(s) (written by `nasalloc sbatch`).",
             *([f"# {note}"] if note else []),
             "# Each job starts when the previous one has ended, whatever its state (afterany), and",
             "# resumes the run; a job that finds the search finished exits at once.",
             "set -euo pipefail",
             f"jid=$(sbatch --parsable {quoted})",
             'echo "submitted job $jid (1 of ' + str(jobs) + ')"',
             f"for i in $(seq 2 {jobs}); do",
             f"  jid=$(sbatch --parsable --dependency=afterany:\"${{jid%%;*}}\" {quoted})",
             '  echo "submitted job $jid ($i of ' + str(jobs) + ', after the previous one)"',
             "done",
             ""]
    return "\n".join(lines)
