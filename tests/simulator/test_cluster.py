from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasalloc.errors import UserError
from nasalloc.simulator.cluster import default_gpus_per_trial, make_split, parse_gpus_per_trial


@pytest.mark.parametrize("g, slots, nodes", [(1, 64, 1), (2, 32, 1), (4, 16, 1), (8, 8, 2), (64, 1, 16)])
def test_whole_gpu_splits_tile_the_budget(g, slots, nodes):
    split = make_split(64, 4, g)
    assert split.parallel_trials == slots and split.idle_gpus == 0
    assert split.nodes_per_trial == nodes
    for slot in split.slots:
        assert len(slot.gpus) == g
        assert list(slot.gpus) == list(range(slot.gpus[0], slot.gpus[0] + g))  # contiguous
        node_of = {gpu // 4 for gpu in slot.gpus}
        assert len(node_of) == nodes


def test_a_trial_that_fits_a_node_never_straddles_two():
    split = make_split(8, 4, 2)
    assert [s.gpus for s in split.slots] == [(0, 1), (2, 3), (4, 5), (6, 7)]


def test_fractional_split_shares_each_gpu_between_k_trials():
    split = make_split(4, 4, 0.25)
    assert split.parallel_trials == 16 and split.trials_per_gpu == 4
    assert Counter(gpu for s in split.slots for gpu in s.gpus) == {0: 4, 1: 4, 2: 4, 3: 4}


def test_split_that_does_not_fill_the_budget_leaves_gpus_idle():
    split = make_split(48, 4, 32)
    assert split.parallel_trials == 1 and split.idle_gpus == 16
    partial = make_split(6, 4, 4)  # a node of 4 and a partial node of 2
    assert partial.parallel_trials == 1 and partial.idle_gpus == 2
    assert make_split(6, 4, 2).parallel_trials == 3


@pytest.mark.parametrize("budget, g, words", [
    (64, 3, "does not fit a node of 4"), (64, 0.3, "1/k"), (64, 1.5, "whole number"),
    (64, 128, "larger than the budget"), (64, 6, "multiple of 4"), (0, 1, "--budget 0"),
    (-8, 1, "--budget -8"), (64, 0, "> 0"),
])
def test_bad_splits_name_the_value(budget, g, words):
    with pytest.raises(UserError, match=words):
        make_split(budget, 4, g)


def test_parse_gpus_per_trial():
    assert parse_gpus_per_trial("1/4, 0.5,2") == [0.25, 0.5, 2.0]
    with pytest.raises(UserError, match="'x' is not a number"):
        parse_gpus_per_trial("1,x")
    with pytest.raises(UserError, match="not a number"):
        parse_gpus_per_trial("1,")


def test_default_splits_are_powers_of_two_that_place_evenly():
    assert default_gpus_per_trial(64, 4) == [1, 2, 4, 8, 16, 32, 64]
    # fractions only where the profile measured co-location
    assert default_gpus_per_trial(64, 4, {"2": 1.4, "4": 2.5, "3": 2.0}) == [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64]
    assert default_gpus_per_trial(12, 6) == [1, 2]  # 4 does not divide 6, 8 is not a multiple


@settings(max_examples=200, deadline=None)
@given(gpus_per_node=st.sampled_from([1, 2, 4, 6, 8]), budget=st.integers(1, 80), data=st.data())
def test_placement_invariants(gpus_per_node, budget, data):
    candidates = default_gpus_per_trial(budget, gpus_per_node, {"2": 1.5, "4": 3.0})
    g = data.draw(st.sampled_from(candidates))
    split = make_split(budget, gpus_per_node, g)
    uses = Counter(gpu for slot in split.slots for gpu in slot.gpus)
    assert all(0 <= gpu < budget for gpu in uses)
    if g >= 1:
        assert max(uses.values()) == 1  # a GPU is shared only by fractional trials
        assert sum(len(s.gpus) for s in split.slots) <= budget
        for slot in split.slots:
            nodes = {gpu // gpus_per_node for gpu in slot.gpus}
            assert len(nodes) == slot.nodes == max(1, int(g) // gpus_per_node)
    else:
        assert set(uses.values()) == {split.trials_per_gpu}
    assert split.used_gpus + split.idle_gpus == budget
    assert split.parallel_trials >= 1
