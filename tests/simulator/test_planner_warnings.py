"""Warnings a plan owes its user: BOHB splits that ran mostly as random search."""

import csv
import json

from nasalloc.cli import main
from nasalloc.simulator.report import MODEL_SHARE_WARNING, planner_warnings

from .simdata import write_trace


def split(g, parallel, share):
    return {"gpus_per_trial": g, "parallel_trials": parallel, "model_based_share": share}


def test_only_bohb_splits_below_the_share_are_named():
    low, high = MODEL_SHARE_WARNING / 2, MODEL_SHARE_WARNING * 1.5
    warnings = planner_warnings({"bohb": {"splits": [split(1.0, 64, low), split(8.0, 8, high)]},
                                 "hyperband": {"splits": [split(1.0, 64, None)]}})
    assert len(warnings) == 1 and "1 GPU x64" in warnings[0] and "8 GPUs" not in warnings[0]
    assert f"{low:.0%}" in warnings[0]
    assert planner_warnings({"bohb": {"splits": [split(8.0, 8, high)]}}) == []
    assert planner_warnings({"asha": {"splits": [split(1.0, 64, None)]}}) == []


def test_the_sweep_counts_model_based_configs_per_run(tmp_path):
    trace = tmp_path / "trace.csv"
    write_trace(trace, rows=30, epochs=9)
    out = tmp_path / "sim"
    try:
        main(["simulate", "--budget", "4", "--curves", str(trace), "--out", str(out), "--seeds", "3",
              "--jobs", "1", "--quiet", "--algorithms", "hyperband,bohb", "--brackets", "6"])
    except SystemExit as exit_:
        assert not exit_.code
    with open(out / "simulations.csv") as handle:
        rows = list(csv.DictReader(handle))
    bohb = [r for r in rows if r["algorithm"] == "bohb"]
    assert all(r["model_based_trials"] != "" and 0 <= int(float(r["model_based_trials"])) <= int(r["trials"])
               for r in bohb)
    assert any(int(float(r["model_based_trials"])) > 0 for r in bohb)
    assert all(r["model_based_trials"] == "" for r in rows if r["algorithm"] == "hyperband")
    plan = json.loads((out / "plan.json").read_text())
    shares = [s["model_based_share"] for s in plan["algorithms"]["bohb"]["splits"]]
    assert all(0 <= s <= 1 for s in shares)
    assert isinstance(plan["warnings"], list)


def test_splits_with_more_slots_than_trials_are_named_for_every_algorithm():
    wide = {**split(0.5, 8, None), "trials": 5.0}
    fits = {**split(1.0, 4, None), "trials": 5.0}
    warnings = planner_warnings({"asha": {"splits": [wide, fits]}, "hyperband": {"splits": [fits]}})
    assert len(warnings) == 1
    assert warnings[0].startswith("asha: at 1/2 GPU x8 (5 trials, 3 slot(s) idle)") and "1 GPU x4" not in warnings[0]


def test_a_fraction_ray_would_pack_otherwise_is_refused_with_what_ray_runs():
    import pytest

    from nasalloc.errors import UserError
    from nasalloc.simulator.cluster import make_split

    with pytest.raises(UserError) as caught:
        make_split(64, 4, 0.4)
    message = str(caught.value)
    assert "0.4" in message and "packs 2 such trials per GPU (128 on 64 GPUs" in message and "not 64/0.4 = 160" in message
    assert "\n" not in message
