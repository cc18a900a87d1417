"""Bracket and rung tables against the published ones (Li et al., HpBandSter, Ray Tune)."""

import pytest

from nasalloc.errors import UserError
from nasalloc.simulator.schedulers import asha_rungs, hyperband_brackets


def table(text):
    return [[tuple(int(x) for x in rung.split("@")) for rung in bracket.split(",")]
            for bracket in text.replace(" ", "").split("|")]


REFERENCE_HB = table("81@1,27@3,9@9,3@27,1@81 | 34@3,11@9,3@27,1@81 | 15@9,5@27,1@81 |"
                     "8@27,2@81 | 5@81")
REFERENCE_BOHB = table("81@1,27@3,9@9,3@27,1@81 | 27@3,9@9,3@27,1@81 | 9@9,3@27,1@81 |"
                       "6@27,2@81 | 5@81")
RAY = table("81@1,27@3,9@9,3@27,1@81 | 34@3,12@9,4@27,2@81 | 15@9,5@27,2@81 | 8@27,3@81 | 5@81")


def test_reference_hyperband_is_li_et_al_with_floor_halving():
    assert hyperband_brackets(81, 3, 1, "reference", "hyperband") == REFERENCE_HB


def test_reference_bohb_is_hpbandster():
    assert hyperband_brackets(81, 3, 1, "reference", "bohb") == REFERENCE_BOHB


def test_ray_bohb_fills_the_largest_bracket_first():
    assert hyperband_brackets(81, 3, 1, "ray", "bohb") == RAY


def test_ray_hyperband_has_the_same_brackets_filled_smallest_first():
    # HyperBandScheduler.on_trial_add creates bracket s = len(band): s = 0 (5@81) first.
    assert hyperband_brackets(81, 3, 1, "ray", "hyperband") == RAY[::-1]


def test_ray_halves_with_ceil_and_reference_with_floor():
    ray = dict((b[0], b) for b in hyperband_brackets(81, 3, 1, "ray"))[(34, 3)]
    ref = dict((b[0], b) for b in hyperband_brackets(81, 3, 1, "reference"))[(34, 3)]
    assert [n for n, _ in ray] == [34, 12, 4, 2]
    assert [n for n, _ in ref] == [34, 11, 3, 1]


def test_ray_caps_milestones_at_max_t_and_truncates_the_first():
    # max_t=100: r0 = int(100 * 3**-s); the s=4 bracket tops out at 81 as in Ray.
    brackets = hyperband_brackets(100, 3, 1, "ray", "bohb")
    assert [e for _, e in brackets[0]] == [1, 3, 9, 27, 81]
    assert brackets[-1] == [(5, 100)]
    assert all(e <= 100 for b in brackets for _, e in b)


def test_reference_milestones_end_at_max_t_when_not_a_power_of_eta():
    for bracket in hyperband_brackets(100, 3, 1, "reference"):
        epochs = [e for _, e in bracket]
        assert epochs[-1] == 100 and epochs == sorted(set(epochs))


@pytest.mark.parametrize("semantics", ["ray", "reference"])
@pytest.mark.parametrize("algorithm", ["hyperband", "bohb"])
def test_min_t_bounds_the_first_milestone(semantics, algorithm):
    brackets = hyperband_brackets(81, 3, 3, semantics, algorithm)
    assert min(b[0][1] for b in brackets) == 3
    assert len(brackets) == 4


def test_asha_rungs_follow_rays_formula():
    assert asha_rungs(81, 1, 3) == [1, 3, 9, 27, 81]
    assert asha_rungs(100, 1, 4) == [1, 4, 16, 64]
    assert asha_rungs(81, 3, 3) == [3, 9, 27, 81]
    # Ray's float log: log(243)/log(3) = 4.999.. -> 5 rungs; trials still stop at max_t
    assert asha_rungs(243, 1, 3) == [1, 3, 9, 27, 81]


def test_reference_asha_rungs_end_at_max_t():
    assert asha_rungs(100, 1, 4, "reference") == [1, 4, 16, 64, 100]
    assert asha_rungs(243, 1, 3, "reference") == [1, 3, 9, 27, 81, 243]
    assert asha_rungs(81, 1, 3, "reference") == [1, 3, 9, 27, 81]


@pytest.mark.parametrize("kwargs, quoted", [
    (dict(max_t=81, eta=1), "eta=1"),
    (dict(max_t=81, eta=2.5), "eta=2.5"),
    (dict(max_t=0), "max_t=0"),
    (dict(max_t=5, min_t=9), "max_t=5"),
    (dict(max_t=81, semantics="optuna"), "'optuna'"),
    (dict(max_t=81, algorithm="pbt"), "'pbt'"),
])
def test_bad_values_raise_user_error_quoting_them(kwargs, quoted):
    with pytest.raises(UserError, match=quoted.replace(".", r"\.")):
        hyperband_brackets(**kwargs)
