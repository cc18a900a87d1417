"""srun command lines, step environment, and placement from the simulator's slots (pure)."""

import pytest

from nasalloc.errors import UserError
from nasalloc.profiler.slurm import (SRUN_INPUT_VARIABLES, StepRequest, first_task_failure, hosts_of_devices,
                                     job_hosts, srun_argv, step_environment)
from nasalloc.profiler.slurm_env import Allocation
from nasalloc.simulator.cluster import make_split

ALLOC = Allocation(job_id="42", hosts=("n1", "n2", "n3", "n4"), gpus_per_node=4, cpus_per_node=(32,) * 4)


def test_a_single_node_step():
    step = StepRequest(hosts=("n2",), tasks_per_node=2, cpus_per_task=8, gpus_per_node=2,
                       command=("python", "-m", "nasalloc.profiler.slurm_task", "mod", "--x", 1),
                       name="nasalloc-trial3-s1-7", immediate_s=30, output="/logs/rank%t.log")
    assert srun_argv(step) == [
        "srun", "--exact", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--nodelist=n2",
        "--cpus-per-task=8", "--gpus-per-node=2", "--kill-on-bad-exit=1", "--immediate=30",
        "--job-name=nasalloc-trial3-s1-7", "--output=/logs/rank%t.log",
        "python", "-m", "nasalloc.profiler.slurm_task", "mod", "--x", "1"]


def test_a_multi_node_step_and_a_shared_one():
    step = StepRequest(hosts=("n3", "n4"), tasks_per_node=4, cpus_per_task=8, gpus_per_node=4,
                       command=("true",), name="s")
    argv = srun_argv(step)
    assert argv[:7] == ["srun", "--exact", "--nodes=2", "--ntasks=8", "--ntasks-per-node=4", "--nodelist=n3,n4",
                        "--cpus-per-task=8"]
    assert "--overlap" not in argv and not any(a.startswith("--output") for a in argv)
    shared = srun_argv(StepRequest(hosts=("n1",), tasks_per_node=1, cpus_per_task=1, gpus_per_node=4,
                                   command=("true",), name="s", overlap=True))
    assert "--overlap" in shared and "--gpus-per-node=4" in shared
    cpu_only = srun_argv(StepRequest(hosts=("n1",), tasks_per_node=1, cpus_per_task=1, gpus_per_node=0,
                                     command=("true",), name="s"))
    assert not any(a.startswith("--gpus") for a in cpu_only)


def test_the_step_environment_drops_what_srun_would_read_as_options():
    base = {"PATH": "/bin", "SLURM_JOB_ID": "42", "SLURM_GPUS_PER_NODE": "4", "SLURM_NTASKS": "16",
            "SLURM_CPUS_PER_TASK": "8", "RANK": "9", "HOME": "/root"}
    env = step_environment(base, {"NASALLOC_TOKEN": "t"}, "n3", 29500, "cpu", "trial1-s1", 12.5)
    assert env["SLURM_JOB_ID"] == "42" and env["PATH"] == "/bin"  # the step must still find its job
    assert not set(env) & set(SRUN_INPUT_VARIABLES) and "RANK" not in env
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["NASALLOC_TOKEN"]) == ("n3", "29500", "t")
    assert env["OMP_NUM_THREADS"] == "1" and env["NASALLOC_LAUNCH_TIME"] == "12.5"
    assert "OMP_NUM_THREADS" not in step_environment({}, {}, "n3", 1, "cuda", "x", 0.0)


@pytest.mark.parametrize("g", [1, 2, 4, 8, 16])
def test_every_simulated_slot_maps_to_the_nodes_it_was_simulated_on(g):
    ranks_on = {host: 0 for host in ALLOC.hosts}
    for slot in make_split(16, 4, g).slots:
        hosts, per_node = hosts_of_devices(ALLOC, slot.gpus, 4)
        assert len(hosts) == slot.nodes and per_node * len(hosts) == g  # fits one node, or whole nodes
        assert set(hosts) == {ALLOC.hosts[gpu // 4] for gpu in slot.gpus}
        for host in hosts:
            ranks_on[host] += per_node
    assert ranks_on == {host: 4 for host in ALLOC.hosts}  # every GPU used once, none twice


def test_a_slot_beyond_the_allocation_or_uneven_is_refused():
    with pytest.raises(UserError, match="node 5 of 4 GPUs each; SLURM job 42 has 4 node"):
        hosts_of_devices(ALLOC, [16, 17], 4)
    with pytest.raises(UserError, match="unevenly"):
        hosts_of_devices(ALLOC, [2, 3, 4], 4)


def test_a_lone_job_fits_one_node_or_takes_whole_nodes():
    assert job_hosts(ALLOC, 3, 4) == (("n1",), 3)
    assert job_hosts(ALLOC, 8, 4) == (("n1", "n2"), 4)
    with pytest.raises(UserError, match="a job of 6 ranks spans nodes of 4 GPUs, so it takes whole nodes"):
        job_hosts(ALLOC, 6, 4)
    with pytest.raises(UserError, match="32 ranks do not fit"):
        job_hosts(ALLOC, 32, 4)


def test_srun_s_first_failing_task_is_the_cause():
    log = ("srun: error: n2: task 5: Exited with exit code 3\n"
           "srun: launch/slurm: _step_signal: Terminating StepId=42.3\n"
           "srun: error: n1: tasks 0-3: Terminated\n")
    found = first_task_failure(log)
    assert (found["host"], found["task"], found["exit_code"]) == ("n2", 5, 3)
    killed = first_task_failure("srun: error: n1: tasks 0,2: Killed\n")
    assert (killed["task"], killed["exit_code"], killed["what"]) == (0, None, "Killed")
    assert first_task_failure("srun: Job step aborted\n") is None
