"""The ``slurm`` executor: inside an allocation, every trial segment is one job step.

``nasalloc validate --executor slurm`` (run from the batch script, see :mod:`.sbatch`) hands
each segment to the profiler's :class:`~nasalloc.profiler.slurm.SlurmLauncher`:

* the runner places trials with the simulator's slots (global GPU indices, ``node *
  gpus_per_node + i``); :func:`~nasalloc.profiler.slurm.hosts_of_devices` turns a slot into
  its hosts, so a trial that fits on a node gets ``--nodelist`` that node, a larger one whole
  nodes, exactly as simulated. Which GPUs of a node a step gets is SLURM's choice; a step
  sees them in CUDA_VISIBLE_DEVICES;
* a fractional split (k trials per GPU) cannot be expressed as GPU requests (SLURM never gives
  one GPU to two steps), so its steps share the node's GPUs (``--overlap``) and each task
  keeps the one its slot names (``trials_per_gpu`` > 1);
* a failed or killed step ends with srun's first failing task (rank, host, exit status) and
  its log in the ``fail`` record; its slot goes back to the runner's pool;
* the allocation's SIGTERM reaches the runner only (``--signal=B:TERM@...`` and ``exec`` in the
  batch script); steps run in their own sessions, so the runner pauses them at their next
  epoch, writes its state, and ``--resume`` in the next allocation continues.
"""

from __future__ import annotations

import socket
from typing import Optional

from nasalloc.errors import UserError
from nasalloc.profiler.launch import DDPJob
from nasalloc.profiler.slurm import SlurmLauncher, hosts_of_devices

from .executor import Executor, JobSpec, register_executor

TRIAL_MODULE = "nasalloc.validate.trial"


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, device: str = "cpu", gpus_per_node: Optional[int] = None,
                 launcher: Optional[SlurmLauncher] = None):
        self.device = device
        self.launcher = launcher or SlurmLauncher.from_environment(gpus_per_node)
        self.allocation = self.launcher.allocation
        self.gpus_per_node = self.launcher.gpus_per_node
        self._busy: dict = {}  # GPU index -> (trial id, running step) of unshared steps

    def check(self, ranks: int, slots: int) -> None:
        gpn, alloc = self.gpus_per_node, self.allocation
        where = f"SLURM job {alloc.job_id} ({alloc.nodes} node(s) of {gpn} GPU(s), {min(alloc.cpus_per_node)} CPUs)"
        if ranks > gpn and ranks % gpn:
            raise UserError(f"trials of {ranks} GPUs span nodes of {gpn} GPUs unevenly in {where}; "
                            f"a trial on several nodes takes whole nodes")
        if ranks > alloc.nodes * gpn:
            raise UserError(f"trials of {ranks} GPUs do not fit {where}")
        # ranks running at once on one node, each with its CPUs: more would wait for CPUs
        # (co-located trials of a fractional split overlap: SLURM does not count them)
        at_once = min(gpn, ranks * slots)
        if at_once * self.launcher.cpus_per_task > min(alloc.cpus_per_node):
            raise UserError(f"{at_once} rank(s) at once per node x {self.launcher.cpus_per_task} CPU(s) "
                            f"do not fit {where}; use a smaller budget or ask sbatch for more CPUs")

    def runner_host(self) -> str:
        here = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
        if all(host in here for host in self.allocation.hosts):
            return "127.0.0.1"
        return socket.gethostname()  # ranks on other nodes reach the runner by this name

    def launch(self, spec: JobSpec):
        shared = spec.trials_per_gpu > 1
        devices = list(spec.devices)[:1] if shared else list(spec.devices)
        if not shared and len(devices) != spec.ranks:
            raise UserError(f"trial {spec.trial_id}: {spec.ranks} rank(s) but GPUs {devices}")
        if not shared:
            self._refuse_busy(spec, devices)
        hosts, per_node = hosts_of_devices(self.allocation, devices, self.gpus_per_node)
        job = DDPJob(module=TRIAL_MODULE, args=list(spec.argv), ranks=spec.ranks, nodes=len(hosts),
                     device=spec.device, env=dict(spec.env), log_dir=spec.log_dir,
                     name=f"trial{spec.trial_id}-s{spec.segment}")
        gpu_index = int(devices[0]) % self.gpus_per_node if shared else None
        running = self.launcher.start_step(job, hosts, per_node, gpu_index=gpu_index)
        if not shared:
            self._busy.update({int(d): (spec.trial_id, running) for d in devices})
        return running

    def _refuse_busy(self, spec: JobSpec, devices: list) -> None:
        # A step asking for a GPU another step holds would wait (then fail after --immediate):
        # say at once that this slot shares a GPU the executor was not told to share.
        for device in devices:
            holder = self._busy.get(int(device))
            if holder is not None and holder[1].poll() is None:
                raise UserError(f"trial {spec.trial_id}: GPU {device} is held by the step of trial {holder[0]}; "
                                f"a fractional split must say trials_per_gpu in its JobSpec so steps share GPUs")


register_executor("slurm", SlurmExecutor)
