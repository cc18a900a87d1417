"""No trial rank outlives the runner, however the runner dies: SIGKILL gives it no chance to
stop its ranks, so they must end on their own (the kernel's parent-death signal) at once, not
at their next report to the lost runner, which with real epochs comes minutes later."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_faults import _alive, _events, _wait_for

pytestmark = pytest.mark.slow

# digits whose epochs after the first take a minute (tests/workloads/slow_digits.py): the ranks
# are mid-epoch for a minute after their first report, as with a real model
SLOW_DIGITS_DIR = Path(__file__).resolve().parents[1] / "workloads"


def test_ranks_end_within_seconds_of_a_sigkilled_runner(closed_loop_plan, tmp_path):
    plan = json.loads(closed_loop_plan.read_text())
    plan["workload"] = "slow_digits:make"
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    out = tmp_path / "validate"
    env = dict(os.environ, PYTHONPATH=str(SLOW_DIGITS_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "nasalloc", "validate", "--plan", str(plan_path), "--out",
                             str(out), "--device", "cpu", "--algorithms", "hyperband", "--which", "2"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = out / "hyperband_g2" / "events.jsonl"
        _wait_for(lambda e: e["kind"] == "epoch" and e["trial_id"] == 0, log, proc)  # now in epoch 2, slow
        pids = next(e for e in _events(log) if e["kind"] == "start" and e["trial_id"] == 0)["extra"]["pids"]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)  # both ranks of the 2-GPU trial run
        proc.kill()
        proc.communicate(timeout=60)
        time.sleep(5)
        assert [pid for pid in pids if _alive(pid)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in locals().get("pids", []):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
