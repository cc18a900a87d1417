"""--checkpoint-every and --max-restarts on CPU: a trial's step killed mid-epoch restarts from
its last periodic checkpoint, the scheduler hears nothing of it (no epoch reported twice, no
failure), and the search finishes. The rule is the simulator's (allocation.after_lost_segment)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from .conftest import start_nasalloc
from .test_faults import _events, _wait_for

pytestmark = pytest.mark.slow


def _validate_while(args: list, act) -> tuple:
    """Run ``nasalloc validate ARGS`` and ``act(proc)`` beside it; (exit status, stderr)."""
    proc = start_nasalloc("validate", *args)
    try:
        act(proc)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, stderr


def test_a_step_killed_mid_epoch_resumes_from_its_last_checkpoint(closed_loop_plan, tmp_path):
    out = tmp_path / "validate"
    log = out / "asha_g2" / "events.jsonl"

    def kill_trial_0_mid_epoch(proc):
        started = _wait_for(lambda e: e["kind"] == "start" and e["trial_id"] == 0, log, proc)
        # after its second epoch the trial has saved (at least) epoch 1; kill it while it trains on
        _wait_for(lambda e: e["kind"] == "epoch" and e["trial_id"] == 0 and e["epoch"] >= 2, log, proc)
        os.kill(started["extra"]["pids"][0], signal.SIGKILL)

    status, stderr = _validate_while(["--plan", closed_loop_plan, "--out", out, "--device", "cpu", "--algorithms",
                                      "asha", "--which", "2", "--checkpoint-every", "1", "--max-restarts", "1"],
                                     kill_trial_0_mid_epoch)
    assert status == 0, stderr[-2000:]
    events = _events(log)
    assert not [e for e in events if e["kind"] == "fail"], "the lost step failed its trial"
    lost = [e for e in events if e["kind"] == "pause" and e.get("extra", {}).get("lost")]
    assert [e["trial_id"] for e in lost] == [0] and "signal 9" in lost[0]["error"]
    restart = next(e for e in events if e["kind"] == "resume" and e["trial_id"] == 0
                   and e.get("extra", {}).get("restart"))
    assert restart["epoch"] == restart["extra"]["checkpoint_epoch"] >= 1  # from the checkpoint, not epoch 0
    heard = [(e["trial_id"], e["epoch"]) for e in events if e["kind"] == "epoch" and not e.get("extra", {}).get("replay")]
    assert len(heard) == len(set(heard))
    trial0 = [e for e in events if e["trial_id"] == 0]
    assert trial0[-1]["kind"] in ("stop", "complete")
    first_after = next(e for e in trial0 if e["kind"] == "epoch" and e["time_s"] > restart["time_s"])
    # trained on from the checkpoint the ranks loaded: the runner's last known one, or the next
    # when the rank was killed between writing it and reporting it ("saved")
    loaded = first_after["extra"]["loaded_epoch"]
    reported_before = max(e["epoch"] for e in trial0 if e["kind"] == "epoch" and e["time_s"] < restart["time_s"])
    assert restart["epoch"] <= loaded <= min(restart["epoch"] + 1, reported_before)
    assert first_after["epoch"] == loaded + 1
    assert json.loads((out / "asha_g2" / "state.json").read_text())["finished"] is True


def test_max_restarts_counts_the_steps_lost_across_resume(closed_loop_plan, tmp_path):
    """--max-restarts 1: a trial's first lost step restarts it; the run is stopped (SIGTERM) and
    resumed; its second lost step, in the resumed run, fails it. The count is in state.json."""
    out = tmp_path / "validate"
    args = ["--plan", closed_loop_plan, "--out", out, "--device", "cpu", "--algorithms", "asha",
            "--which", "2", "--max-restarts", "1"]
    log = out / "asha_g2" / "events.jsonl"
    restarted = lambda e: e["kind"] == "resume" and e["trial_id"] == 0 and e.get("extra", {}).get("restart")  # noqa: E731

    def lose_a_step_then_stop(proc):
        started = _wait_for(lambda e: e["kind"] == "start" and e["trial_id"] == 0, log, proc)
        os.kill(started["extra"]["pids"][0], signal.SIGKILL)  # lost step 1: restarted
        _wait_for(restarted, log, proc)
        proc.send_signal(signal.SIGTERM)

    def lose_the_resumed_step(proc):
        # segment 1 was lost, segment 2 paused at the SIGTERM: segment 3 is the resumed run's
        again = _wait_for(lambda e: restarted(e) and e["extra"]["segment"] == 3, log, proc)
        os.kill(again["extra"]["pids"][0], signal.SIGKILL)  # lost step 2, in another invocation: fails

    status, stderr = _validate_while(args, lose_a_step_then_stop)
    assert status == 143, stderr[-2000:]
    first_run = len(_events(log))
    state = json.loads((out / "asha_g2" / "state.json").read_text())
    assert next(t for t in state["trials"] if t["trial_id"] == 0)["lost"] == 1
    status, stderr = _validate_while([*args, "--resume"], lose_the_resumed_step)
    assert status == 0, stderr[-2000:]
    events = _events(log)
    lost = [e for e in events if e["kind"] == "pause" and e.get("extra", {}).get("lost") and e["trial_id"] == 0]
    fails = [e for e in events if e["kind"] == "fail"]
    assert len(lost) == 1 and [e["trial_id"] for e in fails] == [0] and "signal 9" in fails[0]["error"]
    assert events.index(fails[0]) >= first_run
    state = json.loads((out / "asha_g2" / "state.json").read_text())
    assert next(t for t in state["trials"] if t["trial_id"] == 0)["lost"] == 2 and state["finished"] is True
