"""The per-epoch round trip as the profiler measures it: the trial's own report_epoch against an
echo runner doing the runner's bookkeeping, and what the profile keeps of it."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from nasalloc.profiler import fit
from nasalloc.validate.channel import TrialLink
from nasalloc.validate.roundtrip import EchoRunner, timed_report


class OneRank:
    is_main, world_size = True, 1

    def broadcast_floats(self, values):
        return list(values)

    def all_reduce_max(self, values):
        return list(values)


def test_the_echo_runner_answers_every_epoch_with_the_runners_writes(tmp_path):
    runner = EchoRunner("127.0.0.1", tmp_path / "echo")
    token = runner.token()
    stop = threading.Event()
    serving = threading.Thread(target=lambda: [runner.serve(0.05) for _ in iter(stop.is_set, True)])
    serving.start()
    try:
        link = TrialLink(runner.address, token)
        link.send({"type": "hello", "token": token})
        seconds = []
        for epoch in (1, 2, 3):
            result = SimpleNamespace(epoch=epoch, val_metric=0.5, test_metric=None, train_seconds=0.1,
                                     eval_seconds=0.01, samples=64)
            decision, took = timed_report(link, OneRank(), result)
            assert decision == "continue"
            seconds.append(took)
        link.close()
    finally:
        stop.set()
        serving.join()
        runner.close()
    assert all(0 < s < 5 for s in seconds)
    events = [json.loads(line) for line in (tmp_path / "echo" / "events.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events] == [1, 2, 3]
    assert len(json.loads((tmp_path / "echo" / "state.json").read_text())["trials"]) == 3


def test_an_unknown_token_gets_no_answer(tmp_path):
    runner = EchoRunner("127.0.0.1", tmp_path / "echo")
    try:
        link = TrialLink(runner.address, "not-ours")
        link.send({"type": "hello", "token": "not-ours"})
        link.send({"type": "epoch", "epoch": 1, "metric": 0.5})
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            runner.serve(0.05)
        with pytest.raises(ConnectionError):
            link.receive()  # dropped, never answered
    finally:
        runner.close()


def test_start_up_cv_pools_the_repeated_launches_of_each_gpu_count():
    measurements = [{"gpus": 1, "kind": "ddp", "startup_s": s} for s in (3.0, 4.0, 5.0)]
    measurements += [{"gpus": 2, "kind": "ddp", "startup_s": s} for s in (8.0, 12.0)]
    measurements += [{"gpus": 4, "kind": "ddp", "startup_s": 20.0}]  # once: no spread to learn from
    # relative deviations: (-0.25, 0, 0.25) with 2 dof, (-0.2, 0.2) with 1 dof
    expected = ((0.25 ** 2 * 2 + 0.2 ** 2 * 2) / 3) ** 0.5
    assert fit.startup_cv(measurements) == pytest.approx(expected)
    assert fit.startup_cv(measurements[-1:]) is None


def test_run_cv_is_the_spread_of_job_means_beyond_the_epoch_noise():
    same = [{"gpus": 1, "kind": "ddp", "epoch_seconds": [1.0, 1.2, 0.8]} for _ in range(3)]
    assert fit.run_cv(same) == 0.0  # identical jobs: the run factor does not vary
    apart = [{"gpus": 1, "kind": "ddp", "epoch_seconds": [m, m, m]} for m in (0.9, 1.0, 1.1)]
    assert fit.run_cv(apart) == pytest.approx(0.1)
    assert fit.run_cv(apart[:1]) is None
