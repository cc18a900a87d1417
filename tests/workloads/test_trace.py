import gzip

import numpy as np
import pandas as pd
import pytest

from nasalloc.errors import UserError
from nasalloc.trace import TRACE_COLUMNS, Curves, TraceWriter, read_trace, space_from_values


def _row(trial, epoch, config, val, **extra):
    row = dict(trial_id=trial, epoch=epoch, config=config, val_metric=val, test_metric=val - 0.01,
               metric_name="accuracy", mode="max", epoch_seconds=0.05 * epoch, gpus_per_trial=1,
               start_s=float(epoch), end_s=epoch + 0.05, workload="")
    row.update(extra)
    return row


CONFIGS = {0: {"family": "cnn", "kernel": 3, "lr": 0.01}, 1: {"family": "mlp", "lr": 0.3}}


def _write(path, trials=(0, 1), epochs=3):
    with TraceWriter(path, config_names=["family", "kernel", "lr"]) as writer:
        for trial in trials:
            for epoch in range(1, epochs + 1):
                writer.write(_row(trial, epoch, CONFIGS[trial], 0.5 + 0.1 * epoch + trial / 100))


def test_round_trip_gives_curves_per_trial(tmp_path):
    path = tmp_path / "trace.csv"
    _write(path)
    frame = read_trace(path)
    assert set(TRACE_COLUMNS) <= set(frame.columns)
    assert {"config.family", "config.kernel", "config.lr"} <= set(frame.columns)
    curves = Curves.from_trace(frame)
    assert (curves.n_configs, curves.max_epochs, curves.metric_name, curves.mode) == (2, 3, "accuracy", "max")
    # the inactive kernel of the mlp is left out, and kernel comes back an int
    assert curves.configs == [CONFIGS[0], CONFIGS[1]]
    assert isinstance(curves.configs[0]["kernel"], int)
    np.testing.assert_allclose(curves.val[1], [0.61, 0.71, 0.81])
    np.testing.assert_allclose(curves.epoch_seconds[0], [0.05, 0.1, 0.15])
    assert curves.val_matrix().shape == (2, 3)


def test_gzip_trace_reads_the_same(tmp_path):
    path = tmp_path / "trace.csv"
    _write(path)
    gz = tmp_path / "trace.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    pd.testing.assert_frame_equal(read_trace(path), read_trace(gz))


def test_resumed_writer_appends_and_drops_a_torn_row(tmp_path):
    path = tmp_path / "trace.csv"
    _write(path, trials=(0,), epochs=2)
    with open(path, "a") as handle:
        handle.write("0,cnn,3,0.01,3,0.7")  # killed in the middle of a row
    assert len(read_trace(path)) == 2  # the torn row is not read
    with TraceWriter(path) as writer:  # resume: header kept, torn row cut off
        assert writer.config_names == ["family", "kernel", "lr"]
        writer.write(_row(0, 3, CONFIGS[0], 0.8))
    text = path.read_text()
    assert text.count("trial_id") == 1
    assert Curves.from_trace(read_trace(path)).val[0].tolist() == [0.6, 0.7, 0.8]


