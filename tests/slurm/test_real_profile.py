"""`nasalloc profile --launcher slurm` inside a real allocation: every GPU count is a job step."""

import json
import sys

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_profile_runs_its_jobs_as_steps_and_writes_a_profile(slurm, tmp_path):
    out = tmp_path / "profile.json"
    done = slurm.salloc([sys.executable, "-m", "nasalloc", "profile", "--launcher", "slurm", "--gpus", "1,2",
                         "--device", "cpu", "--workload", "digits", "--warmup", "0", "--epochs", "2",
                         "--timeout", "120", "--out", str(out)], gpus=2, cpus=2, timeout_s=240, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    profile = json.loads(out.read_text())
    assert profile["schema"] == "nasalloc.profile/1"
    assert profile["hardware"]["launcher"] == "slurm"
    measured = {m["gpus"]: m for m in profile["measurements"] if m["kind"] == "ddp"}
    assert sorted(measured) == [1, 2]
    for g, m in measured.items():
        assert m["nodes"] == 1 and len(m["epoch_seconds"]) == 2 and all(t > 0 for t in m["epoch_seconds"])
        assert m["ranks"] == g  # the step ran g ranks that found each other (WORLD_SIZE from SLURM)
    assert profile["model"] and profile["fit"]["points"]
