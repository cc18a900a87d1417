"""`nasalloc export --format ray-tune`: the planned search as a Ray Tune script that cannot rot."""

import ast
import json
import subprocess
import sys

import pytest

from nasalloc.cli import main
from nasalloc.simulator.schedulers import SpaceSource, make_scheduler

from .simdata import write_trace



@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    trace = folder / "trace.csv"
    write_trace(trace, rows=30, epochs=9)
    out = folder / "sim"
    try:
        main(["simulate", "--budget", "4", "--curves", str(trace), "--out", str(out), "--seeds", "3",
              "--jobs", "1", "--quiet", "--gpus-per-trial", "1,2,4"])
    except SystemExit as exit_:
        assert not exit_.code
    return out / "plan.json"


def constants(text: str) -> dict:
    """The module-level constants of the generated script, read by parsing it."""
    tree = ast.parse(text)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(isinstance(t, (ast.Name, ast.Tuple)) for t in node.targets):
            target = node.targets[0]
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(target, ast.Tuple):
                out.update({n.id: v for n, v in zip(target.elts, value)})
            else:
                out[target.id] = value
    return out


@pytest.mark.parametrize("algorithm, scheduler_class", [("asha", "ASHAScheduler"),
                                                        ("hyperband", "HyperBandScheduler"),
                                                        ("bohb", "HyperBandForBOHB")])
def test_the_script_holds_what_the_plan_simulated(plan, tmp_path, nasalloc_cli, algorithm, scheduler_class):
    data = json.loads(plan.read_text())
    entry = data["algorithms"][algorithm]
    out = tmp_path / "search.py"
    status, stdout, stderr = nasalloc_cli(["export", "--plan", str(plan), "--algorithm", algorithm, "--out", str(out)])
    assert status == 0, stderr
    assert out.read_text() == stdout
    compile(stdout, str(out), "exec")
    values = constants(stdout)
    assert values["METRIC"] == data["metric"]["name"] and values["MODE"] == data["metric"]["mode"]
    assert (values["MAX_T"], values["ETA"]) == (entry["scheduler"]["max_t"], entry["scheduler"]["eta"])
    assert values["GPUS_PER_TRIAL"] == entry["best"]["gpus_per_trial"] and values["BUDGET"] == 4
    # as many trials as the simulated search created: what Ray semantics' scheduler counts
    params = {k: v for k, v in entry["scheduler"].items() if k != "algorithm"}
    built = make_scheduler(algorithm, source=SpaceSource(json_space(values)), seed=0, **params)
    expected = built.trials_limit if algorithm == "asha" else built._bands.trials_limit
    assert values["NUM_SAMPLES"] == expected
    assert f"{scheduler_class}(time_attr=\"training_iteration\", max_t={values['MAX_T']}" in stdout
    assert "max_concurrent_trials" not in stdout.split("tune.TuneConfig(")[1].split(")")[0]
    hours = entry["best"]["makespan_s"] / 3600
    assert f"Predicted makespan: {hours:.2f} h" in stdout


def json_space(values):
    from ConfigSpace import ConfigurationSpace

    return ConfigurationSpace.from_serialized_dict(json.loads(values["SPACE_JSON"]))


@pytest.mark.parametrize("args, words", [
    (["--split", "3"], "has no such split"),
    (["--split", "fast"], "--split 'fast'"),
    (["--algorithm", "pbt"], "--algorithm 'pbt'"),
    (["--out", "/etc/hostname/x.py"], "/etc/hostname is a file, not a folder"),
])
def test_bad_export_requests_are_one_line(plan, nasalloc_cli, args, words):
    status, stdout, stderr = nasalloc_cli(["export", "--plan", str(plan), *args])
    assert status == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], stderr


def test_a_plan_that_is_not_one_is_refused(tmp_path, nasalloc_cli):
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"schema": "something"}))
    status, _, stderr = nasalloc_cli(["export", "--plan", str(bad)])
    assert status == 2 and "no algorithms" in stderr


@pytest.mark.slow
def test_the_exported_asha_search_runs_in_ray_tune(plan, tmp_path, nasalloc_cli):
    """Where Ray Tune is installed: the generated script's dry run (virtual GPUs) finishes."""
    pytest.importorskip("ray.tune", reason="Ray Tune is not installed (pip install 'nasalloc[ray]')")
    out = tmp_path / "search.py"
    assert nasalloc_cli(["export", "--plan", str(plan), "--algorithm", "asha", "--out", str(out)])[0] == 0
    done = subprocess.run([sys.executable, str(out), "--demo"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={"RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin",
                                             "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best " in done.stdout
