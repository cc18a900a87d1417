"""The resumable state of one validation run (one algorithm, one split): ``state.json``.

Written atomically after every scheduler call, together with the runner's own book of every
trial, so the two can never disagree:

* ``scheduler``: the scheduler's ``state_dict()``;
* ``trials``: per trial its config, how many epochs the scheduler has seen (``reported``),
  how many the checkpoint holds (``checkpoint_epoch``, 0: none), the runner's status, the
  number of segments launched, the milestone the scheduler started it towards and, under an
  adaptive policy, the GPUs of its current (or last) segment (``gpus``);
* ``elapsed_s``: search time so far (time between a crash and ``--resume`` is not counted);
* ``finished``: the search is over (``--resume`` skips it);
* ``allocations``: one entry per invocation that worked on this split (an allocation of a
  chain): ``began_unix`` (its process's start: under sbatch's ``exec``, the job's; for a later
  split of the same invocation, the end of the one before), ``ready_unix`` (the runner could
  launch trials), ``ended_unix`` (its last trial left) and ``ended`` (why). validate's report
  compares them with the plan's chain (docs/formats.md);
* per trial ``lost``: segments it lost without a decision (a killed step, a node failure), over
  every invocation, which ``--max-restarts`` is counted against.

What ``--resume`` does with a trial that was in flight when the run ended (status
``running``): it is re-run from its last checkpoint (from scratch when it has none) on the
same number of GPUs (under an adaptive policy: the count the policy gives its next epochs, as
for a trial that was waiting for its group), *without* asking the scheduler, which still holds
it as running. Epochs the scheduler has already seen are trained again (``replay`` in the event
log) but not reported twice; from the first new epoch on it reports as usual. So the scheduler's decisions
go on exactly as if the run had never stopped; only wall time is lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from nasalloc.errors import UserError
from nasalloc.io import atomic_write_json, read_json

SCHEMA = "nasalloc.validate-state/1"


@dataclass
class TrialBook:
    trial_id: int
    config: dict
    reported: int = 0            # epochs the scheduler has seen
    checkpoint_epoch: int = 0    # epochs the checkpoint holds (0: none)
    status: str = "running"      # running | paused | stopped | completed | failed
    segments: int = 0            # segments launched so far
    row: Optional[int] = None    # row of the plan's config table the config came from
    milestone: Optional[int] = None  # the milestone the scheduler started it towards
    gpus: Optional[float] = None     # adaptive policies: GPUs of its current (or last) segment
    lost: int = 0                # segments lost without a decision, across --resume (--max-restarts)


@dataclass
class RunState:
    algorithm: str
    gpus_per_trial: float
    scheduler: dict
    trials: dict = field(default_factory=dict)   # trial_id -> TrialBook
    elapsed_s: float = 0.0
    finished: bool = False
    #: why the run ended last time: "finished", "interrupted (SIGTERM)", "time limit", ...
    ended: Optional[str] = None
    allocations: list = field(default_factory=list)  # one dict per invocation that worked on it

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "algorithm": self.algorithm, "gpus_per_trial": self.gpus_per_trial,
                "elapsed_s": self.elapsed_s, "finished": self.finished, "ended": self.ended,
                "allocations": self.allocations,
                "trials": [asdict(b) for b in self.trials.values()], "scheduler": self.scheduler}

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "RunState":
        data = read_json(path, "validation state")
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise UserError(f"{path} is not a validation state (schema {SCHEMA!r} expected)")
        try:
            books = {int(b["trial_id"]): TrialBook(**b) for b in data["trials"]}
            return cls(algorithm=data["algorithm"], gpus_per_trial=float(data["gpus_per_trial"]),
                       scheduler=data["scheduler"], trials=books, elapsed_s=float(data["elapsed_s"]),
                       finished=bool(data["finished"]), ended=data.get("ended"),
                       allocations=list(data.get("allocations") or []))
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"validation state {path} is damaged ({type(err).__name__}: {err})") from None


def process_age_s() -> float:
    """Seconds since this process started (Linux: /proc/self/stat against CLOCK_BOOTTIME, ~10 ms;
    elsewhere 0). Under the ``exec`` of a batch script the process is the job's shell, so this is
    the time since the allocation began."""
    import os
    import time

    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
