"""The wall-clock runner: drives one scheduler over real DDP trial jobs for one split.

One thread, one loop. It asks ``scheduler.suggest()`` whenever a slot is free, launches each
trial segment through an :class:`~nasalloc.validate.executor.Executor`, waits on every
trial's channel at once (``selectors``, with a short timeout to notice exits and signals),
passes every epoch result to ``scheduler.on_result`` and sends the decision back. A job that
exits without a decision that ended it (non-zero status, a killed rank, a lost channel) is a
lost segment, handled by the rule the simulator shares (``allocation.after_lost_segment``): with
``max_restarts`` left (``--max-restarts``, default 0) it is logged as ``pause`` with
``extra.lost`` and relaunched from the trial's last checkpoint, unheard by the scheduler;
otherwise it is a failure: ``on_failure``, a ``fail`` record with its error, its slot freed,
the search goes on. ``--checkpoint-every K`` makes trials save after every K-th epoch too.

Records (in ``out_dir``): ``events.jsonl`` (nasalloc.records.Event, one flushed line each),
``trace.csv`` (the per-epoch trace) and ``state.json`` (see :mod:`nasalloc.validate.state`,
which also explains how ``--resume`` treats a trial that was in flight).

Stopping (a signal or the time limit, through :class:`Stopper`): nothing new is launched;
every running trial is told to pause at its next epoch boundary (its result still goes to
the scheduler first), which checkpoints it; after ``grace_s`` the rest are killed and fall
back to their last checkpoint. Both are logged as ``pause`` with ``extra.interrupted``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nasalloc.errors import UserError
from nasalloc.io import JsonlAppender, atomic_write_json, read_jsonl
from nasalloc.records import Event
from nasalloc.simulator.cluster import Slot, make_split
from nasalloc.simulator.schedulers.base import COMPLETED, DONE, WAIT, Decision, Resume, Start

from .channel import RUNNER_ENV, TOKEN_ENV, ChannelServer
from .executor import Executor, JobSpec
from .progress import Progress
from .state import RunState, TrialBook
from .task import RunResult, SplitTask, Stopper, trial_seed  # noqa: F401  (re-exported)

# How long the loop waits for messages before it polls the jobs again. A trial that ends closes
# its channel a moment before its process exits, so its slot is freed one timeout later: at
# 0.2 s every pause and stop held its slot ~0.2 s longer than the model's checkpoint save
# (measured in the closed loop: pause tails of 0.14-0.24 s against a 0.008 s save).
SELECT_TIMEOUT_S = 0.02
ROW_KEY = "_row"


@dataclass
class Segment:
    trial_id: int
    number: int
    slot: Slot
    job: Any
    token: str
    kind: str                       # start | resume
    launched_s: float
    answer: Optional[str] = None    # continue | pause | stop: the last decision sent
    last_epoch: int = 0
    checkpointed: bool = False
    save_s: Optional[float] = None
    load_s: Optional[float] = None
    loaded_epoch: int = 0           # the epoch of the checkpoint the ranks loaded ("ready")
    interrupted: bool = False


class Runner:
    def __init__(self, task: SplitTask, executor: Executor, out_dir: Path, device: str = "cpu",
                 stopper: Optional[Stopper] = None, quiet: bool = False, grace_s: float = 60.0):
        self.task = task
        self.executor = executor
        self.out = Path(out_dir)
        self.device = device
        self.stopper = stopper or Stopper()
        self.grace_s = grace_s
        self.progress = Progress(task.label, task.predicted_makespan_s, quiet)
        # the simulator's placement, so the real run has the very slots that were simulated
        self.split = make_split(task.budget, task.gpus_per_node or task.budget, task.gpus_per_trial)
        self.slots = list(self.split.slots)
        self.ranks = int(task.gpus_per_trial) if task.gpus_per_trial >= 1 else 1
        self.free: list[Slot] = list(self.slots)
        self.active: dict[str, Segment] = {}
        self.relaunch: list[int] = []   # trials in flight when an earlier run ended
        self.logged: set = set()        # trials the event log already has
        self.done = False
        self.kill_at: Optional[float] = None

    # -- clock and records ---------------------------------------------------------------
    def now(self) -> float:
        return self.offset + time.monotonic() - self.t0

    def _record(self, kind: str, book: TrialBook, epoch: int, **fields) -> None:
        event = Event(time_s=round(self.now(), 4), kind=kind, trial_id=book.trial_id, epoch=epoch,
                      gpus=self._gpus_of(book), **fields)
        self.events.write(event.to_dict())

    def _gpus_of(self, book: TrialBook) -> float:
        """GPUs of the trial's current (or last) segment: the split's, for every trial."""
        return self.task.gpus_per_trial

    def _save(self) -> None:
        self.state.scheduler = self.scheduler.state_dict()
        self.state.elapsed_s = self.now()
        self.state.save(self.out / "state.json")

    # -- setup ---------------------------------------------------------------------------
    def _open(self, resume: bool) -> None:
        from nasalloc.trace import TraceWriter
        from nasalloc.workloads.registry import load_workload

        self.executor.check(self.ranks, len(self.slots))  # before anything is written
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / "state.json"
        self.scheduler = self.task.make_scheduler()
        self.offset = 0.0
        if resume and state_path.exists():
            self.state = RunState.load(state_path)
            self.scheduler.load_state_dict(self.state.scheduler)
            self.offset = self.state.elapsed_s
            events_path = self.out / "events.jsonl"
            if events_path.exists():
                self.offset = max([self.offset] + [e["time_s"] for e in read_jsonl(events_path)])
        else:
            if any((self.out / name).exists() for name in ("events.jsonl", "state.json", "trace.csv")):
                raise UserError(f"{self.out} holds an earlier validation run; pass --resume to continue it "
                                f"or choose another --out")
            self.state = RunState(self.task.algorithm, self.task.gpus_per_trial, self.scheduler.state_dict())
        self.t0 = time.monotonic()
        self.workload = load_workload(self.task.workload)
        names = list(self.workload.search_space().keys())
        self.events = JsonlAppender(self.out / "events.jsonl")
        self.trace = TraceWriter(self.out / "trace.csv", config_names=names)
        if resume:
            self._reconcile()
        else:
            self._save()  # a state exists before the first record does
        self.channel = ChannelServer(self.executor.runner_host())

    def _reconcile(self) -> None:
        """After a run ended abruptly: bring the book and the log in line with the scheduler.

        The scheduler's restored state is the authority. A trial it holds as running is re-run
        from its last checkpoint (see state.py); one it has stopped, completed, paused or
        failed since the last record gets the record it missed.
        """
        last: dict[int, str] = {}
        path = self.out / "events.jsonl"
        records = list(read_jsonl(path)) if path.exists() else []
        for record in records:
            last[record["trial_id"]] = record["kind"]
            self._catch_up(record)
        self.logged = set(last)
        for book in self.state.trials.values():
            status = self.scheduler.trial_status(book.trial_id)
            kind = last.get(book.trial_id)
            if status == "running":
                if kind in ("start", "resume", "epoch"):
                    self._record("pause", book, book.reported, extra={
                        "interrupted": True, "lost": True, "checkpoint_epoch": book.checkpoint_epoch})
                book.status = "running"
                self.relaunch.append(book.trial_id)
                continue
            names = {"stopped": "stop", "completed": "complete", "paused": "pause", "failed": "fail"}
            if status in names:
                book.status = status
                # a record is missing only when the last one left the trial running; a trial
                # stopped while paused keeps the pause as its last record (docs/formats.md)
                if kind in (None, "start", "resume", "epoch"):
                    self._record(names[status], book, book.reported, extra={"recovered": True},
                                 error="lost with the runner" if status == "failed" else None)
        self._save()

    def _catch_up(self, record: dict) -> None:
        """Tell the restored scheduler an epoch the log holds but its saved state missed.

        The state is saved right after each epoch is logged; a runner killed in between left
        one result the scheduler never saw in its saved state. The scheduler is deterministic,
        so telling it again retakes exactly the decision it took then, and the epoch is not
        reported twice.
        """
        book = self.state.trials.get(record["trial_id"])
        if (record["kind"] == "epoch" and book is not None and record["epoch"] > book.reported
                and not record.get("extra", {}).get("replay")):
            self.scheduler.on_result(book.trial_id, record["epoch"], float(record["metric"]))
            book.reported = record["epoch"]

    def _close(self) -> None:
        for seg in list(self.active.values()):
            seg.job.terminate("runner exiting")
        for name in ("channel", "events", "trace"):  # whatever _open got to
            if hasattr(self, name):
                getattr(self, name).close()

    # -- the loop ------------------------------------------------------------------------
    def run(self, resume: bool = False) -> RunResult:
        from .state import process_age_s

        # a later split of the same command (the same stopper) begins where the last one ended
        began_unix = self.stopper.free_since or time.time() - process_age_s()
        try:
            self._open(resume)
            if self.state.finished:
                self.progress.note("finished in an earlier run; nothing to do")
                return RunResult(self.task, self.out, True, "finished", self.state.elapsed_s)
            allocation = {"began_unix": round(began_unix, 3), "ready_unix": round(time.time(), 3)}
            self.progress.note(f"{len(self.slots)} slot(s) of {self.ranks} rank(s) on {self.device}; "
                               f"records in {self.out}")
            while True:
                reason = self.stopper.check()
                if reason and self.kill_at is None:
                    self._begin_stop(reason)
                if not reason:
                    self._fill_slots()
                if not self.active:
                    if reason or self.done:
                        break
                    raise RuntimeError(f"{self.task.label}: the scheduler waits but no trial is running")
                self._wait_for_messages()
                self._reap()
                self.progress.heartbeat(self.now(), "epochs so far: " + ", ".join(
                    f"trial {seg.trial_id} @{seg.last_epoch}" for seg in self.active.values()))
                if self.kill_at is not None and time.monotonic() >= self.kill_at:
                    for seg in list(self.active.values()):
                        seg.interrupted = True
                        seg.job.terminate("interrupted: checkpoint wait timed out")
                    self._reap()
            self.state.finished = not reason
            self.state.ended = reason or "finished"
            self.stopper.free_since = time.time()
            self.state.allocations.append({**allocation, "ended_unix": round(self.stopper.free_since, 3),
                                           "ended": self.state.ended})
            self._save()
            self.progress.note(f"{self.state.ended} after {self.now():.1f}s")
            return RunResult(self.task, self.out, self.state.finished, self.state.ended, self.now())
        finally:
            self._close()

    def _begin_stop(self, reason: str) -> None:
        self.kill_at = time.monotonic() + self.grace_s
        if self.active:
            self.progress.note(f"{reason}: no new trials; pausing {len(self.active)} running trial(s) "
                               f"at their next epoch (at most {self.grace_s:.0f}s)")

    def _fill_slots(self) -> None:
        """Relaunch the trials an earlier run left in flight, then ask the scheduler, while there
        is room; then start what was placed (:meth:`_room`, :meth:`_place`, :meth:`_serve`: the
        adaptive runner places by its policy's GPU counts instead of fixed slots)."""
        while self._room():
            if self.relaunch:
                book = self.state.trials[self.relaunch.pop(0)]
                if book.trial_id in self.logged:
                    self._place(book, "resume", restart=True)
                else:  # its start was never logged
                    self._place(book, "start")
                continue
            if self.done:
                break
            action = self.scheduler.suggest()
            if action is DONE:
                self.done = True
                self._close_paused()
            elif action is WAIT:
                pass
            elif isinstance(action, Start):
                config = dict(action.config)
                row = config.pop(ROW_KEY, None)  # a table row (TableSource), as in the simulator
                book = TrialBook(action.trial_id, config, row=None if row is None else int(row),
                                 milestone=int(action.milestone))
                self.state.trials[book.trial_id] = book
                self._save()  # the scheduler made it: from now on --resume knows it
                self._place(book, "start")
            elif isinstance(action, Resume):
                book = self.state.trials[action.trial_id]
                book.status = "running"
                self._place(book, "resume")
            else:
                raise RuntimeError(f"scheduler returned {action!r}, not Start, Resume, WAIT or DONE")
            self._save()
            if action is DONE or action is WAIT:
                break
        self._serve()

    def _room(self) -> bool:
        """Whether another segment may be placed now: a slot is free."""
        return bool(self.free)

    def _place(self, book: TrialBook, kind: str, restart: bool = False) -> None:
        """Launch the segment on the first free slot."""
        self._launch(book, kind, self.free.pop(0), self.ranks, restart=restart)

    def _serve(self) -> None:
        """Start segments placed but waiting (none here: :meth:`_place` launches at once)."""

    def _close_paused(self) -> None:
        # At DONE the scheduler has stopped every trial still paused. As in the simulator's
        # records (docs/formats.md) they get no record of their own: the last one is the pause.
        for book in self.state.trials.values():
            if book.status == "paused":
                book.status = "stopped"

    def _launch(self, book: TrialBook, kind: str, slot: Slot, ranks: int, restart: bool = False,
                extra: Optional[dict] = None) -> None:
        import json

        book.segments += 1
        book.status = "running"
        token = secrets.token_hex(8)
        self.channel.expect(token)  # before the launch: a fast rank 0 may connect at once
        trial_dir = self.out / "trials" / f"trial_{book.trial_id}"
        checkpoint = self.out / "checkpoints" / f"trial_{book.trial_id}" / "checkpoint.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        spec_path = trial_dir / f"segment_{book.segments}.json"
        atomic_write_json(spec_path, {
            "trial_id": book.trial_id, "workload": self.task.workload, "config": book.config,
            "seed": self.task.seed_for(book.trial_id, book.row), "checkpoint": str(checkpoint),
            "resume": book.checkpoint_epoch > 0, "device": self.device, "max_epochs": self.task.max_t,
            **({"checkpoint_every": self.task.checkpoint_every} if self.task.checkpoint_every else {})})
        spec = JobSpec(trial_id=book.trial_id, segment=book.segments, ranks=ranks, devices=list(slot.gpus),
                       argv=["--spec", str(spec_path)], env={RUNNER_ENV: self.channel.address, TOKEN_ENV: token},
                       log_dir=trial_dir / f"segment_{book.segments}", device=self.device,
                       trials_per_gpu=self.split.trials_per_gpu)
        extra = {"segment": book.segments, **(extra or {})}
        if kind == "start" and book.row is not None:
            extra["row"] = book.row
        if restart:
            extra.update(restart=True, checkpoint_epoch=book.checkpoint_epoch)
        try:
            job = self.executor.launch(spec)
        except (OSError, UserError) as err:
            self._record(kind, book, book.checkpoint_epoch if kind == "resume" else 0,
                         placement=list(slot.gpus), config=book.config if kind == "start" else None, extra=extra)
            self.channel.forget(token)
            self._fail(book, slot, f"launch failed: {json.dumps(str(err))}")
            return
        extra["pids"] = [p.pid for p in getattr(job, "processes", [])]
        self._record(kind, book, book.checkpoint_epoch if kind == "resume" else 0, placement=list(slot.gpus),
                     config=book.config if kind == "start" else None, extra=extra)
        self.active[token] = Segment(book.trial_id, book.segments, slot, job, token, kind, self.now())
        self._count()

    # -- channel -------------------------------------------------------------------------
    def _wait_for_messages(self) -> None:
        self._dispatch(self.channel.poll(SELECT_TIMEOUT_S))

    def _dispatch(self, messages: list) -> None:
        for token, message in messages:
            seg = self.active.get(token)
            if seg is not None:
                self._handle(seg, message)

    def _handle(self, seg: Segment, message: dict) -> None:
        book = self.state.trials[seg.trial_id]
        kind = message.get("type")
        if kind == "ready":
            seg.load_s = message.get("load_s")
            # The checkpoint the ranks really loaded is the authority: a periodic save can land
            # on disk while its "saved" message dies with a killed rank, so it may be newer than
            # the book (and the resume record, written at launch) says.
            seg.loaded_epoch = book.checkpoint_epoch = int(message.get("epoch", book.checkpoint_epoch))
        elif kind == "saved":  # --checkpoint-every: the trial goes on; a loss falls back to here
            book.checkpoint_epoch = int(message["epoch"])
        elif kind == "checkpointed":
            seg.checkpointed, seg.save_s = True, message.get("save_s")
            book.checkpoint_epoch = int(message["epoch"])
        elif kind == "epoch":
            self._on_epoch(seg, book, message)

    def _on_epoch(self, seg: Segment, book: TrialBook, msg: dict) -> None:
        epoch = int(msg["epoch"])
        seg.last_epoch = epoch
        ended = self.now()
        seconds = float(msg.get("train_s") or 0) + float(msg.get("eval_s") or 0)
        began = max(seg.launched_s, ended - seconds)
        extra = {"train_s": msg.get("train_s"), "eval_s": msg.get("eval_s"), "segment": seg.number}
        if seg.load_s is not None and epoch == seg.loaded_epoch + 1:
            extra["load_s"] = seg.load_s
            if seg.loaded_epoch:
                extra["loaded_epoch"] = seg.loaded_epoch
        trace_row = None
        if epoch <= book.reported:  # re-training after a restart: the scheduler saw it already
            answer = "continue"
            extra["replay"] = True
        else:
            decision = self.scheduler.on_result(book.trial_id, epoch, float(msg["metric"]))
            book.reported = epoch
            answer = Decision(decision).value
            trace_row = {"trial_id": book.trial_id, "config": book.config, "epoch": epoch,
                         "val_metric": msg["metric"], "test_metric": msg.get("test_metric"),
                         "metric_name": self.task.metric_name, "mode": self.task.mode,
                         "epoch_seconds": seconds, "gpus_per_trial": self._gpus_of(book),
                         "start_s": round(began, 4), "end_s": round(ended, 4),
                         "workload": getattr(self.workload, "name", "")}
        if answer == "continue" and epoch >= self.task.max_t:
            answer = "stop"  # a scheduler never lets a trial pass max_t; be safe in a replay
        if answer == "continue" and self.stopper.reason:
            answer, seg.interrupted = "pause", True
        answer = self._next_answer(seg, book, answer)
        # The log first: on resume, an epoch in the log is never reported again (_catch_up).
        self._record("epoch", book, epoch, metric=msg["metric"], test_metric=msg.get("test_metric"),
                     began_s=round(began, 4), extra=extra)
        if trace_row is not None:
            self.trace.write(trace_row)
        seg.answer = answer
        self.channel.send(seg.token, {"decision": answer})  # a dying job: _reap records it
        self._save()

    # -- ends of segments ------------------------------------------------------------------
    def _reap(self) -> None:
        for token, seg in list(self.active.items()):
            code = seg.job.poll()
            if code is None:
                continue
            self._dispatch(self.channel.drain(token))  # what the trial said before it exited
            self.channel.forget(token)
            del self.active[token]
            self._end_segment(seg, code)

    def _next_answer(self, seg: Segment, book: TrialBook, answer: str) -> str:
        """The answer the trial gets after the scheduler's (here: the same; the adaptive runner
        turns a continue into a pause where its policy resizes the trial)."""
        return answer

    def _end_segment(self, seg: Segment, code: int) -> None:
        book = self.state.trials[seg.trial_id]
        metric_extra = {"segment": seg.number}
        if seg.answer == "stop":
            status = self.scheduler.trial_status(book.trial_id)
            book.status = "completed" if status == COMPLETED or seg.last_epoch >= self.task.max_t else "stopped"
            if code != 0:
                metric_extra["exit_error"] = self._error(seg.job)
            self._record("complete" if book.status == "completed" else "stop", book, seg.last_epoch,
                         extra=metric_extra)
            self._free(seg.slot, f"trial {book.trial_id} {book.status} at epoch {seg.last_epoch}")
        elif seg.answer == "pause" and (seg.checkpointed or code == 0):
            book.status = "running" if seg.interrupted else "paused"
            metric_extra.update(save_s=seg.save_s, checkpoint_epoch=book.checkpoint_epoch)
            if seg.interrupted:
                metric_extra["interrupted"] = True
            self._record("pause", book, seg.last_epoch, extra=metric_extra)
            self._free(seg.slot, f"trial {book.trial_id} paused at epoch {seg.last_epoch}")
        elif seg.interrupted:
            # killed by us while stopping: in flight, falls back to its last checkpoint on --resume
            self._record("pause", book, book.reported,
                         extra={**metric_extra, "interrupted": True, "killed": True,
                                "checkpoint_epoch": book.checkpoint_epoch})
            self._free(seg.slot, f"trial {book.trial_id} interrupted")
        elif seg.answer == "pause":
            # paused by the scheduler but the checkpoint was not written: stays paused and
            # re-trains from its previous checkpoint when resumed (see state.py)
            book.status = "paused"
            self._record("pause", book, seg.last_epoch,
                         extra={**metric_extra, "checkpoint_failed": self._error(seg.job),
                                "checkpoint_epoch": book.checkpoint_epoch})
            self._free(seg.slot, f"trial {book.trial_id} paused (checkpoint failed)")
        else:
            self._lost(book, seg, self._error(seg.job))
        self._save()

    def _lost(self, book: TrialBook, seg: Segment, error: str) -> None:
        """A segment that died without a decision: restart it from its checkpoint or fail the
        trial, by the rule the simulator follows (allocation.after_lost_segment)."""
        from nasalloc.simulator.allocation import after_lost_segment

        book.lost += 1  # in the state: counted across --resume
        if after_lost_segment(book.lost, self.task.max_restarts) == "fail":
            self._fail(book, seg.slot, error, seg.last_epoch)
            return
        self._record("pause", book, book.reported, error=error,
                     extra={"segment": seg.number, "interrupted": True, "lost": True,
                            "checkpoint_epoch": book.checkpoint_epoch})
        book.status = "running"  # the scheduler hears nothing: it goes on from its checkpoint
        self.logged.add(book.trial_id)
        self.relaunch.append(book.trial_id)
        self._free(seg.slot, f"trial {book.trial_id} lost ({error[:80]}); restarts from epoch "
                             f"{book.checkpoint_epoch}")

    def _fail(self, book: TrialBook, slot: Slot, error: str, epoch: int = 0) -> None:
        self.scheduler.on_failure(book.trial_id)
        book.status = "failed"
        self._record("fail", book, max(epoch, book.reported), error=error)
        self._free(slot, f"trial {book.trial_id} FAILED: {error[:120]}")
        self._save()

    def _free(self, slot: Slot, what: str) -> None:
        self._release(slot)
        self._count()
        self.progress.line(self.now(), what)

    def _release(self, slot: Slot) -> None:
        self.free.append(slot)
        self.free.sort(key=lambda s: s.index)

    def _count(self) -> None:
        statuses = [b.status for b in self.state.trials.values()]
        self.progress.running = len(self.active)
        self.progress.paused = statuses.count("paused")
        self.progress.finished = statuses.count("stopped") + statuses.count("completed")
        self.progress.failed = statuses.count("failed")

    @staticmethod
    def _error(job) -> str:
        failure = getattr(job, "failure", None) or f"exited with status {job.returncode}"
        tail = job.stderr_tail(40) if hasattr(job, "stderr_tail") else ""
        lowered = tail.lower()
        if "out of memory" in lowered or "outofmemoryerror" in lowered:
            return f"out of memory: {failure}"
        if "gloo" in lowered or "nccl" in lowered:
            return f"communication error: {failure}"
        return failure
