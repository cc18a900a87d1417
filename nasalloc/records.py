"""The event records both drivers write: the SimPy engine (simulated clock) and the validation
runner (wall clock). Comparing a prediction with a measurement is a join on these.

One record per thing that happens to a trial, times in seconds since the search began:

=========  ==============================================================================
kind       meaning
=========  ==============================================================================
start      a new trial got its GPUs and is launching (``config`` and ``placement`` set)
resume     a paused trial got GPUs again and is loading its checkpoint (``placement`` set)
epoch      the trial finished epoch ``epoch`` (1-based) with ``metric`` (and ``test_metric``);
           ``began_s`` is when that epoch's training began, so start-up = first began_s - start
pause      the scheduler paused the trial after ``epoch``; its checkpoint is saved, GPUs free
stop       the scheduler stopped the trial early; GPUs free
complete   the trial reached max epochs; GPUs free
fail       the trial failed (``error`` says why); GPUs free
=========  ==============================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

EVENT_KINDS = ("start", "resume", "epoch", "pause", "stop", "complete", "fail")
SEGMENT_END_KINDS = ("pause", "stop", "complete", "fail")


@dataclass
class Event:
    time_s: float
    kind: str
    trial_id: int
    epoch: int
    gpus: float
    metric: Optional[float] = None
    test_metric: Optional[float] = None
    began_s: Optional[float] = None
    placement: Optional[list] = None
    config: Optional[dict] = None
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; expected one of {EVENT_KINDS}")

    def to_dict(self) -> dict:
        record = {k: v for k, v in asdict(self).items() if v is not None and v != {}}
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "Event":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in record.items() if k in known})


SEGMENT_COLUMNS = [
    "trial_id", "segment", "epoch_start", "epoch_end", "gpus",
    "queued_s", "started_s", "ended_s", "metric", "test_metric", "status",
]


def segments(events: Iterable[Any]):
    """One row per trial segment (start/resume until pause/stop/complete/fail) as a DataFrame.

    ``queued_s`` is when the segment became runnable: the start time for a new trial, the
    time of its pause for a resumed one (so ``started_s - queued_s`` is the wait at a rung).
    A segment still running has status ``running`` and no end.
    """
    import pandas as pd

    open_segments: dict[int, dict] = {}
    paused_at: dict[int, float] = {}
    counts: dict[int, int] = {}
    rows = []
    for event in events:
        e = event if isinstance(event, Event) else Event.from_dict(event)
        if e.kind in ("start", "resume"):
            counts[e.trial_id] = counts.get(e.trial_id, 0) + 1
            open_segments[e.trial_id] = dict(
                trial_id=e.trial_id, segment=counts[e.trial_id], epoch_start=e.epoch, epoch_end=e.epoch,
                gpus=e.gpus, queued_s=paused_at.get(e.trial_id, e.time_s), started_s=e.time_s,
                ended_s=None, metric=None, test_metric=None, status="running",
            )
        elif e.kind == "epoch" and e.trial_id in open_segments:
            row = open_segments[e.trial_id]
            row.update(epoch_end=e.epoch, metric=e.metric, test_metric=e.test_metric)
        elif e.kind in SEGMENT_END_KINDS and e.trial_id in open_segments:
            row = open_segments.pop(e.trial_id)
            row["ended_s"] = e.time_s
            row["status"] = {"pause": "paused", "stop": "stopped", "complete": "completed", "fail": "failed"}[e.kind]
            if e.kind == "pause":
                paused_at[e.trial_id] = e.time_s
            rows.append(row)
    rows.extend(open_segments.values())
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS)
