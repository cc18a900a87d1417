"""The local launcher: per-rank environment, one process group, a failing rank ends the job."""

import json
import os
import sys
import textwrap
import time

import pytest

from nasalloc.errors import UserError
from nasalloc.profiler.launch import (LAUNCH_TIME_ENV, Capacity, DDPJob, LocalLauncher, get_launcher,
                                      run_job, tail)

PROBE = """
import json, os, sys, time
out, mode = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES", "NASALLOC_LAUNCH_TIME", "PROBE_EXTRA"]
record = {k: os.environ.get(k) for k in keys}
record.update(pid=os.getpid(), pgid=os.getpgid(0))
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump(record, f)
if mode == "fail" and rank == 1:
    print("probe: rank 1 gives up on purpose", file=sys.stderr)
    sys.exit(3)
if mode in ("fail", "hang"):
    time.sleep(120)  # a sibling blocked in a collective would wait like this
"""


@pytest.fixture()
def probe(tmp_path):
    (tmp_path / "nasalloc_probe.py").write_text(textwrap.dedent(PROBE))
    out = tmp_path / "out"
    out.mkdir()

    def make(ranks, mode, **kw):
        return DDPJob(module="nasalloc_probe", args=[str(out), mode], ranks=ranks,
                      env={"PYTHONPATH": str(tmp_path), "PROBE_EXTRA": "x"}, name="probe", **kw)

    return make, out


def test_each_rank_gets_the_ddp_environment_and_one_process_group(probe):
    make, out = probe
    before = time.time()
    job = run_job(LocalLauncher(), make(3, "ok"), timeout=60)
    assert job.returncode == 0 and job.failure is None
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(3)]
    assert [r["RANK"] for r in records] == ["0", "1", "2"]
    assert [r["LOCAL_RANK"] for r in records] == ["0", "1", "2"]
    assert {r["WORLD_SIZE"] for r in records} == {"3"}
    assert {r["MASTER_ADDR"] for r in records} == {"127.0.0.1"}
    assert len({r["MASTER_PORT"] for r in records}) == 1 and int(records[0]["MASTER_PORT"]) > 0
    assert {r["OMP_NUM_THREADS"] for r in records} == {"1"}
    assert {r["CUDA_VISIBLE_DEVICES"] for r in records} == {""}
    assert {r["PROBE_EXTRA"] for r in records} == {"x"}
    launched = {float(r[LAUNCH_TIME_ENV]) for r in records}
    assert len(launched) == 1 and before <= launched.pop() <= time.time()
    # one group for the whole job, led by rank 0 and apart from the test's own group
    assert {r["pgid"] for r in records} == {records[0]["pid"]}
    assert records[0]["pgid"] != os.getpgid(0)


def test_a_failing_rank_kills_its_siblings_and_is_reported(probe):
    make, _ = probe
    start = time.monotonic()
    job = LocalLauncher().start(make(3, "fail"))
    assert job.wait(60) == 3
    assert time.monotonic() - start < 30  # siblings sleeping 120 s were killed
    assert all(p.poll() is not None for p in job.processes)
    assert job.failed_rank == "rank 1"
    assert "rank 1 exited with status 3" in job.failure
    assert "gives up on purpose" in job.failure
    assert "gives up on purpose" in job.stderr_tail()


def test_timeout_terminates_the_whole_job(probe):
    make, _ = probe
    job = run_job(LocalLauncher(), make(2, "hang"), timeout=3)
    assert job.returncode is not None and job.returncode != 0
    assert "timed out after 3 s" in job.failure
    assert all(p.poll() is not None for p in job.processes)


def test_cuda_ranks_see_the_job_gpus(probe, monkeypatch):
    make, out = probe
    job = run_job(LocalLauncher(), make(2, "ok", device="cuda", gpu_ids=["5", "7"]), timeout=60)
    assert job.returncode == 0
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["CUDA_VISIBLE_DEVICES"] for r in records] == ["5,7", "5,7"]
    assert [r["LOCAL_RANK"] for r in records] == ["0", "1"]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,6")
    assert LocalLauncher().visible_gpu_ids() == ["2", "3", "6"]
    assert LocalLauncher(gpus_per_node=2).capacity("cuda").gpus == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert LocalLauncher().capacity("cuda").max_ranks() == 0


def test_check_rejects_jobs_that_do_not_fit(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    launcher = LocalLauncher()
    with pytest.raises(UserError, match="2 rank\\(s\\) do not fit this machine: it has 1 GPU"):
        launcher.check(DDPJob(module="m", ranks=2, device="cuda"))
    cores = os.cpu_count()
    with pytest.raises(UserError, match="not GPUs"):
        launcher.check(DDPJob(module="m", ranks=cores + 1, device="cpu"))
    launcher.check(DDPJob(module="m", ranks=cores, device="cpu"))


def test_bad_jobs_and_launchers_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="ranks >= 1"):
        DDPJob(module="m", ranks=0)
    with pytest.raises(UserError, match="nodes=3"):
        DDPJob(module="m", ranks=2, nodes=3)
    with pytest.raises(UserError, match="'tpu'"):
        DDPJob(module="m", device="tpu")
    with pytest.raises(UserError, match="'mpi'"):
        get_launcher("mpi")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert isinstance(get_launcher("auto"), LocalLauncher)


def test_capacity_counts_cpu_ranks_per_core():
    cap = Capacity(device="cpu", gpus=0, nodes=2, gpus_per_node=0, cpus=4, where="x")
    assert cap.max_ranks() == 8


def test_tail_keeps_the_last_nonempty_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("a\n\nb\nc\n\n")
    assert tail(log, 2) == "b\nc"
    assert tail(tmp_path / "missing.log") == ""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_cpu_ranks_are_pinned_to_their_core(tmp_path):
    # A CPU "GPU" is one core: rank r of a job placed on cores [c0, c1] runs on that core only.
    allowed = sorted(os.sched_getaffinity(0))
    code = "import os, sys; print(sorted(os.sched_getaffinity(0)))"
    job = DDPJob(module="nasalloc.profiler.worker", ranks=2, device="cpu", cpu_cores=[1, 0],
                 log_dir=tmp_path, name="pin")
    job.command = lambda: [sys.executable, "-c", code]  # a probe instead of the worker
    running = LocalLauncher().start(job)
    assert running.wait(timeout=60) == 0
    seen = [(tmp_path / f"rank{r}.log").read_text().strip() for r in range(2)]
    assert seen == [str([allowed[1 % len(allowed)]]), str([allowed[0]])]


def test_cpu_cores_must_match_the_ranks():
    with pytest.raises(UserError, match="2 rank"):
        DDPJob(module="m", ranks=2, cpu_cores=[0])
