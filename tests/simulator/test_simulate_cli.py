"""`nasalloc simulate` through the real entry point: bad input, outputs, resume, parallelism."""

import csv
import json

import pytest

from nasalloc.cli import main

from .simdata import write_profile, write_trace


def run(args, capsys):
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    try:
        main(["simulate", *args])
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture()
def trace(tmp_path):
    path = tmp_path / "trace.csv"
    write_trace(path, rows=30, epochs=9)
    return path


SMALL = ["--budget", "8", "--seeds", "2", "--jobs", "1", "--quiet"]


@pytest.mark.parametrize("args, words", [
    (["--budget", "0"], "--budget 0"),
    (["--budget", "-4"], "--budget -4"),
    (["--budget", "x"], "'x' is not a valid integer"),
    (["--budget", "8", "--gpus-per-trial", "16"], "16 is larger than the budget"),
    (["--budget", "8", "--gpus-per-trial", "1,two"], "'two' is not a number"),
    (["--budget", "8", "--gpus-per-trial", "3"], "does not fit a node of 4"),
    (["--budget", "8", "--gpus-per-trial", "0.3"], "1/k"),
    (["--budget", "8", "--algorithms", "hyperband,hyperopt"], "unknown algorithm 'hyperopt'"),
    (["--budget", "8", "--objective", "deadline"], "needs --deadline"),
    (["--budget", "8", "--trials", "5", "--brackets", "2"], "--trials 5 and --brackets 2"),
    (["--budget", "8", "--max-epochs", "20"], "--max-epochs 20 is beyond the curves' 9 epochs"),
    (["--budget", "8", "--eta", "1"], "--eta 1"),
    (["--budget", "8", "--seeds", "0"], "--seeds 0"),
    (["--budget", "8", "--semantics", "tune"], "'tune' is not one of"),
    (["--budget", "8", "--jobs", "0"], "--jobs 0"),
    (["--budget", "8", "--gpus-per-node", "0"], "--gpus-per-node 0"),
    (["--budget", "8", "--deadline", "100"], "only applies with --objective deadline"),
    (["--budget", "8", "--algorithms", ","], "is empty"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, trace, capsys, args, words):
    out = tmp_path / "out"
    status, stdout, stderr = run([*args, "--curves", str(trace), "--out", str(out)], capsys)
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], stderr
    assert not out.exists()


def test_bad_profile_and_trace_files(tmp_path, trace, capsys):
    out = tmp_path / "out"
    write_profile(tmp_path / "p.json", model=None)
    status, _, stderr = run(["--budget", "8", "--profile", str(tmp_path / "p.json"), "--curves", str(trace),
                             "--out", str(out)], capsys)
    assert status == 2 and "missing field 'model'" in stderr and len(stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken.csv"
    broken.write_text("trial_id,epoch,val_metric\n0,1,0.5\n")
    status, _, stderr = run(["--budget", "8", "--curves", str(broken), "--out", str(out)], capsys)
    assert status == 2 and "has no column 'epoch_seconds'" in stderr and len(stderr.strip().splitlines()) == 1
    status, _, stderr = run(["--budget", "8", "--curves", str(tmp_path / "absent.csv"), "--out", str(out)], capsys)
    assert status == 2 and "absent.csv" in stderr
    assert not out.exists()


def test_missing_shipped_curves_are_a_clear_error(tmp_path, monkeypatch, capsys):
    import nasalloc.trace

    monkeypatch.setattr(nasalloc.trace, "DEFAULT_CURVES", "no_such_curves.csv.gz")
    status, _, stderr = run(["--budget", "8", "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and "no_such_curves.csv.gz" in stderr and "--curves" in stderr
    assert not (tmp_path / "out").exists()


def test_a_small_run_writes_every_output_and_resumes(tmp_path, trace, capsys):
    out = tmp_path / "out"
    args = [*SMALL, "--curves", str(trace), "--out", str(out), "--gpus-per-trial", "0.5,1,2,4,8"]
    status, stdout, stderr = run(args, capsys)
    assert status == 0, stderr
    names = {p.name for p in out.iterdir()}
    assert {"simulations.csv", "plan.json", "makespan.png", "best_so_far.png", "occupancy.png"} <= names
    for algorithm in ("hyperband", "asha", "bohb"):
        assert {f"events_best_{algorithm}.jsonl", f"events_worst_{algorithm}.jsonl"} <= names
    rows = list(csv.DictReader(open(out / "simulations.csv")))
    assert len(rows) == 3 * 5 * 2
    for column in ("algorithm", "semantics", "budget", "gpus_per_trial", "parallel_trials", "seed", "makespan_s",
                   "gpu_hours", "utilization", "trials", "epochs", "best_metric", "best_test_metric",
                   "lower_bound_s"):
        assert all(row[column] != "" for row in rows), column
    plan = json.loads((out / "plan.json").read_text())
    assert set(plan["algorithms"]) == {"hyperband", "asha", "bohb"}
    for entry in plan["algorithms"].values():
        assert entry["best"]["makespan_s"] <= entry["worst"]["makespan_s"]
        assert entry["speedup"] >= 1
        low, high = entry["best"]["makespan_ci95_s"]
        assert low <= entry["best"]["makespan_s"] <= high
    assert plan["profile"]["embedded"] and plan["profile"]["content"]["schema"] == "nasalloc.profile/1"
    assert plan["curves"]["sha256"] and plan["seeds"] == [0, 1] and plan["workload"] == "synthetic"
    assert plan["scheduler"]["max_t"] == 9 and plan["algorithms"]["asha"]["scheduler"]["trials"] > 0
    best = plan["algorithms"]["hyperband"]["best"]["gpus_per_trial"]
    records = [json.loads(line) for line in open(out / "events_best_hyperband.jsonl")]
    assert records[0]["kind"] == "start" and all(r["gpus"] == best for r in records)
    assert "best split" in stdout and "hyperband" in stdout and "DeepLearningExamples" in stdout

    before = (out / "simulations.csv").read_text()
    status, stdout, _ = run(args, capsys)
    assert status == 0 and "simulated 0 run(s)" in stdout
    assert (out / "simulations.csv").read_text() == before

    status, _, stderr = run([*args[:-2], "--gpus-per-trial", "1", "--eta", "2"], capsys)
    assert status == 2 and "other settings" in stderr


def test_interrupted_sweep_keeps_its_rows_and_finishes_them(tmp_path, trace, capsys):
    out = tmp_path / "out"
    args = [*SMALL, "--curves", str(trace), "--out", str(out), "--algorithms", "hyperband",
            "--gpus-per-trial", "1,2"]
    assert run(args, capsys)[0] == 0
    full = (out / "simulations.csv").read_text().splitlines()
    # A killed sweep: two finished rows and half of a third.
    (out / "simulations.csv").write_text("\n".join(full[:3]) + "\n" + full[3][:20])
    status, stdout, _ = run(args, capsys)
    assert status == 0 and "simulated 2 run(s)" in stdout
    assert (out / "simulations.csv").read_text().splitlines() == full


def test_results_do_not_depend_on_jobs(tmp_path, trace, capsys):
    common = ["--budget", "8", "--seeds", "2", "--quiet", "--curves", str(trace), "--algorithms", "hyperband,asha",
              "--gpus-per-trial", "0.5,1,4"]
    assert run([*common, "--jobs", "1", "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert run([*common, "--jobs", "2", "--out", str(tmp_path / "b")], capsys)[0] == 0
    assert (tmp_path / "a" / "simulations.csv").read_text() == (tmp_path / "b" / "simulations.csv").read_text()
    assert (tmp_path / "a" / "events_best_asha.jsonl").read_text() == \
        (tmp_path / "b" / "events_best_asha.jsonl").read_text()


def test_deadline_objective_ranks_by_metric_reached(tmp_path, trace, capsys):
    out = tmp_path / "out"
    status, stdout, stderr = run([*SMALL, "--curves", str(trace), "--out", str(out), "--algorithms", "asha",
                                  "--gpus-per-trial", "1,8", "--objective", "deadline", "--deadline", "3600"], capsys)
    assert status == 0, stderr
    assert "best metric by 1.0 h" in stdout and "metric gain" in stdout
    plan = json.loads((out / "plan.json").read_text())
    entry = plan["algorithms"]["asha"]
    assert plan["objective"] == "deadline" and plan["deadline_s"] == 3600
    assert entry["best"]["deadline_metric"] >= entry["worst"]["deadline_metric"]


def test_more_seeds_extend_an_earlier_sweep(tmp_path, trace, capsys):
    out = tmp_path / "out"
    base = ["--budget", "8", "--jobs", "1", "--quiet", "--curves", str(trace), "--out", str(out),
            "--algorithms", "asha", "--gpus-per-trial", "1,4"]
    assert run([*base, "--seeds", "2"], capsys)[0] == 0
    status, stdout, _ = run([*base, "--seeds", "3"], capsys)
    assert status == 0 and "simulated 2 run(s)" in stdout  # one new seed for each of the 2 splits
    rows = list(csv.DictReader(open(out / "simulations.csv")))
    assert sorted((r["gpus_per_trial"], r["seed"]) for r in rows) == sorted(
        (g, s) for g in ("1.0", "4.0") for s in ("0", "1", "2"))
    assert json.loads((out / "plan.json").read_text())["seeds"] == [0, 1, 2]


def test_with_no_files_it_runs_on_the_embedded_profile_and_curves(tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, stderr = run(["--budget", "8", "--seeds", "1", "--algorithms", "hyperband", "--max-epochs", "9",
                                  "--jobs", "1", "--out", str(out)], capsys)
    assert status == 0, stderr
    assert "embedded default profile" in stdout and "938 img/s" in stdout and "7,248 img/s" in stdout
    assert "<embedded digits_curves.csv.gz>" in stdout
    assert "default profile assumes" in stderr  # every assumed default is printed
    plan = json.loads((out / "plan.json").read_text())
    assert plan["profile"]["embedded"] and plan["workload"] == "digits" and plan["gpus_per_node"] == 4
    assert plan["splits"] == [1, 2, 4, 8]  # no co-location data: no fractional splits by default
