"""The chain of SLURM jobs a plan under an allocation model assumes: text pinned, numbers from the plan."""

import json
import os
from pathlib import Path

import pytest

from nasalloc.validate.chain import chain_jobs, chain_script, predicted_allocations

GOLDEN = Path(__file__).parent / "golden"
REFERENCE_PLAN = Path(__file__).resolve().parents[2] / "results" / "reference" / "simulate_default" / "plan.json"
MODEL = {"time_limit_s": 3600.0, "signal_lead_s": 300.0, "grace_s": 60.0, "requeue_wait_s": 0.0,
         "requeue_spread_s": 0.0, "node_mtbf_h": None, "checkpoint_every": None, "max_restarts": 3}


def test_the_chain_script_matches_its_golden_file():
    text = chain_script("results/validate/validate.sbatch", 3, "The plan predicts 1.90 allocation(s).")
    golden = GOLDEN / "submit_chain_3.sh"
    if os.environ.get("NASALLOC_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_predicted_allocations_come_from_the_validated_splits_compute_time():
    plan = {"allocation": MODEL, "algorithms": {
        "asha": {"best": {"compute_s": 3300.0 * 1.5}, "worst": {"compute_s": 3300.0 * 2}},
        "bohb": {"best": {"compute_s": 3300.0}, "worst": {"compute_s": 3300.0}}}}
    assert predicted_allocations(plan) == pytest.approx(5.5)
    assert predicted_allocations(plan, ["asha"]) == pytest.approx(3.5)
    assert chain_jobs(plan, None) == 6 + 1 and chain_jobs(plan, 2) == 2
    assert predicted_allocations({"algorithms": {}}) is None and chain_jobs({"algorithms": {}}, None) is None
    # each allocation's start-up (simulate --allocation-start) leaves less of it to train
    started = {**plan, "allocation": {**MODEL, "allocation_start_s": 1100.0}}
    assert predicted_allocations(started, ["bohb"]) == pytest.approx(3.0)


def _plan_with_model(tmp_path) -> Path:
    plan = json.loads(REFERENCE_PLAN.read_text())
    plan["allocation"] = {**MODEL, "signal_lead_s": 600.0, "grace_s": 120.0, "description": "test"}
    for entry in plan["algorithms"].values():
        for which in ("best", "worst"):
            entry[which]["compute_s"] = 3000.0
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def _sbatch(tmp_path, capsys, plan, *extra):
    from nasalloc.cli import main

    out = tmp_path / "validate"
    try:
        main(["sbatch", "--plan", str(plan), "--out", str(out), *extra])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr(), out


def test_a_plan_under_a_time_limit_gets_its_limit_lead_grace_and_chain(tmp_path, capsys):
    plan = _plan_with_model(tmp_path)
    code, captured, out = _sbatch(tmp_path, capsys, plan, "--algorithms", "asha")
    assert code == 0, captured.err
    script = (out / "validate.sbatch").read_text()
    assert "#SBATCH --time=01:00:00" in script and "#SBATCH --signal=B:TERM@600" in script
    assert "#SBATCH --requeue" in script and " --grace 120 " in script and " --time-limit 3000 " in script
    chain = (out / "submit_chain.sh").read_text()
    # asha best + worst: 6000 s of compute over 3000 s a allocation trains: 2, plus a spare
    assert "chain of 3 SLURM job(s)" in chain and "--dependency=afterany:" in chain
    assert os.access(out / "submit_chain.sh", os.X_OK)
    assert "3 chained job(s)" in captured.out


def test_without_a_model_no_chain_is_written_unless_asked(tmp_path, capsys):
    code, captured, out = _sbatch(tmp_path, capsys, REFERENCE_PLAN)
    assert code == 0 and not (out / "submit_chain.sh").exists()
    assert "#SBATCH --signal=B:TERM@300" in (out / "validate.sbatch").read_text()
    code, captured, out = _sbatch(tmp_path, capsys, REFERENCE_PLAN, "--chain", "4")
    assert code == 0 and "chain of 4 SLURM job(s)" in (out / "submit_chain.sh").read_text()


@pytest.mark.parametrize("chain", ["0", "101"])
def test_a_bad_chain_length_is_one_line_and_writes_nothing(tmp_path, capsys, chain):
    code, captured, out = _sbatch(tmp_path, capsys, REFERENCE_PLAN, "--chain", chain)
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"--chain {chain}" in lines[0]
    assert not out.exists()
