"""The scheduler contract every driver relies on.

A scheduler is a pure decision object: it never reads a clock, never touches a process and
never uses global random state. The SimPy engine (simulated time) and the validation runner
(wall-clock time, real DDP jobs) drive the very same objects through two calls:

``suggest()``
    Asked whenever a slot (the GPUs of one trial) is free. Returns one of

    * :class:`Start` -- launch a new trial with ``config`` and train it epoch by epoch;
    * :class:`Resume` -- load the checkpoint of paused trial ``trial_id`` and train on;
    * :data:`WAIT` -- nothing to run now; ask again after the next result or failure;
    * :data:`DONE` -- the search is over once the running trials end.

``on_result(trial_id, epoch, metric)``
    Called after every epoch of a running trial (``epoch`` counts the trial's epochs so far,
    from 1). Returns a :class:`Decision`:

    * ``CONTINUE`` -- keep the GPUs, train the next epoch;
    * ``PAUSE`` -- checkpoint, free the GPUs; the scheduler may ``Resume`` it later;
    * ``STOP`` -- free the GPUs for good (stopped early, or finished at ``max_t``).

``on_failure(trial_id)`` tells it a running trial died; it is never suggested again.

``milestone`` in Start/Resume is the epoch at which the trial next reaches a rung (where it may
be paused or stopped); drivers use it only for reports, the decisions come from ``on_result``.

Two optional promises let a driver advance a trial from milestone to milestone (the SimPy
engine does; it still reports every epoch, in order, with its own time):

``next_decision_epoch(trial_id, epoch)``
    the first epoch after ``epoch`` whose result may be answered with anything but a CONTINUE
    that changes nothing another answer depends on (default ``epoch + 1``: every epoch);
``settled()``
    whether such a result, arriving now, would leave every other answer unchanged (default
    True). Ray's controller, for one, stages a promoted trial on every event while it has one
    to stage: then it is not settled, and the driver reports each epoch at its own time.

``waits()`` (default False) is True only when ``suggest()`` would answer WAIT now: a driver
then leaves its idle slots asleep.

Every started trial ends as exactly one of: stopped early, completed (``max_t`` epochs), or
failed. When ``suggest()`` returns DONE, trials still paused have been stopped: their ids are
in ``finished_trials`` with status ``"stopped"``. Call ``trial_status(trial_id)`` to ask.

``state_dict()`` returns plain JSON-serialisable data (numpy's bit-generator state included),
and ``load_state_dict`` restores it so that decisions continue identically: a real run resumes
after its allocation ended.

``mode`` is ``"max"`` (accuracy) or ``"min"`` (loss); schedulers compare ``metric`` accordingly.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Optional, Union


class Decision(str, enum.Enum):
    CONTINUE = "continue"
    PAUSE = "pause"
    STOP = "stop"


@dataclass(frozen=True)
class Start:
    trial_id: int
    config: dict
    milestone: int


@dataclass(frozen=True)
class Resume:
    trial_id: int
    milestone: int


class _Signal(str, enum.Enum):
    WAIT = "wait"
    DONE = "done"


WAIT = _Signal.WAIT
DONE = _Signal.DONE

Action = Union[Start, Resume, _Signal]

# Trial statuses as the scheduler sees them. PENDING: created ahead of its start (Ray semantics
# create trials before a slot asks, as Ray's controller does); suggest() starts it later.
RUNNING, PAUSED, STOPPED, COMPLETED, FAILED = "running", "paused", "stopped", "completed", "failed"
PENDING = "pending"
ENDED = (STOPPED, COMPLETED, FAILED)


class Scheduler(ABC):
    """Base class: see the module docstring for the contract."""

    #: short name used in CLI lists, records and plans
    name: str = "scheduler"

    mode: str
    max_t: int

    @abstractmethod
    def suggest(self) -> Action: ...

    @abstractmethod
    def on_result(self, trial_id: int, epoch: int, metric: float) -> Decision: ...

    @abstractmethod
    def on_failure(self, trial_id: int) -> None: ...

    @abstractmethod
    def trial_status(self, trial_id: int) -> Optional[str]: ...

    def next_decision_epoch(self, trial_id: int, epoch: int) -> int:
        """See the module docstring: results before this epoch are plain CONTINUEs."""
        return epoch + 1

    def settled(self) -> bool:
        """See the module docstring: a plain CONTINUE now would change no other answer."""
        return True

    def waits(self) -> bool:
        """True only if ``suggest()`` would answer WAIT now (so a driver need not wake an idle
        slot to hear it); False when unsure (default)."""
        return False

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
