"""Sizes simulate accepts are bounded: above its limit a size is refused up front, naming the
limit, before anything is written."""

import pytest

from .test_simulate_cli import run


@pytest.mark.parametrize("args, expected", [
    (["--budget", "1000000000"], "--budget 1,000,000,000 is above the largest budget nasalloc simulates, 65,536 GPUs"),
    (["--budget", "65537"], "65,536 GPUs"),
    (["--budget", "8", "--seeds", "1001"], "--seeds 1,001 is above the limit of 1,000"),
    (["--budget", "8", "--trials", "5001"], "--trials 5,001 is above the limit of 5,000"),
    (["--budget", "8", "--brackets", "101"], "--brackets 101 is above the limit of 100"),
    (["--budget", "8", "--jobs", "100000"], "--jobs 100,000 is above the limit of 256"),
    (["--budget", "4096", "--gpus-per-trial", "1/64"], "runs 262,144 trials at once; at most 65,536"),
])
def test_sizes_above_the_limits_are_refused_up_front(tmp_path, capsys, args, expected):
    # --budget 1000000000 used to print nothing and grow memory without bound (5.9 GB in 53 s)
    out = tmp_path / "out"
    status, _, stderr = run([*args, "--out", str(out)], capsys)
    assert status == 2 and len(stderr.strip().splitlines()) == 1 and expected in stderr
    assert not out.exists()


def test_the_largest_budget_is_at_least_what_large_hpc_searches_use():
    from nasalloc.simulator.cluster import MAX_BUDGET, make_split

    assert MAX_BUDGET >= 4096
    assert make_split(MAX_BUDGET, 4, 1).parallel_trials == MAX_BUDGET  # the limit itself is placed
