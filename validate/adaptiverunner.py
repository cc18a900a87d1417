"""The wall-clock runner under an adaptive allocation policy (``validate --policy``).

The same loop as :class:`.runner.Runner`, asking the very :class:`~nasalloc.simulator.policies.
Policy` object the SimPy engine asks (with the same :func:`~nasalloc.simulator.policies.ask_for`),
and placing groups like the engine (:class:`~nasalloc.simulator.gpupool.GpuPool`, first come,
first served):

* ``budget // policy.min_gpus`` segments may be in flight (running or waiting for their group),
  as the engine has that many workers; the scheduler is asked while fewer are;
* a segment's job has as many ranks as the policy gives it, on the GPUs of its group;
* when the scheduler answers CONTINUE after a rung and the policy gives the next segment another
  count, the runner sends ``pause`` instead: the trial checkpoints (a collective save on the old
  ranks) and exits, and a resume on the new number of ranks is queued. The scheduler never hears
  of it (the trial runs on, to it). Records: ``pause`` and ``resume`` with ``extra.resize``; every
  record carries its segment's GPUs.

The checkpoint restores onto the new world size (model, optimizer and the sampler's epoch; the
per-rank random state is reseeded when the count changed, see ``workloads/training.py``). With
the ``global`` batch policy each step's global batch, and so the learning curve, is unchanged.
"""

from __future__ import annotations

from collections import deque

from nasalloc.errors import UserError
from nasalloc.records import Event
from nasalloc.simulator.cluster import Slot, make_split
from nasalloc.simulator.gpupool import GpuPool
from nasalloc.simulator.policies import ask_for, parse_policy, rung_ladder
from nasalloc.simulator.schedulers.base import DONE, WAIT, Resume, Start

from .runner import ROW_KEY, Runner
from .state import TrialBook


class AdaptiveRunner(Runner):
    def __init__(self, task, executor, out_dir, **options):
        super().__init__(task, executor, out_dir, **options)
        gpn = task.gpus_per_node or task.budget
        self.policy = parse_policy(task.policy, task.budget, gpn)
        self.split = make_split(task.budget, gpn, self.policy.min_gpus)  # the engine's worker count
        self.slots = list(self.split.slots)
        self.workers = task.budget // self.policy.min_gpus
        self.pool = GpuPool(task.budget, gpn)
        self.queue: deque = deque()       # (book, kind, gpus, extra) waiting for their group
        self.first: dict[int, int] = {}   # trial -> the milestone it started towards
        self.resize_to: dict[str, int] = {}  # segment token -> the count its trial goes on with
        self.current_gpus: dict[int, int] = {}
        self.ranks = self.policy.min_gpus  # the executor checks ranks x workers: the budget at most

    def _open(self, resume: bool) -> None:
        if resume:
            raise UserError("--resume of an adaptive-policy validation is not supported yet; run it again "
                            "into a new --out")
        super()._open(resume)
        self.ladder = rung_ladder(self.scheduler)

    def _record(self, kind: str, book: TrialBook, epoch: int, **fields) -> None:
        gpus = self.current_gpus.get(book.trial_id, self.policy.min_gpus)
        event = Event(time_s=round(self.now(), 4), kind=kind, trial_id=book.trial_id, epoch=epoch, gpus=gpus, **fields)
        self.events.write(event.to_dict())

    def _gpus_for(self, book: TrialBook) -> int:
        return self.policy.gpus(ask_for(self.scheduler, self.ladder, book.trial_id, self.first[book.trial_id],
                                        book.reported))

    # -- launching ---------------------------------------------------------------------------
    def _fill_slots(self) -> None:
        while not self.done and len(self.active) + len(self.queue) < self.workers:
            action = self.scheduler.suggest()
            if action is DONE:
                self.done = True
                self._close_paused()
            elif action is WAIT:
                break
            elif isinstance(action, Start):
                config = dict(action.config)
                row = config.pop(ROW_KEY, None)
                book = TrialBook(action.trial_id, config, row=None if row is None else int(row))
                self.state.trials[book.trial_id] = book
                self.first[book.trial_id] = int(action.milestone)
                self.queue.append((book, "start", self._gpus_for(book), {}))
            elif isinstance(action, Resume):
                book = self.state.trials[action.trial_id]
                book.status = "running"
                self.queue.append((book, "resume", self._gpus_for(book), {}))
            else:
                raise RuntimeError(f"scheduler returned {action!r}, not Start, Resume, WAIT or DONE")
            self._save()
            if action is DONE:
                break
        self._serve_queue()

    def _serve_queue(self) -> None:
        while self.queue:
            book, kind, gpus, extra = self.queue[0]
            placement = self.pool.take(gpus)
            if placement is None:
                return
            self.queue.popleft()
            self.current_gpus[book.trial_id] = gpus
            self.free = [Slot(-1, placement, 1 if gpus <= self.pool.gpus_per_node else gpus // self.pool.gpus_per_node)]
            self.ranks = gpus
            self._launch(book, kind)

    def _free(self, slot: Slot, what: str) -> None:
        self.pool.give(slot.gpus)
        self._count()
        self.progress.line(self.now(), what)

    # -- resizes ---------------------------------------------------------------------------------
    def _on_epoch(self, seg, book, msg) -> None:
        sent = []
        send = self.channel.send
        self.channel.send = lambda token, message: sent.append((token, message))
        try:
            super()._on_epoch(seg, book, msg)
        finally:
            self.channel.send = send
        for token, message in sent:
            if message.get("decision") == "continue":
                new = self._gpus_for(book)
                if new != self.current_gpus[book.trial_id]:
                    self.resize_to[token] = new
                    seg.answer = "pause"
                    message = {"decision": "pause"}
            send(token, message)

    def _end_segment(self, seg, code: int) -> None:
        new = self.resize_to.pop(seg.token, None)
        if new is None or not (seg.checkpointed or code == 0):
            return super()._end_segment(seg, code)
        book = self.state.trials[seg.trial_id]
        self._record("pause", book, seg.last_epoch, extra={"segment": seg.number, "save_s": seg.save_s,
                                                           "checkpoint_epoch": book.checkpoint_epoch, "resize": new})
        self._free(seg.slot, f"trial {book.trial_id} resizes to {new} rank(s) at epoch {seg.last_epoch}")
        self.queue.append((book, "resume", new, {"resize": True}))
        self._save()