def test_writer_rejects_a_config_outside_its_header(tmp_path):
    with TraceWriter(tmp_path / "t.csv", config_names=["lr"]) as writer:
        with pytest.raises(ValueError, match="config.depth"):
            writer.write(_row(0, 1, {"lr": 0.1, "depth": 2}, 0.5))


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.drop(columns=["val_metric"]), "no column 'val_metric'"),
    (lambda f: f.assign(epoch=f["epoch"].astype(object).where(f.index != 1, "two")), "'epoch' row 3 is 'two'"),
    (lambda f: f.assign(epoch=0), "'epoch' row 2 is 0"),
    (lambda f: f.assign(val_metric=f["val_metric"].astype(object).where(f.index != 0, "high")), "'val_metric' row 2"),
    (lambda f: f.assign(mode="maximize"), "'mode' row 2 is 'maximize', expected 'max' or 'min'"),
    (lambda f: f.assign(epoch_seconds=-1.0), "'epoch_seconds' row 2 is -1.0"),
    (lambda f: f.assign(epoch_seconds=-1.0), "expected a finite number > 0"),
    (lambda f: f.assign(epoch_seconds=0.0), "'epoch_seconds' row 2 is 0.0, expected a finite number > 0"),
    (lambda f: f.assign(gpus_per_trial=0), "'gpus_per_trial' row 2 is 0, expected a finite number > 0"),
    (lambda f: f.assign(metric_name=["a", "b"] * (len(f) // 2)), "'metric_name' must be the same"),
    (lambda f: f.assign(train_seed=1.5), "'train_seed' row 2 is 1.5, expected an integer >= 0 or empty"),
    (lambda f: f.assign(train_seed=-3), "'train_seed' row 2 is -3"),
])
def test_malformed_trace_is_a_one_line_user_error(tmp_path, edit, message):
    path = tmp_path / "trace.csv"
    _write(path)
    bad = tmp_path / "bad.csv"
    edit(pd.read_csv(path)).to_csv(bad, index=False)
    with pytest.raises(UserError) as err:
        read_trace(bad)
    assert message in str(err.value) and "bad.csv" in str(err.value) and "\n" not in str(err.value)


def test_missing_empty_and_gapped_traces(tmp_path):
    with pytest.raises(UserError, match="trace not found"):
        read_trace(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_trace(tmp_path / "empty.csv")
    path = tmp_path / "gap.csv"
    _write(path)
    frame = read_trace(path)
    with pytest.raises(UserError, match="trial 0 has epochs"):
        Curves.from_trace(frame[frame["epoch"] != 2])


def test_user_trace_without_optional_columns_and_its_space(tmp_path):
    frame = pd.DataFrame({"trial_id": [7, 7, 9], "epoch": [1, 2, 1], "val_metric": [2.0, 1.5, 3.0],
                          "epoch_seconds": [1.0, 1.0, 2.0], "metric_name": "loss", "mode": "min",
                          "config.lr": [0.001, 0.001, 0.5], "config.opt": ["sgd", "sgd", "adam"]})
    path = tmp_path / "user.csv"
    frame.to_csv(path, index=False)
    curves = Curves.from_trace(read_trace(path))
    assert curves.mode == "min" and curves.trial_ids == [7, 9] and np.isnan(curves.test[0]).all()
    space = curves.config_space()
    assert space["lr"].log and space["lr"].lower == pytest.approx(0.001)
    assert set(space["opt"].choices) == {"sgd", "adam"}
    assert curves.nearest({"lr": 0.4, "opt": "adam"}) == 1
    assert curves.nearest({"lr": 0.002, "opt": "sgd"}) == 0


def test_space_from_values_keeps_integers_and_constants():
    space = space_from_values([{"depth": 2, "act": "relu"}, {"depth": 5, "act": "relu"}])
    assert (space["depth"].lower, space["depth"].upper) == (2, 5)
    assert space["act"].value == "relu"


def test_a_trace_naming_a_built_in_workload_gets_its_space(tmp_path):
    from nasalloc.workloads.digits import DigitsWorkload

    path = tmp_path / "digits.csv"
    config = DigitsWorkload().reference_config()
    with TraceWriter(path, config_names=list(DigitsWorkload().search_space().keys())) as writer:
        writer.write(_row(0, 1, config, 0.5, workload="digits"))
    curves = Curves.from_trace(read_trace(path))
    assert curves.configs == [config]
    space = curves.config_space()
    assert space["family"].choices == ("cnn", "mlp") and len(space.conditions) == 3


def test_unreadable_gzip_is_a_user_error(tmp_path):
    path = tmp_path / "trace.csv.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="trace .*trace.csv.gz cannot be read"):
        read_trace(path)


def test_space_from_values_holds_values_with_many_significant_digits():
    # ConfigSpace rounds bounds; a recorded value at the edge must still be a valid config.
    from ConfigSpace import Configuration

    from nasalloc.trace import space_from_values

    configs = [{"lr": 0.12345678901234567, "wd": 1.2345678901234567e-5},
               {"lr": 3.9876543210987654, "wd": 0.012345678901234567}]
    space = space_from_values(configs)
    for config in configs:
        Configuration(space, values=config)


@pytest.mark.parametrize("text", ['{"schema": "nasalloc.profile/1"}', '{"schema": "nasalloc.plan/1"}\n', "[1, 2]\n"])
def test_a_json_file_given_as_a_trace_says_so(tmp_path, text):
    # a one-line JSON file without a final newline used to be "empty" (its only line read as torn)
    path = tmp_path / "profile.json"
    path.write_text(text)
    with pytest.raises(UserError, match="is a JSON file, not a CSV trace"):
        read_trace(path)


def test_train_seeds_are_read_per_trial_and_optional(tmp_path):
    path = tmp_path / "trace.csv"
    with TraceWriter(path, config_names=["family", "kernel", "lr"]) as writer:
        for epoch in (1, 2):
            writer.write(_row(0, epoch, CONFIGS[0], 0.5, train_seed=42))
            writer.write(_row(1, epoch, CONFIGS[1], 0.6))  # trained with an unknown seed
    assert Curves.from_trace(read_trace(path)).train_seeds == [42, None]
    legacy = tmp_path / "legacy.csv"
    pd.read_csv(path).drop(columns=["train_seed"]).to_csv(legacy, index=False)
    assert Curves.from_trace(read_trace(legacy)).train_seeds == [None, None]
