"""Process-group helpers every trial process uses (profiler worker, validation runner, tests).

A trial is launched by torchrun, srun or our own launcher with the usual environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
:func:`init_from_env` turns that into a :class:`DistContext`; with ``WORLD_SIZE`` unset or 1 it
is a single process and no process group is created (so tests and the benchmark skip the
start-up cost). gloo on CPU with one thread per rank (two ranks on two cores are 10x slower
with torch's default thread count); NCCL on CUDA with one device per rank.

torch is imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import inspect
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

from ..errors import UserError

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_TIMEOUT_S = 300.0


def _env_int(name: str, default: Optional[int]) -> Optional[int]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer") from None


def free_port() -> int:
    """A TCP port free on this host now (for MASTER_PORT of a local launch)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    if device not in DEVICES:
        raise UserError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but torch sees no CUDA GPU")
    return device


@dataclass
class DistContext:
    """Where this process stands in its trial's process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"          # "cpu" or "cuda:<local_rank>"
    backend: Optional[str] = None  # None: single process, no group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def torch_device(self):
        import torch

        return torch.device(self.device)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def all_reduce_sum(self, values):
        """Sum a list of floats (or a tensor) over ranks; returns floats in a list."""
        return self._all_reduce(values, "sum")

    def all_reduce_max(self, values):
        return self._all_reduce(values, "max")

    def _all_reduce(self, values, op: str) -> list:
        import torch

        tensor = torch.as_tensor(values, dtype=torch.float64).reshape(-1).clone()
        if self.distributed:
            import torch.distributed as dist

            tensor = tensor.to(self.device)
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return [float(v) for v in tensor.cpu().tolist()]

    def broadcast_floats(self, values, src: int = 0) -> list:
        """Rank ``src``'s list of floats on every rank."""
        import torch

        tensor = torch.as_tensor(values, dtype=torch.float64).reshape(-1).clone()
        if self.distributed:
            import torch.distributed as dist

            tensor = tensor.to(self.device)
            dist.broadcast(tensor, src=src)
        return [float(v) for v in tensor.cpu().tolist()]

    def destroy(self, wait_for_peers: bool = True) -> None:
        """Leave the process group. ``wait_for_peers``: first meet every rank in a barrier, so
        no rank tears gloo down while a peer is still in a collective (the peer would abort:
        "terminate called without an active exception"). Pass False on an error path, where
        the peers may be blocked in another collective and the barrier would hang."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                if wait_for_peers:
                    dist.barrier()
                dist.destroy_process_group()
            self.backend = None


def current_context(device: str = "cpu") -> DistContext:
    """The context of an already initialised process group (or a single process).

    Trainers call this: the group is set up once per process by :func:`init_from_env`.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=_single_device(device))
    backend = dist.get_backend()
    local_rank = _env_int("LOCAL_RANK", 0) or 0
    dev = f"cuda:{local_rank}" if backend == "nccl" else _single_device(device)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=local_rank, device=dev, backend=backend)


def _single_device(device: str) -> str:
    resolved = resolve_device(device)
    if resolved == "cuda":
        import torch

        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def init_from_env(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the trial's process group described by the environment (or stay single-process)."""
    import torch

    resolved = resolve_device(device)
    world = _env_int("WORLD_SIZE", 1) or 1
    rank = _env_int("RANK", 0) or 0
    local_rank = _env_int("LOCAL_RANK", None)
    if local_rank is None:
        local_rank = rank
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank} and WORLD_SIZE={world} do not describe a rank of a group")

    threads = _env_int("OMP_NUM_THREADS", None)
    if threads is not None and threads >= 1:
        torch.set_num_threads(threads)  # an explicit setting always wins
    elif resolved == "cpu" and world > 1:
        torch.set_num_threads(1)  # several ranks share the cores

    if resolved == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(local_rank)
        dev = f"cuda:{local_rank}"
    else:
        dev = "cpu"

    if world == 1:
        return DistContext(rank=0, world_size=1, local_rank=local_rank, device=dev, backend=None)

    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise UserError(f"WORLD_SIZE={world} but {name} is not set; launch with torchrun, srun or nasalloc's launcher")
    import torch.distributed as dist

    backend = "nccl" if resolved == "cuda" else "gloo"
    kwargs = {}
    if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = torch.device(dev)  # binds the communicator to this rank's GPU (torch >= 2.3)
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s), **kwargs)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)
