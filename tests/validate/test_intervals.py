"""Interval arithmetic of repeated validation runs and the repeat report's bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nasalloc.validate.intervals import fraction, predicted_intervals, ratio_interval, t_interval
from nasalloc.validate.repeatreport import (format_repeat_table, summarize_algorithms, summarize_splits,
                                            write_repeat_report)
from nasalloc.validate.task import SplitTask


def test_t_interval_of_three_runs_uses_student_t_with_two_degrees_of_freedom():
    interval = t_interval([10.0, 12.0, 14.0])
    # mean 12, s = 2, t(0.975, 2) = 4.3027: half width 4.3027 * 2 / sqrt(3) = 4.968
    assert interval.mean == 12.0 and interval.n == 3
    assert math.isclose(interval.high - 12.0, 4.302653 * 2 / math.sqrt(3), rel_tol=1e-5)
    assert math.isclose(12.0 - interval.low, interval.high - 12.0)
    assert interval.contains(16.9) and not interval.contains(17.0)


def test_t_interval_of_one_run_has_no_width_and_ignores_missing_values():
    interval = t_interval([5.0, None, math.nan])
    assert interval.mean == 5.0 and interval.n == 1
    assert math.isnan(interval.low) and interval.contains(5.0) is None


def test_t_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = [t_interval(rng.normal(100.0, 10.0, 3)).contains(100.0) for _ in range(4000)]
    assert 0.935 < np.mean(hits) < 0.965


def test_predicted_intervals_of_one_run_and_of_a_mean():
    draws = np.linspace(90.0, 110.0, 201)
    one, mean_of_4 = predicted_intervals(draws, 4)
    assert math.isclose(one.mean, 100.0) and math.isclose(mean_of_4.mean, 100.0)
    assert math.isclose(one.low, 90.5) and math.isclose(one.high, 109.5)
    assert math.isclose(mean_of_4.high - 100.0, 1.959964 * np.std(draws, ddof=1) / 2, rel_tol=1e-5)


def test_ratio_interval_of_a_speedup():
    worst, best = [20.0, 22.0, 18.0], [10.0, 10.5, 9.5]
    ratio = ratio_interval(worst, best)
    assert math.isclose(ratio.mean, 2.0)
    assert ratio.low < 2.0 < ratio.high
    assert math.isclose(math.log(ratio.high / 2.0), math.log(2.0 / ratio.low))  # symmetric in log
    exact = ratio_interval([20.0, 20.0], [10.0, 10.0])
    assert exact.low == exact.high == 2.0
    assert math.isnan(ratio_interval([20.0], [10.0]).low)


def test_fraction_ignores_unknown_flags():
    assert fraction([True, False, None, True]) == pytest.approx(2 / 3)
    assert fraction([None]) is None


def test_repeat_folders_keep_the_first_run_where_a_single_run_writes():
    task = SplitTask(algorithm="asha", gpus_per_trial=0.5, budget=2, workload="digits",
                     make_scheduler=lambda: None, max_t=9)
    assert task.dirname == "asha_g0.5" and task.label == "asha g=0.5"
    task.repeat = 3
    assert task.dirname == "asha_g0.5_r3" and task.label == "asha g=0.5 run 3"


def _run(algorithm, which, g, repeat, measured, resim=None, status="finished"):
    return {"algorithm": algorithm, "which": which, "gpus_per_trial": g, "parallel_trials": int(2 / g),
            "status": status, "predicted_makespan_s": 10.0, "resimulated_makespan_s": resim or measured,
            "measured_makespan_s": measured, "predicted_best_metric": 0.9, "measured_best_metric": 0.9,
            "predicted_mean_makespan_s": 10.0, "repeat": repeat}


def test_summaries_of_repeated_runs():
    runs = [_run("asha", "best", 1.0, k, m) for k, m in ((1, 10.0), (2, 11.0), (3, 12.0))]
    runs += [_run("asha", "worst", 2.0, k, m) for k, m in ((1, 20.0), (2, 21.0), (3, 11.5))]
    draws = {("asha", 1.0): list(np.linspace(9.0, 13.0, 41)), ("asha", 2.0): list(np.linspace(19.0, 23.0, 41))}
    splits = summarize_splits(runs, draws, 3)
    best, worst = splits
    assert best["measured_mean_s"] == 11.0 and best["runs_finished"] == 3
    assert best["runs_inside"] == 1.0 and best["mean_inside"] is True
    assert worst["runs_inside"] == pytest.approx(2 / 3)  # 11.5 s is outside [19.1, 22.9]
    assert math.isclose(worst["makespan_rel_error"], (21.0 - 17.5) / 17.5)
    algorithms = summarize_algorithms(splits, runs)["asha"]
    assert algorithms["predicted_order"] == [1.0, 2.0]
    # round 3: worst (11.5 s) beat best (12 s): the predicted order held in 2 of 3 rounds
    assert algorithms["order_held_fraction"] == pytest.approx(2 / 3) and algorithms["order_rounds"] == 3
    assert math.isclose(algorithms["measured_speedup"], 17.5 / 11.0)
    assert algorithms["best_held"] is None  # the measured intervals overlap: the runs cannot tell
    table = format_repeat_table({"splits": splits, "algorithms": {"asha": algorithms}})
    assert "held in 67% of 3 round(s)" in table


def test_an_unfinished_run_counts_in_no_interval_and_no_round():
    runs = [_run("hyperband", "best", 1.0, 1, 10.0), _run("hyperband", "best", 1.0, 2, 4.0, status="time limit")]
    splits = summarize_splits(runs, {("hyperband", 1.0): [10.0] * 5}, 2)
    assert splits[0]["runs_finished"] == 1 and splits[0]["measured_mean_s"] == 10.0
    algorithms = summarize_algorithms(splits, runs)["hyperband"]
    assert algorithms["order_rounds"] == 1


def test_the_repeat_report_writes_json_csv_and_the_interval_plot(tmp_path):
    import json

    import pandas as pd

    runs = [_run("asha", which, g, k, m) for which, g, base in (("best", 1.0, 10.0), ("worst", 2.0, 20.0))
            for k, m in ((1, base), (2, base + 1), (3, base + 2))]
    draws = {("asha", 1.0): [10.5, 11.0, 11.5] * 10, ("asha", 2.0): [20.5, 21.0, 21.5] * 10}
    report = write_repeat_report(tmp_path, runs, draws, 3, plan_path="plan.json", complete=True)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["repeats"] == 3 and len(on_disk["runs"]) == 6 and len(on_disk["splits"]) == 2
    assert on_disk["algorithms"]["asha"]["best_held"] is True  # [9.5, 12.5] vs [19.5, 22.5]: apart
    assert on_disk["algorithms"]["asha"]["order_held_fraction"] == 1.0
    assert list(pd.read_csv(tmp_path / "comparison.csv")["measured_mean_s"]) == [11.0, 21.0]
    assert (tmp_path / "comparison.png").stat().st_size > 10_000
    assert report["splits"][0]["runs_inside"] == pytest.approx(1 / 3)  # only 11 s is in [10.5, 11.5]
