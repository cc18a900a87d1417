"""``validate --executor ray`` and ``profile --launcher ray``: the plan run by Ray Tune itself.

One real loop on CPU, built once: profile digits with each job started from a Ray actor,
simulate small Ray-semantics HyperBand (two brackets: trials pause at a rung and one resumes)
and ASHA searches on a budget of 2, run them through a local Ray with Ray's own schedulers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from nasalloc.io import read_jsonl

from .conftest import _curves, nasalloc

pytestmark = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import ray.tune"], capture_output=True).returncode != 0,
    reason="Ray Tune is not installed (pip install 'nasalloc[ray]')")

HAS_HPBANDSTER = subprocess.run([sys.executable, "-c", "import hpbandster, ConfigSpace"],
                                capture_output=True).returncode == 0
MAX_T = 3
SIMULATE = ["--budget", "2", "--gpus-per-node", "2", "--gpus-per-trial", "1", "--max-epochs", MAX_T, "--eta", "3",
            "--seeds", "2", "--jobs", "1", "--semantics", "ray"]


@pytest.fixture(scope="module")
def ray_loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_loop")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    nasalloc("profile", "--gpus", "1", "--device", "cpu", "--workload", "digits", "--warmup", "1", "--epochs", "2",
             "--launcher", "ray", "--noise-epochs", "none", "--out", root / "profile.json", cwd=root)
    curves = _curves(root)
    sizes = {"hyperband": ["--brackets", "2"], "asha": ["--trials", "5"]}
    if HAS_HPBANDSTER:
        sizes["bohb"] = ["--brackets", "2"]
    for algorithm, size in sizes.items():
        nasalloc("simulate", "--profile", root / "profile.json", *SIMULATE, "--algorithms", algorithm, *size,
                 *curves, "--out", root / f"sim_{algorithm}", "--quiet", cwd=root)
    runs = {}
    for algorithm in sizes:
        out = root / f"val_{algorithm}"
        proc = nasalloc("validate", "--plan", root / f"sim_{algorithm}" / "plan.json", "--which", "best",
                        "--executor", "ray", "--device", "cpu", "--out", out, cwd=root, timeout=900)
        runs[algorithm] = (out, proc)
    return root, runs


def _records(run_dir: Path) -> dict:
    by_trial = defaultdict(list)
    for record in read_jsonl(run_dir / "events.jsonl"):
        by_trial[record["trial_id"]].append(record)
    return by_trial


def test_the_profile_times_start_up_through_ray(ray_loop):
    root, _ = ray_loop
    profile = json.loads((root / "profile.json").read_text())
    assert profile["hardware"]["launcher"] == "ray"
    startup = [m["startup_s"] for m in profile["measurements"] if m.get("kind") == "ddp"]
    assert startup and all(s > 0 for s in startup)


@pytest.mark.parametrize("algorithm, scheduler", [("hyperband", "HyperBandScheduler"), ("asha", "ASHAScheduler")])
def test_ray_runs_the_plan_and_the_report_compares(ray_loop, algorithm, scheduler):
    _, runs = ray_loop
    out, proc = runs[algorithm]
    report = json.loads((out / "report.json").read_text())
    row, = report["splits"]
    assert row["status"] == "finished" and row["failed"] == 0 and row["trials"] == 5
    assert row["measured_makespan_s"] > 0 and row["predicted_makespan_s"] > 0 and row["resimulated_makespan_s"] > 0
    state = json.loads((out / f"{algorithm}_g1" / "state.json").read_text())
    assert state["executor"] == "ray" and state["scheduler"] == scheduler and state["finished"]
    assert f"its own {scheduler}" in proc.stdout
    # Ray's own results are there too, one folder per trial
    assert len(list((out / f"{algorithm}_g1" / "ray" / "tune").glob("trial_*/result.json"))) == 5


@pytest.mark.parametrize("algorithm", ["hyperband", "asha"])
def test_every_trial_has_one_life_within_max_t(ray_loop, algorithm):
    _, runs = ray_loop
    run_dir = runs[algorithm][0] / f"{algorithm}_g1"
    trials = _records(run_dir)
    assert sorted(trials) == list(range(5))
    epochs = 0
    for trial_id, records in trials.items():
        kinds = [r["kind"] for r in records]
        assert kinds[0] == "start" and kinds[-1] in ("stop", "complete", "pause"), (trial_id, kinds)
        trained = [r["epoch"] for r in records if r["kind"] == "epoch"]
        assert trained == list(range(1, len(trained) + 1)), (trial_id, trained)  # no epoch twice, none skipped
        assert max(trained) <= MAX_T
        epochs += len(trained)
    trace = (run_dir / "trace.csv").read_text().splitlines()
    assert len(trace) - 1 == epochs


def test_hyperband_pauses_at_the_rung_resumes_from_the_checkpoint_and_decides_as_nasalloc_predicts(ray_loop):
    _, runs = ray_loop
    out = runs["hyperband"][0]
    trials = _records(out / "hyperband_g1")
    resumed = [t for t, records in trials.items() if any(r["kind"] == "resume" for r in records)]
    assert resumed, "Ray's second bracket pauses its trials at the rung and resumes the best"
    for trial_id in resumed:
        records = trials[trial_id]
        at = [r["kind"] for r in records].index("resume")
        assert records[at - 1]["kind"] == "pause"
        next_epoch = next(r for r in records[at:] if r["kind"] == "epoch")
        assert next_epoch["epoch"] == records[at - 1]["epoch"] + 1  # continued, not retrained
    row, = json.loads((out / "report.json").read_text())["splits"]
    # Ray's HyperBand decided for every trial what nasalloc's model of it decides on the same metrics
    assert row["compared_trials"] == 5 and row["same_last_epoch"] == 5


@pytest.mark.skipif(not HAS_HPBANDSTER, reason="TuneBOHB needs hpbandster (pip install 'nasalloc[ray]')")
def test_bohb_runs_tunebohb_proposals_as_table_rows(ray_loop):
    from nasalloc.validate.plan import Plan

    root, runs = ray_loop
    out, proc = runs["bohb"]
    row, = json.loads((out / "report.json").read_text())["splits"]
    assert row["status"] == "finished" and row["failed"] == 0 and row["trials"] == 5
    state = json.loads((out / "bohb_g1" / "state.json").read_text())
    assert (state["scheduler"], state["searcher"]) == ("HyperBandForBOHB", "TuneBOHB")
    table = Plan(root / "sim_bohb" / "plan.json").table()
    trials = _records(out / "bohb_g1")
    for records in trials.values():
        start = records[0]
        assert start["config"] == table.configs[start["extra"]["row"]]  # the row nearest TuneBOHB's proposal
    assert any(r["kind"] == "resume" for records in trials.values() for r in records)


def test_the_ray_folder_replays_through_import(ray_loop, tmp_path):
    _, runs = ray_loop
    experiment = runs["asha"][0] / "asha_g1" / "ray" / "tune"
    nasalloc("import", "ray", experiment, "--metric", "accuracy", "--mode", "max", "--out", tmp_path / "trace.csv")
    assert len((tmp_path / "trace.csv").read_text().splitlines()) > 5


def test_a_plan_of_another_semantics_is_refused(ray_loop, tmp_path):
    root, _ = ray_loop
    nasalloc("simulate", "--profile", root / "profile.json", *SIMULATE[:-2], "--semantics", "reference",
             "--algorithms", "asha", "--trials", "3", *_curves(root), "--out", tmp_path / "sim", "--quiet")
    proc = nasalloc("validate", "--plan", tmp_path / "sim" / "plan.json", "--executor", "ray", "--device", "cpu",
                    "--out", tmp_path / "val", check=False)
    assert proc.returncode == 2 and "--semantics ray" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "val").exists() or not any((tmp_path / "val").iterdir())


def test_without_ray_it_names_the_extra(ray_loop, tmp_path):
    plan = ray_loop[0] / "sim_asha" / "plan.json"
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('ray is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent))
    for args in (["validate", "--plan", plan, "--executor", "ray", "--out", tmp_path / "v"],
                 ["profile", "--gpus", "1", "--launcher", "ray", "--out", tmp_path / "p.json"]):
        proc = subprocess.run([sys.executable, "-m", "nasalloc", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "pip install 'nasalloc[ray]'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
