"""What simulate prints and draws reads as it means: one set of time units in the progress
lines, the table and the plots; no interval from fewer than 3 seeds; the metric difference
named, with its interval, and absent when not measured; plots that name their seed, tell the
splits apart and label the budget line."""

from __future__ import annotations

import ast
import csv
import re
from pathlib import Path


from nasalloc.cli import main
from nasalloc.simulator.labels import duration, interval, split_label, split_tick
from nasalloc.simulator.report import summary_table

from .simdata import write_trace

CPU_PROFILE = Path(__file__).resolve().parents[2] / "results" / "reference" / "digits_cpu_profile.json"


def test_durations_take_the_unit_that_reads_best():
    assert [duration(v) for v in (5.8, 95.0, 76_320.0)] == ["5.8 s", "1.6 min", "21.2 h"]
    assert interval(1_000.0, 90_000.0, seeds=3) == "[0.3 h, 25.0 h]"  # one unit for both ends
    assert interval(0.0, 175_680.0, seeds=2) == "n/a (2 seeds)"  # was [0.0 s, 48.8 h]
    assert interval(1.0, 2.0, seeds=1) == "n/a (1 seed)"
    assert [split_label(g) for g in (0.25, 1, 8)] == ["1/4 GPU", "1 GPU", "8 GPUs"] and split_tick(0.5) == "1/2"


