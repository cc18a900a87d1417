"""The runner's per-epoch round trip and start-up noise in the time model and the engine."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from nasalloc.simulator.engine import simulate
from nasalloc.simulator.timemodel import time_model_from_profile

from .simdata import make_table, scheduler, split, time_model

EPOCH = 10.0


def test_the_round_trip_is_charged_after_every_epoch():
    table = make_table(rows=30, epochs=9)
    plain, charged = time_model(EPOCH, startup_s=7.0), time_model(EPOCH, startup_s=7.0)
    charged.overheads["roundtrip_s"] = 0.5
    runs = [simulate(scheduler("asha", table, max_t=9, semantics="reference", trials=12),
                     split(1, 1, gpus_per_node=1), model, table) for model in (plain, charged)]
    epochs = Counter(e.kind for e in runs[1].events)["epoch"]
    assert epochs == Counter(e.kind for e in runs[0].events)["epoch"] > 9
    # one slot: every epoch is on the critical path
    assert runs[1].makespan_s == pytest.approx(runs[0].makespan_s + 0.5 * epochs)


def _profile(**extra) -> dict:
    return {"schema": "nasalloc.profile/1", "model": {"t_fixed": 0.0, "t_compute": 1.0},
            "overheads": {"startup_s": 3.0, "checkpoint_save_s": 0.0, "checkpoint_load_s": 0.0, "eval_s": 0.0},
            "variability": {"epoch_cv": 0.0}, **extra}


def test_a_profile_without_round_trip_or_start_up_cv_charges_nothing_and_says_nothing_new():
    model = time_model_from_profile(_profile())
    assert model.overhead("roundtrip_s", 2) == 0.0 and model.startup_cv == 0.0
    assert not [n for n in model.notes if "roundtrip" in n or "startup_cv" in n]


def test_the_round_trip_is_read_per_gpu_count_from_the_measurements():
    profile = _profile(measurements=[
        {"gpus": 1, "kind": "ddp", "epoch_seconds": [1.0], "roundtrip_s": 0.002},
        {"gpus": 2, "kind": "ddp", "epoch_seconds": [0.6], "roundtrip_s": 0.004}])
    model = time_model_from_profile(profile)
    assert model.overhead("roundtrip_s", 1) == pytest.approx(0.002)
    assert model.overhead("roundtrip_s", 2) == pytest.approx(0.004)


def test_start_up_noise_has_the_profiles_cv_and_leaves_the_epoch_noise_alone():
    table = make_table(rows=30, epochs=9, costs=False)
    base = time_model_from_profile(_profile(variability={"epoch_cv": 0.1}))
    noisy = time_model_from_profile(_profile(variability={"epoch_cv": 0.1, "startup_cv": 0.3}))
    startups, same_epochs = [], []
    for seed in range(40):
        runs = [simulate(scheduler("asha", table, max_t=9, semantics="reference", trials=6),
                         split(1, 1, gpus_per_node=1), model, table, seed=seed) for model in (base, noisy)]
        starts = {}
        for e in runs[1].events:
            if e.kind in ("start", "resume"):
                starts[e.trial_id] = e.time_s
            elif e.kind == "epoch" and e.trial_id in starts:
                startups.append(e.began_s - starts.pop(e.trial_id))
        durations = [[e.time_s - e.began_s for e in r.events if e.kind == "epoch"] for r in runs]
        same_epochs.append(np.allclose(durations[0], durations[1]))
    startups = np.array(startups)
    assert startups.mean() == pytest.approx(3.0, rel=0.05)
    assert startups.std() / startups.mean() == pytest.approx(0.3, rel=0.2)
    assert all(same_epochs)


def test_a_run_shares_one_epoch_factor_of_the_profiles_run_cv():
    table = make_table(rows=30, epochs=9, costs=False)
    model = time_model_from_profile(_profile(variability={"epoch_cv": 0.0, "run_cv": 0.2}))
    factors = []
    for seed in range(200):
        result = simulate(scheduler("asha", table, max_t=9, semantics="reference", trials=6),
                          split(1, 1, gpus_per_node=1), model, table, seed=seed)
        durations = {round(e.time_s - e.began_s, 9) for e in result.events if e.kind == "epoch"}
        assert len(durations) == 1  # every epoch of the run has the same length (rel cost 1)
        factors.append(durations.pop())
    factors = np.array(factors)
    assert factors.mean() == pytest.approx(1.0, abs=0.04)
    assert factors.std() == pytest.approx(0.2, rel=0.2)


def test_the_reference_epoch_comes_from_every_row_when_the_nearest_row_is_another_config():
    import pandas as pd

    from nasalloc.simulator.curvetable import table_from_curves
    from nasalloc.trace import Curves

    rows = []
    for trial, (width, seconds) in enumerate(((10, 1.0), (20, 2.0), (40, 4.0))):  # seconds = width / 10
        for epoch in (1, 2):
            rows.append({"trial_id": trial, "config.width": width, "epoch": epoch, "val_metric": 0.5,
                         "test_metric": 0.5, "metric_name": "accuracy", "mode": "max", "epoch_seconds": seconds,
                         "gpus_per_trial": 1, "start_s": 0.0, "end_s": 1.0, "workload": "synthetic"})
    curves = Curves.from_trace(pd.DataFrame(rows), "t")
    cost = lambda config: config["width"] / 30  # noqa: E731  (the reference config has width 30)
    table = table_from_curves(curves, {"width": 30}, "test", cost_model=cost)
    # 3 s per reference epoch from every row, not the 2 s or 4 s of the nearest row
    assert list(table.rel_cost) == pytest.approx([1 / 3, 2 / 3, 4 / 3])
    assert "implied by all 3 recorded configs" in table.reference_note
    exact = table_from_curves(curves, {"width": 20}, "test", cost_model=lambda c: c["width"] / 20)
    assert list(exact.rel_cost) == pytest.approx([0.5, 1.0, 2.0])  # the reference itself was recorded
