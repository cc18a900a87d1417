import json
import math

import pytest

from nasalloc.data import data_path
from nasalloc.errors import UserError
from nasalloc.simulator.defaultprofile import build_default_profile
from nasalloc.simulator.timemodel import load_profile, time_model_from_profile

from .simdata import write_profile


def test_embedded_default_reproduces_the_published_throughput():
    profile = load_profile()
    assert profile.embedded and len(profile.sha256) == 64
    source = profile.data["source"]
    assert "DeepLearningExamples" in source and "938" in source and "7,248" in source
    model = profile.model
    # 938 img/s on 1 GPU and 7,248 on 8 (one DGX A100 node): the ratio of epoch times.
    assert model.reference_epoch_seconds(1) / model.reference_epoch_seconds(8, nodes=1) == pytest.approx(7248 / 938,
                                                                                                      rel=1e-4)
    assert model.gpus_per_node == 4
    # Crossing nodes costs more than staying on one.
    assert model.reference_epoch_seconds(8, nodes=2) > model.reference_epoch_seconds(8, nodes=1)
    # Every default it rests on is stated.
    assert any("start-up" in a for a in profile.data["assumptions"])
    assert any("time-sliced" in a for a in profile.data["assumptions"])


def test_default_profile_is_what_the_builder_makes_of_its_embedded_rows():
    shipped = json.loads(data_path("default_profile.json").read_text())
    rebuilt = build_default_profile(shipped["published"], created=shipped["created"])
    assert rebuilt == shipped


def test_profile_fields_are_read(tmp_path):
    write_profile(tmp_path / "p.json")
    model = load_profile(str(tmp_path / "p.json")).model
    assert model.overhead("startup_s", 4) == 3.0
    assert model.epoch_cv == 0.02 and model.gpus_per_node == 4
    assert model.scaling.colocated_slowdown(2) == 1.6
    assert model.notes == []  # nothing fell back on a default
    assert model.noise_sigma() == pytest.approx(math.sqrt(math.log1p(0.02 ** 2)))


def test_missing_optional_fields_fall_back_on_stated_defaults(tmp_path):
    write_profile(tmp_path / "p.json", overheads=None, variability=None, hardware=None)
    model = load_profile(str(tmp_path / "p.json")).model
    assert model.overhead("startup_s", 1) == 0.0 and model.epoch_cv == 0.0 and model.gpus_per_node is None
    text = " ".join(model.notes)
    assert "startup_s" in text and "checkpoint_save_s" in text and "epoch_cv" in text


def test_overheads_per_gpu_count_are_interpolated_in_log2():
    profile = {"schema": "nasalloc.profile/1", "model": {"t_compute": 1.0},
               "measurements": [{"gpus": 1, "kind": "ddp", "startup_s": 2.0},
                                {"gpus": 4, "kind": "ddp", "startup_s": 6.0},
                                {"gpus": 4, "kind": "ddp", "startup_s": 8.0}]}
    model = time_model_from_profile(profile)
    assert model.overhead("startup_s", 1) == 2.0
    assert model.overhead("startup_s", 2) == pytest.approx(4.5)   # halfway in log2 to the mean 7.0
    assert model.overhead("startup_s", 16) == 7.0                 # held beyond the measured counts
    assert model.overhead("startup_s", 0.5) == 2.0                # a shared GPU: as one GPU


@pytest.mark.parametrize("changes, words", [
    ({"schema": None}, "missing field 'schema'"),
    ({"model": None}, "missing field 'model'"),
    ({"schema": "other/2"}, "'other/2' is not supported"),
    ({"model": {"t_fixed": 1.0}}, "missing field"),
    ({"overheads": {"startup_s": -1}}, "overheads.startup_s=-1"),
    ({"variability": {"epoch_cv": "x"}}, "variability.epoch_cv='x'"),
    ({"hardware": {"gpus_per_node": 0}}, "gpus_per_node=0"),
])
def test_bad_profiles_fail_with_one_line(tmp_path, changes, words):
    write_profile(tmp_path / "p.json", **changes)
    with pytest.raises(UserError, match=words) as info:
        load_profile(str(tmp_path / "p.json"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("field, value", [("epoch_seconds", [1.2, -1.0]), ("epoch_seconds", [0.0]),
                                          ("startup_s", -2.5), ("checkpoint_save_s", float("nan"))])
def test_measured_times_must_be_finite_and_positive(tmp_path, field, value):
    # a profile with negative measured epoch seconds used to load silently
    measurement = {"gpus": 1, "nodes": 1, "epoch_seconds": [1.2, 1.3], "startup_s": 2.0, field: value}
    write_profile(tmp_path / "p.json", measurements=[measurement])
    bad = value[-1] if isinstance(value, list) else value
    index = f"[{len(value) - 1}]" if isinstance(value, list) else ""
    with pytest.raises(UserError) as info:
        load_profile(str(tmp_path / "p.json"))
    assert f"measurements[0].{field}{index} is {bad!r}: expected a finite number > 0" in str(info.value)


def test_unreadable_profiles(tmp_path):
    with pytest.raises(UserError, match="profile not found"):
        load_profile(str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_profile(str(tmp_path / "bad.json"))


def test_a_shared_gpu_uses_the_overheads_measured_co_located():
    # Co-located trials launch together and start slower; a fraction without its own
    # measurement falls back on the 1-GPU figure.
    profile = {"schema": "nasalloc.profile/1", "model": {"t_compute": 1.0},
               "measurements": [{"gpus": 1, "kind": "ddp", "startup_s": 2.0},
                                {"gpus": 2, "kind": "ddp", "startup_s": 3.0},
                                {"gpus": 0.5, "kind": "colocated", "trials_per_gpu": 2, "startup_s": 5.0}]}
    model = time_model_from_profile(profile, "test")
    assert model.overhead("startup_s", 0.5) == 5.0
    assert model.overhead("startup_s", 0.25) == 2.0
    assert model.overhead("startup_s", 1) == 2.0 and model.overhead("startup_s", 2) == 3.0


def test_a_resume_pays_the_profiles_resume_cost_else_the_start_up(tmp_path):
    from .simdata import make_table, scheduler, split, time_model
    from nasalloc.simulator.engine import simulate

    table = make_table(rows=20, epochs=9, seed=1)
    without = time_model(10.0, startup_s=5.0, load_s=1.0)
    assert without.overhead("resume_s", 2) == without.overhead("startup_s", 2) == 5.0
    cheaper = time_model(10.0, startup_s=5.0, load_s=1.0)
    cheaper.overheads["resume_s"] = 2.0
    assert cheaper.overhead("resume_s", 2) == 2.0 and cheaper.overhead("startup_s", 2) == 5.0

    def run(model):
        return simulate(scheduler("hyperband", table, max_t=9, brackets=3), split(4, 1), model, table,
                        seed=3).events

    slow, fast = run(without), run(cheaper)
    resumes = [e for e in slow if e.kind == "resume"]
    assert resumes, "the scenario must resume trials"
    # The first epoch after a resume ends resume_s + load_s after the resume record.
    for events, cost in ((slow, 5.0 + 1.0), (fast, 2.0 + 1.0)):
        for i, e in enumerate(events):
            if e.kind == "resume":
                nxt = next(x for x in events[i + 1:] if x.trial_id == e.trial_id)
                assert nxt.began_s == pytest.approx(e.time_s + cost)
    # And from the profile file: overheads.resume_s is read when present.
    write_profile(tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    data["overheads"]["resume_s"] = 1.25
    assert time_model_from_profile(data, "test").overhead("resume_s", 4) == 1.25
