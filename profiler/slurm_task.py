"""What every task of a nasalloc job step runs first: ``python -m nasalloc.profiler.slurm_task
[--gpu-index I] MODULE ARGS...``.

srun starts one task per rank and tells each its place in SLURM's words (``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID``, ...). The trial and profiler code reads torchrun's words
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...), as every launcher provides them; this wrapper
translates, then runs MODULE as ``__main__`` in the same process (no extra interpreter).

A task that already has ``RANK`` and ``WORLD_SIZE`` (torchrun inside the step, where
``SLURM_PROCID`` is 0 for every rank) keeps them.

``--gpu-index I``: the step holds all of its node's GPUs shared with other steps (co-located
trials of a fractional split); the task keeps only the I-th of them in CUDA_VISIBLE_DEVICES.

Each task first writes one line to stderr (its rank log, ``--output``) saying where it runs
and where it meets its peers (:func:`placement_line`): which node a rank of a multi-node step
really ran on is then in its log, not only in the ``--nodelist`` it was asked for.
"""

from __future__ import annotations

import os
import platform
import runpy
import sys
from typing import Mapping

from nasalloc.profiler.slurm_env import parse_per_node_counts

# torchrun's name -> SLURM's name (inside a job step)
RANK_VARIABLES = (
    ("RANK", "SLURM_PROCID"),
    ("WORLD_SIZE", "SLURM_NTASKS"),
    ("LOCAL_RANK", "SLURM_LOCALID"),
    ("NODE_RANK", "SLURM_NODEID"),
    ("GROUP_RANK", "SLURM_NODEID"),
)


def torchrun_env_from_slurm(env: Mapping[str, str]) -> dict:
    """The torchrun variables this task should get (empty when they are set already)."""
    if env.get("RANK") and env.get("WORLD_SIZE"):
        return {}
    missing = [slurm for _, slurm in RANK_VARIABLES if not env.get(slurm)]
    if missing:
        raise RuntimeError(f"not inside a SLURM job step: {', '.join(missing)} not set")
    values = {name: env[slurm].strip() for name, slurm in RANK_VARIABLES}
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if per_node:
        counts = parse_per_node_counts(per_node)
        node = int(values["NODE_RANK"])
        if node < len(counts):
            values["LOCAL_WORLD_SIZE"] = str(counts[node])
    return values


def narrowed_gpus(env: Mapping[str, str], index: int) -> str:
    """The ``index``-th GPU of the step's CUDA_VISIBLE_DEVICES (as SLURM set it)."""
    visible = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if not 0 <= index < len(visible):
        raise RuntimeError(f"--gpu-index {index} but the step sees GPUs {visible or 'none'}")
    return visible[index]


def placement_line(env: Mapping[str, str]) -> str:
    """``nasalloc slurm_task: rank R/W local L node N on NODE (host H) rendezvous ADDR:PORT``, then
    `` step JOB.STEP`` inside a job step (so a log says which step its rank belonged to)."""
    def get(name: str) -> str:
        return env.get(name) or "?"
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID")
    return (f"nasalloc slurm_task: rank {get('RANK')}/{get('WORLD_SIZE')} local {get('LOCAL_RANK')} "
            f"node {get('NODE_RANK')} on {get('SLURMD_NODENAME')} (host {platform.node()}) "
            f"rendezvous {get('MASTER_ADDR')}:{get('MASTER_PORT')}"
            + (f" step {get('SLURM_JOB_ID')}.{step}" if step else ""))


def main(argv: list[str]) -> None:
    gpu_index = None
    if argv[:1] == ["--gpu-index"]:
        gpu_index, argv = int(argv[1]), argv[2:]
    if not argv:
        raise SystemExit("usage: python -m nasalloc.profiler.slurm_task [--gpu-index I] MODULE ARGS...")
    os.environ.update(torchrun_env_from_slurm(os.environ))
    if gpu_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = narrowed_gpus(os.environ, gpu_index)
    print(placement_line(os.environ), file=sys.stderr, flush=True)
    module, args = argv[0], argv[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
