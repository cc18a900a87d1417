"""The local executor: every trial segment is a DDP job of processes on this machine.

A thin layer over the profiler's :class:`~nasalloc.profiler.launch.LocalLauncher` (one
process per rank in its own process group, CUDA_VISIBLE_DEVICES per job, OMP_NUM_THREADS=1
on CPU, a failing rank takes its siblings down).
"""

from __future__ import annotations


from nasalloc.errors import UserError
from nasalloc.profiler.launch import DDPJob, LocalLauncher

from .executor import Executor, JobSpec, register_executor


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, device: str = "cpu", gpus_per_node=None):
        self.device = device
        self.launcher = LocalLauncher(gpus_per_node)

    def check_budget(self, budget: int) -> None:
        """On CUDA the plan's budget must be visible here (placements name GPUs 0..budget-1)."""
        if self.device == "cuda":
            visible = self.launcher.visible_gpu_ids()
            if budget > len(visible):
                raise UserError(f"the plan's budget of {budget} GPUs needs {budget} visible GPUs; this machine "
                                f"shows {len(visible)} (CUDA_VISIBLE_DEVICES): use --executor slurm or a smaller plan")

    def check(self, ranks: int, slots: int) -> None:
        cap = self.launcher.capacity(self.device)
        if self.device == "cuda":
            return  # check_budget keeps every placement on visible GPUs
        busy = ranks * slots
        if busy > 4 * cap.cpus:
            raise UserError(f"{slots} trial(s) of {ranks} CPU rank(s) need {busy} processes; this machine has "
                            f"{cap.cpus} core(s) (CPU 'GPUs' are one-thread ranks): use a smaller budget")

    def launch(self, spec: JobSpec):
        gpu_ids = None
        if spec.device == "cuda":
            visible = self.launcher.visible_gpu_ids()
            if any(int(d) >= len(visible) for d in spec.devices):
                raise UserError(f"trial {spec.trial_id} is placed on GPU(s) {spec.devices}; {len(visible)} visible")
            gpu_ids = [visible[int(d)] for d in spec.devices]
            if spec.ranks == 1 and len(gpu_ids) > 1:
                gpu_ids = gpu_ids[:1]
        cpu_cores = None
        if spec.device == "cpu":  # each CPU "GPU" is one core: the slot's ranks (or sharers) stay on it
            cpu_cores = [int(d) for d in spec.devices] if len(spec.devices) == spec.ranks \
                else [int(spec.devices[0])] * spec.ranks
        job = DDPJob(module="nasalloc.validate.trial", args=spec.argv, ranks=spec.ranks, device=spec.device,
                     env=dict(spec.env), gpu_ids=gpu_ids, cpu_cores=cpu_cores, log_dir=spec.log_dir,
                     name=f"trial{spec.trial_id}-s{spec.segment}")
        return self.launcher.start(job)


register_executor("local", LocalExecutor)
