"""`nasalloc validate --executor slurm` against a real SLURM: trials as job steps, a killed step
recorded and survived, an allocation's SIGTERM followed by --resume in a new allocation, and a
fractional split whose trials share one GPU."""

import json
import subprocess
import sys
import threading

import pytest

from nasalloc.io import read_jsonl

from .conftest import small_plans

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
NASALLOC = [sys.executable, "-m", "nasalloc"]
RUN_DIR = "asha_g1"  # the plan's only split: 2 trials of 1 GPU at once
ENDS = ("complete", "stop", "fail")


@pytest.fixture(scope="module")
def make_plan(tmp_path_factory, slurm):
    """Small ASHA plans of one split (see :func:`.conftest.small_plans`)."""
    return small_plans(tmp_path_factory)


@pytest.fixture(scope="module")
def plan(make_plan):
    """Budget 2 on a node of 2 GPUs, split into 2 trials of 1 GPU at once."""
    return make_plan(2, 2, "1")


def kinds_by_trial(events):
    trials = {}
    for e in events:
        trials.setdefault(e["trial_id"], []).append(e["kind"])
    return trials


def test_trials_run_as_steps_and_a_killed_step_is_recorded_and_survived(slurm, plan, tmp_path):
    out = tmp_path / "validate"
    killed = {}

    def kill_first_trial_step():  # a step dies under the runner (a node fault, an admin's scancel)
        def find():
            return next((s for s in (slurm.steps_named("nasalloc-trial")) if s), None)
        try:
            step_id, name = slurm.wait_until(find, 120, "a trial step", interval_s=0.2)
        except AssertionError:
            return
        slurm.cancel(step_id)
        killed.update(step=step_id, name=name)

    killer = threading.Thread(target=kill_first_trial_step, daemon=True)
    killer.start()
    done = slurm.salloc([*NASALLOC, "validate", "--plan", str(plan), "--which", "best", "--device", "cpu",
                         "--executor", "slurm", "--out", str(out)], gpus=2, cpus=2, timeout_s=240)
    killer.join(5)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert killed, "no trial step was seen to kill"
    trial = int(killed["name"].split("-")[1].removeprefix("trial"))

    events = list(read_jsonl(out / RUN_DIR / "events.jsonl"))
    fails = [e for e in events if e["kind"] == "fail"]
    assert [e["trial_id"] for e in fails] == [trial]
    error = fails[0]["error"]
    assert f"trial{trial}-s1: rank 0 on " in error and "srun exit status" in error, error
    # the slot came back and the search went on: every trial ended, more started after the failure
    after = events[events.index(fails[0]) + 1:]
    assert any(e["kind"] in ("start", "resume") for e in after)
    for tid, kinds in kinds_by_trial(events).items():
        assert kinds[0] == "start" and kinds[-1] in ENDS, (tid, kinds)
    assert {tuple(e["placement"]) for e in events if e["kind"] == "start"} <= {(0,), (1,)}
    state = json.loads((out / RUN_DIR / "state.json").read_text())
    assert state["finished"] is True
    assert json.loads((out / "report.json").read_text())["splits"][0]["failed"] == 1


