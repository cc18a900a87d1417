"""An adaptive validation (double:1,2 on digits, budget 2) stopped by SIGTERM and resumed, and one
repeated: the resume loses nothing finished and reports nothing twice; --repeats gives the
adaptive policy the interval report of a static split."""

from __future__ import annotations

import json
import math
import signal

import pytest

from .conftest import nasalloc, start_nasalloc
from .test_faults import _events, _wait_for

pytestmark = pytest.mark.slow
RUN_DIR = "asha_double-1-2"
ENDS = ("stop", "complete", "fail")


def test_an_interrupted_adaptive_run_resumes_losing_nothing_finished(adaptive_plan, tmp_path):
    out = tmp_path / "validate"
    args = ["validate", "--plan", adaptive_plan, "--out", out, "--device", "cpu", "--algorithms", "asha",
            "--which", "best-adaptive"]
    path = out / RUN_DIR / "events.jsonl"
    proc = start_nasalloc(*args)
    # stop as a resized trial starts on its two ranks: it pauses (checkpoints) at its next epoch
    _wait_for(lambda e: e["kind"] == "resume" and e["gpus"] == 2, path, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-2000:]
    assert "--which best-adaptive" in stderr and "--resume" in stderr
    assert json.loads((out / RUN_DIR / "state.json").read_text())["finished"] is False
    before = _events(path)
    interrupted = {e["trial_id"] for e in before if e["kind"] == "pause" and e.get("extra", {}).get("interrupted")}
    ended = {e["trial_id"] for e in before if e["kind"] in ENDS}
    assert interrupted, "the signal paused no trial"
    reported = {(e["trial_id"], e["epoch"]) for e in before if e["kind"] == "epoch"}

    proc = nasalloc(*args, "--resume")
    state = json.loads((out / RUN_DIR / "state.json").read_text())
    assert state["finished"] is True
    after = _events(path)[len(before):]
    assert not [e for e in after if e["trial_id"] in ended], "a finished trial ran again"
    for trial in interrupted:
        resumed = [e for e in after if e["trial_id"] == trial and e["kind"] == "resume"]
        # from its checkpoint, on the two ranks the policy gives it past its first rung
        assert resumed and resumed[0]["epoch"] >= 1 and resumed[0]["gpus"] == 2 and len(resumed[0]["placement"]) == 2
    heard_twice = [e for e in after if e["kind"] == "epoch" and (e["trial_id"], e["epoch"]) in reported
                   and not e.get("extra", {}).get("replay")]
    assert not heard_twice
    events = before + after
    for trial in {e["trial_id"] for e in events}:
        kinds = [e["kind"] for e in events if e["trial_id"] == trial]
        assert kinds[0] == "start" and kinds[-1] in ENDS and sum(k in ENDS for k in kinds) == 1, (trial, kinds)
        epochs = [e["epoch"] for e in events if e["trial_id"] == trial and e["kind"] == "epoch"
                  and not e.get("extra", {}).get("replay")]
        assert epochs == list(range(1, len(epochs) + 1))  # every epoch reported once, in order
    report = json.loads((out / "report.json").read_text())
    row, = report["splits"]
    assert report["complete"] is True and row["status"] == "finished" and row["failed"] == 0
    assert row["trials"] == 2 and row["resimulated_makespan_s"] > 0
    print("\n" + proc.stdout)


def test_repeats_of_an_adaptive_policy_report_intervals_as_a_static_split(adaptive_plan, tmp_path):
    out = tmp_path / "validate"
    proc = nasalloc("validate", "--plan", adaptive_plan, "--out", out, "--device", "cpu", "--algorithms", "asha",
                    "--which", "best-static,best-adaptive", "--repeats", "2")
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True and report["repeats"] == 2
    # the best static split is g=1, the policy's smallest count too: still two splits, not one
    static, adaptive = report["splits"]
    assert static["gpus_per_trial"] == adaptive["gpus_per_trial"] == 1.0
    assert "policy" not in static and adaptive["policy"] == "double:1,2"
    assert set(static) | {"policy"} == set(adaptive)
    runs = [r for r in report["runs"] if r.get("policy") == "double:1,2"]
    assert [(r["repeat"], r["status"]) for r in runs] == [(1, "finished"), (2, "finished")]
    assert (out / RUN_DIR / "events.jsonl").exists() and (out / f"{RUN_DIR}_r2" / "events.jsonl").exists()
    for split in (static, adaptive):
        assert split["runs_finished"] == 2
        assert split["predicted_low_s"] <= split["predicted_mean_s"] <= split["predicted_high_s"]
        assert split["predicted_run_low_s"] <= split["predicted_run_high_s"]
        assert split["measured_low_s"] <= split["measured_mean_s"] <= split["measured_high_s"]
        assert split["mean_inside"] == (split["predicted_low_s"] <= split["measured_mean_s"]
                                        <= split["predicted_high_s"])
        assert math.isfinite(split["resimulated_mean_s"]) and math.isfinite(split["scheduling_error"])
    mean = sum(r["measured_makespan_s"] for r in runs) / 2
    assert math.isclose(adaptive["measured_mean_s"], mean)
    order = report["algorithms"]["asha"]["predicted_order"]
    assert sorted(order, key=str) == sorted([1.0, "double:1,2"], key=str)
    assert "policy double:1,2" in proc.stdout and "predicted mean [95%]" in proc.stdout
    print("\n" + proc.stdout)
