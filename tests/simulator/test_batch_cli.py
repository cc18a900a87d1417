"""`nasalloc simulate` with a per_gpu batch policy and a measured noise scale, end to end."""

import csv
import json

import pandas as pd
import pytest

from nasalloc.simulator.batchreport import within_tolerance

from .simdata import write_profile, write_trace
from .test_simulate_cli import run

NOISE = {"schema": "nasalloc.noise_scale/1", "batch_small": 32, "batch_big": 256,
         "points": [{"epoch": 1, "b_noise": 40.0}, {"epoch": 3, "b_noise": 90.0}, {"epoch": 9, "b_noise": 200.0}]}


@pytest.fixture()
def files(tmp_path):
    trace = tmp_path / "trace.csv"
    write_trace(trace, rows=30, epochs=9)
    frame = pd.read_csv(trace)
    frame["config.batch_size"] = (frame["trial_id"] % 2 + 1) * 32       # 32 or 64
    frame.to_csv(trace, index=False)
    with_noise = tmp_path / "noise.json"
    write_profile(with_noise, workload={"name": "synthetic", "batch_policy": "per_gpu"}, noise_scale=NOISE)
    without = tmp_path / "plain.json"
    write_profile(without, workload={"name": "synthetic", "batch_policy": "per_gpu"})
    return trace, with_noise, without


SMALL = ["--budget", "8", "--seeds", "2", "--jobs", "1", "--quiet", "--gpus-per-trial", "1,2,4,8"]


def rows(folder):
    with open(folder / "simulations.csv") as handle:
        return [{k: v for k, v in r.items() if k != "sweep_key"} for r in csv.DictReader(handle)]


def test_per_gpu_predicts_accuracy_and_epochs_per_split_and_picks_the_fastest_at_equal_accuracy(files, tmp_path,
                                                                                                 capsys):
    trace, with_noise, _ = files
    out = tmp_path / "per_gpu"
    status, stdout, _ = run([*SMALL, "--profile", str(with_noise), "--curves", str(trace), "--objective",
                             "accuracy-time", "--tolerance", "0.02", "--out", str(out)], capsys)
    assert status == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["batch_scaling"]["active"] and plan["batch_scaling"]["policy"] == "per_gpu"
    assert "batch scaling (per_gpu)" in stdout and (out / "batch_scaling.png").is_file()
    for entry in plan["algorithms"].values():
        splits = entry["splits"]
        batches = [s["batch_scaling"]["global_batch"] for s in splits]
        base = splits[0]["batch_scaling"]["reference_batch"]
        assert batches == [base * g for g in (1, 2, 4, 8)]
        epochs = [s["batch_scaling"]["epochs_to_target"] for s in splits]
        assert epochs == sorted(epochs) and epochs[-1] > epochs[0]          # monotone synthetic curves
        for s in splits:
            b = s["batch_scaling"]
            assert b["past_critical_batch"] == (b["global_batch"] > 200.0)
            assert b["predicted_final_metric"] == s["best_metric"]
        eligible = within_tolerance(splits, 0.02, "max")
        assert entry["best"] in eligible
        assert entry["best"]["makespan_s"] == min(s["makespan_s"] for s in eligible)
        assert entry["worst"]["makespan_s"] == max(s["makespan_s"] for s in splits)

    plain = tmp_path / "recorded"
    status, _, err = run([*SMALL, "--profile", str(files[2]), "--curves", str(trace), "--out", str(plain)], capsys)
    assert status == 0
    stretched, recorded = rows(out), rows(plain)
    one = lambda rs, g: [r for r in rs if float(r["gpus_per_trial"]) == g]  # noqa: E731
    assert one(stretched, 1.0) == one(recorded, 1.0)       # one rank: B = B0, same search
    assert one(stretched, 8.0) != one(recorded, 8.0)       # 8x the batch: other curves, other search


def test_global_policy_writes_the_same_rows_and_records_as_without_a_noise_scale(files, tmp_path, capsys):
    trace, with_noise, without = files
    a, b = tmp_path / "a", tmp_path / "b"
    assert run([*SMALL, "--profile", str(with_noise), "--curves", str(trace), "--batch-policy", "global",
                "--out", str(a)], capsys)[0] == 0
    assert run([*SMALL, "--profile", str(without), "--curves", str(trace), "--batch-policy", "global",
                "--out", str(b)], capsys)[0] == 0
    assert rows(a) == rows(b)
    for name in sorted(p.name for p in a.glob("events_*.jsonl")):
        assert (a / name).read_text() == (b / name).read_text()
    assert not (a / "batch_scaling.png").exists()


def test_per_gpu_without_a_noise_scale_says_so_and_uses_the_recorded_curves(files, tmp_path, capsys):
    trace, _, without = files
    status, _, err = run(["--budget", "8", "--seeds", "1", "--jobs", "1", "--profile", str(without), "--curves",
                          str(trace), "--out", str(tmp_path / "c")], capsys)
    assert status == 0 and "has no noise_scale" in err


def test_a_negative_tolerance_is_one_line_exit_2(files, tmp_path, capsys):
    trace, with_noise, _ = files
    status, _, err = run([*SMALL, "--curves", str(trace), "--tolerance", "-1", "--out", str(tmp_path / "d")], capsys)
    assert status == 2 and "--tolerance" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()
