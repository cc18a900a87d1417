"""`nasalloc import ray`: a Ray Tune experiment folder becomes a trace that simulate replays."""

import json
import pickle
import shutil
from pathlib import Path

import pytest

from nasalloc.errors import UserError
from nasalloc.rayimport import _bundles, read_ray_experiment
from nasalloc.trace import Curves, read_trace

# made by bench/peers/make_ray_experiment.py with Ray Tune 2.60 (ASHA, 8 configs, max_t 9,
# two bundles of the custom resource gpu_slot per trial)
EXPERIMENT = Path(__file__).resolve().parent / "fixtures" / "ray_experiment" / "asha_small"



def ray_results():
    """(trial folder name, [results]) of the committed experiment, read independently."""
    out = []
    for folder in sorted(p for p in EXPERIMENT.iterdir() if p.is_dir()):
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line]
        out.append((folder.name, rows))
    return out


def test_the_committed_experiment_becomes_the_curves_ray_recorded(tmp_path, nasalloc_cli):
    out = tmp_path / "trace.csv"
    status, stdout, stderr = nasalloc_cli(["import", "ray", str(EXPERIMENT), "--metric", "val_acc", "--mode", "max",
                                  "--out", str(out), "--gpu-resource", "gpu_slot"])
    assert status == 0, stderr
    assert "8 trials, 22 results, iterations 1..9" in stderr
    assert "2 GPU(s): 8" in stderr  # two bundles of gpu_slot each, from experiment_state
    assert "1 of 8 trials reached iteration 9" in stderr and "--partial hold" in stderr
    curves = Curves.from_trace(read_trace(out), str(out))
    expected = ray_results()
    assert curves.n_configs == len(expected) == 8
    for i, (name, rows) in enumerate(expected):
        assert list(curves.val[i]) == [r["val_acc"] for r in rows]
        assert list(curves.epoch_seconds[i]) == [r["time_this_iter_s"] for r in rows]
        params = json.loads((EXPERIMENT / name / "params.json").read_text())
        assert curves.configs[i] == {"act": params["act"], "lr": params["lr"], "width": params["width"],
                                     "opt/name": params["opt"]["name"]}
    assert set(read_trace(out)["gpus_per_trial"]) == {2.0}


def test_the_imported_trace_replays_in_simulate(tmp_path, nasalloc_cli):
    trace = tmp_path / "trace.csv"
    assert nasalloc_cli(["import", "ray", str(EXPERIMENT), "--metric", "val_acc", "--mode", "max", "--out", str(trace),
                "--partial", "hold"])[0] == 0
    status, _, stderr = nasalloc_cli(["simulate", "--budget", "4", "--curves", str(trace), "--out", str(tmp_path / "sim"),
                             "--seeds", "3", "--jobs", "1", "--quiet"])
    assert status == 0, stderr
    plan = json.loads((tmp_path / "sim" / "plan.json").read_text())
    assert plan["curves"]["configs"] == 8 and plan["metric"] == {"name": "val_acc", "mode": "max"}


def test_partial_hold_extends_stopped_curves_at_their_last_value():
    found = read_ray_experiment(EXPERIMENT, "val_acc", "max", partial="hold")
    curves = Curves.from_trace(found.frame)
    for (name, rows), values, seconds in zip(ray_results(), curves.val, curves.epoch_seconds):
        assert len(values) == 9
        assert list(values[:len(rows)]) == [r["val_acc"] for r in rows]
        assert set(values[len(rows):]) <= {rows[-1]["val_acc"]}
        mean = sum(r["time_this_iter_s"] for r in rows) / len(rows)
        assert all(s == pytest.approx(mean) for s in seconds[len(rows):])
    assert any("--partial hold" in note for note in found.notes)


