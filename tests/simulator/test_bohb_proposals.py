"""BOHB proposes the same configs, seed for seed, as before its proposals were made cheaper.

The fixture holds the table rows BOHB started, in order, on the shipped digits curves, as the
code before the speed-up (commit 857fbcd: element-wise snapping, per-row imputation, config
vectors rebuilt through ConfigSpace) proposed them: 46 of them model-based in each semantics.
"""

import json
from pathlib import Path

import pytest

from nasalloc.simulator.curvetable import load_curve_table
from nasalloc.simulator.schedulers import TableSource, make_scheduler
from nasalloc.simulator.schedulers.fakeclock import FakeClock

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bohb_proposals.json"


@pytest.mark.parametrize("semantics", ["ray", "reference"])
def test_same_proposals_as_before_the_speed_up(semantics):
    expected = json.loads(FIXTURE.read_text())["streams"][semantics]
    table = load_curve_table(None)
    scheduler = make_scheduler("bohb", source=TableSource(table.space, table.configs), max_t=27, eta=3,
                               semantics=semantics, mode=table.mode, seed=7, brackets=8)
    clock = FakeClock(scheduler, 8, seed=3, fail_prob=0.02).run()
    starts = [entry for entry in clock.log if entry[0] == "start"]
    assert [entry[1] for entry in starts] == expected["trials"]
    assert [dict(entry[3])["_row"] for entry in starts] == expected["rows"]
    assert scheduler.model_based_picks == expected["model_based_picks"] > 0
