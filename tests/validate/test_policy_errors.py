"""Bad adaptive-policy input to ``nasalloc validate``: one line naming it, exit status 2."""

from __future__ import annotations

import pytest

from .test_errors import _minimal_plan, _run


@pytest.mark.parametrize("extra, expected", [
    (["--which", "best-adaptive"], "has no adaptive policies; simulate it with --policies"),
    (["--policy", "double:3"], "--policy: 'double:3': 3 GPUs is not a placeable count"),
    (["--policy", "fill"], "--policy fill is for synchronous brackets"),
    (["--policy", "shrink:1"], "--policy: 'shrink:1' is not a policy"),
    (["--policy", "double:1,2", "--executor", "ray"], "adaptive policies run with the local or slurm executor"),
    (["--policy", "double:1,2", "--repeats", "2"], "--repeats 2 with an adaptive policy"),
])
def test_bad_policy_input_is_one_line_and_status_2(tmp_path, capsys, extra, expected):
    plan = _minimal_plan(tmp_path)
    code, lines = _run(["validate", "--plan", str(plan), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert expected in lines[0]
    assert not (tmp_path / "o").exists()
