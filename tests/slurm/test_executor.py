"""The slurm executor's and launcher's checks, without a SLURM (no step is started here)."""

import socket

import pytest

from nasalloc.errors import UserError
from nasalloc.profiler.launch import DDPJob
from nasalloc.profiler.slurm import SlurmLauncher
from nasalloc.profiler.slurm_env import Allocation
from nasalloc.validate.executor import make_executor
from nasalloc.validate.slurm import SlurmExecutor

TWO_NODES = Allocation(job_id="42", hosts=("n1", "n2"), gpus_per_node=4, cpus_per_node=(32, 32))


def executor(allocation=TWO_NODES, gpus_per_node=None, **kw):
    return SlurmExecutor(launcher=SlurmLauncher(allocation, gpus_per_node), **kw)


def test_the_launcher_shares_a_node_s_cpus_among_its_gpus_and_places_by_gpus():
    launcher = SlurmLauncher(TWO_NODES)
    assert launcher.cpus_per_task == 8
    cap = launcher.capacity("cpu")
    assert (cap.gpus, cap.nodes, cap.gpus_per_node, cap.cpus) == (8, 2, 4, 32)
    assert [launcher.nodes_for(r, "cpu") for r in (1, 4, 5, 8)] == [1, 1, 2, 2]
    launcher.check(DDPJob(module="m", ranks=8, nodes=2))
    with pytest.raises(UserError, match="a job of 6 ranks spans nodes of 4 GPUs"):
        launcher.check(DDPJob(module="m", ranks=6, nodes=2))  # refused before anything runs
    with pytest.raises(UserError, match="9 rank\\(s\\) do not fit SLURM job 42: it holds 8 GPU"):
        launcher.check(DDPJob(module="m", ranks=9, nodes=3))
    with pytest.raises(UserError, match="--gpus-per-node 8 but SLURM job 42 holds 4"):
        SlurmLauncher(TWO_NODES, gpus_per_node=8)
    few_cpus = SlurmLauncher(Allocation("1", ("n1",), 4, (2,)), cpus_per_task=1)
    with pytest.raises(UserError, match="4 rank\\(s\\) per node x 1 CPU\\(s\\) do not fit"):
        few_cpus.check(DDPJob(module="m", ranks=4))


def test_the_executor_refuses_splits_the_allocation_cannot_hold():
    executor().check(ranks=8, slots=1)
    executor().check(ranks=1, slots=8)
    with pytest.raises(UserError, match="trials of 6 GPUs span nodes of 4 GPUs unevenly"):
        executor().check(ranks=6, slots=1)
    with pytest.raises(UserError, match="trials of 12 GPUs do not fit"):
        executor().check(ranks=12, slots=1)
    small = executor(Allocation("7", ("n1",), 4, (2,)))
    small.check(ranks=1, slots=2)  # this machine: 2 CPUs hold 2 one-CPU ranks at once
    with pytest.raises(UserError, match="4 rank\\(s\\) at once per node x 1 CPU\\(s\\) do not fit"):
        small.check(ranks=1, slots=4)


def test_ranks_reach_the_runner_on_loopback_only_when_every_host_is_this_one():
    assert executor(Allocation("1", ("localhost",), 2, (2,))).runner_host() == "127.0.0.1"
    assert executor().runner_host() == socket.gethostname()