def test_progress_and_table_use_the_same_units(tmp_path, capsys):
    # runs of a few seconds: the progress said "makespan 0.0 h" where the table said 5.8 s
    trace = tmp_path / "trace.csv"
    write_trace(trace, rows=30, epochs=9)
    main(["simulate", "--budget", "2", "--profile", str(CPU_PROFILE), "--curves", str(trace), "--algorithms",
          "hyperband", "--gpus-per-trial", "1,2", "--seeds", "3", "--jobs", "1", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("simulate: ")]
    assert len(progress) == 6
    rows = {(float(r["gpus_per_trial"]), int(r["seed"])): float(r["makespan_s"])
            for r in csv.DictReader(open(tmp_path / "o" / "simulations.csv"))}
    units = {}
    for line in progress:
        g, seed, shown = re.search(r"hyperband (\S+) GPU/trial seed (\d+): makespan (.+)$", line).groups()
        assert shown == duration(rows[(float(g), int(seed))])  # not "0.0 h" for a 29 s run
        units.setdefault(float(g), set()).add(shown.split()[1])
    table_row = next(line for line in captured.out.splitlines() if line.startswith("hyperband"))
    best = re.search(r"1 GPU x2: [\d.]+ (\S+) \[[\d.]+ (\S+), [\d.]+ (\S+)\]", table_row)
    assert best and set(best.groups()) == units[1.0], (table_row, units)
    assert any(unit in ("s", "min") for unit in set().union(*units.values()))  # short runs: not hours


def _plan(metric_means, seeds=3, ci=(-0.01, 0.03), name="accuracy"):
    split = {"gpus_per_trial": 1.0, "parallel_trials": 8, "idle_gpus": 0, "seeds": seeds, "makespan_s": 7200.0,
             "makespan_ci95_s": [3600.0, 10800.0], "deadline_metric": None}
    algorithms = {}
    for algorithm, mean in metric_means.items():
        algorithms[algorithm] = {"best": split, "worst": dict(split, gpus_per_trial=8.0, parallel_trials=1),
                                 "speedup": 1.5, "accuracy_difference": mean,
                                 "accuracy_difference_ci95": list(ci) if seeds >= 3 and mean is not None else None,
                                 "accuracy_difference_seeds": seeds if mean is not None else 0}
    return {"objective": "makespan", "metric": {"name": name, "mode": "max"}, "algorithms": algorithms}


def test_the_metric_difference_is_named_with_its_interval_and_absent_when_not_measured():
    text = summary_table(_plan({"asha": 0.01}, name="top1"))
    assert "top1 best - worst (mean, 95% CI)" in text.splitlines()[0]
    assert "+0.0100 [-0.0100, +0.0300]" in text
    assert "n/a (2 seeds)" in summary_table(_plan({"asha": 0.01}, seeds=2)).splitlines()[2]
    assert "0 (equal in all 3 seeds)" in summary_table(_plan({"asha": 0.0}, ci=(0.0, 0.0)))
    unmeasured = summary_table(_plan({"asha": None}))
    assert "best - worst" not in unmeasured and "+0.0000" not in unmeasured  # absent, not zero


def test_plots_name_their_seed_tell_splits_apart_and_label_the_budget(tmp_path, monkeypatch, capsys):
    import matplotlib.colors

    import nasalloc.simulator.plots as plots

    figures = {}

    def keep(path, figure, **options):
        figures[Path(path).name] = {
            "suptitle": figure._suptitle.get_text() if figure._suptitle else "",
            "figure_legends": len(figure.legends),
            "axis_legends": sum(1 for a in figure.axes if a.get_legend() is not None),
            "titles": [a.get_title() for a in figure.axes],
            "texts": [t.get_text() for a in figure.axes for t in a.texts],
            "colors": [matplotlib.colors.to_hex(line.get_color()) for line in figure.axes[0].get_lines()],
        }

    monkeypatch.setattr(plots, "atomic_save_figure", keep)
    trace = tmp_path / "trace.csv"
    write_trace(trace, rows=30, epochs=9)
    main(["simulate", "--budget", "64", "--curves", str(trace), "--algorithms", "hyperband,asha", "--seeds", "2",
          "--seed", "5", "--jobs", "1", "--quiet", "--out", str(tmp_path / "o")])
    capsys.readouterr()
    best = figures["best_so_far.png"]
    assert best["figure_legends"] == 1 and best["axis_legends"] == 0  # one legend for the figure
    assert "seed 5" in best["suptitle"]
    assert len(best["colors"]) == 7 and len(set(best["colors"])) == 7  # 1..64 GPUs: 7 distinct colours
    occupancy = figures["occupancy.png"]
    assert all("seed 5" in title for title in occupancy["titles"]) and "seed 5" in occupancy["suptitle"]
    assert occupancy["texts"].count("budget: 64 GPUs") == 4  # the dashed line of each panel says what it is


def test_report_and_plots_do_not_import_each_other():
    root = Path(__file__).resolve().parents[2] / "simulator"

    def imported(name):
        tree = ast.parse((root / name).read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    assert "report" not in imported("plots.py")
    assert "labels" in imported("plots.py") and "labels" in imported("report.py")


def test_best_so_far_keeps_every_step_of_the_per_epoch_line():
    from nasalloc.simulator.plots import best_so_far

    import numpy as np

    rng = np.random.default_rng(3)
    events = [{"kind": "epoch", "time_s": float(t), "metric": float(m)}
              for t, m in zip(np.cumsum(rng.random(400)), rng.random(400))]
    events.insert(5, {"kind": "start", "time_s": 1.0})
    for mode in ("max", "min"):
        times, values = best_so_far(events, mode)
        assert len(times) < 40 and times[-1] == events[-1]["time_s"]  # reaches the last result
        best = None
        for e in (e for e in events if e["kind"] == "epoch"):  # the step function at every result
            best = e["metric"] if best is None else (max if mode == "max" else min)(best, e["metric"])
            at = int(np.searchsorted(times, e["time_s"], side="right")) - 1
            assert values[at] == best


def _plot_inputs(tmp_path):
    """A small sweep's plan and records, as write_report hands them to plot_all."""
    import json

    from nasalloc.io import read_jsonl

    trace = tmp_path / "trace.csv"
    write_trace(trace, rows=30, epochs=9)
    out = tmp_path / "o"
    main(["simulate", "--budget", "4", "--curves", str(trace), "--algorithms", "asha", "--gpus-per-trial", "1,4",
          "--seeds", "1", "--jobs", "1", "--quiet", "--out", str(out)])
    plan = json.loads((out / "plan.json").read_text())
    entry = plan["algorithms"]["asha"]
    events = {("asha", float(entry[w]["gpus_per_trial"])): list(read_jsonl(out / entry["events"][w]))
              for w in ("best", "worst")}
    return plan, events


def test_plots_drawn_in_two_processes_are_the_serial_ones(tmp_path, capsys):
    from nasalloc.simulator.plots import FIGURES, plot_all

    plan, events = _plot_inputs(tmp_path)
    capsys.readouterr()
    for jobs in (1, 2):
        folder = tmp_path / f"jobs{jobs}"
        folder.mkdir()
        assert plot_all(folder, plan, events, "max", "accuracy", jobs=jobs) == list(FIGURES)
        assert sorted(p.name for p in folder.iterdir()) == sorted(FIGURES)
        assert all((folder / name).stat().st_size > 10_000 for name in FIGURES)


def test_a_figure_that_fails_in_its_process_fails_the_call_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    import pytest

    import nasalloc.simulator.plots as plots

    plan, events = _plot_inputs(tmp_path)
    capsys.readouterr()

    def broken(*args):
        raise RuntimeError("no room for the legend")

    monkeypatch.setattr(plots, "_best_so_far_figure", broken)  # drawn in the forked process
    folder = tmp_path / "plots"
    folder.mkdir()
    with pytest.raises(RuntimeError, match="no room for the legend"):
        plots.plot_all(folder, plan, events, "max", "accuracy", jobs=2)
    assert not (folder / "best_so_far.png").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_the_figure_process_ends_when_the_command_is_killed(tmp_path, capsys):
    import os
    import pickle
    import signal
    import subprocess
    import sys
    import time

    from .test_sweep_workers import _alive, _children, kill_all

    plan, events = _plot_inputs(tmp_path)
    capsys.readouterr()
    inputs = tmp_path / "inputs.pkl"
    inputs.write_bytes(pickle.dumps((plan, events)))
    script = tmp_path / "draw.py"
    script.write_text(f"""
import pickle, time
import nasalloc.simulator.plots as plots
plots._best_so_far_figure = lambda *args: time.sleep(120)  # the forked figure never ends
plan, events = pickle.loads(open({str(inputs)!r}, "rb").read())
plots.plot_all({str(tmp_path / "plots")!r}, plan, events, "max", "accuracy", jobs=2)
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = []
    try:
        deadline = time.monotonic() + 60
        while not children:  # the figure process is up
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
            children = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in children if _alive(pid)] == []
    finally:
        kill_all(proc, children)
