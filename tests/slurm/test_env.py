"""Environment detection: a table of SLURM variables -> Allocation; SLURM rank -> torchrun rank."""

import pytest

from nasalloc.errors import UserError
from nasalloc.profiler.slurm_env import allocation_from_env, expand_hostlist, parse_per_node_counts
from nasalloc.profiler.slurm_task import narrowed_gpus, placement_line, torchrun_env_from_slurm

# What sbatch --nodes=2 --gpus-per-node=3 --exclusive exports to the batch script (SLURM 22.05).
BATCH = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_NUM_NODES": "2",
         "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_GPUS": "0,1,2,3", "SLURM_GPUS_PER_NODE": "3",
         "SLURM_CPUS_ON_NODE": "64", "SLURM_JOB_CPUS_PER_NODE": "64(x2)"}
HOSTS = ["gpu01", "gpu02"]


def test_batch_script_reads_what_the_job_holds_not_what_it_asked_for():
    alloc = allocation_from_env(BATCH, HOSTS)
    assert (alloc.job_id, alloc.hosts, alloc.nodes) == ("7", ("gpu01", "gpu02"), 2)
    assert alloc.gpus_per_node == 4 and alloc.gpus == 8  # --exclusive handed over all 4
    assert alloc.cpus_per_node == (64, 64)
    assert alloc.sources == {"job_id": "SLURM_JOB_ID", "hosts": "SLURM_JOB_NODELIST",
                             "gpus_per_node": "SLURM_GPUS_ON_NODE", "cpus_per_node": "SLURM_CPUS_ON_NODE"}
    assert alloc.step_id is None


def test_salloc_shell_has_only_the_request_typed_gres_and_compressed_cpus():
    env = {"SLURM_JOBID": "12", "SLURM_NODELIST": "a[1-3]", "SLURM_NNODES": "3",
           "SLURM_GPUS_PER_NODE": "a100:2", "SLURM_JOB_CPUS_PER_NODE": "72(x2),36"}
    alloc = allocation_from_env(env, ["a1", "a2", "a3"])
    assert alloc.gpus_per_node == 2 and alloc.cpus_per_node == (72, 72, 36)
    assert alloc.sources["gpus_per_node"] == "SLURM_GPUS_PER_NODE"
    assert alloc.sources["job_id"] == "SLURM_JOBID"


def test_inside_a_step_the_on_node_variables_describe_the_step_and_are_skipped():
    env = dict(BATCH, SLURM_STEP_ID="3", SLURM_GPUS_ON_NODE="1", SLURM_CPUS_ON_NODE="1")
    alloc = allocation_from_env(env, HOSTS)
    assert alloc.step_id == "3"
    assert alloc.gpus_per_node == 4 and alloc.sources["gpus_per_node"] == "SLURM_JOB_GPUS"
    assert alloc.cpus_per_node == (64, 64) and alloc.sources["cpus_per_node"] == "SLURM_JOB_CPUS_PER_NODE"


def test_a_job_wide_gpu_count_is_split_over_the_nodes_or_refused():
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_GPUS": "8", "SLURM_JOB_CPUS_PER_NODE": "8"}
    assert allocation_from_env(env, ["n1", "n2"]).gpus_per_node == 4
    with pytest.raises(UserError, match="SLURM_GPUS='7'.*2 nodes"):
        allocation_from_env(dict(env, SLURM_GPUS="7"), ["n1", "n2"])


@pytest.mark.parametrize("env, hosts, message", [
    ({}, [], "not inside a SLURM allocation"),
    ({"SLURM_JOB_ID": "1", "SLURM_CPUS_ON_NODE": "4"}, ["n1"], "holds no GPUs.*--gpus-per-node"),
    (dict(BATCH, SLURM_JOB_NUM_NODES="3"), HOSTS, "SLURM_JOB_NUM_NODES=3 but the node list names 2"),
    (dict(BATCH, SLURM_GPUS_ON_NODE="four"), HOSTS, "SLURM_GPUS_ON_NODE='four' is not a SLURM count"),
    (dict(BATCH, SLURM_JOB_ID="9"), [], "job 9 has no node list"),
])
def test_mistakes_are_one_line_user_errors(env, hosts, message):
    with pytest.raises(UserError, match=message):
        allocation_from_env(env, hosts)


def test_per_node_counts():
    assert parse_per_node_counts("4") == [4]
    assert parse_per_node_counts("72(x2),36") == [72, 72, 36]
    with pytest.raises(ValueError):
        parse_per_node_counts("x2")


def test_a_plain_host_name_needs_no_scontrol():
    def never(*args, **kw):
        raise AssertionError("scontrol must not run for a plain name")

    assert expand_hostlist("node7", run=never) == ["node7"]


def test_ranks_come_from_slurm_inside_a_step_and_torchrun_wins():
    step = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
            "SLURM_STEP_TASKS_PER_NODE": "4(x2)"}
    assert torchrun_env_from_slurm(step) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "NODE_RANK": "1",
                                             "GROUP_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    # torchrun inside a step: SLURM_PROCID is 0 for every rank, torchrun's RANK is right
    assert torchrun_env_from_slurm(dict(step, RANK="3", WORLD_SIZE="8")) == {}
    with pytest.raises(RuntimeError, match="SLURM_PROCID"):
        torchrun_env_from_slurm({"SLURM_NTASKS": "2"})


def test_a_shared_step_keeps_the_gpu_its_slot_names():
    assert narrowed_gpus({"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, 2) == "6"
    with pytest.raises(RuntimeError, match="--gpu-index 4"):
        narrowed_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}, 4)


def test_a_task_says_where_it_runs_and_where_it_meets_its_peers():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "NODE_RANK": "1", "SLURMD_NODENAME": "gpu02",
           "MASTER_ADDR": "gpu01", "MASTER_PORT": "29500"}
    line = placement_line(env)
    assert line.startswith("nasalloc slurm_task: rank 1/2 local 0 node 1 on gpu02 (host ")
    assert line.endswith(") rendezvous gpu01:29500")
    assert "on ? (host" in placement_line({k: v for k, v in env.items() if k != "SLURMD_NODENAME"})
    assert placement_line({**env, "SLURM_JOB_ID": "7", "SLURM_STEP_ID": "3"}).endswith(" rendezvous gpu01:29500 step 7.3")
