"""Bad adaptive-policy input to ``nasalloc validate``: one line naming it, exit status 2."""

from __future__ import annotations

import json

import pytest

from .test_errors import _minimal_plan, _run


@pytest.mark.parametrize("extra, expected", [
    (["--which", "best-adaptive"], "has no adaptive policies; simulate it with --policies"),
    (["--policy", "double:3"], "--policy: 'double:3': 3 GPUs is not a placeable count"),
    (["--policy", "fill"], "--policy fill is for synchronous brackets"),
    (["--policy", "shrink:1"], "--policy: 'shrink:1' is not a policy"),
    (["--policy", "double:1,2", "--executor", "ray"], "adaptive policies run with the local or slurm executor"),
])
def test_bad_policy_input_is_one_line_and_status_2(tmp_path, capsys, extra, expected):
    plan = _minimal_plan(tmp_path)
    code, lines = _run(["validate", "--plan", str(plan), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert expected in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("before, now, expected", [
    ("double:1,2", [], "was validated with --policy double:1,2, not none"),
    (None, ["--policy", "double:1,2"], "was validated with no --policy, not --policy double:1,2"),
])
def test_resume_with_another_policy_is_one_line_and_status_2(tmp_path, capsys, before, now, expected):
    plan = _minimal_plan(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    (out / "validation.json").write_text(json.dumps({"plan": str(plan.resolve()), "trial_seeds": "recorded",
                                                     "policy": before}))
    code, lines = _run(["validate", "--plan", str(plan), "--out", str(out), "--resume", *now], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert expected in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["validation.json"]
