"""validate --repeats on CPU: each run owns its folder, a resume in the middle of run 2 re-runs
nothing finished, and the report gives intervals."""

from __future__ import annotations

import json
import math
import signal

import pandas as pd
import pytest

from .conftest import nasalloc, start_nasalloc
from .test_faults import _events, _wait_for

pytestmark = pytest.mark.slow


def test_a_resume_in_the_middle_of_run_2_reruns_nothing_finished_and_reports_intervals(closed_loop_plan, tmp_path):
    out = tmp_path / "validate"
    args = ["validate", "--plan", closed_loop_plan, "--out", out, "--device", "cpu",
            "--algorithms", "hyperband", "--which", "2", "--repeats", "2"]
    proc = start_nasalloc(*args)
    first, second = out / "hyperband_g2" / "events.jsonl", out / "hyperband_g2_r2" / "events.jsonl"
    # one slot, two trials: interrupt run 2 as its second trial starts
    _wait_for(lambda e: e["kind"] == "start" and e["trial_id"] == 1, second, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-2000:]
    assert "--repeats 2" in stderr and "--resume" in stderr
    assert json.loads((out / "hyperband_g2" / "state.json").read_text())["finished"] is True
    assert json.loads((out / "hyperband_g2_r2" / "state.json").read_text())["finished"] is False
    run1, run2 = _events(first), _events(second)

    proc = nasalloc(*args, "--resume")
    assert _events(first) == run1  # run 1 was finished: not one record more
    after = _events(second)[len(run2):]
    ended = {e["trial_id"] for e in run2 if e["kind"] in ("stop", "complete")
             or (e["kind"] == "pause" and not e.get("extra", {}).get("interrupted"))}
    assert ended == {0} and not [e for e in after if e["trial_id"] in ended]
    assert sorted(e["trial_id"] for e in _events(second) if e["kind"] == "start") == [0, 1]

    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True and report["repeats"] == 2
    assert [(r["repeat"], r["status"]) for r in report["runs"]] == [(1, "finished"), (2, "finished")]
    split, = report["splits"]
    runs = [r["measured_makespan_s"] for r in report["runs"]]
    assert split["runs_finished"] == 2 and math.isclose(split["measured_mean_s"], sum(runs) / 2)
    half = 12.7062 * abs(runs[0] - runs[1]) / 2  # t(0.975, 1) * s / sqrt(2), s = |a - b| / sqrt(2)
    assert math.isclose(split["measured_high_s"] - split["measured_mean_s"], half, rel_tol=1e-3)
    assert split["predicted_low_s"] <= split["predicted_mean_s"] <= split["predicted_high_s"]
    assert split["predicted_run_low_s"] <= split["predicted_run_high_s"]
    assert split["mean_inside"] == (split["predicted_low_s"] <= split["measured_mean_s"] <= split["predicted_high_s"])
    assert "predicted mean [95%]" in proc.stdout and "round(s)" in proc.stdout
    csv = pd.read_csv(out / "comparison.csv")
    assert list(csv["repeats"]) == [2] and (out / "comparison.png").stat().st_size > 0
