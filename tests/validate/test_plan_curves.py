"""A plan finds the curves it was simulated with, and refuses curves that changed since."""

import pytest

from nasalloc.errors import UserError
from nasalloc.validate.plan import Plan



def write_trace(path, rows: int, epochs: int, seed: int = 0) -> None:
    """The first ``rows`` digits configs of the shipped benchmark, ``epochs`` long; ``seed``
    shifts the metric so the file differs."""
    from nasalloc.data import data_path
    from nasalloc.trace import DEFAULT_CURVES, read_trace, write_trace as write

    frame = read_trace(data_path(DEFAULT_CURVES))
    frame = frame[(frame["trial_id"] < rows) & (frame["epoch"] <= epochs)].copy()
    frame["val_metric"] = frame["val_metric"] * (1 - seed / 100)
    write(path, frame)


def test_changed_or_missing_curves_are_one_line_naming_them(tmp_path, nasalloc_cli):
    trace = tmp_path / "trace.csv"
    write_trace(trace, rows=20, epochs=9)
    out = tmp_path / "sim"
    status, _, stderr = nasalloc_cli(["simulate", "--budget", "2", "--curves", trace, "--out", out, "--seeds", "1",
                                      "--jobs", "1", "--quiet", "--algorithms", "asha"])
    assert status == 0, stderr
    assert Plan(out / "plan.json").table().rows == 20
    write_trace(trace, rows=20, epochs=9, seed=5)
    with pytest.raises(UserError, match=f"curves {trace} changed since the simulation"):
        Plan(out / "plan.json").table()
    trace.unlink()
    with pytest.raises(UserError, match="are not found"):
        Plan(out / "plan.json").table()


def test_the_plan_trains_with_the_batch_policy_it_was_profiled_with():
    from types import SimpleNamespace

    from nasalloc.validate.plan import Plan

    plan = SimpleNamespace(workload="digits", profile={"workload": {"batch_policy": "per_gpu"}})
    assert Plan.workload_spec.fget(plan) == {"name": "digits", "options": {"batch_policy": "per_gpu"}}
    plan.profile = {"workload": {"batch_policy": "global"}}
    assert Plan.workload_spec.fget(plan) == "digits"  # as before: the name alone


def test_the_report_says_the_learning_rate_rule_of_a_per_gpu_plan():
    from types import SimpleNamespace

    from nasalloc.validate.cli import _lr_rule_note

    per_gpu = SimpleNamespace(workload={"name": "digits", "options": {"batch_policy": "per_gpu"}})
    per_gpu.workload_spec = per_gpu.workload
    note = _lr_rule_note(per_gpu)
    assert "x n" not in note and "(SGD) or sqrt(n) (Adam), RASDA's rule" in note
    plain = SimpleNamespace(workload_spec="digits")
    assert _lr_rule_note(plain) is None  # the global batch does not grow: nothing to say
