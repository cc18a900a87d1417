"""The per-epoch round trip between a trial and the runner, in one place for both who pay it.

After every epoch rank 0 reports the result over the channel and waits for the runner's
decision; the runner tells the scheduler, appends the epoch's event record and trace row
(flushed and fsynced), writes ``state.json`` atomically (fsync + rename) and answers; rank 0
broadcasts the decision to the other ranks. That is :func:`report_epoch` on the trial's side
(used by :mod:`nasalloc.validate.trial`) and the runner's ``_on_epoch``.

The profiler measures this cost *the same way*: its worker calls :func:`report_epoch` after
every measured epoch against an :class:`EchoRunner` in the profiling process, which does the
runner's per-epoch bookkeeping (the same three writes, a state growing as the run goes) and
answers ``continue``; the worker times from the end of the epoch to the decision on every
rank. What it cannot reproduce is the scheduler's own decision time (microseconds for
HyperBand/ASHA; BOHB fits its KDEs when a budget has enough results, a few ms each time).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from .channel import RUNNER_ENV, TOKEN_ENV, ChannelServer, TrialLink, parse_address

CODES = {"continue": 0.0, "pause": 1.0, "stop": 2.0}
NAMES = {v: k for k, v in CODES.items()}


def connect_from_env(ctx, hello: Optional[dict] = None) -> Optional[TrialLink]:
    """Rank 0's link to the runner named by ``NASALLOC_RUNNER`` (None on other ranks)."""
    if not ctx.is_main:
        return None
    link = TrialLink(parse_address(os.environ.get(RUNNER_ENV)), os.environ.get(TOKEN_ENV, ""))
    link.send({"type": "hello", "token": link.token, "pid": os.getpid(), "world_size": ctx.world_size,
               **(hello or {})})
    return link


def report_epoch(link: Optional[TrialLink], ctx, result) -> str:
    """Report ``result`` (an EpochResult) and return the runner's decision, on every rank."""
    code = 0.0
    if link is not None:
        link.send({"type": "epoch", "epoch": result.epoch, "metric": result.val_metric,
                   "test_metric": result.test_metric, "train_s": result.train_seconds,
                   "eval_s": result.eval_seconds, "samples": result.samples})
        code = CODES[link.decision()]
    return NAMES[ctx.broadcast_floats([code])[0]]


def timed_report(link: Optional[TrialLink], ctx, result) -> tuple:
    """(decision, seconds from the call to the decision on this rank, slowest rank)."""
    began = time.perf_counter()
    decision = report_epoch(link, ctx, result)
    seconds, = ctx.all_reduce_max([time.perf_counter() - began])
    return decision, seconds


class EchoRunner:
    """The runner's side of the round trip without a scheduler (for the profiler)."""

    def __init__(self, host: str, folder: Path):
        from nasalloc.io import JsonlAppender

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.channel = ChannelServer(host)
        self.address = self.channel.address
        self.events = JsonlAppender(self.folder / "events.jsonl")
        self.trace = JsonlAppender(self.folder / "trace.jsonl")
        self.seen: list = []
        self._tokens = 0

    def token(self) -> str:
        """A fresh token for one job's rank 0 (and the env that job needs)."""
        self._tokens += 1
        token = f"profile-{self._tokens}"
        self.channel.expect(token)
        return token

    def env(self, token: str) -> dict:
        return {RUNNER_ENV: self.address, TOKEN_ENV: token}

    def serve(self, timeout: float) -> None:
        """Answer what arrives within ``timeout`` seconds, as the runner does."""
        from nasalloc.io import atomic_write_json

        for token, message in self.channel.poll(timeout):
            if message.get("type") != "epoch":
                continue
            record = {"time_s": time.monotonic(), "kind": "epoch", "token": token, **message}
            self.events.write(record)
            self.trace.write(message)
            self.seen.append({"token": token, "epoch": message.get("epoch"), "metric": message.get("metric")})
            self.channel.send(token, {"decision": "continue"})
            atomic_write_json(self.folder / "state.json", {"trials": self.seen})

    def close(self) -> None:
        for handle in (self.events, self.trace, self.channel):
            handle.close()
