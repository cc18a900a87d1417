"""The measured costs of a run on several GPU counts (an adaptive policy), as the re-simulation
reads them: epoch factors from trials that ran on both counts, overheads per count."""

from __future__ import annotations

import json
import math

import pytest

from nasalloc.records import Event
from nasalloc.validate.compare import epoch_factors, measure, measured_policy_time_model


def _write(path, events):
    path.write_text("".join(json.dumps(Event(**e).to_dict()) + "\n" for e in events))


def _epoch(t, trial, epoch, gpus, seconds, **extra):
    return dict(time_s=t, kind="epoch", trial_id=trial, epoch=epoch, gpus=gpus, metric=0.5, began_s=t - seconds,
                extra={"train_s": seconds, **extra})


@pytest.fixture
def resized_run(tmp_path):
    # trial 0: two epochs on 1 GPU (2 s each), a resize, one epoch on 2 GPUs (1.2 s); trial 1: 4 s epochs on 1 GPU
    _write(tmp_path / "events.jsonl", [
        dict(time_s=0.0, kind="start", trial_id=0, epoch=0, gpus=1, placement=[0], extra={"row": 3}),
        dict(time_s=0.0, kind="start", trial_id=1, epoch=0, gpus=1, placement=[1], extra={"row": 5}),
        _epoch(3.0, 0, 1, 1, 2.0), _epoch(5.0, 1, 1, 1, 4.0), _epoch(5.0, 0, 2, 1, 2.0),
        dict(time_s=5.0, kind="stop", trial_id=1, epoch=1, gpus=1),
        dict(time_s=5.5, kind="pause", trial_id=0, epoch=2, gpus=1, extra={"resize": 2, "checkpoint_epoch": 2}),
        dict(time_s=5.5, kind="resume", trial_id=0, epoch=2, gpus=2, placement=[0, 1], extra={"resize": 2}),
        _epoch(9.7, 0, 3, 2, 1.2, load_s=0.1),
        dict(time_s=9.7, kind="complete", trial_id=0, epoch=3, gpus=2),
    ])
    return tmp_path


def test_epochs_on_another_count_are_scaled_by_the_ratio_trials_measured_on_both(resized_run):
    measured = measure(resized_run)
    assert measured.epoch_factors == pytest.approx({1.0: 1.0, 2.0: 0.6})
    # a config's seconds are at the smallest count: trial 0's 2-GPU epoch counts as 1.2 / 0.6 s
    assert measured.epoch_seconds == pytest.approx({0: 2.0, 1: 4.0})
    assert measured.resizes == 1 and measured.startup_by_gpus == pytest.approx({1.0: 1.0})
    assert measured.resume_startup_by_gpus == pytest.approx({2.0: 3.0})  # 5.5 -> began 8.5
    assert measured.save_by_gpus == pytest.approx({1.0: 0.5})  # at the old size


def test_the_policy_time_model_charges_what_was_measured_at_each_count(resized_run):
    model = measured_policy_time_model(measure(resized_run), gpus_per_node=2)
    assert model.reference_epoch_seconds(1) == pytest.approx(1.0)
    assert model.reference_epoch_seconds(2) == pytest.approx(0.6)
    assert model.reference_epoch_seconds(4) == pytest.approx(0.6)  # held beyond the counts measured
    assert model.overhead("startup_s", 2) == pytest.approx(1.0)     # the nearest count measured
    assert model.overhead("resume_s", 2) == pytest.approx(3.0) and model.overhead("checkpoint_load_s", 2) == 0.0
    assert model.overhead("checkpoint_save_s", 1) == pytest.approx(0.5)


def test_a_count_no_trial_shares_with_the_smallest_takes_the_ratio_of_medians():
    factors = epoch_factors({0: [(1.0, 2.0)], 1: [(1.0, 4.0)], 2: [(2.0, 1.5)]})
    assert factors[1.0] == 1.0 and math.isclose(factors[2.0], 1.5 / 3.0)
    assert epoch_factors({0: [(0.5, 2.0), (0.5, 4.0)]}) == {0.5: 1.0}  # one count: nothing to scale
