"""The SLURM launcher against a real SLURM: DDP jobs as job steps inside an allocation."""

import json
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.slurm]

PROBE = """
import json, os, sys, time
out, mode = sys.argv[1], sys.argv[2]
rank = int(os.environ["RANK"])
keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "SLURM_STEP_ID", "SLURM_JOB_ID", "PROBE_EXTRA"]
with open(os.path.join(out, f"{mode}-rank{rank}.json"), "w") as f:
    json.dump({k: os.environ.get(k) for k in keys}, f)
if mode == "fail" and rank == 1:
    print("probe: rank 1 gives up on purpose", file=sys.stderr)
    sys.exit(3)
if mode in ("fail", "hang"):
    time.sleep(120)  # a sibling blocked in a collective would wait like this
if mode.startswith("meet"):  # two jobs that finish only if they run at the same time
    open(os.path.join(out, mode + ".here"), "w").close()
    other = os.path.join(out, ("meet1" if mode == "meet0" else "meet0") + ".here")
    deadline = time.time() + 20
    while not os.path.exists(other):
        if time.time() > deadline:
            sys.exit(4)
        time.sleep(0.05)
"""

# Runs inside the allocation: three jobs through the launcher `auto` picks there.
DRIVER = """
import json, sys, time
from pathlib import Path
from nasalloc.profiler.launch import DDPJob, get_launcher, run_job
from nasalloc.profiler.slurm import cancel_step
root = Path(sys.argv[1])
launcher = get_launcher("auto")
report = {"launcher": launcher.name, "allocation": launcher.allocation.describe()}
for mode, ranks in (("ok", 2), ("fail", 2)):
    job = DDPJob(module="nasalloc_probe", args=[str(root), mode], ranks=ranks, name=mode, log_dir=root / mode,
                 env={"PYTHONPATH": str(root), "PROBE_EXTRA": "x"})
    began = time.monotonic()
    done = run_job(launcher, job, timeout=60)
    report[mode] = {"returncode": done.returncode, "failure": done.failure, "tail": done.stderr_tail(5),
                    "seconds": time.monotonic() - began}
# two jobs at once in a job that asked for memory: srun must not take SLURM_MEM_PER_NODE as the
# step's --mem (each step would claim all of it and the second would wait for the first)
meet = [launcher.start(DDPJob(module="nasalloc_probe", args=[str(root), f"meet{i}"], ranks=1, name=f"meet{i}",
                              env={"PYTHONPATH": str(root)}, log_dir=root / f"meet{i}")) for i in range(2)]
report["meet"] = [job.wait(60) for job in meet]
# two single-rank jobs that name the same GPU (the profiler's co-located trials) share it
pair = [launcher.start(DDPJob(module="nasalloc_probe", args=[str(root), f"share{i}"], ranks=1, gpu_ids=["1"],
                              name=f"share{i}", env={"PYTHONPATH": str(root)}, log_dir=root / f"share{i}"))
        for i in range(2)]
report["shared"] = [job.wait(60) for job in pair]
hang = launcher.start(DDPJob(module="nasalloc_probe", args=[str(root), "hang"], ranks=1, name="hang",
                             env={"PYTHONPATH": str(root)}, log_dir=root / "hang"))
time.sleep(1.5)
hang.terminate("stopped by the test")
report["hang"] = {"returncode": hang.returncode, "failure": hang.failure,
                  "left_over": cancel_step(launcher.allocation.job_id, hang.step_name)}
print(json.dumps(report))
"""


def test_jobs_run_as_steps_with_slurm_ranks_gpus_and_failures(slurm, tmp_path):
    (tmp_path / "nasalloc_probe.py").write_text(textwrap.dedent(PROBE))
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    done = slurm.salloc([sys.executable, str(tmp_path / "driver.py"), str(tmp_path)], gpus=2, cpus=2,
                        timeout_s=150, mem_mb=2000)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["launcher"] == "slurm"
    alloc = report["allocation"]
    assert alloc["gpus_per_node"] == 2 and alloc["nodes"] == 1 and alloc["cpus_per_node"] == [2]

    ranks = [json.loads((tmp_path / f"ok-rank{r}.json").read_text()) for r in range(2)]
    assert [r["RANK"] for r in ranks] == ["0", "1"] and [r["LOCAL_RANK"] for r in ranks] == ["0", "1"]
    assert {r["WORLD_SIZE"] for r in ranks} == {"2"} and {r["LOCAL_WORLD_SIZE"] for r in ranks} == {"2"}
    assert {r["SLURM_JOB_ID"] for r in ranks} == {alloc["job_id"]}
    assert len({r["SLURM_STEP_ID"] for r in ranks}) == 1  # one step, both ranks
    assert {r["MASTER_ADDR"] for r in ranks} == {alloc["hosts"][0]}
    assert {r["OMP_NUM_THREADS"] for r in ranks} == {"1"} and {r["PROBE_EXTRA"] for r in ranks} == {"x"}
    # SLURM's (fake) GPU assignment: the step's two GPUs, visible to both ranks
    gpus = {r["CUDA_VISIBLE_DEVICES"] for r in ranks}
    assert len(gpus) == 1 and len(gpus.pop().split(",")) == 2
    assert report["ok"] == {**report["ok"], "returncode": 0, "failure": None}

    failed = report["fail"]
    assert failed["returncode"] == 3  # the failing rank's status, not its killed sibling's
    assert failed["failure"].startswith("fail: rank 1 on ") and "exited with status 3" in failed["failure"]
    assert "gives up on purpose" in failed["failure"] and "gives up on purpose" in failed["tail"]
    assert failed["seconds"] < 30  # --kill-on-bad-exit: the sleeping sibling did not hold the job

    assert report["meet"] == [0, 0]  # both steps ran at once
    assert report["shared"] == [0, 0]
    shared = [json.loads((tmp_path / f"share{i}-rank0.json").read_text()) for i in range(2)]
    assert [r["CUDA_VISIBLE_DEVICES"] for r in shared] == ["1", "1"]  # the named GPU, for both
    assert shared[0]["SLURM_STEP_ID"] != shared[1]["SLURM_STEP_ID"]

    hang = report["hang"]
    assert hang["returncode"] != 0 and hang["failure"] == "hang: stopped by the test"
    assert hang["left_over"] is False  # no step outlived its srun
