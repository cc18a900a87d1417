"""`nasalloc validate --executor slurm` under an adaptive policy (double:1,2) against a real SLURM:
every trial starts as a one-rank job step; a trial the policy resizes checkpoints, and goes on
from its checkpoint as a new two-rank step; nothing that finished runs again."""

import re
import sys

import pytest

from nasalloc.io import read_jsonl

from .conftest import small_plans

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
NASALLOC = [sys.executable, "-m", "nasalloc"]
RUN_DIR = "asha_double-1-2"
ENDS = ("complete", "stop", "fail")
PLACEMENT = re.compile(r"nasalloc slurm_task: rank (\d+)/(\d+) .* step (\d+)\.(\d+)$", re.M)


def step_of_ranks(segment_dir):
    """rank -> (world size, job step) from the rank logs of one segment."""
    out = {}
    for log in sorted(segment_dir.glob("rank*.log")):
        found = PLACEMENT.search(log.read_text(errors="replace"))
        assert found, f"{log} has no placement line"
        rank, world, job, step = map(int, found.groups())
        out[rank] = (world, (job, step))
    return out


def test_a_resized_trial_goes_on_as_a_new_step_with_twice_the_ranks(slurm, tmp_path_factory, tmp_path):
    # budget 2 on a node of 2 GPUs: two one-GPU trials at once; a trial that passes ASHA's rung goes
    # on alone on both GPUs
    plan = small_plans(tmp_path_factory)(2, 2, "1,2", "--policies", "double:1,2")
    out = tmp_path / "validate"
    done = slurm.salloc([*NASALLOC, "validate", "--plan", str(plan), "--which", "best-adaptive", "--device", "cpu",
                         "--executor", "slurm", "--out", str(out)], gpus=2, cpus=2, timeout_s=180)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = out / RUN_DIR
    events = list(read_jsonl(run / "events.jsonl"))
    assert not [e for e in events if e["kind"] == "fail"]
    resized = [e for e in events if e["kind"] == "pause" and e.get("extra", {}).get("resize") == 2]
    assert resized, "no trial was resized"
    steps = set()
    for pause in resized:
        trial = pause["trial_id"]
        mine = [e for e in events if e["trial_id"] == trial]
        opened = [e for e in mine if e["kind"] in ("start", "resume")]
        assert [(e["kind"], e["gpus"], e["extra"]["segment"]) for e in opened] == [("start", 1, 1), ("resume", 2, 2)]
        assert opened[1]["epoch"] == pause["epoch"] == pause["extra"]["checkpoint_epoch"]  # from its checkpoint
        # the ranks' own logs: one rank in the first step, two ranks of one other step after the resize
        first = step_of_ranks(run / "trials" / f"trial_{trial}" / "segment_1")
        second = step_of_ranks(run / "trials" / f"trial_{trial}" / "segment_2")
        assert list(first) == [0] and first[0][0] == 1
        assert sorted(second) == [0, 1] and {w for w, _ in second.values()} == {2}
        assert len({s for _, s in second.values()}) == 1 and second[0][1] != first[0][1]
        steps |= {first[0][1], second[0][1]}
        # training went on: every epoch once, the ones after the resize on two GPUs
        epochs = [e for e in mine if e["kind"] == "epoch"]
        assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
        assert all(e["gpus"] == (1 if e["epoch"] <= pause["epoch"] else 2) for e in epochs)
        assert not any(e.get("extra", {}).get("replay") for e in epochs)
    # every segment of the run was a step of its own
    all_steps = [step_of_ranks(d)[0][1] for d in run.glob("trials/trial_*/segment_*") if d.is_dir()]
    assert len(all_steps) == len(set(all_steps)) and steps <= set(all_steps)
    # nothing finished ran again: one end per trial, nothing opened after it
    for trial in {e["trial_id"] for e in events}:
        kinds = [e["kind"] for e in events if e["trial_id"] == trial]
        assert kinds[0] == "start" and sum(k in ENDS for k in kinds) == 1 and kinds[-1] in ENDS, (trial, kinds)
    assert "policy double:1,2" in done.stdout