def test_min_mode_progress_csv_and_a_repeated_iteration(tmp_path):
    copy = tmp_path / "exp"
    shutil.copytree(EXPERIMENT, copy)
    first = sorted(p for p in copy.iterdir() if p.is_dir())[0]
    (first / "result.json").unlink()  # progress.csv is read instead
    second = sorted(p for p in copy.iterdir() if p.is_dir())[1]
    lines = (second / "result.json").read_text().splitlines()
    restored = json.loads(lines[-1])
    restored["loss"] = 0.123  # the trial was restored and reported its last iteration again
    (second / "result.json").write_text("\n".join(lines + [json.dumps(restored)]) + "\n")
    found = read_ray_experiment(copy, "loss", "min")
    curves = Curves.from_trace(found.frame)
    assert curves.mode == "min" and curves.metric_name == "loss"
    expected = ray_results()
    assert list(curves.val[0]) == pytest.approx([r["loss"] for r in expected[0][1]])
    assert curves.val[1][-1] == 0.123 and len(curves.val[1]) == len(expected[1][1])


@pytest.mark.parametrize("damage, words", [
    ("missing", "not found"),
    ("empty", "holds no Ray Tune trial folders"),
    ("no_result", "result.json not found"),
    ("no_rows", "has no results with a training_iteration"),
    ("metric", "metric 'accuracy' not found"),
    ("params", "params.json is not valid JSON"),
    ("not_json", "line 1 is not JSON"),
])
def test_a_malformed_folder_is_one_line_naming_the_file(tmp_path, nasalloc_cli, damage, words):
    folder = tmp_path / "exp"
    metric = "val_acc"
    if damage == "missing":
        folder = tmp_path / "nowhere"
    elif damage == "empty":
        folder.mkdir()
    else:
        shutil.copytree(EXPERIMENT, folder)
        trial = sorted(p for p in folder.iterdir() if p.is_dir())[2]
        if damage == "no_result":
            (trial / "result.json").unlink()
            (trial / "progress.csv").unlink()
        elif damage == "no_rows":
            (trial / "result.json").write_text("")
        elif damage == "metric":
            metric = "accuracy"
        elif damage == "params":
            (trial / "params.json").write_text("{not json")
        elif damage == "not_json":
            (trial / "result.json").write_text("garbage\n" + (trial / "result.json").read_text())
    out = tmp_path / "trace.csv"
    status, _, stderr = nasalloc_cli(["import", "ray", str(folder), "--metric", metric, "--mode", "max",
                                      "--out", str(out)])
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], stderr
    if damage not in ("missing", "empty", "metric"):
        assert "trainable_" in lines[0]  # names the trial's file
    assert not out.exists()


def test_the_placement_pickle_is_read_without_running_anything(tmp_path):
    """A pickle naming a callable must not call it: classes become inert records."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    assert _bundles(pickle.dumps(Evil()).hex()) == []
    assert not marker.exists()
    with pytest.raises(UserError, match="--mode 'up'"):
        read_ray_experiment(EXPERIMENT, "val_acc", "up")


def test_a_real_ray_tune_run_replays(tmp_path):
    """Where Ray is installed: run a tiny ASHA search on CPU and import its folder."""
    pytest.importorskip("ray", reason="Ray Tune is not installed (pip install 'ray[tune]')")
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "bench" / "peers" / "make_ray_experiment.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, timeout=600,
                   capture_output=True)
    found = read_ray_experiment(tmp_path / "asha_small", "val_acc", "max", gpu_resource="gpu_slot")
    assert found.trials == 8 and found.gpus == {2.0: 8} and found.max_iteration == 9


def test_an_out_that_cannot_be_written_is_refused_before_reading(tmp_path, nasalloc_cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, stderr = nasalloc_cli(["import", "ray", str(EXPERIMENT), "--metric", "val_acc", "--mode", "max",
                                      "--out", str(blocker / "trace.csv")])
    assert status == 2 and "is a file, not a folder" in stderr and len(stderr.strip().splitlines()) == 1
