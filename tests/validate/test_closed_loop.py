"""The whole loop on CPU: profile -> simulate -> validate best and worst, then the report."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from nasalloc.io import read_jsonl
from nasalloc.simulator.curvetable import load_curve_table
from nasalloc.validate.plan import Plan

from .conftest import nasalloc

pytestmark = pytest.mark.slow


def _trial_ends(events: list) -> dict:
    ends: dict = {}
    for e in events:
        if e["kind"] in ("stop", "complete", "fail"):
            ends.setdefault(e["trial_id"], []).append(e["kind"])
    return ends


def test_validate_runs_best_and_worst_and_reports_predicted_against_measured(closed_loop_plan, tmp_path):
    out = tmp_path / "validate"
    proc = nasalloc("validate", "--plan", closed_loop_plan, "--out", out, "--device", "cpu")
    plan = json.loads(closed_loop_plan.read_text())
    report = json.loads((out / "report.json").read_text())
    curve_table = Plan(closed_loop_plan).table()

    assert report["complete"] is True
    rows = report["splits"]
    # one command, one allocation: each split's allocation time begins where the one before ended
    allocations = sorted((json.loads((out / f"{r['algorithm']}_g{r['gpus_per_trial']:g}" / "state.json").read_text())
                          ["allocations"][0] for r in rows), key=lambda a: a["began_unix"])
    assert allocations[0]["began_unix"] < allocations[0]["ready_unix"]
    for before, after in zip(allocations, allocations[1:]):
        assert after["began_unix"] == before["ended_unix"]
    assert sorted((r["algorithm"], r["which"]) for r in rows) == sorted(
        (a, w) for a in ("hyperband", "asha") for w in ("best", "worst"))
    for row in rows:
        entry = plan["algorithms"][row["algorithm"]]
        assert row["gpus_per_trial"] == entry[row["which"]]["gpus_per_trial"]
        assert row["status"] == "finished"
        assert row["trials"] == 2 and row["finished"] == 2 and row["failed"] == 0
        for column in ("predicted_makespan_s", "measured_makespan_s", "resimulated_makespan_s"):
            assert row[column] > 0
        measured, predicted, resim = (row["measured_makespan_s"], row["predicted_makespan_s"],
                                      row["resimulated_makespan_s"])
        assert math.isclose(row["makespan_rel_error"], (predicted - measured) / measured, rel_tol=1e-9)
        assert math.isclose(row["time_model_error"], (predicted - resim) / resim, rel_tol=1e-9)
        assert math.isclose(row["scheduling_error"], (resim - measured) / measured, rel_tol=1e-9)
        assert 0.0 < row["measured_best_metric"] <= 1.0

        run_dir = out / f"{row['algorithm']}_g{row['gpus_per_trial']:g}"
        events = list(read_jsonl(run_dir / "events.jsonl"))
        # every started trial ends once: stopped or completed, or its last record is the pause
        # at a rung where the scheduler left it (as in the simulator's records)
        started = [e["trial_id"] for e in events if e["kind"] == "start"]
        assert sorted(started) == [0, 1]
        ends = _trial_ends(events)
        assert all(len(kinds) == 1 for kinds in ends.values()) and "fail" not in str(ends)
        for trial in started:
            last = [e for e in events if e["trial_id"] == trial][-1]
            assert last["kind"] in ("stop", "complete", "pause")
            assert (last["kind"] == "pause") == (trial not in ends)
        # the very configs of the simulation (same scheduler, table and seed)
        simulated = list(read_jsonl(closed_loop_plan.parent / entry["events"][row["which"]]))
        sim_rows = {e["trial_id"]: e["extra"]["row"] for e in simulated if e["kind"] == "start"}
        # the prediction is that simulation (same seed), not a mean over seeds
        assert math.isclose(row["predicted_makespan_s"], max(e["time_s"] for e in simulated), rel_tol=1e-9)
        run_rows = {e["trial_id"]: e["extra"]["row"] for e in events if e["kind"] == "start"}
        assert run_rows == sim_rows
        # --trial-seeds recorded (the default): each config trains with the seed its curve was
        # recorded with, so on one rank the run retrains the very curve the simulation read
        if row["gpus_per_trial"] == 1 and curve_table.train_seeds:
            for e in events:
                if e["kind"] == "epoch":
                    expected = curve_table.val[run_rows[e["trial_id"]], e["epoch"] - 1]
                    assert math.isclose(e["metric"], expected, abs_tol=1e-5), (e, expected)
        # the trace is learning curves the simulator can replay
        table = load_curve_table(str(run_dir / "trace.csv"))
        assert table.rows == 2 and table.workload == "digits"

    for algorithm, summary in report["algorithms"].items():
        best = next(r for r in rows if r["algorithm"] == algorithm and r["which"] == "best")
        worst = next(r for r in rows if r["algorithm"] == algorithm and r["which"] == "worst")
        assert math.isclose(summary["measured_speedup"], worst["measured_makespan_s"] / best["measured_makespan_s"])
        assert summary["order_held"] == (summary["measured_speedup"] > 1.0)

    csv = pd.read_csv(out / "comparison.csv")
    assert len(csv) == 4 and set(csv["which"]) == {"best", "worst"}
    assert (out / "comparison.png").stat().st_size > 1000
    assert "speedup best over worst" in proc.stdout
    assert "[hyperband g=" in proc.stdout  # progress lines
