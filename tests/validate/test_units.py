"""Fast checks of the runner's parts: plan choices, channel framing, state, measurement."""

from __future__ import annotations

import json
import math

import pytest

from nasalloc.io import JsonlAppender
from nasalloc.records import Event
from nasalloc.validate.channel import LineBuffer, encode
from nasalloc.validate.compare import measure, measured_time_model, relative_error
from nasalloc.validate.plan import Plan
from nasalloc.validate.report import summarize_algorithms
from nasalloc.validate.state import RunState, TrialBook

from .test_errors import _minimal_plan


def test_which_names_best_and_worst_and_runs_each_split_once(tmp_path):
    plan = Plan(_minimal_plan(tmp_path))
    pick = lambda which: [(c.which, c.gpus_per_trial) for c in plan.choose(None, which)]  # noqa: E731
    assert pick("best,worst") == [("best", 1.0), ("worst", 2.0)]
    assert pick("all") == [("best", 1.0), ("worst", 2.0)]
    assert pick("2,best,1") == [("worst", 2.0), ("best", 1.0)]


def test_channel_messages_survive_arbitrary_chunking():
    data = b"".join(encode({"type": "epoch", "epoch": i, "metric": i / 10}) for i in range(1, 6))
    buffer, messages = LineBuffer(), []
    for start in range(0, len(data), 7):  # 7-byte pieces cut messages anywhere
        messages += buffer.feed(data[start:start + 7])
    assert [m["epoch"] for m in messages] == [1, 2, 3, 4, 5]


def test_state_round_trips_and_rejects_other_files(tmp_path):
    state = RunState("asha", 0.5, {"rng": [1, 2]}, {3: TrialBook(3, {"lr": 0.1}, reported=2, checkpoint_epoch=1,
                                                                 status="paused", segments=1, row=7)})
    state.save(tmp_path / "state.json")
    again = RunState.load(tmp_path / "state.json")
    assert again.trials[3] == state.trials[3] and again.scheduler == {"rng": [1, 2]}
    (tmp_path / "other.json").write_text(json.dumps({"schema": "x"}))
    from nasalloc.errors import UserError

    with pytest.raises(UserError, match="not a validation state"):
        RunState.load(tmp_path / "other.json")


def _log(path, records):
    with JsonlAppender(path, fsync=False) as log:
        for r in records:
            log.write(Event(**r).to_dict())


def test_measure_reads_makespan_startup_and_ends_from_the_log(tmp_path):
    g = 1.0
    _log(tmp_path / "events.jsonl", [
        dict(time_s=0.0, kind="start", trial_id=0, epoch=0, gpus=g, extra={"row": 4}),
        dict(time_s=0.0, kind="start", trial_id=1, epoch=0, gpus=g, extra={"row": 9}),
        dict(time_s=3.0, kind="epoch", trial_id=0, epoch=1, gpus=g, metric=0.5, began_s=2.0,
             extra={"train_s": 0.8, "eval_s": 0.2}),
        dict(time_s=4.0, kind="fail", trial_id=1, epoch=0, gpus=g, error="rank 0 was killed by signal 9"),
        dict(time_s=4.0, kind="epoch", trial_id=0, epoch=2, gpus=g, metric=0.7, began_s=3.0,
             extra={"train_s": 0.9, "eval_s": 0.1}),
        dict(time_s=4.5, kind="pause", trial_id=0, epoch=2, gpus=g),
        dict(time_s=5.0, kind="resume", trial_id=0, epoch=2, gpus=g),
        dict(time_s=8.0, kind="epoch", trial_id=0, epoch=3, gpus=g, metric=0.6, began_s=7.0,
             extra={"train_s": 1.0, "eval_s": 0.0}),
        dict(time_s=8.2, kind="complete", trial_id=0, epoch=3, gpus=g),
    ])
    m = measure(tmp_path, mode="max")
    assert m.makespan_s == 8.2 and m.trials == 2 and m.finished == 1 and m.failed == 1
    assert m.best_metric == 0.6 and m.best_trial_id == 0  # the metric at the trial's last epoch
    assert m.startup_s == 2.0 and m.resume_startup_s == 2.0 and m.save_s == pytest.approx(0.5)
    assert m.epoch_seconds[0] == pytest.approx(1.0) and m.rows == {0: 4, 1: 9}
    model = measured_time_model(m, 1.0, 2)
    assert model.reference_epoch_seconds(1.0) == 1.0 and model.overhead("startup_s", 1.0) == 2.0


def test_speedup_and_order_from_measured_makespans():
    rows = [dict(algorithm="asha", which="best", gpus_per_trial=1.0, predicted_makespan_s=10.0,
                 measured_makespan_s=30.0, resimulated_makespan_s=28.0),
            dict(algorithm="asha", which="worst", gpus_per_trial=2.0, predicted_makespan_s=20.0,
                 measured_makespan_s=24.0, resimulated_makespan_s=25.0)]
    summary = summarize_algorithms(rows)["asha"]
    assert summary["predicted_speedup"] == 2.0 and summary["measured_speedup"] == pytest.approx(0.8)
    assert summary["order_held"] is False and summary["all_orders_held"] is False
    assert relative_error(10.0, 8.0) == pytest.approx(0.25) and math.isnan(relative_error(1.0, math.nan))


def test_time_limit_stops_like_a_signal_with_status_124():
    from nasalloc.validate.runner import Stopper

    stopper = Stopper(time_limit_s=0.0)
    assert stopper.check() == "time limit" and stopper.exit_code == 124
    stopper.request("interrupted (SIGTERM)", 143)  # the first reason stays
    assert stopper.reason == "time limit"
    assert Stopper(time_limit_s=3600).check() is None


