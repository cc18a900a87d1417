"""`nasalloc simulate` with an allocation model: flags, outputs, and defaults left alone."""

import csv
import json

import pytest

from nasalloc.simulator.simresult import CHAIN_COLUMNS
from nasalloc.simulator.sweep import COLUMNS

from .simdata import write_trace
from .test_simulate_cli import SMALL, run


@pytest.fixture()
def trace(tmp_path):
    path = tmp_path / "trace.csv"
    write_trace(path, rows=30, epochs=9)
    return path


@pytest.mark.parametrize("args, words", [
    (["--time-limit", "1y"], "--time-limit '1y'"),
    (["--time-limit", "0"], "--time-limit '0'"),
    (["--time-limit", "4m", "--signal-lead", "5m"], "--time-limit 240s must be longer than the signal lead"),
    (["--requeue-wait", "30m"], "--requeue-wait 30m only applies with --time-limit"),
    (["--time-limit", "1h", "--requeue-wait", "30m,1m,2m"], "--requeue-wait '30m,1m,2m'"),
    (["--node-mtbf", "soon"], "--node-mtbf 'soon'"),
    (["--node-mtbf", "-3"], "--node-mtbf -3.0"),
    (["--checkpoint-every", "0"], "--checkpoint-every 0"),
    (["--max-restarts", "-1", "--node-mtbf", "5"], "--max-restarts -1"),
    (["--allocation-start", "5s"], "--allocation-start 5s only applies with --time-limit"),
    (["--time-limit", "1h", "--allocation-start", "soon"], "--allocation-start 'soon'"),
    (["--time-limit", "1h", "--signal-lead", "10m", "--allocation-start", "50m"],
     "--allocation-start 3000s leaves no time to train"),
])
def test_bad_chain_input_is_one_line_exit_2_and_writes_nothing(tmp_path, trace, capsys, args, words):
    out = tmp_path / "out"
    status, _, stderr = run([*SMALL, *args, "--curves", str(trace), "--out", str(out)], capsys)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], stderr
    assert not out.exists()


# the embedded profile's epochs (up to ~30 min here): a 3 h partition, a lead above one epoch
CHAIN = ["--time-limit", "3h", "--signal-lead", "1h", "--grace", "50m", "--requeue-wait", "30m,10m",
         "--node-mtbf", "20", "--checkpoint-every", "2"]


def test_a_chain_reports_time_to_result_and_losses_per_split(tmp_path, trace, capsys):
    out = tmp_path / "out"
    status, stdout, stderr = run([*SMALL, "--curves", str(trace), "--out", str(out), *CHAIN], capsys)
    assert status == 0, stderr
    assert "allocation model: allocations of 3.0 h" in stdout
    assert "time to result" in stdout and "lost: checkpoints" in stdout
    assert ("the best split changes under the allocation model" in stdout
            or "the best split is the same with and without the allocation model" in stdout)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["allocation"]["time_limit_s"] == 3 * 3600 and plan["allocation"]["checkpoint_every"] == 2
    for entry in plan["algorithms"].values():
        assert "best_without_model" in entry
        for s in entry["splits"]:
            assert s["allocations"] >= 1 and s["time_to_result_s"] == s["makespan_s"] >= s["compute_s"]
            assert s["free_makespan_s"] <= s["time_to_result_s"]
            if s["allocations"] > 1:  # the queue waits lie between allocations
                assert s["time_to_result_s"] > s["compute_s"]
            assert s["lost_checkpoint_gpu_h"] > 0  # --checkpoint-every 2 saves cost
        assert max(s["allocations"] for s in entry["splits"]) > 1
    with open(out / "simulations.csv") as handle:
        header = next(csv.reader(handle))
    assert set(CHAIN_COLUMNS) <= set(header)
    # resumable like any sweep: a second run finds every row
    status, stdout, _ = run([*SMALL, "--curves", str(trace), "--out", str(out), *CHAIN], capsys)
    assert status == 0 and "simulated 0 run(s)" in stdout


def test_without_the_flags_the_outputs_are_todays(tmp_path, trace, capsys):
    out = tmp_path / "out"
    status, stdout, _ = run([*SMALL, "--curves", str(trace), "--out", str(out)], capsys)
    assert status == 0 and "allocation model" not in stdout
    with open(out / "simulations.csv") as handle:
        assert next(csv.reader(handle)) == COLUMNS
    plan = json.loads((out / "plan.json").read_text())
    assert "allocation" not in plan and all("best_without_model" not in e for e in plan["algorithms"].values())
