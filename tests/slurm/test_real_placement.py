"""validate inside allocations that differ from the plan, against a real SLURM: a plan for
larger nodes is re-placed when its trials still fit, and a job without GPUs runs on CPU cores
as slots with --device cpu (both were refused before)."""

import json
import subprocess

import pytest

from nasalloc.io import read_jsonl

from .test_real_validate import NASALLOC, RUN_DIR, make_plan  # noqa: F401  (make_plan is a fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _finished(out) -> list:
    events = list(read_jsonl(out / RUN_DIR / "events.jsonl"))
    assert json.loads((out / RUN_DIR / "state.json").read_text())["finished"] is True
    return events


def test_a_plan_for_nodes_of_4_is_re_placed_in_a_job_of_2_gpus(slurm, make_plan, tmp_path):
    plan = make_plan(2, 4, "1")  # simulated with nodes of 4 GPUs; budget 2: 2 trials of 1 GPU at once
    out = tmp_path / "validate"
    done = slurm.salloc([*NASALLOC, "validate", "--plan", str(plan), "--which", "best", "--device", "cpu",
                         "--executor", "slurm", "--out", str(out)], gpus=2, cpus=2, timeout_s=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "re-placed" in done.stderr and "nodes of 4" in done.stderr
    starts = [e for e in _finished(out) if e["kind"] == "start"]
    assert starts and {tuple(e["placement"]) for e in starts} <= {(0,), (1,)}


def test_a_job_without_gpus_uses_its_cores_as_slots_with_device_cpu(slurm, make_plan, tmp_path):
    plan = make_plan(2, 2, "1")
    out = tmp_path / "validate"
    salloc = ["salloc", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--immediate=30",
              "--job-name=nasalloc-test"]  # no GPUs asked for
    command = [*NASALLOC, "validate", "--plan", str(plan), "--which", "best", "--executor", "slurm",
               "--out", str(out)]
    done = subprocess.run([*salloc, *command, "--device", "cpu"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    events = _finished(out)
    assert len([e for e in events if e["kind"] == "start"]) >= 2
    # the profiler's launcher auto picks SLURM there too, and measures on the cores
    profile = tmp_path / "profile.json"
    done = subprocess.run([*salloc, *NASALLOC, "profile", "--gpus", "1,2", "--device", "cpu", "--workload", "digits",
                           "--warmup", "0", "--epochs", "1", "--out", str(profile)],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    measured = json.loads(profile.read_text())
    assert sorted({m["gpus"] for m in measured["measurements"]}) == [1, 2]
    assert "slurm" in done.stdout
