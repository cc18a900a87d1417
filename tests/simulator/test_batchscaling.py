"""Curves under another global batch (simulator/batchscaling.py), and the global policy untouched."""

import math

import numpy as np
import pytest

from nasalloc.simulator.batchscaling import (BatchScaling, NoiseScaleCurve, epochs_to_target, scaling_from,
                                             split_prediction, stretch_curve, stretch_factor, stretched_table)
from nasalloc.simulator.sweep import SweepSpec, run_one, _Context

from .simdata import make_table, time_model

CONSTANT = NoiseScaleCurve((1.0,), (100.0,))
GROWING = NoiseScaleCurve((1.0, 9.0, 27.0), (50.0, 200.0, 800.0))


def test_stretch_factor_limits():
    assert stretch_factor(64, 64, 100.0) == pytest.approx(1.0)
    assert stretch_factor(640, 64, 1e-9) == pytest.approx(10.0, rel=1e-6)   # noise-free: B/B0 more epochs
    assert stretch_factor(640, 64, 1e12) == pytest.approx(1.0)              # far below the critical batch
    assert stretch_factor(256, 64, 100.0) == pytest.approx((1 + 2.56) / (1 + 0.64))


def test_noise_scale_is_interpolated_in_log_and_held_outside():
    assert GROWING.at([0.0, 1.0, 5.0, 9.0, 100.0]) == pytest.approx([50, 50, 100, 200, 800])


def test_a_linear_curve_under_a_constant_noise_scale_is_stretched_by_the_factor():
    values = np.arange(1, 28, dtype=float)      # value = recorded epoch
    r = stretch_factor(256, 64, 100.0)
    out = stretch_curve(values, 64, 256, CONSTANT, initial=0.0)
    assert out == pytest.approx(np.arange(1, 28) / r, rel=1e-9)


def test_same_batch_is_the_identity():
    values = np.random.default_rng(0).uniform(0, 1, 20)
    assert np.array_equal(stretch_curve(values, 64, 64, GROWING), values)


@pytest.mark.parametrize("batch", [128, 256, 1024, 4096])
def test_monotone_curves_stay_monotone_and_reach_the_recorded_final_value(batch):
    rng = np.random.default_rng(batch)
    for _ in range(20):
        values = np.cumsum(rng.uniform(0, 0.05, 27)) + 0.1
        longest = int(math.ceil(27 * stretch_factor(batch, 64, 50.0))) + 2
        out = stretch_curve(values, 64, batch, GROWING, initial=0.05, horizon=longest)
        assert np.all(np.diff(out) >= -1e-12)                       # monotone
        assert out.max() == pytest.approx(values[-1])               # the final value, and nothing above it
        assert out[-1] == pytest.approx(values[-1])
        assert np.all(out[:27] <= values + 1e-12)                   # a larger batch is never ahead per epoch
        assert epochs_to_target(out, values[-1] - 1e-12) > epochs_to_target(values, values[-1] - 1e-12)


def _per_gpu(table):
    return BatchScaling(policy="per_gpu", noise=GROWING, batch_key="width")


def test_global_policy_returns_the_very_same_table():
    table = make_table()
    assert stretched_table(table, 8, BatchScaling(policy="global", noise=GROWING, batch_key="width")) is table
    assert stretched_table(table, 8, None) is table
    assert stretched_table(table, 8, BatchScaling(policy="per_gpu", noise=None)) is table  # nothing measured
    assert stretched_table(table, 1, _per_gpu(table)) is table      # one rank: B = B0
    assert stretched_table(table, 0.5, _per_gpu(table)) is table    # sharing a GPU: one rank too


def test_per_gpu_stretches_every_row_for_the_split():
    table = make_table()
    four = stretched_table(table, 4, _per_gpu(table))
    assert four is not table and four.configs == table.configs and np.array_equal(four.rel_cost, table.rel_cost)
    assert np.all(four.val <= table.val + 1e-12) and np.any(four.val < table.val - 1e-3)
    assert np.all(np.diff(four.val, axis=1) >= -1e-12)  # the synthetic curves are monotone
    eight = stretched_table(table, 8, _per_gpu(table))
    assert np.all(eight.val <= four.val + 1e-12)        # more GPUs, larger batch, slower per epoch


def test_scaling_from_a_profile():
    profile = {"workload": {"batch_policy": "per_gpu"},
               "noise_scale": {"points": [{"epoch": 1, "b_noise": 80.0}, {"epoch": 3, "b_noise": None},
                                          {"epoch": 9, "b_noise": 300.0}]}}
    scaling, notes = scaling_from(profile)
    assert scaling.active and scaling.noise.epochs == (1.0, 9.0) and "stretched" in notes[0]
    scaling, notes = scaling_from(profile, "global")
    assert not scaling.active and scaling.key() == "" and notes == []
    scaling, notes = scaling_from({"workload": {"batch_policy": "per_gpu"}})
    assert not scaling.active and "no noise_scale" in notes[0]


