"""What runs inside Ray Tune for ``nasalloc validate --executor ray``: one trial, one Ray actor.

:class:`NasallocTrial` is a class ``tune.Trainable`` whose ``step()`` is one epoch of the
workload, trained by the very rank processes the local executor starts (``python -m
nasalloc.validate.trial``: g one-thread gloo ranks on CPU, or g GPUs; the trainable hosts the
trial's channel). So what differs from ``--executor local`` is only who decides: here Ray
Tune's own scheduler, through Ray's own calls:

* ``step()``  -> the ranks train the next epoch (the first call launches them; later calls
  answer the previous epoch with *continue*) and the epoch's metric is returned to Ray;
* ``save_checkpoint(dir)`` (Ray pausing the trial at a rung) -> the ranks are told *pause*,
  save their checkpoint and exit; it is copied into Ray's checkpoint folder;
* ``load_checkpoint(dir)`` (Ray resuming it) -> the checkpoint is copied back; the next
  ``step()`` launches the ranks from it;
* ``cleanup()`` (Ray stopping or completing the trial) -> *stop*.

Each trial appends its records (nasalloc.records.Event: start/resume, epoch, pause, stop,
complete, fail; times in seconds since the search began, on this machine's clock) to its own
``ray_events/trial_<id>.jsonl``, one flushed line each; the driver merges them into the
split's ``events.jsonl``. :class:`TableRows` is the searcher wrapper that lets Ray's TuneBOHB
propose configs while the trials train the plan's table rows (as the simulator's BOHB does).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from pathlib import Path

from ray import tune
from ray.tune.search import Searcher

from nasalloc.io import JsonlAppender, atomic_write_json, read_jsonl
from nasalloc.records import Event

from .channel import RUNNER_ENV, TOKEN_ENV, ChannelServer
from .executor import JobSpec
from .raytune import STOPPING
from .task import training_seed

POLL_S = 0.2
EXIT_WAIT_S = 60.0
CHECKPOINT_FILE = "checkpoint.pt"


class TrialFailed(RuntimeError):
    """The trial's ranks died without a decision that ended them (Ray marks the trial ERROR)."""


