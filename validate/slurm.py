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
        if launcher is None:
            allocation = SlurmLauncher.from_environment(device=device).allocation
            if gpus_per_node is not None and gpus_per_node > allocation.gpus_per_node:
                gpus_per_node = None  # the plan's nodes are larger: fit_plan re-places or says how
            launcher = SlurmLauncher(allocation, gpus_per_node)
        self.launcher = launcher
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

    def fit_plan(self, plan, splits: list) -> tuple:
        """Place the plan's ``splits`` on this allocation (see :func:`fit_plan`)."""
        gpus_per_node, note = fit_plan(plan, splits, self.allocation)
        if gpus_per_node != self.gpus_per_node:
            self.launcher = SlurmLauncher(self.allocation, gpus_per_node)
            self.gpus_per_node = gpus_per_node
        return gpus_per_node, note

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


def fit_plan(plan, splits, allocation) -> tuple:
    """The GPUs per node to place the plan's ``splits`` with in ``allocation``, and a note.

    The plan's own placement when the allocation's nodes hold it (nodes of at least the plan's
    GPUs; the plan's slots use only the first ones). When its nodes are smaller but every split
    still places whole trials on them, as many at once as the plan simulated, the trials are
    re-placed on the allocation's nodes without asking (the note says so). Otherwise a one-line
    UserError says exactly which ``nasalloc simulate`` gives a plan that fits.
    """
    from nasalloc.simulator.cluster import make_split

    budget, planned, have = plan.budget, plan.gpus_per_node, allocation.gpus_per_node
    where = (f"SLURM job {allocation.job_id} ({allocation.nodes} node(s) of {have} "
             f"{'CPU core slots' if allocation.cpu_slots else 'GPUs'})")
    if planned <= have and budget <= allocation.nodes * planned:
        return planned, None

    def fits(g: float) -> bool:  # whole trials on the allocation's nodes, as many at once as planned
        try:
            return make_split(budget, have, g).parallel_trials == make_split(budget, planned, g).parallel_trials
        except UserError:
            return False

    if budget <= allocation.gpus and all(fits(g) for g in splits):
        return have, (f"the plan placed trials on nodes of {planned} GPUs and {where} has others: its trials "
                      f"are re-placed on them, as many at once (predictions simulated again for this placement)")
    usable = min(budget, allocation.gpus)
    fitting = [g for g in sorted(set(plan_splits(plan)) | set(splits)) if g <= usable and _fits_nodes(usable, have, g)]
    hint = plan.simulate_command(usable, have, fitting or [1.0])
    reason = (f"budget {budget} GPUs is more than its {allocation.gpus}" if budget > allocation.gpus else
              f"splits {', '.join(f'{g:g}' for g in splits if not fits(g))} do not place whole trials on nodes of {have}")
    raise UserError(f"the plan was simulated for nodes of {planned} GPUs, which do not fit {where} ({reason}); "
                    f"for a plan that fits run: {hint}  (or submit with --gpus-per-node={planned} "
                    f"--nodes={-(-budget // planned)})")


def plan_splits(plan) -> list:
    return sorted({float(s["gpus_per_trial"]) for entry in plan.algorithms.values() for s in entry["splits"]})


def _fits_nodes(budget: int, gpus_per_node: int, g: float) -> bool:
    from nasalloc.simulator.cluster import make_split

    try:
        make_split(budget, gpus_per_node, g)
        return True
    except UserError:
        return False


register_executor("slurm", SlurmExecutor)
