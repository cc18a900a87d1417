from pathlib import Path

import numpy as np
import pytest
from ConfigSpace import Configuration

from nasalloc.data import data_path
from nasalloc.errors import UserError
from nasalloc.trace import TRACE_COLUMNS, Curves, TraceWriter, read_trace
from nasalloc.workloads.benchmark import main, round_config, run_benchmark, sample_configs
from nasalloc.workloads.digits import DigitsWorkload


def test_round_config_keeps_six_significant_digits():
    assert round_config({"lr": 0.000123456789, "depth": np.int64(2), "act": np.str_("relu")}) == \
        {"lr": 0.000123457, "depth": 2, "act": "relu"}


def test_a_tiny_benchmark_writes_a_trace_of_full_curves(tmp_path):
    out = tmp_path / "curves.csv.gz"
    lines = []
    curves = run_benchmark(out, configs=2, epochs=2, seed=5, echo=lines.append)
    assert out.exists() and not (tmp_path / "curves.csv").exists()  # working file folded in
    assert (curves.n_configs, curves.max_epochs, curves.workload) == (2, 2, "digits")
    assert curves.configs == sample_configs(DigitsWorkload(), 2, 5)
    assert curves.train_seeds == [5 * 100_003, 5 * 100_003 + 1]  # recorded, so a validation can retrain them
    assert sum(line.startswith("[") for line in lines) == 2 and lines[-1].startswith("done: 2 configs x 2 epochs")


def test_an_interrupted_benchmark_resumes_without_retraining(tmp_path):
    out = tmp_path / "curves.csv.gz"
    configs = sample_configs(DigitsWorkload(), 3, 0)
    names = list(DigitsWorkload().search_space().keys())
    sentinel = 0.12345  # no real accuracy on 359 images: proves trial 0 was not retrained
    with TraceWriter(tmp_path / "curves.csv", config_names=names) as writer:
        for trial, epochs in ((0, 2), (1, 1)):  # trial 1 was killed after one epoch
            for epoch in range(1, epochs + 1):
                writer.write(dict(trial_id=trial, epoch=epoch, config=configs[trial], val_metric=sentinel,
                                  test_metric=sentinel, metric_name="accuracy", mode="max",
                                  epoch_seconds=0.01, gpus_per_trial=1, workload="digits"))
    lines = []
    curves = run_benchmark(out, configs=3, epochs=2, seed=0, echo=lines.append)
    assert "1 already complete" in lines[0] and "2 to train" in lines[0]
    assert curves.trial_ids == [0, 1, 2] and curves.max_epochs == 2
    assert curves.val[0].tolist() == [sentinel, sentinel] and sentinel not in curves.val[1]


def test_resuming_with_other_arguments_is_refused(tmp_path):
    out = tmp_path / "curves.csv"
    run_benchmark(out, configs=1, epochs=1, seed=0, echo=lambda line: None)
    with pytest.raises(UserError, match="trial 0 was recorded with another config"):
        run_benchmark(out, configs=1, epochs=1, seed=1, echo=lambda line: None)


def test_bad_arguments_exit_with_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--configs", "0", "--out", str(tmp_path / "x.csv")])
    assert exit_.value.code == 2 and "--configs 0" in capsys.readouterr().err


def test_the_shipped_digits_benchmark():
    path = data_path("digits_curves.csv.gz")
    frame = read_trace(path)
    assert set(TRACE_COLUMNS) <= set(frame.columns)
    space = DigitsWorkload().search_space()
    assert {c[len("config."):] for c in frame.columns if c.startswith("config.")} == set(space.keys())
    curves = Curves.from_trace(frame)
    assert curves.n_configs >= 200 and curves.workload == "digits" and curves.mode == "max"
    assert all(len(v) == 81 for v in curves.val) and curves.max_epochs == 81
    assert frame.groupby("trial_id")["epoch"].apply(lambda e: sorted(e) == list(range(1, 82))).all()
    for config in curves.configs:  # every recorded config is a valid point of the space
        Configuration(space, values=config).check_valid_configuration()
    final = curves.val_matrix()[:, -1]
    assert np.nanmax(final) > 0.97 and np.nanmin(final) < 0.5  # good and bad configs both
    assert (curves.seconds_matrix() > 0).all()
    assert curves.config_space() is not None and set(curves.config_space().keys()) == set(space.keys())
    provenance = data_path("digits_curves.md").read_text()
    assert "python -m nasalloc.workloads.benchmark" in provenance and "torch" in provenance


def test_the_shipped_curves_retrain_exactly_from_their_recorded_seeds():
    """train_seed is no label: training a shipped config with it on one rank, one thread,
    gives its recorded curve (what validate --trial-seeds recorded relies on)."""
    from nasalloc.workloads.benchmark import train_curve

    bench_data = Path(__file__).resolve().parents[2] / "bench" / "data"
    for path, workload in ((data_path("digits_curves.csv.gz"), "digits"),
                           (bench_data / "digits_long_curves.csv.gz", "digits-long")):
        curves = Curves.from_trace(read_trace(path))
        for t in (0, 11):
            rows = train_curve(workload, curves.configs[t], curves.train_seeds[t], 2, 0.0)
            assert [r["val_metric"] for r in rows] == list(curves.val[t][:2])
