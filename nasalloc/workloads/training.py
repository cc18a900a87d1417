"""The training loop the built-in workloads share: an image classifier on in-memory tensors,
trained data-parallel on the current process group (or a single process).

Determinism and the batch policy: every epoch shuffles the training set with a generator
seeded by (seed, epoch), the same on every rank; each global batch of that permutation is split
into ``world_size`` disjoint contiguous shards, one per rank. The loss on a rank is its samples'
summed loss scaled so that DDP's gradient average equals the mean over the whole global batch,
so with the ``global`` policy the update does not depend on the number of ranks (up to float
summation order, dropout masks and batch-norm statistics, which are per rank). A partial last
batch is dropped, so every rank takes part in every step.

Evaluation is sharded the same way and the correct-answer counts are all-reduced, so every
rank returns the same metrics.

Sync time (``EpochResult.sync_seconds``) is approximate: a DDP communication hook notes when
each gradient bucket becomes ready; the time from the last bucket being ready until
``backward()`` returns is the all-reduce tail this rank waited for, summed over the epoch.
Overlapped communication is not counted.

torch is imported inside functions and methods: this module is imported by the workloads,
whose search spaces must load without torch.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import UserError
from .base import EpochResult, Trainer, Workload

BATCH_POLICIES = ("global", "per_gpu")


@dataclass
class TensorSplits:
    """Training, validation and test tensors (inputs float, labels int64), on the CPU."""

    train_x: object
    train_y: object
    val_x: object
    val_y: object
    test_x: Optional[object] = None
    test_y: Optional[object] = None


def shard_bounds(n: int, parts: int, index: int) -> tuple[int, int]:
    """Start and end of shard ``index`` of ``n`` items split into ``parts`` contiguous shards
    whose sizes differ by at most one (the first ``n % parts`` shards get one more)."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def epoch_permutation(n: int, seed: int, epoch: int):
    """The training order of 1-based ``epoch``: identical on every rank."""
    import torch

    generator = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
    return torch.randperm(n, generator=generator)


def global_batch_size(batch_size: int, policy: str, world_size: int) -> int:
    if policy not in BATCH_POLICIES:
        raise UserError(f"batch policy {policy!r} is not one of {', '.join(BATCH_POLICIES)}")
    size = batch_size if policy == "global" else batch_size * world_size
    if size < world_size:
        raise UserError(f"global batch {size} is smaller than the {world_size} ranks it is split across")
    return size


def lr_scale(optimizer: str, batch_policy: str, world_size: int) -> float:
    """The factor on a config's learning rate at ``world_size`` ranks: RASDA's rule (Aach et al.,
    FGCS 2025, cases/ImagenetTrainLoopDALI.py: ``lr * world_size`` for SGD, ``lr * sqrt(world_size)``
    for Adam-type optimizers) where the global batch grows with the ranks (``per_gpu``); 1 with
    the ``global`` policy, whose batch does not change. The config's ``lr`` is its one-rank rate."""
    if batch_policy != "per_gpu" or world_size <= 1:
        return 1.0
    return float(world_size) if optimizer == "sgd" else float(world_size) ** 0.5


def make_optimizer(name: str, parameters, lr: float, weight_decay: float):
    import torch

    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    raise UserError(f"optimizer {name!r} is not one of sgd, adam")