def test_split_prediction_of_the_reference_row():
    table = make_table()
    table.reference_row = 0
    scaling = _per_gpu(table)
    one = split_prediction(table, 1, scaling, 0.01)
    many = split_prediction(table, 64, scaling, 0.01)
    assert one["epochs_to_target"] == one["epochs_to_target_recorded"]
    assert many["global_batch"] == 64 * table.configs[0]["width"]
    assert many["epochs_to_target"] > one["epochs_to_target"]
    assert many["past_critical_batch"] == (many["global_batch"] > 800.0)
    assert split_prediction(table, 4, BatchScaling(policy="global", noise=GROWING), 0.01) is None


@pytest.mark.parametrize("algorithm", ["hyperband", "asha", "bohb"])
def test_global_policy_records_identical_to_without_the_feature(algorithm):
    """The same runs with the feature absent, and with a measured noise scale under the global
    policy: rows and event records are identical."""
    table = make_table(epochs=9)
    spec = SweepSpec(budget=8, gpus_per_node=4, splits=(1.0, 4.0), algorithms=(algorithm,), seeds=(0,), max_t=9)
    off = _Context(spec, time_model(), table, table.space)
    global_policy = _Context(spec, time_model(), table, table.space,
                             scaling=BatchScaling(policy="global", noise=GROWING, batch_key="width"))
    on = _Context(spec, time_model(), table, table.space, scaling=_per_gpu(table))
    for g in (1.0, 4.0):
        row_off, events_off = run_one(off, algorithm, g, 0, True)
        row_global, events_global = run_one(global_policy, algorithm, g, 0, True)
        assert row_off == row_global and events_off == events_global
    row_on, _ = run_one(on, algorithm, 4.0, 0, True)
    assert row_on != row_off  # per_gpu at 4 GPUs does change what the search sees


def test_the_sweep_key_is_unchanged_without_batch_scaling():
    spec = SweepSpec(budget=8, gpus_per_node=4, splits=(1.0,), algorithms=("asha",), seeds=(0,), max_t=9)
    import dataclasses
    import hashlib
    import json

    fields = dataclasses.asdict(spec)
    for name in ("seeds", "splits", "algorithms", "batch_scaling", "allocation"):  # both empty: as before either
        fields.pop(name)
    assert spec.key == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert dataclasses.replace(spec, batch_scaling="abc").key != spec.key
    assert dataclasses.replace(spec, allocation="{}").key != spec.key


def test_a_curve_continued_at_the_same_batch_is_the_stretched_curve():
    """ResizedCurves from position 0, or continued midway at the same batch, gives exactly what
    stretched_table gives a trial that keeps one batch all its life."""
    from nasalloc.simulator.batchscaling import ResizedCurves

    table = make_table()
    curves = ResizedCurves(table, _per_gpu(table))
    for g in (1, 2, 8):
        whole = stretched_table(table, g, _per_gpu(table))
        for row in range(5):
            positions, val, test = curves.continue_row(row, g, 0, 0.0)
            assert val == whole.val[row].tolist() and test == whole.test[row].tolist()
            rest = curves.continue_row(row, g, 9, positions[8])
            assert rest[1] == pytest.approx(val[9:], abs=1e-12) and rest[0] == pytest.approx(positions[9:])


def test_a_resized_trial_continues_from_where_its_smaller_batch_left_it():
    from nasalloc.simulator.batchscaling import ResizedCurves

    table = make_table()
    scaling = _per_gpu(table)
    curves = ResizedCurves(table, scaling)
    row = 3
    one = curves.continue_row(row, 1, 0, 0.0)
    four = curves.continue_row(row, 4, 0, 0.0)
    resized = curves.continue_row(row, 4, 3, one[0][2])     # 3 epochs on 1 GPU, then 4 GPUs
    assert one[0][:3] == [1.0, 2.0, 3.0] and one[1][:3] == table.val[row, :3].tolist()
    # each epoch at the 4x batch advances less than one recorded epoch, from u = 3 on
    steps = np.diff([3.0] + resized[0])
    assert np.all(steps < 1.0) and np.all(steps > 0.0)
    assert np.all(np.array(resized[1]) <= table.val[row, 3:] + 1e-12)       # behind the one-GPU curve
    assert np.all(np.array(resized[1]) >= np.array(four[1][3:]) - 1e-12)    # ahead of a 4-GPU life