def test_sigterm_checkpoints_and_resume_in_a_new_allocation_loses_nothing(slurm, plan, tmp_path):
    out = tmp_path / "validate"
    script = tmp_path / "validate.sbatch"
    done = subprocess.run([*NASALLOC, "sbatch", "--plan", str(plan), "--out", str(out), "--which", "best",
                           "--device", "cpu", "--grace", "30", "--time", "10", "--signal-lead", "60",
                           "--job-name", "nasalloc-test", "--script", str(script)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert "#SBATCH --signal=B:TERM@60" in text and "--executor slurm $resume" in text
    # this machine has 2 CPUs: the job asks for the budget's 2 GPUs and one CPU per rank
    assert "#SBATCH --gpus-per-node=2" in text and "#SBATCH --cpus-per-task=1" in text

    events_path = out / RUN_DIR / "events.jsonl"
    first = slurm.sbatch(script, cwd=tmp_path)

    def trials_launched():
        # signal while the first trials start up (seconds of imports), before any epoch: each then
        # pauses at its first epoch unless the scheduler ends it there
        if events_path.exists() and any(e["kind"] == "start" for e in read_jsonl(events_path)):
            return True
        assert slurm.state(first), f"job {first} ended early: " + (out / f"slurm-{first}.out").read_text()[-2000:]

    slurm.wait_until(trials_launched, 120, "the first trial", interval_s=0.1)
    slurm.cancel(first, "--signal=TERM", "--batch")  # what --signal=B:TERM does before the time limit
    slurm.wait_gone(first, 90)
    log = (out / f"slurm-{first}.out").read_text()
    assert "interrupted (SIGTERM)" in log, log[-2000:]
    state = json.loads((out / RUN_DIR / "state.json").read_text())
    assert state["finished"] is False and "SIGTERM" in state["ended"]
    before = list(read_jsonl(events_path))
    interrupted = {e["trial_id"] for e in before if e["kind"] == "pause" and e.get("extra", {}).get("interrupted")}
    ended = {e["trial_id"] for e in before if e["kind"] in ENDS}
    assert interrupted, "no running trial was paused by the signal"
    epochs_before = {(e["trial_id"], e["epoch"]) for e in before if e["kind"] == "epoch"}

    second = slurm.sbatch(script, cwd=tmp_path)  # the same file: it resumes
    slurm.wait_gone(second, 180)
    state = json.loads((out / RUN_DIR / "state.json").read_text())
    assert state["finished"] is True, (out / f"slurm-{second}.out").read_text()[-2000:]
    after = list(read_jsonl(events_path))[len(before):]
    relaunched = {e["trial_id"] for e in after if e["kind"] in ("start", "resume")}
    assert not relaunched & ended, "a finished trial ran again"
    assert interrupted <= relaunched  # the paused trials went on in the new allocation ...
    for e in after:
        if e["kind"] == "resume" and e["trial_id"] in interrupted:
            assert e["epoch"] >= 1  # ... from their checkpoint, not from scratch
    reported_twice = [e for e in after if e["kind"] == "epoch" and (e["trial_id"], e["epoch"]) in epochs_before
                      and not e.get("extra", {}).get("replay")]
    assert not reported_twice
    for tid, kinds in kinds_by_trial(before + after).items():
        assert kinds[-1] in ENDS, (tid, kinds)


def test_a_fractional_split_runs_its_trials_on_one_shared_gpu(slurm, make_plan, tmp_path):
    # SLURM never gives one GPU to two steps: the co-located trials' steps share it (--overlap)
    plan = make_plan(1, 1, "0.5")
    out = tmp_path / "validate"
    done = slurm.salloc([*NASALLOC, "validate", "--plan", str(plan), "--which", "best", "--device", "cpu",
                         "--executor", "slurm", "--out", str(out)], gpus=1, cpus=2, timeout_s=200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    events = list(read_jsonl(out / "asha_g0.5" / "events.jsonl"))
    assert not [e for e in events if e["kind"] == "fail"]
    starts = [e for e in events if e["kind"] == "start"]
    assert len(starts) == 4 and {tuple(e["placement"]) for e in starts} == {(0,)}
    # the first two trials ran at the same time on that one GPU
    first_end = min(e["time_s"] for e in events if e["kind"] in ENDS)
    assert sum(e["time_s"] < first_end for e in starts) == 2


def test_a_rank_killed_mid_epoch_under_checkpoint_every_resumes_its_step_from_the_checkpoint(slurm, make_plan,
                                                                                              tmp_path):
    """--checkpoint-every 1 --max-restarts 1 with trials of 2 ranks as srun steps: once trial 0
    has saved an epoch, its rank 1 is SIGKILLed in the middle of the next one. srun ends the
    step (--kill-on-bad-exit); the runner relaunches it from the checkpoint, unheard by the
    scheduler, and the search finishes with no failed trial."""
    import os
    import signal
    import time

    from .test_real_multinode import rank_pid

    plan = make_plan(2, 2, "2", "--max-epochs", "9", "--trials", "2")
    out = tmp_path / "validate"
    log = out / "asha_g2" / "events.jsonl"
    killed = {}

    def kill_rank_1_mid_epoch():
        deadline = time.monotonic() + 120
        pid = None
        while time.monotonic() < deadline and not killed:
            pid = pid or rank_pid(0, "localhost", SLURM_PROCID="1")
            events = list(read_jsonl(log)) if log.exists() else []
            if pid and any(e["kind"] == "epoch" and e["trial_id"] == 0 and e["epoch"] >= 2 for e in events):
                # epoch 2 reported, so epoch 1 (at least) is saved (--checkpoint-every 1): kill while it trains on
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, epochs=max(e["epoch"] for e in events if e["kind"] == "epoch"
                                                  and e["trial_id"] == 0))
            time.sleep(0.02)

    killer = threading.Thread(target=kill_rank_1_mid_epoch, daemon=True)
    killer.start()
    done = slurm.salloc([*NASALLOC, "validate", "--plan", str(plan), "--which", "best", "--device", "cpu",
                           "--executor", "slurm", "--out", str(out), "--checkpoint-every", "1", "--max-restarts", "1"],
                          gpus=2, cpus=2, timeout_s=240)
    killer.join(5)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert killed, "trial 0's rank 1 was not seen to kill"
    events = list(read_jsonl(log))
    assert not [e for e in events if e["kind"] == "fail"], "the lost step failed its trial"
    lost = [e for e in events if e["kind"] == "pause" and e.get("extra", {}).get("lost")]
    assert [e["trial_id"] for e in lost] == [0]
    assert "trial0-s1: rank 1 on localhost" in lost[0]["error"], lost[0]["error"]
    restart = next(e for e in events if e["kind"] == "resume" and e["trial_id"] == 0
                   and e.get("extra", {}).get("restart"))
    checkpoint = restart["extra"]["checkpoint_epoch"]
    assert restart["epoch"] == checkpoint >= 1  # from its last periodic checkpoint, not from scratch
    # the last one saved before the kill: the epoch seen reported, the one before (its save was
    # under way) or the next (reported and saved while the signal was on its way)
    assert killed["epochs"] - 1 <= checkpoint <= killed["epochs"] + 1
    trial0 = [e for e in events if e["trial_id"] == 0]
    first_after = next(e for e in trial0 if e["kind"] == "epoch" and e["time_s"] > restart["time_s"])
    # trained on from the checkpoint the ranks loaded: the runner's last known one, or the next
    # when the rank was killed between writing it and reporting it ("saved")
    loaded = first_after["extra"]["loaded_epoch"]
    reported_before = max(e["epoch"] for e in trial0 if e["kind"] == "epoch" and e["time_s"] < restart["time_s"])
    assert checkpoint <= loaded <= min(checkpoint + 1, reported_before)
    assert first_after["epoch"] == loaded + 1
    heard = [(e["trial_id"], e["epoch"]) for e in events if e["kind"] == "epoch" and not e.get("extra", {}).get("replay")]
    assert len(heard) == len(set(heard))
    assert trial0[-1]["kind"] in ENDS
    assert json.loads((out / "asha_g2" / "state.json").read_text())["finished"] is True