class ClassifierTrainer(Trainer):
    """Train a classifier (cross-entropy, accuracy) on :class:`TensorSplits` with DDP.

    ``build_model`` is called after seeding torch with ``seed`` so every rank builds the same
    initial weights (DDP broadcasts rank 0's anyway). ``lr_schedule`` is ``None`` (constant)
    or ``"cosine"`` (annealed to 1% of ``lr`` over ``max_epochs``). With the ``per_gpu`` policy
    the rate is ``lr`` times :func:`lr_scale` at this world size; a checkpoint resumed on another
    number of ranks rescales the restored rates (schedule position kept) to the new size's.
    """

    def __init__(self, build_model: Callable[[], object], data: TensorSplits, *, seed: int,
                 device: str, optimizer: str, lr: float, weight_decay: float, batch_size: int,
                 batch_policy: str = "global", steps_per_epoch: Optional[int] = None,
                 lr_schedule: Optional[str] = None, max_epochs: int = 81):
        import torch

        from .distributed import current_context

        self.ctx = current_context(device)
        self.seed = int(seed)
        self.epoch = 0
        if self.ctx.device.startswith("cuda"):
            # Keep the (small) data sets on the GPU: a step then costs what the model costs.
            data = TensorSplits(*(None if t is None else t.to(self.ctx.device) for t in
                                  (data.train_x, data.train_y, data.val_x, data.val_y, data.test_x, data.test_y)))
        self.data = data
        self.global_batch = global_batch_size(int(batch_size), batch_policy, self.ctx.world_size)
        self.steps_per_epoch = steps_per_epoch
        if self.steps() < 1:
            raise UserError(f"global batch {self.global_batch} is larger than the "
                            f"{len(data.train_y)} training samples")
        torch.manual_seed(self.seed)
        self.module = build_model().to(self.ctx.device)
        self.model = self.module
        self._bucket_ready_at = 0.0
        # Optional (profiler/noisescale.py DDPNoiseProbe): local and all-reduced gradient norms per step.
        self.noise_probe = None
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.ctx.local_rank] if self.ctx.device.startswith("cuda") else None
            self.model = DistributedDataParallel(self.module, device_ids=ids)
            self.model.register_comm_hook(None, self._timed_allreduce_hook())
        # Dropout masks differ per rank, the same way on every run.
        torch.manual_seed(self.seed * 7919 + 1 + self.ctx.rank)
        self.lr_factor = lr_scale(optimizer, batch_policy, self.ctx.world_size)
        lr = float(lr) * self.lr_factor
        self.optimizer = make_optimizer(optimizer, self.module.parameters(), lr, float(weight_decay))
        self.scheduler = None
        if lr_schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=max_epochs, eta_min=lr * 0.01)
        elif lr_schedule is not None:
            raise UserError(f"lr_schedule {lr_schedule!r} is not one of None, 'cosine'")
        self.loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

    def steps(self) -> int:
        full = len(self.data.train_y) // self.global_batch
        return min(full, self.steps_per_epoch) if self.steps_per_epoch else full

    def _timed_allreduce_hook(self):
        import torch.distributed as dist

        def hook(state, bucket):
            self._bucket_ready_at = time.perf_counter()
            buffer = bucket.buffer()
            if self.noise_probe is not None:
                self.noise_probe.add_local(buffer)  # this rank's shard-mean gradient, before the reduction
            buffer.div_(self.ctx.world_size)
            return dist.all_reduce(buffer, async_op=True).get_future().then(lambda fut: fut.value()[0])

        return hook

    def _synchronize(self) -> None:
        if self.ctx.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.ctx.device)

    def train_epoch(self) -> EpochResult:
        self.epoch += 1
        self.model.train()
        n = len(self.data.train_y)
        order = epoch_permutation(n, self.seed, self.epoch).to(self.data.train_y.device)
        world, rank, batch = self.ctx.world_size, self.ctx.rank, self.global_batch
        sync = 0.0
        self._synchronize()
        began = time.perf_counter()
        for step in range(self.steps()):
            global_indices = order[step * batch:(step + 1) * batch]
            start, end = shard_bounds(batch, world, rank)
            indices = global_indices[start:end]
            inputs = self.data.train_x[indices].to(self.ctx.device, non_blocking=True)
            labels = self.data.train_y[indices].to(self.ctx.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            # DDP averages over ranks: scale so the average is the global-batch mean.
            loss = self.loss_fn(self.model(inputs), labels) * (world / batch)
            loss.backward()
            if self.ctx.distributed:
                sync += time.perf_counter() - self._bucket_ready_at
                if self.noise_probe is not None:
                    self.noise_probe.end_step(self.module)
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self._synchronize()
        train_seconds = time.perf_counter() - began
        began = time.perf_counter()
        val = self._accuracy(self.data.val_x, self.data.val_y)
        test = self._accuracy(self.data.test_x, self.data.test_y) if self.data.test_y is not None else None
        self._synchronize()
        eval_seconds = time.perf_counter() - began
        return EpochResult(epoch=self.epoch, val_metric=val, test_metric=test, train_seconds=train_seconds,
                           eval_seconds=eval_seconds, samples=self.steps() * batch,
                           sync_seconds=sync if self.ctx.distributed else 0.0)

    def _accuracy(self, inputs, labels, chunk: int = 1024) -> float:
        import torch

        self._share_buffers()
        self.module.eval()
        start, end = shard_bounds(len(labels), self.ctx.world_size, self.ctx.rank)
        correct = 0
        with torch.no_grad():
            for lo in range(start, end, chunk):
                hi = min(lo + chunk, end)
                logits = self.module(inputs[lo:hi].to(self.ctx.device))
                correct += int((logits.argmax(1) == labels[lo:hi].to(logits.device)).sum())
        total_correct, = self.ctx.all_reduce_sum([float(correct)])
        return total_correct / len(labels)

    def _share_buffers(self) -> None:
        # Batch-norm statistics drift apart per rank; evaluate everywhere with rank 0's.
        if self.ctx.distributed:
            import torch.distributed as dist

            for buffer in self.module.buffers():
                dist.broadcast(buffer.data, src=0)

    # -- checkpoints ---------------------------------------------------------------------

    def _rng_state(self) -> dict:
        import numpy as np
        import torch

        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.ctx.device.startswith("cuda"):
            state["cuda"] = torch.cuda.get_rng_state(self.ctx.device)
        return state

    def save_checkpoint(self, path: str) -> None:
        import torch

        rng_states = [self._rng_state()]
        if self.ctx.distributed:
            import torch.distributed as dist

            rng_states = [None] * self.ctx.world_size
            dist.all_gather_object(rng_states, self._rng_state())
        if self.ctx.is_main:
            state = {
                "epoch": self.epoch, "seed": self.seed, "world_size": self.ctx.world_size,
                "lr_factor": self.lr_factor,
                "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                # The sampler's position is the epoch: each epoch's order comes from (seed, epoch).
                "sampler": {"seed": self.seed, "next_epoch": self.epoch + 1, "global_batch": self.global_batch},
                "rng": rng_states,
            }
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".ckpt.", suffix=".tmp", dir=directory)
            os.close(fd)
            try:
                torch.save(state, tmp)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        self.ctx.barrier()

    def _rescale_lr(self, ratio: float) -> None:
        """Multiply every restored rate (and the schedule's base and floor) by ``ratio``: the
        checkpoint's rates were for its own world size."""
        if ratio == 1.0:
            return
        for group in self.optimizer.param_groups:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
        if self.scheduler is not None:
            self.scheduler.base_lrs = [base * ratio for base in self.scheduler.base_lrs]
            self.scheduler.eta_min *= ratio
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def load_checkpoint(self, path: str) -> None:
        import numpy as np
        import torch

        if not os.path.isfile(path):
            raise UserError(f"checkpoint not found: {path}")
        state = torch.load(path, map_location=self.ctx.device, weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._rescale_lr(self.lr_factor / float(state.get("lr_factor", 1.0)))
        self.epoch = int(state["epoch"])
        self.seed = int(state["seed"])
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            mine = rng[self.ctx.rank]
            torch.set_rng_state(mine["torch"].cpu())
            np.random.set_state(mine["numpy"])
            random.setstate(mine["python"])
            if "cuda" in mine and self.ctx.device.startswith("cuda"):
                torch.cuda.set_rng_state(mine["cuda"].cpu(), self.ctx.device)
        else:
            # Resumed on a different number of ranks: reseed deterministically instead.
            torch.manual_seed(self.seed * 7919 + 1 + self.ctx.rank + 104_729 * self.epoch)
        self.ctx.barrier()


class ClassifierWorkload(Workload):
    """A workload whose trials are :class:`ClassifierTrainer` runs.

    A subclass gives ``build_model(config)`` and ``splits()``; the config supplies optimizer,
    lr, weight_decay and batch_size. ``steps_per_epoch`` (None: whole epochs) caps an epoch.
    """

    lr_schedule: Optional[str] = None
    max_epochs: int = 81
    steps_per_epoch: Optional[int] = None

    def make_trainer(self, config: dict, seed: int, device: str = "cpu") -> Trainer:
        config = dict(config)
        return ClassifierTrainer(lambda: self.build_model(config), self.splits(), seed=seed, device=device,
                                 optimizer=config["optimizer"], lr=config["lr"],
                                 weight_decay=config["weight_decay"], batch_size=config["batch_size"],
                                 batch_policy=self.batch_policy, steps_per_epoch=self.steps_per_epoch,
                                 lr_schedule=self.lr_schedule, max_epochs=self.max_epochs)