class NasallocTrial(tune.Trainable):
    def setup(self, config):
        self._setup_s = time.time()
        run, trial = config["nasalloc"], config["trial"]
        self.run = run
        self.nas_id, self.row, self.params = int(trial["id"]), trial.get("row"), dict(trial["config"])
        self.out = Path(run["out"])
        self.checkpoint = self.out / "checkpoints" / f"trial_{self.nas_id}" / CHECKPOINT_FILE
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        log = self.out / "ray_events" / f"trial_{self.nas_id}.jsonl"
        self.segment = 1 + sum(r["kind"] in ("start", "resume") for r in read_jsonl(log)) if log.exists() else 1
        self.events = JsonlAppender(log, fsync=False)
        self.checkpoint_epoch = 0
        self.job = self.channel = self.token = None
        self.last_epoch, self.load_s, self.answer = 0, None, None

    # -- records ---------------------------------------------------------------------------
    def _now(self, at: float = None) -> float:
        return round((time.time() if at is None else at) - float(self.run["t0"]), 4)

    def _record(self, kind: str, epoch: int, at: float = None, **fields) -> None:
        event = Event(time_s=self._now(at), kind=kind, trial_id=self.nas_id, epoch=epoch,
                      gpus=float(self.run["gpus"]), **fields)
        self.events.write(event.to_dict())

    # -- Ray's calls -------------------------------------------------------------------------
    def step(self):
        if self.job is None:
            self._launch()
        else:
            self._answer("continue")
        message = self._next("epoch")
        epoch = int(message["epoch"])
        self.last_epoch = epoch
        ended = time.time()
        seconds = float(message.get("train_s") or 0) + float(message.get("eval_s") or 0)
        extra = {"train_s": message.get("train_s"), "eval_s": message.get("eval_s"), "segment": self.segment}
        if self.load_s is not None and epoch == self.checkpoint_epoch + 1:
            extra["load_s"] = self.load_s
        self._record("epoch", epoch, at=ended, metric=message["metric"], test_metric=message.get("test_metric"),
                     began_s=self._now(max(self.launched, ended - seconds)), extra=extra)
        return {self.run["metric"]: message["metric"], "test_metric": message.get("test_metric"),
                "nasalloc_trial": self.nas_id, "epoch_seconds": seconds,
                "done": epoch >= int(self.run["max_t"])}

    def save_checkpoint(self, checkpoint_dir):
        began = time.time()
        if self.job is not None:  # Ray pauses the trial: the ranks save and exit
            self._answer("pause")
            message = self._next("checkpointed")
            self.checkpoint_epoch = int(message["epoch"])
            self._end_job()
        target = Path(checkpoint_dir)
        if self.checkpoint.exists():
            shutil.copyfile(self.checkpoint, target / CHECKPOINT_FILE)
        atomic_write_json(target / "nasalloc.json", {"trial_id": self.nas_id, "epoch": self.checkpoint_epoch})
        self._record("pause", self.last_epoch, extra={"segment": self.segment, "save_s": round(time.time() - began, 4),
                                                      "checkpoint_epoch": self.checkpoint_epoch})
        return None

    def load_checkpoint(self, checkpoint_dir):
        source = Path(checkpoint_dir)
        meta = json.loads((source / "nasalloc.json").read_text())
        if (source / CHECKPOINT_FILE).exists():
            shutil.copyfile(source / CHECKPOINT_FILE, self.checkpoint)
        self.checkpoint_epoch = self.last_epoch = int(meta["epoch"])

    def cleanup(self):
        if self.job is not None:  # Ray stopped (or completed) a running trial
            self._answer("stop")
            self._end_job(wait=True)
            if (self.out / STOPPING).exists():  # the whole run is stopping: interrupted, not stopped
                self._record("pause", self.last_epoch, extra={"segment": self.segment, "interrupted": True,
                                                              "checkpoint_epoch": self.checkpoint_epoch})
            else:
                kind = "complete" if self.last_epoch >= int(self.run["max_t"]) else "stop"
                self._record(kind, self.last_epoch, extra={"segment": self.segment})
        self.events.close()

    # -- the ranks ---------------------------------------------------------------------------
    def _launch(self) -> None:
        import ray

        from .local import LocalExecutor

        kind = "resume" if self.checkpoint_epoch > 0 else "start"
        self.token = secrets.token_hex(8)
        self.channel = ChannelServer("127.0.0.1")
        self.channel.expect(self.token)
        trial_dir = self.out / "trials" / f"trial_{self.nas_id}"
        spec_path = trial_dir / f"segment_{self.segment}.json"
        device = self.run["device"]
        atomic_write_json(spec_path, {
            "trial_id": self.nas_id, "workload": self.run["workload"], "config": self.params,
            "seed": training_seed(int(self.run["seed"]), self.nas_id, self.row, self.run.get("row_seeds")),
            "checkpoint": str(self.checkpoint),
            "resume": kind == "resume", "device": device, "max_epochs": int(self.run["max_t"])})
        gpus = float(self.run["gpus"])
        ranks = int(gpus) if gpus >= 1 else 1
        assigned = [int(i) for i in ray.get_gpu_ids()]  # Ray's placement: the GPU ids (CPU: cores) it gave us
        devices = assigned if device == "cpu" else list(range(len(assigned)))  # CUDA: Ray set CUDA_VISIBLE_DEVICES
        spec = JobSpec(trial_id=self.nas_id, segment=self.segment, ranks=ranks, devices=devices,
                       argv=["--spec", str(spec_path)], env={RUNNER_ENV: self.channel.address, TOKEN_ENV: self.token},
                       log_dir=trial_dir / f"segment_{self.segment}", device=device,
                       trials_per_gpu=max(1, round(1 / gpus)) if gpus < 1 else 1)
        extra = {"segment": self.segment, "ray_trial": self.trial_name}
        if kind == "start" and self.row is not None:
            extra["row"] = self.row
        self.launched = time.time()
        self.job = LocalExecutor(device=device).launch(spec)
        # the segment began when Ray set the actor up: Ray's own start-up is part of it
        self._record(kind, self.checkpoint_epoch, at=self._setup_s, placement=assigned,
                     config=self.params if kind == "start" else None, extra=extra)

    def _answer(self, decision: str) -> None:
        self.answer = decision
        self.channel.send(self.token, {"decision": decision})

    def _next(self, wanted: str) -> dict:
        """The next message of type ``wanted`` from rank 0 (``ready`` noted on the way)."""
        while True:
            for _, message in self.channel.poll(POLL_S):
                if message.get("type") == "ready":
                    self.load_s = message.get("load_s")
                elif message.get("type") == wanted:
                    return message
            code = self.job.poll()
            if code is not None:
                for _, message in self.channel.drain(self.token):
                    if message.get("type") == wanted:
                        return message
                self._fail(f"exited with status {code} before its {wanted} message")

    def _end_job(self, wait: bool = True) -> None:
        if wait and self.job.wait(EXIT_WAIT_S) is None:
            self.job.terminate("did not exit after its decision")
        self.channel.close()
        self.job = self.channel = None

    def _fail(self, why: str):
        failure = getattr(self.job, "failure", None) or why
        self._record("fail", self.last_epoch, error=failure, extra={"segment": self.segment})
        self.job.terminate("failed")
        self.channel.close()
        self.job = self.channel = None
        raise TrialFailed(f"trial {self.nas_id}: {failure}")


class TableRows(Searcher):
    """A searcher that asks another (TuneBOHB) for each config and hands the trial the nearest
    row of the plan's table: Ray's own searcher and scheduler decide, the trial trains a row whose
    costs and curve the simulation knows. Every other call goes to the wrapped searcher, which
    keeps learning from its own proposals (HyperBandForBOHB calls ``on_pause``/``on_unpause``)."""

    def __init__(self, searcher, source, run: dict):
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher, self.source, self.run, self.created = searcher, source, run, 0

    def suggest(self, trial_id: str):
        config = self.searcher.suggest(trial_id)
        if config is None or config is Searcher.FINISHED:
            return config
        row = self.source.snap(config)
        index = int(row.pop("_row"))
        self.created += 1
        return {"nasalloc": self.run, "trial": {"id": self.created - 1, "row": index, "config": row}}

    def on_trial_result(self, trial_id: str, result: dict):
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False):
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def on_pause(self, trial_id: str):
        self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str):
        self.searcher.on_unpause(trial_id)

    # Ray saves a wrapper's own state beside the wrapped searcher's (SearchGenerator.save_to_dir)
    def get_state(self) -> dict:
        return {"created": self.created}

    def set_state(self, state: dict) -> None:
        self.created = int(state["created"])
