"""A real adaptive closed loop on CPU: simulate --policies double:1,2 at a budget of 2, then
validate the best static split and the best adaptive policy; trials start on one rank and go
on on two from their checkpoint."""

from __future__ import annotations

import json
import math

import pytest

from nasalloc.io import read_jsonl

from .conftest import nasalloc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adaptive_run(adaptive_plan, tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptive") / "validate"
    proc = nasalloc("validate", "--plan", adaptive_plan, "--algorithms", "asha",
                    "--which", "best-static,best-adaptive", "--out", out, "--device", "cpu")
    return adaptive_plan, out, proc


def test_adaptive_policy_runs_for_real_and_is_reported(adaptive_run):
    plan_path, out, proc = adaptive_run
    plan = json.loads(plan_path.read_text())
    assert plan["policies"]["algorithms"]["asha"]["best_adaptive"]["policy"] == "double:1,2"
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True
    rows = {r["which"]: r for r in report["splits"]}
    assert set(rows) == {"best", "policy double:1,2"}
    row = rows["policy double:1,2"]
    assert row["status"] == "finished" and row["trials"] == 2 and row["failed"] == 0
    assert row["predicted_makespan_s"] > 0 and row["measured_makespan_s"] > 0
    assert math.isclose(row["makespan_rel_error"],
                        (row["predicted_makespan_s"] - row["measured_makespan_s"]) / row["measured_makespan_s"],
                        rel_tol=1e-9)
    assert "policy double:1,2" in proc.stdout and "number of ranks" in proc.stdout
    # re-simulated under the same policy with the costs measured at each number of ranks, and the
    # error split into time model and scheduling as for a static split
    events = list(read_jsonl(out / "asha_double-1-2" / "events.jsonl"))
    assert row["resizes"] == sum(e["kind"] == "pause" and "resize" in e.get("extra", {}) for e in events) >= 1
    assert row["resimulated_makespan_s"] > 0 and row["resimulated_resizes"] >= 1
    assert math.isclose(row["time_model_error"], (row["predicted_makespan_s"] - row["resimulated_makespan_s"])
                        / row["resimulated_makespan_s"], rel_tol=1e-9)
    assert math.isclose(row["scheduling_error"], (row["resimulated_makespan_s"] - row["measured_makespan_s"])
                        / row["measured_makespan_s"], rel_tol=1e-9)
    assert row["compared_trials"] == 2  # (whether they end alike depends on which trial reports first)
    print("\n" + proc.stdout)


def test_trials_start_on_one_rank_and_continue_on_two_from_the_checkpoint(adaptive_run):
    _, out, _ = adaptive_run
    events = list(read_jsonl(out / "asha_double-1-2" / "events.jsonl"))
    resized = [e for e in events if e["kind"] == "pause" and e.get("extra", {}).get("resize") == 2]
    assert resized, "no trial was resized"
    for pause in resized:
        mine = [e for e in events if e["trial_id"] == pause["trial_id"]]
        epochs = [e for e in mine if e["kind"] == "epoch"]
        before = [e for e in epochs if e["epoch"] <= pause["epoch"]]
        after = [e for e in epochs if e["epoch"] > pause["epoch"]]
        assert before and all(e["gpus"] == 1 for e in before)
        assert after and all(e["gpus"] == 2 for e in after)
        # training went on from the checkpoint: the epochs continue, none is trained twice
        assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
        resume = next(e for e in mine if e["kind"] == "resume" and e["time_s"] >= pause["time_s"])
        assert resume["gpus"] == 2 and len(resume["placement"]) == 2
    # the same trial on one rank throughout (the static 1-GPU run): same seed, same config, the
    # same global batches, so the epoch after the resize reaches about the same metric
    static = {(e["trial_id"], e["epoch"]): e["metric"] for e in read_jsonl(out / "asha_g1" / "events.jsonl")
              if e["kind"] == "epoch"}
    compared = 0
    for pause in resized:
        key = (pause["trial_id"], pause["epoch"] + 1)
        resumed = next(e["metric"] for e in events if e["kind"] == "epoch" and (e["trial_id"], e["epoch"]) == key)
        if key in static:
            assert abs(resumed - static[key]) < 0.03
            compared += 1
    assert compared >= 1
