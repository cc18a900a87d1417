"""The allocation and failure model: time limits, requeue waits, node failures, checkpoints.

On an HPC partition a search runs as a *chain of allocations*. This module is the one place
that says how such a chain behaves; it is pure (no clock, no process, its own seeded random
streams) and both drivers ask it: the SimPy engine (:mod:`.chainengine`) and the validation
runner / ``nasalloc sbatch`` (which write and honour the same limit, lead and policy).

One allocation, as the validation runner lives it under ``#SBATCH --signal=B:TERM@LEAD``:

* it begins; for ``allocation_start`` seconds no trial runs (the runner's own start in the
  new job: the interpreter, torch, the plan; ``validate`` measures it per allocation); then
  every trial that was running when the previous one ended restarts from its checkpoint
  (start-up + checkpoint load), before the scheduler is asked for new work;
* at ``limit - lead`` SIGTERM arrives (:meth:`AllocationModel.signal_at`): nothing new starts;
  each running trial's next epoch result still goes to the scheduler, and if it answers
  CONTINUE the trial pauses with a checkpoint (an *interrupted* pause, saved at a cost);
* a trial whose epoch has not ended ``grace`` seconds after the signal is killed
  (:meth:`AllocationModel.kill_at`) and falls back to its last checkpoint;
* the allocation ends when the last trial has left its GPUs; the next one begins after the
  queue wait (a constant, or a gamma distribution of that mean and spread).

**What the scheduler hears** (the rule both drivers follow, :func:`after_lost_segment`):
an interruption it did not ask for is invisible to it. A segment cut by the allocation's end
or killed by a node failure is re-run from the trial's last checkpoint; epochs the scheduler
heard already are re-trained without being reported again (the runner logs them with
``extra.replay``). Only when a trial has lost ``max_restarts`` segments to failures does the
scheduler hear ``on_failure`` (the trial is failed and its slot freed). With
``max_restarts=0`` (the validation runner's default) every failure is a failed trial, as
before.

**Checkpoints**: a trial is saved when it pauses (the scheduler's pause, or an interrupted
one) and, with ``checkpoint_every=K``, after every K-th epoch (:func:`checkpoint_due`), which
costs a save each time. A node failure loses the work since the last one.

**Node failures**: each node fails as a Poisson process of mean time between failures
``node_mtbf_h``; a trial on ``n`` nodes is hit at ``n`` times the rate (a trial sharing a GPU
counts its one node). The failed node is replaced at once (a spare, or SLURM's ``--no-kill``
and the step relaunched on the nodes left): the job goes on.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from nasalloc.errors import UserError

__all__ = ["AllocationModel", "AllocationDraws", "after_lost_segment", "checkpoint_due", "parse_duration",
           "parse_wait"]

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text, flag: str) -> float:
    """Seconds of ``90``, ``90s``, ``30m``, ``24h``, ``1.5d`` or SLURM's ``[D-]HH:MM:SS`` (``MM:SS``: minutes and seconds, as sbatch reads it)."""
    value = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d)(?::(\d\d))?", value)
    if match:
        days, first, second, third = match.groups()
        hours, minutes, seconds = (int(first), int(second), int(third)) if third else (0, int(first), int(second))
        total = int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds
    else:
        match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|m|min|h|d|)", value.lower())
        if not match:
            raise UserError(f"{flag} {text!r}: expected a duration such as 90s, 30m, 24h or HH:MM:SS")
        total = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(total) or total < 0:
        raise UserError(f"{flag} {text!r}: expected a duration >= 0")
    return float(total)


def parse_wait(text, flag: str = "--requeue-wait") -> tuple:
    """(mean, spread) seconds of ``30m`` or ``30m,10m``."""
    parts = str(text).split(",")
    if len(parts) > 2:
        raise UserError(f"{flag} {text!r}: expected MEAN or MEAN,SPREAD (e.g. 30m or 30m,10m)")
    mean = parse_duration(parts[0], flag)
    spread = parse_duration(parts[1], flag) if len(parts) == 2 else 0.0
    if spread > 0 and mean <= 0:
        raise UserError(f"{flag} {text!r}: a spread needs a mean > 0")
    return mean, spread


def checkpoint_due(epoch: int, every: Optional[int], max_t: int) -> bool:
    """Whether a trial saves a checkpoint after ``epoch`` under ``--checkpoint-every`` (not at
    max_t, where it ends)."""
    return bool(every) and epoch % every == 0 and epoch < max_t


def after_lost_segment(failures: int, max_restarts: int) -> str:
    """What a driver does with a segment lost without a decision (a node failure, a killed
    step) when the trial has now lost ``failures`` segments: ``"restart"`` it from its last
    checkpoint without telling the scheduler, or ``"fail"`` it (``scheduler.on_failure``)."""
    return "restart" if failures <= max_restarts else "fail"


