"""``double:G0,S`` against RASDA's own resource-allocation function.

tests/fixtures/peer_streams/rasda-doubling.json holds what RASDA's
``res_allocate.successive_resource_doubling`` (olympiquemarcel/rasda, the commit named in the
file) answered after every training iteration of a grid of settings, produced by
bench/peers/make_rasda_stream.py with RASDA and Ray Tune installed. nasalloc's policy is asked
the way both drivers ask it (ASHA's rung ladder, :func:`ask_for` after each result) and must
give a trial the same GPUs after every iteration wherever RASDA's count is one a static split
can place (a power of two within a node or whole nodes, up to the budget); elsewhere (S = 3:
3, 9, 27 GPUs) nasalloc rounds down to the placeable count below, which this test pins too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasalloc.simulator.policies import Policy, ask_for, placeable, rung_ladder
from nasalloc.simulator.schedulers import make_scheduler
from nasalloc.simulator.schedulers.sampling import TableSource

from .simdata import make_table

FIXTURE = Path(__file__).parents[1] / "fixtures" / "peer_streams" / "rasda-doubling.json"
BUDGET, PER_NODE = 4096, 4
STREAM = json.loads(FIXTURE.read_text())


def _rasda_gpus(case) -> list:
    """The trial's GPUs after each iteration under RASDA: its last new allocation, else its start."""
    current, out = case["start_gpus"], []
    for answer in case["gpus_after_iteration"]:
        current = current if answer is None else answer
        out.append(current)
    return out


@pytest.mark.parametrize("case", STREAM["cases"], ids=lambda c: f"{c['min_t']}-{c['max_t']}-s{c['scaling_factor']}"
                                                                f"-g{c['start_gpus']}")
def test_double_gives_the_gpus_rasda_gives(case):
    table = make_table(rows=4, epochs=case["max_t"])
    scheduler = make_scheduler("asha", source=TableSource(table.space, table.configs), max_t=case["max_t"],
                               min_t=case["min_t"], eta=case["scaling_factor"], mode=table.mode, seed=0, trials=4)
    ladder = rung_ladder(scheduler)
    policy = Policy("double", BUDGET, PER_NODE, case["start_gpus"], case["scaling_factor"])
    sizes = placeable(BUDGET, PER_NODE)
    rasda = _rasda_gpus(case)
    exact = 0
    for iteration in range(1, case["max_t"]):  # after the last iteration the trial ends: nothing to give
        ours = policy.gpus(ask_for(scheduler, ladder, 0, ladder[0], iteration))
        theirs = rasda[iteration - 1]
        if theirs in sizes:
            assert ours == theirs, f"after iteration {iteration}: nasalloc {ours} GPUs, RASDA {theirs}"
            exact += 1
        else:
            assert ours == max(s for s in sizes if s <= theirs), f"after iteration {iteration}: {ours} vs {theirs}"
    if case["scaling_factor"] == 2:  # every count is a power of two: compared exactly throughout
        assert exact == case["max_t"] - 1


def test_the_stream_names_its_peer():
    assert STREAM["rasda_commit"].startswith("7977a5c5") and STREAM["ray"] == "2.60.0"
    assert len(STREAM["cases"]) >= 10