def test_the_executor_is_registered_and_needs_an_allocation(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_JOBID", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no srun either
    with pytest.raises(UserError, match="srun on PATH|not inside a SLURM allocation"):
        make_executor("slurm", device="cpu", gpus_per_node=2)


class RecordingLauncher(SlurmLauncher):
    """Records where steps would go instead of calling srun."""

    def __init__(self, allocation):
        super().__init__(allocation)
        self.calls = []

    def start_step(self, job, hosts, tasks_per_node, gpu_index=None):
        self.calls.append((job.name, tuple(hosts), tasks_per_node, gpu_index))
        return Running()


class Running:
    code = None

    def poll(self):
        return self.code


def spec(trial, devices, ranks=None, trials_per_gpu=1):
    from nasalloc.validate.executor import JobSpec

    return JobSpec(trial_id=trial, segment=1, ranks=ranks or len(devices), devices=devices, argv=["--spec", "x"],
                   trials_per_gpu=trials_per_gpu)


def test_slots_become_steps_on_their_nodes_and_shared_gpus_overlap():
    launcher = RecordingLauncher(TWO_NODES)
    ex = SlurmExecutor(launcher=launcher)
    ex.launch(spec(0, [4, 5])).code = 0  # ended before the next split's trial takes every GPU
    ex.launch(spec(1, [0, 1, 2, 3, 4, 5, 6, 7]))
    ex.launch(spec(2, [6], ranks=1, trials_per_gpu=2))
    ex.launch(spec(3, [6], ranks=1, trials_per_gpu=2))
    assert launcher.calls == [("trial0-s1", ("n2",), 2, None), ("trial1-s1", ("n1", "n2"), 4, None),
                              ("trial2-s1", ("n2",), 1, 2), ("trial3-s1", ("n2",), 1, 2)]


def test_an_unshared_step_on_a_gpu_another_step_holds_is_refused_at_once():
    ex = SlurmExecutor(launcher=RecordingLauncher(TWO_NODES))
    first = ex.launch(spec(0, [3], ranks=1))
    with pytest.raises(UserError, match="GPU 3 is held by the step of trial 0.*trials_per_gpu"):
        ex.launch(spec(1, [3], ranks=1))
    first.code = 0  # once that step has ended its GPU is free again
    ex.launch(spec(2, [3], ranks=1))


# -- an allocation that differs from the plan ---------------------------------------------------
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from nasalloc.profiler.slurm_env import allocation_from_env  # noqa: E402
from nasalloc.validate.plan import Plan  # noqa: E402
from nasalloc.validate.slurm import fit_plan  # noqa: E402

REFERENCE_PLAN = Path(__file__).resolve().parents[2] / "results" / "reference" / "simulate_default" / "plan.json"


def _plan(tmp_path, budget, gpus_per_node, splits):
    data = json.loads(REFERENCE_PLAN.read_text())
    data.update(budget=budget, gpus_per_node=gpus_per_node)
    for entry in data["algorithms"].values():
        entry["splits"] = [{"gpus_per_trial": float(g)} for g in splits]
        entry["best"], entry["worst"] = {"gpus_per_trial": float(splits[-1])}, {"gpus_per_trial": float(splits[0])}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    return Plan(path)


def test_a_plan_for_larger_nodes_is_re_placed_when_its_trials_still_fit(tmp_path):
    # simulated with the default 4 GPUs per node, run in a job of 2 nodes x 2 GPUs: was refused
    plan = _plan(tmp_path, budget=4, gpus_per_node=4, splits=[1, 2, 4])
    small = Allocation("9", ("n1", "n2"), 2, (8, 8))
    gpus_per_node, note = fit_plan(plan, [1.0, 2.0, 4.0], small)
    assert gpus_per_node == 2 and "re-placed" in note and "nodes of 4" in note
    runs = executor(small, gpus_per_node=2)
    assert runs.fit_plan(plan, [4.0])[0] == 2 and runs.launcher.gpus_per_node == 2
    assert fit_plan(plan, [1.0], Allocation("9", ("n1",), 4, (8,))) == (4, None)  # the plan's own shape


def test_a_plan_that_does_not_fit_says_which_simulate_makes_one_that_does(tmp_path):
    plan = _plan(tmp_path, budget=8, gpus_per_node=4, splits=[1, 2, 4, 8])
    with pytest.raises(UserError) as info:
        fit_plan(plan, [1.0, 8.0], Allocation("9", ("n1",), 4, (8,)))  # 4 GPUs for a budget of 8
    message = str(info.value)
    assert "budget 8 GPUs is more than its 4" in message and "\n" not in message
    assert "nasalloc simulate --budget 4 --gpus-per-node 4 --gpus-per-trial 1,2,4 " in message
    assert "--algorithms hyperband,asha,bohb" in message and "--max-epochs 81" in message
    uneven = _plan(tmp_path, budget=6, gpus_per_node=6, splits=[1, 2, 3, 6])
    with pytest.raises(UserError, match="splits 3 do not place whole trials on nodes of 4.*"
                                        "--budget 6 --gpus-per-node 4 --gpus-per-trial 1,2 "):
        fit_plan(uneven, [1.0, 3.0], Allocation("9", ("n1", "n2"), 4, (8, 8)))


def test_a_job_without_gpus_says_how_to_go_on_and_with_device_cpu_uses_its_cores(monkeypatch):
    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "n1", "SLURM_CPUS_ON_NODE": "6"}
    with pytest.raises(UserError, match="holds no GPUs.*--device cpu.*--executor local.*--launcher local"):
        allocation_from_env(env, ["n1"])
    cores = allocation_from_env(env, ["n1"], device="cpu")
    assert cores.cpu_slots and cores.gpus_per_node == 6 and "CPU cores" in cores.sources["gpus_per_node"]
    launcher = SlurmLauncher(cores)
    assert launcher.cpus_per_task == 1  # one core per slot
    started = []

    class FakePopen:
        def __init__(self, argv, **kw):
            started.append(argv)
            self.pid, self.returncode = 1, 0

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    import nasalloc.profiler.slurm as slurm_module

    monkeypatch.setattr(slurm_module.subprocess, "Popen", FakePopen)
    launcher.start(DDPJob(module="m", ranks=2, device="cpu"))
    launcher.start(DDPJob(module="m", ranks=1, device="cpu", gpu_ids=["3"]))  # a co-located trial
    assert all(not any(a.startswith("--gpus-per-node") for a in argv) for argv in started)  # asks for no GPUs
    assert "--ntasks-per-node=2" in started[0] and "--gpu-index" not in started[1]
