"""A user's mistake ends ``nasalloc validate`` with one line and exit status 2."""

from __future__ import annotations

import json

import pytest

from nasalloc.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err.strip().splitlines()


def test_missing_plan_is_one_line_and_status_2(tmp_path, capsys):
    code, lines = _run(["validate", "--plan", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(lines) == 1
    assert "plan not found" in lines[0] and "nope.json" in lines[0]


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"schema": "other/1"}), "schema 'other/1'"),
    (json.dumps({"schema": "nasalloc.plan/1", "budget": 2}), "missing field 'gpus_per_node'"),
    (json.dumps({"schema": "nasalloc.plan/1", "budget": "x"}), "field 'budget' is 'x'"),
])
def test_malformed_plan_is_one_line_and_status_2(tmp_path, capsys, content, expected):
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    code, lines = _run(["validate", "--plan", str(plan), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and len(lines) == 1
    assert expected in lines[0]
    assert not (tmp_path / "o").exists()  # nothing written for a bad plan


def _minimal_plan(tmp_path):
    entry = {"scheduler": {"algorithm": "asha", "max_t": 3, "eta": 3, "trials": 1},
             "best": {"gpus_per_trial": 1.0}, "worst": {"gpus_per_trial": 2.0},
             "splits": [{"gpus_per_trial": 1.0}, {"gpus_per_trial": 2.0}], "events": {"seed": 0}}
    plan = {"schema": "nasalloc.plan/1", "budget": 2, "gpus_per_node": 2, "workload": "digits",
            "metric": {"name": "accuracy", "mode": "max"}, "profile": {"content": {}},
            "curves": {"path": str(tmp_path / "missing.csv"), "sha256": "0"}, "scheduler": {"max_t": 3},
            "algorithms": {"asha": entry}}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.parametrize("extra, expected", [
    (["--algorithms", "bohb"], "'bohb' is not in the plan"),
    (["--which", "3"], "3 GPUs per trial was not simulated"),
    (["--which", "fastest"], "'fastest' is not best, worst, all"),
    (["--time-limit", "0"], "--time-limit 0"),
    (["--repeats", "0"], "--repeats 0 must be a whole number from 1 to 100"),
    (["--checkpoint-every", "0"], "--checkpoint-every 0"),
    (["--max-restarts", "-2"], "--max-restarts -2"),
    (["--executor", "ray", "--checkpoint-every", "2"], "--checkpoint-every 2: the local and slurm executors' rules; --executor ray leaves checkpoints and restarts to Ray Tune"),
    (["--executor", "ray", "--max-restarts", "1"], "--max-restarts 1: the local and slurm executors' rules; --executor ray leaves checkpoints and restarts to Ray Tune"),
    (["--resume"], "holds no validation to resume"),
    ([], "curves"),  # the plan's curves are gone
])
def test_bad_options_are_one_line_and_status_2(tmp_path, capsys, extra, expected):
    plan = _minimal_plan(tmp_path)
    code, lines = _run(["validate", "--plan", str(plan), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and len(lines) == 1
    assert expected in lines[0]


def test_unknown_executor_names_the_choices(tmp_path, capsys):
    from nasalloc.errors import UserError
    from nasalloc.validate.executor import make_executor

    with pytest.raises(UserError, match="executor 'nope' is not available.*local"):
        make_executor("nope", device="cpu")


def _reference_plan_with(tmp_path, **changes):
    from pathlib import Path

    reference = Path(__file__).resolve().parents[2] / "results" / "reference" / "simulate_default" / "plan.json"
    plan = json.loads(reference.read_text())
    for dotted, value in changes.items():
        node = plan
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


@pytest.mark.parametrize("change, expected", [
    ({"profile.content": {"schema": "nasalloc.profile/1"}}, "missing field 'model'"),
    ({"workload": "nope_module:factory"}, "cannot import module 'nope_module'"),
])
def test_a_plan_with_a_bad_profile_or_workload_writes_nothing(tmp_path, capsys, change, expected):
    # Nothing of the run may be written before every input is checked: a validation.json left
    # behind would make the corrected rerun demand --resume although nothing ran.
    plan = _reference_plan_with(tmp_path, **change)
    out = tmp_path / "o"
    code, lines = _run(["validate", "--plan", str(plan), "--out", str(out), "--device", "cpu"], capsys)
    assert code == 2 and len(lines) == 1
    assert expected in lines[0]
    assert not out.exists()


def test_a_run_refused_after_taking_the_lock_gives_it_back(tmp_path, capsys, monkeypatch):
    # the second look at --out (under the lock) refuses: the lock must not stay taken, or the
    # next run in this process would be told the folder is in use (by itself)
    import nasalloc.validate.cli as validate_cli
    from nasalloc.errors import UserError

    plan = _reference_plan_with(tmp_path, budget=2, gpus_per_node=2,
                                **{f"algorithms.{a}.{field}": value for a in ("hyperband", "asha", "bohb")
                                   for field, value in (("best", {"gpus_per_trial": 1.0}),
                                                        ("worst", {"gpus_per_trial": 2.0}),
                                                        ("splits", [{"gpus_per_trial": 1.0},
                                                                    {"gpus_per_trial": 2.0}]))})
    out = tmp_path / "o"
    looks = []

    def check_out(*args):
        looks.append(args)
        if len(looks) % 2 == 0:
            raise UserError("a validation began meanwhile")

    monkeypatch.setattr(validate_cli, "_check_out", check_out)
    for _ in range(2):
        code, lines = _run(["validate", "--plan", str(plan), "--out", str(out), "--device", "cpu",
                            "--algorithms", "asha"], capsys)
        assert code == 2 and lines == ["nasalloc: error: a validation began meanwhile"]
    assert len(looks) == 4 and not (out / "validation.json").exists()
