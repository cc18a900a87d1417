"""`nasalloc simulate --policies`: bad input, outputs, and defaults left exactly as they were."""

import csv
import json

import pytest

from .simdata import write_trace
from .test_simulate_cli import run


@pytest.fixture()
def trace(tmp_path):
    path = tmp_path / "trace.csv"
    write_trace(path, rows=30, epochs=9)
    return path


SMALL = ["--budget", "8", "--seeds", "3", "--jobs", "1", "--quiet"]


@pytest.mark.parametrize("policies, words", [
    ("double:3", "--policies: 'double:3': 3 GPUs is not a placeable count"),
    ("grow", "--policies: 'grow' is not a policy"),
    ("double:1,1", "S=1 must be >= 2"),
    ("fill:4", "fill takes no parameters"),
    ("static:2", "static:2 is not among the sweep's splits"),
    ("static,,fill", "an empty item"),
])
def test_bad_policies_are_one_line_and_exit_2(policies, words, trace, tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, stderr = run([*SMALL, "--gpus-per-trial", "1,4", "--curves", str(trace), "--policies", policies,
                                  "--out", str(out)], capsys)
    assert status == 2 and words in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_policies_sweep_writes_rows_plan_and_table(trace, tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, stderr = run([*SMALL, "--curves", str(trace), "--policies", "static,double:1,2,fill",
                                  "--out", str(out)], capsys)
    assert status == 0, stderr
    rows = list(csv.DictReader(open(out / "policies.csv")))
    assert {(r["algorithm"], r["policy"]) for r in rows} == {
        ("hyperband", "double:1,2"), ("hyperband", "fill"), ("bohb", "double:1,2"), ("bohb", "fill"),
        ("asha", "double:1,2")}
    assert len(rows) == 5 * 3
    plan = json.loads((out / "plan.json").read_text())
    for algorithm, entry in plan["policies"]["algorithms"].items():
        assert entry["best_static"]["gpus_per_trial"] == plan["algorithms"][algorithm]["best"]["gpus_per_trial"]
        assert entry["best_adaptive"]["makespan_s"] == min(p["makespan_s"] for p in entry["policies"])
        low, high = entry["gain_ci95"]
        assert entry["gain_seeds"] == 3 and low <= entry["gain"] <= high
    assert "best adaptive (mean, 95% CI)" in stdout and "double:1,2" in stdout
    assert (out / "occupancy_policies.png").stat().st_size > 0


def test_without_policies_nothing_changes(trace, tmp_path, capsys):
    """The default sweep's files are the same with --policies added (the static rows) and have no
    policy section without it."""
    plain, with_policies = tmp_path / "plain", tmp_path / "with"
    assert run([*SMALL, "--curves", str(trace), "--out", str(plain)], capsys)[0] == 0
    assert run([*SMALL, "--curves", str(trace), "--out", str(with_policies), "--policies", "double:1,2"], capsys)[0] == 0
    assert (plain / "simulations.csv").read_text() == (with_policies / "simulations.csv").read_text()
    plan = json.loads((plain / "plan.json").read_text())
    assert "policies" not in plan and not (plain / "policies.csv").exists()
    other = json.loads((with_policies / "plan.json").read_text())
    assert other["algorithms"] == plan["algorithms"]
