"""The sbatch script for a plan: exact text pinned by a golden file, and its arithmetic."""

import os
import stat
from pathlib import Path

import pytest

from nasalloc.errors import UserError
from nasalloc.validate.sbatch import (SbatchRequest, format_time_limit, parse_time_limit, plan_shape,
                                      request_from_plan, sbatch_script, validate_command, write_sbatch)

GOLDEN = Path(__file__).parent / "golden"
# The parts of a plan.json the script reads (simulator/report.py writes the whole thing).
PLAN = {"schema": "nasalloc.plan/1", "budget": 8, "gpus_per_node": 4,
        "algorithms": {"asha": {"best": {"gpus_per_trial": 1, "makespan_s": 1800.0},
                                "worst": {"gpus_per_trial": 8, "makespan_s": 4200.0}}}}


def golden_request():
    command = validate_command("results/simulate/plan.json", "results/validate", ["--device", "cuda"],
                               program=["/home/ada/venv/bin/python", "-m", "nasalloc"])
    return request_from_plan(PLAN, command, cpus_per_task=8, output="results/validate/slurm-%j.out",
                             partition="gpu", chdir="/home/ada/search",
                             resume_marker="results/validate/validation.json")


def test_the_script_matches_its_golden_file():
    text = sbatch_script(golden_request())
    golden = GOLDEN / "validate_2x4.sbatch"
    if os.environ.get("NASALLOC_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_plan_sets_the_shape_and_the_predictions_the_time():
    request = golden_request()
    assert (request.nodes, request.gpus_per_node) == (2, 4)
    # (1800 + 4200) s predicted x 1.5 margin + the 300 s signal lead
    assert request.time_s == 6000 * 1.5 + 300
    assert request.command[-2:] == ["--executor", "slurm"]
    assert plan_shape({"budget": 2, "gpus_per_node": 4}) == (1, 2)  # a budget under a node asks for it only
    assert plan_shape({"budget": 12, "gpus_per_node": 8}) == (2, 8)
    short = request_from_plan({"budget": 1, "gpus_per_node": 1}, ["x"])
    assert short.time_s == 15 * 60  # never less than 15 minutes
    assert request_from_plan(PLAN, ["x"], time_limit="1-00:00:00").time_s == 86400


def test_time_limits_round_trip_in_slurm_formats():
    assert [parse_time_limit(t) for t in ("90", "30:15", "02:00:00", "1-2", "1-02:30", "1-12:00:00")] == \
        [5400, 1815, 7200, 93600, 95400, 129600]
    assert format_time_limit(5400) == "01:30:00" and format_time_limit(61) == "00:02:00"
    assert format_time_limit(129600) == "1-12:00:00"


@pytest.mark.parametrize("bad", ["", "2h", "0", "1:2:3:4", "-5"])
def test_a_bad_time_limit_is_a_user_error(bad):
    with pytest.raises(UserError, match="--time"):
        parse_time_limit(bad)


def test_bad_requests_are_refused():
    with pytest.raises(UserError, match="signal-lead 600 s.*shorter than the time limit"):
        SbatchRequest(command=["x"], nodes=1, gpus_per_node=1, time_s=600, signal_lead_s=600)
    with pytest.raises(UserError, match="nodes must be a whole number >= 1"):
        SbatchRequest(command=["x"], nodes=0, gpus_per_node=1, time_s=900)
    with pytest.raises(UserError, match="no budget"):
        plan_shape({"schema": "nasalloc.profile/1"})


def test_the_written_script_is_executable(tmp_path):
    path = write_sbatch(tmp_path / "run" / "validate.sbatch", sbatch_script(golden_request()))
    assert path.read_text().startswith("#!/bin/bash\n")
    assert path.stat().st_mode & stat.S_IXUSR


REFERENCE_PLAN = Path(__file__).resolve().parents[2] / "results" / "reference" / "simulate_default" / "plan.json"


def _sbatch(tmp_path, capsys, *extra):
    from nasalloc.cli import main

    out = tmp_path / "validate"
    with pytest.raises(SystemExit) as exit_info:
        main(["sbatch", "--plan", str(REFERENCE_PLAN), "--out", str(out), *extra])
    return exit_info.value.code, capsys.readouterr(), out


@pytest.mark.parametrize("extra, expected", [
    (["--which", "3"], "3 GPUs per trial was not simulated"),
    (["--algorithms", "bohb,nope"], "'nope' is not in the plan"),
    (["--partition", "gpu\n#SBATCH --exclusive"], "contains '\\n'"),
    (["--partition", "gpu --exclusive"], "--partition 'gpu --exclusive' contains ' '"),
    (["--account", "a;rm"], "contains ';'"),
    (["--job-name", "x\ry"], "contains '\\r'"),
    (["--which", "best\nrm -rf ~"], "contains '\\n'"),
])
def test_what_the_job_would_fail_on_or_would_change_the_script_is_refused(tmp_path, capsys, extra, expected):
    # before: a script was written that failed only when the job started, or that held an
    # extra #SBATCH line the user never asked for
    code, captured, out = _sbatch(tmp_path, capsys, *extra)
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not out.exists()


def test_the_script_runs_this_interpreter_by_absolute_path(tmp_path, capsys, monkeypatch):
    import sys

    from nasalloc.cli import main

    monkeypatch.chdir(tmp_path)
    main(["sbatch", "--plan", str(REFERENCE_PLAN), "--out", "v", "--which", "best", "--partition", "gpu"])
    last = (tmp_path / "v" / "validate.sbatch").read_text().strip().splitlines()[-1]
    assert last.startswith(f"exec {os.path.abspath(sys.executable)} -m nasalloc validate ")
    assert os.path.isabs(last.split()[1])  # no PATH lookup on the compute node
