"""Trials of a fractional split that share a GPU: costs by how many of the sharers are busy.

A split of g = 1/k GPUs per trial puts k slots on each GPU. The profile measured a trial alone
on a GPU (g = 1) and k trials launched and trained together (g = 1/k); between them the
scaling model interpolates the slowdown of j sharers (:meth:`ScalingModel.colocated_slowdown`).
A trial does not always have k-1 busy partners: in a search with fewer trials than slots, or
while a partner waits, is paused or has finished, it has the GPU (or, on CPU, the core) to
itself. Charging every trial the full k-way slowdown made the prediction of 0.5-GPU splits
15-67% too slow on this project's CPU closed loop (bench/data/closed_loop.md).

So the engine counts, per GPU, the segments holding one of its slots (from the segment's start,
through start-up, training and the save of a pause, to its end) and charges:

* each epoch: the epoch time at the number of busy sharers when the epoch begins (the trial
  itself included), times the run's shared noise factor;
* each start-up, resume, checkpoint save and load, and round trip: the profile's figure at that
  many sharers (``TimeModel.overhead`` at 1/j GPUs: the co-located measurement at j = k, the
  1-GPU one at j = 1).

What is approximate: a partner that starts or stops in the middle of an epoch changes that
epoch's speed in reality, here only the next epoch's; and a partner in start-up counts as busy
as one that trains (on a GPU, start-up is mostly host work). Pure: no clock, no SimPy.
"""

from __future__ import annotations

from .cluster import Split
from .timemodel import TimeModel

#: overheads charged by the number of busy sharers (TimeModel.overhead names)
OVERHEADS = ("startup_s", "resume_s", "checkpoint_save_s", "checkpoint_load_s", "roundtrip_s")


class SharedGPUs:
    """Per-GPU busy counts of a fractional split and the costs at each count."""

    def __init__(self, split: Split, time_model: TimeModel, run_factor: float = 1.0):
        k = split.trials_per_gpu
        if k < 2:
            raise ValueError(f"a split of {split.gpus_per_trial:g} GPUs per trial shares no GPU")
        self.k = k
        # the split's own fraction at j = k, so a full GPU costs exactly what it did before
        fractions = {j: split.gpus_per_trial if j == k else 1.0 / j for j in range(1, k + 1)}
        self.epoch_s = [0.0] + [time_model.reference_epoch_seconds(fractions[j], 1) * run_factor
                                for j in range(1, k + 1)]
        self.overheads = {name: [0.0] + [time_model.overhead(name, fractions[j]) for j in range(1, k + 1)]
                          for name in OVERHEADS}
        self.busy: dict = {}  # GPU index -> segments holding one of its slots

    def enter(self, gpu: int) -> int:
        """A segment takes a slot of ``gpu``; the number of busy sharers now."""
        count = self.busy.get(gpu, 0) + 1
        if count > self.k:
            raise RuntimeError(f"GPU {gpu} holds {count} segments, more than its {self.k} slots")
        self.busy[gpu] = count
        return count

    def leave(self, gpu: int) -> None:
        self.busy[gpu] -= 1

    def sharers(self, gpu: int) -> int:
        return self.busy[gpu]

    def epoch_seconds(self, gpu: int) -> float:
        """The reference config's epoch on ``gpu`` with its sharers busy now."""
        return self.epoch_s[self.busy[gpu]]

    def overhead(self, name: str, gpu: int) -> float:
        return self.overheads[name][self.busy[gpu]]
