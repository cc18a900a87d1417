"""No job step outlives a runner killed outright inside a living allocation (an interactive
salloc shell, say): srun gets SIGTERM when the runner dies and cancels its step. Before, the
step ran on until the allocation ended."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .test_real_validate import NASALLOC, make_plan  # noqa: F401  (make_plan is a fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_steps_end_when_the_runner_is_sigkilled(slurm, make_plan, tmp_path):
    # epochs of a minute (tests/workloads/slow_digits.py): a rank hears of the lost runner only
    # at its next report, so only the step's cancellation can end it within seconds
    data = json.loads(make_plan(2, 2, "1").read_text())
    data["workload"] = "slow_digits:make"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(data))
    pid_file = tmp_path / "runner.pid"
    slow = Path(__file__).resolve().parents[1] / "workloads"  # slow_digits.py
    runner = f"PYTHONPATH={slow}:$PYTHONPATH " + " ".join(
        [*NASALLOC, "validate", "--plan", str(plan), "--which", "best", "--device", "cpu", "--executor", "slurm",
         "--out", str(tmp_path / "validate")])
    # the allocation outlives the runner: its shell sleeps on after the runner is killed
    shell = f"{runner} > {tmp_path / 'runner.log'} 2>&1 & echo $! > {pid_file}; sleep 60"
    alloc = subprocess.Popen(["salloc", "--nodes=1", "--gpus-per-node=2", "--ntasks-per-node=2", "--cpus-per-task=1",
                              "--immediate=30", "--job-name=nasalloc-test", "bash", "-c", shell],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        steps = slurm.wait_until(lambda: slurm.steps_named("nasalloc-trial"), 120, "a trial step", interval_s=0.2)
        assert steps
        events = tmp_path / "validate" / "asha_g1" / "events.jsonl"
        slurm.wait_until(lambda: events.exists() and '"kind":"epoch"' in events.read_text(), 120,
                         "a first epoch (the slow ones follow)")
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        deadline = time.monotonic() + 15
        while slurm.steps_named("nasalloc-trial") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alloc.poll() is None  # the allocation still runs
        assert slurm.steps_named("nasalloc-trial") == []
    finally:
        alloc.send_signal(signal.SIGINT)
        try:
            alloc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            alloc.kill()
