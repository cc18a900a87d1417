"""Faults on CPU: a trial killed mid-run is recorded as failed and the search goes on; a run
stopped by SIGTERM resumes without re-running finished trials."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from nasalloc.io import read_jsonl

from .conftest import nasalloc, start_nasalloc

pytestmark = pytest.mark.slow


def _events(path: Path) -> list:
    return list(read_jsonl(path)) if path.exists() else []


def _wait_for(predicate, path: Path, proc, timeout_s: float = 240.0) -> dict:
    """The first event of ``path`` matching ``predicate``, waiting for it to be written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in _events(path):
            if predicate(event):
                return event
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"validate exited {proc.returncode} before the event:\n{out[-2000:]}\n{err[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no such event in {path} after {timeout_s} s")


def test_killed_trial_is_recorded_as_failed_and_the_search_finishes(closed_loop_plan, tmp_path):
    out = tmp_path / "validate"
    proc = start_nasalloc("validate", "--plan", closed_loop_plan, "--out", out, "--device", "cpu",
                          "--algorithms", "asha", "--which", "2")
    log = out / "asha_g2" / "events.jsonl"
    started = _wait_for(lambda e: e["kind"] == "start" and e["trial_id"] == 0, log, proc)
    os.kill(started["extra"]["pids"][0], signal.SIGKILL)  # rank 0 of trial 0, while it runs
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]

    events = _events(log)
    failures = [e for e in events if e["kind"] == "fail"]
    assert [e["trial_id"] for e in failures] == [0]
    assert "signal 9" in failures[0]["error"]
    # the search went on: the other trial ran and ended normally, on the freed slot
    assert [e["trial_id"] for e in events if e["kind"] == "start"] == [0, 1]
    assert any(e["kind"] in ("stop", "complete") and e["trial_id"] == 1 for e in events)
    assert next(e for e in events if e["kind"] == "start" and e["trial_id"] == 1)["time_s"] >= failures[0]["time_s"]
    assert json.loads((out / "asha_g2" / "state.json").read_text())["finished"] is True
    report = json.loads((out / "report.json").read_text())
    assert report["splits"][0]["failed"] == 1 and report["splits"][0]["finished"] == 1
    assert "FAILED" in stdout


def test_sigterm_checkpoints_and_resume_does_not_rerun_finished_trials(closed_loop_plan, tmp_path):
    out = tmp_path / "validate"
    args = ["validate", "--plan", closed_loop_plan, "--out", out, "--device", "cpu",
            "--algorithms", "hyperband", "--which", "2"]
    proc = start_nasalloc(*args)
    log = out / "hyperband_g2" / "events.jsonl"
    # one slot: trial 0 has ended when trial 1 starts; interrupt trial 1 as it starts up
    _wait_for(lambda e: e["kind"] == "start" and e["trial_id"] == 1, log, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-2000:]
    assert "--resume" in stderr and "SIGTERM" in stderr
    state = json.loads((out / "hyperband_g2" / "state.json").read_text())
    assert state["finished"] is False
    before = _events(log)
    interrupted = [e for e in before if e["kind"] == "pause" and e.get("extra", {}).get("interrupted")]
    assert [e["trial_id"] for e in interrupted] == [1]
    # trial 0 is done: ended, or (Ray's HyperBand) paused at its bracket's last rung until the
    # rest of the rung reports, after which the scheduler stops it without running it again
    ended_before = {e["trial_id"] for e in before if e["kind"] in ("stop", "complete", "fail")
                    or (e["kind"] == "pause" and not e.get("extra", {}).get("interrupted"))}
    assert ended_before == {0}

    resumed = nasalloc(*args, "--resume")
    events = _events(log)
    after = events[len(before):]
    # finished work is not re-run: no event of trial 0 after the interruption, one start per trial
    assert not [e for e in after if e["trial_id"] in ended_before]
    assert sorted(e["trial_id"] for e in events if e["kind"] == "start") == [0, 1]
    # trial 1 went on from its checkpoint and reported each epoch to the scheduler once
    restart = next(e for e in after if e["kind"] == "resume" and e["trial_id"] == 1)
    checkpoint_epoch = interrupted[0]["extra"]["checkpoint_epoch"]
    assert restart["extra"]["restart"] is True and restart["epoch"] == checkpoint_epoch
    reported = [e["epoch"] for e in events if e["kind"] == "epoch" and e["trial_id"] == 1
                and not e.get("extra", {}).get("replay")]
    assert sorted(reported) == list(range(1, len(reported) + 1))
    assert any(e["kind"] in ("stop", "complete") and e["trial_id"] == 1 for e in after)
    assert all(a["time_s"] >= before[-1]["time_s"] for a in after)  # time goes on, never back
    assert json.loads((out / "hyperband_g2" / "state.json").read_text())["finished"] is True
    assert json.loads((out / "report.json").read_text())["complete"] is True
    assert "speedup" not in resumed.stderr


def test_runner_killed_outright_loses_only_the_trial_in_flight(closed_loop_plan, tmp_path):
    out = tmp_path / "validate"
    args = ["validate", "--plan", closed_loop_plan, "--out", out, "--device", "cpu",
            "--algorithms", "hyperband", "--which", "2"]
    proc = start_nasalloc(*args)
    log = out / "hyperband_g2" / "events.jsonl"
    first_epoch = _wait_for(lambda e: e["kind"] == "epoch" and e["trial_id"] == 1, log, proc)
    trial_pids = next(e for e in _events(log) if e["kind"] == "start" and e["trial_id"] == 1)["extra"]["pids"]
    proc.kill()  # SIGKILL: no handler, no checkpoint, no last state write
    proc.communicate(timeout=60)
    # the orphaned ranks notice the lost runner and exit on their own
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in trial_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in trial_pids)
    before = _events(log)

    nasalloc(*args, "--resume")
    events = _events(log)
    after = events[len(before):]
    lost = next(e for e in after if e["kind"] == "pause" and e["trial_id"] == 1)
    assert lost["extra"]["lost"] is True and lost["epoch"] >= first_epoch["epoch"]
    assert not [e for e in after if e["trial_id"] == 0]  # finished before the kill: not re-run
    assert sorted(e["trial_id"] for e in events if e["kind"] == "start") == [0, 1]
    # trial 1 started over (it had no checkpoint): epochs the scheduler had seen are replayed
    # without being reported again, the rest reported once each
    replayed = [e["epoch"] for e in after if e["kind"] == "epoch" and e.get("extra", {}).get("replay")]
    assert replayed == list(range(1, lost["epoch"] + 1))
    reported = [e["epoch"] for e in events if e["kind"] == "epoch" and e["trial_id"] == 1
                and not e.get("extra", {}).get("replay")]
    assert reported == list(range(1, len(reported) + 1))
    assert json.loads((out / "hyperband_g2" / "state.json").read_text())["finished"] is True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
