"""The scaling-model fit on synthetic measurements with known parameters."""


import numpy as np
import pytest

from nasalloc.profiler.fit import (colocation_slowdowns, epoch_cv, fit_profile, identifiable_columns,
                                   points_from_measurements, Point)
from nasalloc.simulator.scaling import ScalingModel


def measured(model, gpus, nodes=None, repeats=3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    nodes = nodes or [1] * len(gpus)
    return [{"gpus": g, "kind": "ddp", "nodes": n, "repeat": 0,
             "epoch_seconds": list(model.epoch_seconds(g, n) * (1 + noise * rng.standard_normal(repeats)))}
            for g, n in zip(gpus, nodes)]


TRUE = ScalingModel(t_fixed=0.5, t_compute=10.0, s0=0.3, s1=0.05)


def test_recovers_known_linear_parameters_and_holds_the_rest():
    model, report = fit_profile(measured(TRUE, [1, 2, 4, 8, 16]))
    for name in ("t_fixed", "t_compute", "s0", "s1"):
        assert getattr(model, name) == pytest.approx(getattr(TRUE, name), rel=1e-6)
    assert model.gamma == 1.0 and model.inter_node == 1.0
    assert model.fixed == ["gamma", "inter_node"]
    assert report["kind"] == "nnls-linear" and report["r2"] == pytest.approx(1.0)
    assert (model.measured_min_gpus, model.measured_max_gpus) == (1, 16)
    assert model.extrapolated(32) and not model.extrapolated(4)
    # gamma was tried (5 points) and lost to gamma = 1 out of sample
    assert report["gamma_loo_rel_error"]["1.0"] == min(report["gamma_loo_rel_error"].values())


def test_leave_one_out_numbers_are_refits_without_the_point():
    model, report = fit_profile(measured(TRUE, [1, 2, 4, 8, 16]))
    points = report["points"]
    # Without g=1 the data cannot tell t_fixed from s0 (both constant for g > 1), so that
    # refit must miss g=1; the interior points are predicted exactly by the 4-point refits.
    assert points[0]["loo_rel_error"] > 0.01
    for p in points[1:4]:
        assert p["loo_rel_error"] == pytest.approx(0.0, abs=1e-6)
    errors = [p["loo_rel_error"] for p in points]
    assert report["loo_rel_error"] == pytest.approx(np.mean(errors))
    assert report["loo_max_rel_error"] == pytest.approx(max(errors))


def test_two_points_fit_compute_and_sync_and_loo_extrapolates_from_one():
    truth = ScalingModel(t_compute=2.0, s0=0.4)
    model, report = fit_profile(measured(truth, [1, 2]))
    assert model.t_compute == pytest.approx(2.0) and model.s0 == pytest.approx(0.4)
    assert set(model.fixed) == {"t_fixed", "s1", "gamma", "inter_node"}
    # leaving g=2 out leaves t_compute alone: predicts 1.0 s where 1.4 s was measured
    g2 = report["points"][1]
    assert g2["loo_predicted_s"] == pytest.approx(1.0)
    assert g2["loo_rel_error"] == pytest.approx(0.4 / 1.4)


def test_one_point_has_no_r2_or_loo_and_says_why():
    model, report = fit_profile([{"gpus": 1, "kind": "ddp", "nodes": 1, "epoch_seconds": [2.0, 2.2]}])
    assert model.t_compute == pytest.approx(2.1) and model.fixed == ["t_fixed", "s0", "s1", "gamma", "inter_node"]
    assert report["r2"] is None and "at least two" in report["r2_reason"]
    assert report["loo_rel_error"] is None and "at least two" in report["loo_reason"]


def test_identifiable_columns_skip_collinear_parameters():
    points = [Point(g, 1, [1.0]) for g in (2, 4, 8)]
    # for g > 1 the t_fixed column equals the s0 column: s1 is identified instead
    assert identifiable_columns(points) == ["t_compute", "s0", "s1"]
    assert identifiable_columns([Point(1, 1, [1.0])]) == ["t_compute"]


def test_gamma_is_chosen_when_the_data_overlap_compute_and_sync():
    truth = ScalingModel(t_fixed=0.2, t_compute=8.0, s0=0.5, s1=0.1, gamma=3.0)
    model, report = fit_profile(measured(truth, [1, 2, 3, 4, 6, 8, 16]))
    assert model.gamma > 1 and report["kind"] == "pollux" and "gamma" not in model.fixed
    assert report["loo_rel_error"] < report["gamma_loo_rel_error"]["1.0"]
    for g in (1, 2, 5, 12, 16):
        assert model.epoch_seconds(g) == pytest.approx(truth.epoch_seconds(g), rel=0.03)


def test_inter_node_is_fitted_only_from_multi_node_points():
    truth = ScalingModel(t_fixed=0.5, t_compute=10.0, s0=0.3, s1=0.05, inter_node=3.0)
    gpus, nodes = [1, 2, 4, 8, 8, 16], [1, 1, 1, 1, 2, 2]
    model, report = fit_profile(measured(truth, gpus, nodes))
    assert model.inter_node == pytest.approx(3.0, rel=1e-3)
    assert "inter_node" in report["fitted"] and "inter_node" not in model.fixed
    assert model.epoch_seconds(16, 2) == pytest.approx(truth.epoch_seconds(16, 2), rel=1e-3)


def test_noisy_data_gives_r2_below_one_and_fit_near_truth():
    model, report = fit_profile(measured(TRUE, [1, 2, 4, 8], repeats=6, noise=0.03, seed=3))
    assert 0.9 < report["r2"] < 1.0
    assert 0 < report["loo_rel_error"] < 0.2
    assert model.epoch_seconds(4) == pytest.approx(TRUE.epoch_seconds(4), rel=0.05)
    cv = epoch_cv(measured(TRUE, [1, 2, 4, 8], repeats=6, noise=0.03, seed=3))
    assert 0.01 < cv < 0.06


def test_colocation_slowdown_is_per_trial_epoch_over_alone():
    ms = measured(TRUE, [1, 2]) + [
        {"gpus": 0.5, "kind": "colocated", "trials_per_gpu": 2, "epoch_seconds": [12.6, 13.6, 13.0, 13.2]},
        {"gpus": 0.25, "kind": "colocated", "trials_per_gpu": 4, "epoch_seconds": [26.0] * 8},
    ]
    model, _ = fit_profile(ms)
    alone = TRUE.epoch_seconds(1)
    assert model.colocation == pytest.approx({"2": 13.1 / alone, "4": 26.0 / alone})
    assert model.measured_min_gpus == 0.25
    assert model.epoch_seconds(0.5) == pytest.approx(13.1, rel=1e-6)
    assert colocation_slowdowns(ms, None) == {}


def test_fitted_model_round_trips_through_the_simulator_form():
    model, _ = fit_profile(measured(TRUE, [1, 2, 4, 8]))
    again = ScalingModel.from_dict(model.to_dict())
    for g in (1, 2, 3, 8, 32):
        assert again.epoch_seconds(g) == pytest.approx(model.epoch_seconds(g))


def test_points_group_repeats_and_ignore_colocated_runs():
    ms = measured(TRUE, [1, 2]) + measured(TRUE, [2]) + [
        {"gpus": 0.5, "kind": "colocated", "trials_per_gpu": 2, "epoch_seconds": [1.0]}]
    points = points_from_measurements(ms)
    assert [(p.gpus, len(p.epochs)) for p in points] == [(1.0, 3), (2.0, 6)]


def test_no_measurement_is_an_error():
    with pytest.raises(ValueError, match="no DDP measurement"):
        fit_profile([])
