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

``--resume``: a trial that was in flight, or waiting for its group, when the run stopped goes on
from its last checkpoint on the GPUs the policy gives its next epochs (the milestone it started
towards and the GPUs of its last segment are in ``state.json``); the rest as in :mod:`.runner`.

The checkpoint restores onto the new world size (model, optimizer and the sampler's epoch; the
per-rank random state is reseeded when the count changed, see ``workloads/training.py``). With
the ``global`` batch policy each step's global batch, and so the learning curve, is unchanged.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from nasalloc.simulator.cluster import Slot, make_split
from nasalloc.simulator.gpupool import GpuPool
from nasalloc.simulator.policies import ask_for, parse_policy, rung_ladder

from .runner import Runner, Segment
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
        self.queue: deque = deque()          # (book, kind, gpus, restart, extra) waiting for their group
        self.resize_to: dict[str, int] = {}  # segment token -> the count its trial goes on with
        self.ranks = self.policy.min_gpus    # the executor checks ranks x workers: the budget at most

    def _open(self, resume: bool) -> None:
        super()._open(resume)
        self.ladder = rung_ladder(self.scheduler)

    def _gpus_of(self, book: TrialBook) -> float:
        return book.gpus if book.gpus is not None else self.policy.min_gpus

    def _gpus_for(self, book: TrialBook) -> int:
        """What the policy gives the trial's next epochs (the engine asks the very same)."""
        return self.policy.gpus(ask_for(self.scheduler, self.ladder, book.trial_id, book.milestone, book.reported))

    # -- placing: a worker per min_gpus of the budget, groups from the pool, first come first served
    def _room(self) -> bool:
        return len(self.active) + len(self.queue) < self.workers

    def _place(self, book: TrialBook, kind: str, restart: bool = False, gpus: Optional[int] = None,
               extra: Optional[dict] = None) -> None:
        self.queue.append((book, kind, self._gpus_for(book) if gpus is None else gpus, restart, extra))

    def _serve(self) -> None:
        while self.queue:
            book, kind, gpus, restart, extra = self.queue[0]
            placement = self.pool.take(gpus)
            if placement is None:
                return
            self.queue.popleft()
            book.gpus = gpus
            nodes = 1 if gpus <= self.pool.gpus_per_node else gpus // self.pool.gpus_per_node
            self._launch(book, kind, Slot(-1, placement, nodes), gpus, restart=restart, extra=extra)

    def _release(self, slot: Slot) -> None:
        self.pool.give(slot.gpus)

    # -- resizes ---------------------------------------------------------------------------------
    def _next_answer(self, seg: Segment, book: TrialBook, answer: str) -> str:
        if answer == "continue":
            new = self._gpus_for(book)
            if new != book.gpus:
                self.resize_to[seg.token] = new
                return "pause"
        return answer

    def _end_segment(self, seg: Segment, code: int) -> None:
        new = self.resize_to.pop(seg.token, None)
        if new is None or seg.interrupted and not (seg.checkpointed or code == 0):
            return super()._end_segment(seg, code)  # killed while stopping: as any trial in flight
        book = self.state.trials[seg.trial_id]
        if not (seg.checkpointed or code == 0):
            # the scheduler holds it as running: a lost segment (restart from the last checkpoint, or fail)
            self._lost(book, seg, self._error(seg.job))
            self._save()
            return
        self._record("pause", book, seg.last_epoch, extra={"segment": seg.number, "save_s": seg.save_s,
                                                           "checkpoint_epoch": book.checkpoint_epoch, "resize": new})
        self._free(seg.slot, f"trial {book.trial_id} resizes to {new} rank(s) at epoch {seg.last_epoch}")
        self._place(book, "resume", gpus=new, extra={"resize": new})
        self._save()
