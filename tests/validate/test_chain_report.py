"""validate's report of a chain of allocations: the plan's predicted chain (allocations, time to
result, queue waits, allocation start-up) against the allocations the run's state recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nasalloc.validate.chainreport import chain_comparison, chain_lines, measured_chain, predicted_chain
from nasalloc.validate.plan import Plan
from nasalloc.validate.task import Stopper

PROFILE = Path(__file__).resolve().parents[2] / "results" / "reference" / "digits_cpu_profile.json"


def _plan(tmp_path, *model) -> Plan:
    out = tmp_path / "sim"
    done = subprocess.run([sys.executable, "-m", "nasalloc", "simulate", "--budget", "2", "--gpus-per-node", "2",
                           "--algorithms", "asha", "--gpus-per-trial", "1", "--max-epochs", "9", "--trials", "20",
                           "--seeds", "1", "--jobs", "1", "--profile", str(PROFILE), *model, "--out", str(out), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return Plan(out / "plan.json")


def test_the_report_sets_the_plans_chain_against_the_recorded_allocations(tmp_path):
    plan = _plan(tmp_path, "--time-limit", "30s", "--signal-lead", "10s", "--grace", "5s", "--allocation-start", "3s")
    choice = plan.choose("asha", "best")[0]
    predicted = predicted_chain(plan, choice)
    entry = plan.algorithms["asha"]["best"]  # one seed: the plan's mean is this seed's chain
    assert predicted["allocations"] == entry["allocations"] >= 2
    assert predicted["time_to_result_s"] == pytest.approx(entry["time_to_result_s"])
    assert predicted["allocation_start_s"] == 3.0 and predicted["queue_wait_s"] == 0.0
    assert len(predicted["queue_waits_s"]) == predicted["allocations"] - 1
    # three allocations: 2.5 s start-ups, waits of 1 s and 3 s, the last one finished the search
    t0 = 1_000_000.0
    state = {"finished": True, "allocations": [
        {"began_unix": t0, "ready_unix": t0 + 2.5, "ended_unix": t0 + 20.0, "ended": "time limit"},
        {"began_unix": t0 + 21.0, "ready_unix": t0 + 23.5, "ended_unix": t0 + 41.0, "ended": "time limit"},
        {"began_unix": t0 + 44.0, "ready_unix": t0 + 46.5, "ended_unix": t0 + 50.0, "ended": "finished"}]}
    measured = measured_chain(state)
    assert measured["allocations"] == 3 and measured["time_to_result_s"] == pytest.approx(50.0)
    assert measured["queue_waits_s"] == pytest.approx([1.0, 3.0]) and measured["queue_wait_mean_s"] == 2.0
    assert measured["allocation_start_mean_s"] == pytest.approx(2.5)
    assert measured["compute_s"] == pytest.approx(20.0 + 20.0 + 6.0)
    chain = chain_comparison(predicted, measured)
    assert chain["time_to_result_rel_error"] == pytest.approx((predicted["time_to_result_s"] - 50.0) / 50.0)
    chain["resimulated"] = {"allocations": 3, "time_to_result_s": 52.0, "compute_s": 47.0}
    row = {"algorithm": "asha", "which": "best", "gpus_per_trial": 1.0, "chain": chain}
    (line,) = chain_lines({"splits": [row]})
    assert line.endswith("; re-simulated with the measured costs: 3 allocation(s), 52.0 s")
    assert line.startswith(f"chain asha best g=1: allocations predicted {predicted['allocations']}, measured 3; ")
    assert "measured 50.0 s (" in line and "queue wait predicted 0.0 s, measured 2.0 s mean" in line
    # an unfinished run has no time to result yet; a plan without a model predicts no chain
    assert measured_chain({**state, "finished": False})["time_to_result_s"] is None
    assert chain_comparison(None, measured_chain({"allocations": state["allocations"][:1]})) is None


def test_a_plan_without_an_allocation_model_predicts_no_chain(tmp_path):
    plan = _plan(tmp_path)
    assert predicted_chain(plan, plan.choose("asha", "best")[0]) is None
    assert measured_chain({}) is None


def test_the_time_limit_counts_from_the_processs_start():
    assert Stopper(time_limit_s=10.0, elapsed_s=10.5).check() == "time limit"
    assert Stopper(time_limit_s=10.0, elapsed_s=5.0).check() is None