@dataclass(frozen=True)
class AllocationModel:
    time_limit_s: Optional[float] = None    # the partition's wall-time limit per allocation
    signal_lead_s: float = 300.0            # SIGTERM this long before the limit
    grace_s: float = 60.0                   # trials not paused this long after it are killed
    requeue_wait_s: float = 0.0             # mean queue wait between allocations
    requeue_spread_s: float = 0.0           # its standard deviation (gamma); 0: constant
    node_mtbf_h: Optional[float] = None     # mean time between failures of one node
    checkpoint_every: Optional[int] = None  # save after every K-th epoch too
    max_restarts: int = 3                   # lost segments a trial restarts from before it fails
    allocation_start_s: float = 0.0         # seconds from an allocation's start until trials can launch

    def __post_init__(self):
        if self.time_limit_s is not None and not self.time_limit_s > self.signal_lead_s:
            raise UserError(f"--time-limit {self.time_limit_s:g}s must be longer than the signal lead "
                            f"({self.signal_lead_s:g}s)")
        if not self.signal_lead_s >= 0 or not self.grace_s >= 0:
            raise UserError(f"--signal-lead {self.signal_lead_s!r} and --grace {self.grace_s!r} must be >= 0")
        if self.node_mtbf_h is not None and not (math.isfinite(self.node_mtbf_h) and self.node_mtbf_h > 0):
            raise UserError(f"--node-mtbf {self.node_mtbf_h!r}: expected hours > 0")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise UserError(f"--checkpoint-every {self.checkpoint_every!r}: expected a whole number >= 1")
        if self.max_restarts < 0:
            raise UserError(f"--max-restarts {self.max_restarts!r}: expected a whole number >= 0")
        if not (math.isfinite(self.allocation_start_s) and self.allocation_start_s >= 0):
            raise UserError(f"--allocation-start {self.allocation_start_s!r}: expected seconds >= 0")
        if self.time_limit_s is not None and not self.allocation_start_s < self.time_limit_s - self.signal_lead_s:
            raise UserError(f"--allocation-start {self.allocation_start_s:g}s leaves no time to train before the "
                            f"signal (--time-limit {self.time_limit_s:g}s minus --signal-lead {self.signal_lead_s:g}s)")

    @property
    def active(self) -> bool:
        """Whether it changes anything: without it the engine runs exactly as before."""
        return self.time_limit_s is not None or self.node_mtbf_h is not None or bool(self.checkpoint_every)

    def key(self) -> str:
        """Its part of a sweep's key: '' when inactive (rows keep the key they always had); an
        allocation start of 0 is left out, so rows written before it existed keep their key."""
        if not self.active:
            return ""
        fields = asdict(self)
        if not fields["allocation_start_s"]:
            del fields["allocation_start_s"]
        return json.dumps(fields, sort_keys=True)

    def ready_at(self, start_s: float) -> float:
        """When an allocation begun at ``start_s`` can launch trials (after the runner's start)."""
        return start_s + self.allocation_start_s

    def signal_at(self, start_s: float) -> float:
        if self.time_limit_s is None:
            return math.inf
        return start_s + self.time_limit_s - self.signal_lead_s

    def kill_at(self, start_s: float) -> float:
        if self.time_limit_s is None:
            return math.inf
        return self.signal_at(start_s) + min(self.grace_s, self.signal_lead_s)

    def describe(self) -> str:
        from .labels import duration

        parts = []
        if self.time_limit_s is not None:
            wait = duration(self.requeue_wait_s) + (f" (sd {duration(self.requeue_spread_s)})"
                                                    if self.requeue_spread_s else "")
            parts.append(f"allocations of {duration(self.time_limit_s)} (SIGTERM {self.signal_lead_s:g} s before, "
                         f"grace {self.grace_s:g} s), queue wait {wait}"
                         + (f", {self.allocation_start_s:g} s start-up each" if self.allocation_start_s else ""))
        if self.node_mtbf_h is not None:
            parts.append(f"node MTBF {self.node_mtbf_h:g} h, {self.max_restarts} restart(s) per trial")
        parts.append(f"checkpoints every {self.checkpoint_every} epoch(s) and at pauses" if self.checkpoint_every
                     else "checkpoints at pauses (rungs)")
        return "; ".join(parts)


class AllocationDraws:
    """The model's random draws for one simulated run, on streams of their own (so the epoch
    noise of a seed is the same with and without the model)."""

    def __init__(self, model: AllocationModel, seed: int):
        self.model = model
        self.wait_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA110C]))
        self.fail_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xFA11]))

    def queue_wait(self) -> float:
        mean, spread = self.model.requeue_wait_s, self.model.requeue_spread_s
        if spread <= 0 or mean <= 0:
            return float(mean)
        shape = (mean / spread) ** 2
        return float(self.wait_rng.gamma(shape, mean / shape))

    def failure_after(self, nodes: int) -> float:
        """Seconds until a trial on ``nodes`` nodes is hit (inf without failures)."""
        if self.model.node_mtbf_h is None:
            return math.inf
        return float(self.fail_rng.exponential(self.model.node_mtbf_h * 3600.0 / max(1, nodes)))