def test_resume_tells_the_scheduler_an_epoch_logged_after_the_last_saved_state():
    # A runner killed between logging an epoch and saving its state: the restored scheduler
    # hears that logged result again and ends in the state the lost save would have held.
    from ConfigSpace import ConfigurationSpace, Float

    from nasalloc.simulator.schedulers import make_scheduler
    from nasalloc.simulator.schedulers.base import Start
    from nasalloc.validate.runner import Runner

    space = ConfigurationSpace({"x": Float("x", (0.0, 1.0))})

    def fresh():
        from nasalloc.simulator.schedulers.sampling import SpaceSource
        return make_scheduler("asha", source=SpaceSource(space), max_t=9, eta=3, trials=4, seed=1)

    live = fresh()
    starts = [live.suggest() for _ in range(2)]
    assert all(isinstance(s, Start) for s in starts)
    live.on_result(starts[0].trial_id, 1, 0.5)
    saved = json.loads(json.dumps(live.state_dict()))
    logged = {"kind": "epoch", "trial_id": starts[1].trial_id, "epoch": 1, "metric": 0.2}
    live.on_result(logged["trial_id"], 1, logged["metric"])  # logged, then the runner died

    runner = Runner.__new__(Runner)
    runner.scheduler = fresh()
    runner.scheduler.load_state_dict(saved)
    runner.state = RunState("asha", 1.0, saved, {
        starts[0].trial_id: TrialBook(starts[0].trial_id, {}, reported=1),
        starts[1].trial_id: TrialBook(starts[1].trial_id, {}, reported=0)})
    runner._catch_up(logged)
    runner._catch_up(dict(logged, extra={"replay": True}, epoch=1))  # replays are never told
    assert runner.state.trials[starts[1].trial_id].reported == 1
    assert runner.scheduler.state_dict() == live.state_dict()


def test_progress_and_table_read_durations_in_s_min_or_h():
    import io

    from nasalloc.validate.progress import Progress
    from nasalloc.validate.report import format_table

    stream = io.StringIO()
    Progress("asha g=1", predicted_s=5400.0, stream=stream).line(42.0, "trial 0 stop @3")
    assert "42.0 s of ~1.5 h predicted" in stream.getvalue()  # not "0.0 h of ~1.5 h", not "5400.0s"
    row = {"algorithm": "asha", "which": "best", "gpus_per_trial": 1.0, "predicted_makespan_s": 5.8,
           "resimulated_makespan_s": 95.0, "measured_makespan_s": 7200.0, "makespan_rel_error": 0.1,
           "time_model_error": 0.05, "scheduling_error": 0.02, "predicted_best_metric": 0.9,
           "measured_best_metric": 0.91, "trials": 4, "failed": 0, "status": "finished"}
    line = format_table({"splits": [row], "algorithms": {}}).splitlines()[2]
    assert "5.8 s" in line and "1.6 min" in line and "2.0 h" in line


def test_a_ray_start_is_dated_from_the_segment_end_that_let_ray_begin_it(tmp_path):
    import json

    from nasalloc.validate.raytune import merge_events

    folder = tmp_path / "ray_events"
    folder.mkdir()
    trials = {
        0: [("start", 1.5, 0), ("epoch", 3.0, 1), ("pause", 3.2, 1), ("resume", 9.0, 1), ("epoch", 10.0, 2),
            ("complete", 10.1, 2)],
        1: [("start", 1.8, 0), ("epoch", 3.5, 1), ("stop", 3.6, 1)],
        2: [("start", 6.0, 0), ("epoch", 7.0, 1), ("stop", 7.5, 1)],
    }
    for trial, records in trials.items():
        (folder / f"trial_{trial}.jsonl").write_text("".join(
            json.dumps({"time_s": t, "kind": k, "trial_id": trial, "epoch": e, "gpus": 1.0}) + "\n"
            for k, t, e in records))
    merged = merge_events(tmp_path)
    starts = {(r["trial_id"], r["kind"]): (r["time_s"], r["extra"]["ray_setup_s"])
              for r in merged if r["kind"] in ("start", "resume")}
    assert starts == {(0, "start"): (0.0, 1.5), (1, "start"): (0.0, 1.8),  # nothing had ended: the search's start
                      (2, "start"): (3.6, 6.0),                           # trial 1's stop freed its GPU
                      (0, "resume"): (7.5, 9.0)}                          # the latest end before its set-up
    times = [r["time_s"] for r in merged]
    assert times == sorted(times)
    assert (tmp_path / "events.jsonl").read_text().count("\n") == len(merged) == 12


def test_the_checkpoint_the_ranks_loaded_overrides_the_book():
    # A rank killed after writing a periodic checkpoint but before reporting it ("saved"): the
    # book says epoch 1, the relaunched ranks load epoch 2. The runner believes the ranks, so the
    # next epoch is the first new one and its record names the checkpoint really loaded.
    from nasalloc.validate.runner import Runner, Segment

    runner = Runner.__new__(Runner)
    book = TrialBook(0, {}, reported=2, checkpoint_epoch=1)
    runner.state = RunState("asha", 1.0, {}, {0: book})
    seg = Segment(0, 2, slot=None, job=None, token="t", kind="resume", launched_s=0.0)
    runner._handle(seg, {"type": "ready", "epoch": 2, "load_s": 0.25})
    assert (book.checkpoint_epoch, seg.loaded_epoch, seg.load_s) == (2, 2, 0.25)
    runner._handle(seg, {"type": "ready", "epoch": 0, "load_s": 0.0})  # the file was gone: from scratch
    assert book.checkpoint_epoch == 0
