"""``nasalloc validate --executor ray``: the plan's splits run by Ray Tune itself.

The other executors run nasalloc's scheduler objects over real trials; this one hands the
whole search to Ray Tune: its own scheduler class with the plan's parameters (the ones
``nasalloc export --format ray-tune`` writes: ``ASHAScheduler``, ``HyperBandScheduler``,
``HyperBandForBOHB`` + ``TuneBOHB``), its TuneController creating, starting, pausing and
resuming trials, its placement of trials on GPUs. Each trial is a
:class:`~nasalloc.validate.raytrainable.NasallocTrial` whose epochs are trained by the same
rank processes as under ``--executor local``. The records are the other executors'
(``events.jsonl``, ``trace.csv``, ``state.json``), so the report compares the prediction
(nasalloc's model of Ray: ``--semantics ray``), the measurement (Ray) and the re-simulation
(nasalloc's model of Ray with the measured costs) exactly as for the other executors: the
end-to-end check of the ``ray`` semantics.

What the trials train: for HyperBand and ASHA, the configs the simulation drew, in the same
order (a ``grid_search`` over them: Ray's default ``BasicVariantGenerator`` with its usual
trial creation); for BOHB, the table row nearest to each config TuneBOHB proposes.

Resources: each trial asks Ray for ``gpus_per_trial`` GPUs and no CPU. On CPU, Ray is started
with the budget as its GPU count (virtual GPUs: ids stand for cores, as a CPU "GPU" is one
core under every executor); on CUDA, the budget's GPUs must be visible.

Stopping (a signal, ``--time-limit``): Ray is told to stop every trial; the trials record a
``pause`` with ``extra.interrupted``. ``--resume`` keeps the splits already finished and
runs an interrupted split again from its beginning (its partial records move to
``interrupted_<n>/``): Ray's own experiment restore does not restore its schedulers' state.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nasalloc.errors import UserError
from nasalloc.io import atomic_write_json, read_json, read_jsonl

from .executor import Executor, register_executor
from .progress import Progress
from .task import RunResult, SplitTask

STOPPING = "ray_stopping"   # a file in the split's folder: trials stopped now are interrupted, not stopped


def ray_version() -> str:
    import ray

    return ray.__version__


class RayTuneExecutor(Executor):
    name = "ray"

    def __init__(self, device: str = "cpu", gpus_per_node=None):
        from nasalloc.raysession import require_ray

        require_ray("--executor ray")
        self.device = device
        self.plan = None
        self.started = False

    def launch(self, spec):
        raise RuntimeError("the Ray executor starts no segments itself: Ray Tune runs the trials")

    def check_plan(self, plan, chosen: list) -> None:
        """Before anything runs: the plan must predict Ray (``--semantics ray``), and BOHB needs
        TuneBOHB's own requirements."""
        self.plan = plan
        for choice in chosen:
            semantics = plan.algorithms[choice.algorithm]["scheduler"].get("semantics")
            if semantics != "ray":
                raise UserError(f"--executor ray: the plan's {choice.algorithm} was simulated with --semantics "
                                f"{semantics}, so it predicts another search than Ray's; simulate with --semantics ray")
            if choice.algorithm == "bohb":
                try:
                    import ConfigSpace  # noqa: F401
                    import hpbandster  # noqa: F401
                except ImportError:
                    raise UserError("--executor ray with bohb needs TuneBOHB's hpbandster and ConfigSpace: "
                                    "pip install 'nasalloc[ray]'") from None

    def check_budget(self, budget: int) -> None:
        if self.device == "cuda":
            from nasalloc.profiler.launch import LocalLauncher

            visible = LocalLauncher(None).visible_gpu_ids()
            if budget > len(visible):
                raise UserError(f"--executor ray: the plan's budget of {budget} GPUs needs {budget} visible GPUs; "
                                f"this machine shows {len(visible)}")

    def make_runner(self, task: SplitTask, out_dir: Path, **options):
        return RaySplitRun(task, self, Path(out_dir), **options)

    def start_ray(self, budget: int) -> None:
        from nasalloc.raysession import start_local_ray

        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # our handler pauses as the other executors do
        start_local_ray(num_gpus=budget)
        self.started = True

    def close(self) -> None:
        if self.started:
            from nasalloc.raysession import stop_local_ray

            stop_local_ray()
            self.started = False


class RaySplitRun:
    """One (algorithm, split) of the plan as one Ray Tune experiment in ``out_dir/ray``."""

    def __init__(self, task: SplitTask, executor: RayTuneExecutor, out_dir: Path, device: str = "cpu",
                 stopper=None, quiet: bool = False, grace_s: float = 60.0):
        from nasalloc.simulator.cluster import make_split

        self.task, self.executor, self.out, self.device = task, executor, out_dir, device
        self.stopper, self.quiet = stopper, quiet
        self.split = make_split(task.budget, task.gpus_per_node or task.budget, task.gpus_per_trial)
        self.progress = Progress(task.label, task.predicted_makespan_s, quiet)

    # -- the experiment ------------------------------------------------------------------------
    def run(self, resume: bool = False) -> RunResult:
        state_path = self.out / "state.json"
        if state_path.exists():
            state = read_json(state_path, "validation state")
            if state.get("finished"):
                self.progress.note("finished in an earlier run; nothing to do")
                return RunResult(self.task, self.out, True, "finished", float(state.get("elapsed_s", 0)))
        if self.out.exists() and any(self.out.iterdir()):
            if not resume:
                raise UserError(f"{self.out} holds an earlier validation run; pass --resume to continue it "
                                f"or choose another --out")
            self._set_aside()
        self.out.mkdir(parents=True, exist_ok=True)
        plan = self.executor.plan
        self.executor.start_ray(self.task.budget)
        tuner, settings = self._tuner(plan)
        atomic_write_json(state_path, {"algorithm": self.task.algorithm, "gpus_per_trial": self.task.gpus_per_trial,
                                       "executor": "ray", "ray": ray_version(), **settings, "finished": False})
        self.progress.note(f"Ray Tune {ray_version()}: {settings['scheduler']} over {settings['trials']} trial(s) of "
                           f"{self.task.gpus_per_trial:g} GPU(s) on {self.task.budget} ({self.device}); "
                           f"records in {self.out}")
        began = time.monotonic()
        results = tuner.fit()
        elapsed = time.monotonic() - began
        reason = self.stopper.reason if self.stopper else None
        record_errors(self.out, results, self.task, elapsed)
        events = merge_events(self.out)
        write_trace(self.out, events, self.task)
        errors = sum(e["kind"] == "fail" for e in events)
        atomic_write_json(state_path, {"algorithm": self.task.algorithm, "gpus_per_trial": self.task.gpus_per_trial,
                                       "executor": "ray", "ray": ray_version(), **settings,
                                       "finished": reason is None, "ended": reason or "finished",
                                       "elapsed_s": elapsed, "failed_trials": errors})
        self.progress.note(f"{reason or 'finished'} after {elapsed:.1f}s")
        return RunResult(self.task, self.out, reason is None, reason or "finished", elapsed)

    def _set_aside(self) -> None:
        """An interrupted split starts again; what it recorded moves to interrupted_<n>/."""
        n = 1
        while (self.out.parent / f"{self.out.name}.interrupted_{n}").exists():
            n += 1
        target = self.out.parent / f"{self.out.name}.interrupted_{n}"
        self.out.rename(target)
        self.progress.note(f"an earlier, unfinished Ray run of this split moved to {target}; it runs again "
                           "from its beginning (Ray's restore does not restore its schedulers)")

    def _tuner(self, plan):
        from ray import tune

        from nasalloc.simulator.export import num_samples, ray_scheduler

        from .raytrainable import NasallocTrial

        algorithm = self.task.algorithm
        scheduler_entry = plan.algorithms[algorithm]["scheduler"]
        class_name, arguments = ray_scheduler(algorithm, scheduler_entry)
        import ray.tune.schedulers as schedulers

        scheduler = getattr(schedulers, class_name)(**arguments)
        run = {"out": str(self.out.resolve()), "workload": self.task.workload, "device": self.device,
               "max_t": self.task.max_t, "seed": self.task.seed, "gpus": self.task.gpus_per_trial,
               "metric": self.task.metric_name, "t0": time.time(), "row_seeds": self.task.row_seeds}
        self.run_settings = run
        n = num_samples(scheduler_entry, algorithm)
        if algorithm == "bohb":
            search_alg, param_space, samples = self._bohb_searcher(plan, run), None, n
        else:
            trials = simulated_trials(plan, self.task, self.split, n)
            search_alg, samples = None, 1
            param_space = {"nasalloc": run, "trial": tune.grid_search(trials)}
        pending = (plan.data.get("scheduler") or {}).get("ray_pending")
        if pending is not None:
            os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(int(pending))  # as simulated
        resources = {"cpu": 0, "gpu": self.task.gpus_per_trial}
        tuner = tune.Tuner(
            tune.with_resources(NasallocTrial, resources),
            param_space=param_space,
            tune_config=tune.TuneConfig(metric=self.task.metric_name, mode=self.task.mode, num_samples=samples,
                                        scheduler=scheduler, search_alg=search_alg, reuse_actors=False,
                                        trial_dirname_creator=_dirname),
            run_config=tune.RunConfig(name="tune", storage_path=str((self.out / "ray").resolve()), verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                                      stop=_Interrupt(self), callbacks=[_Progress(self)]))
        settings = {"scheduler": class_name, "scheduler_args": arguments, "trials": n,
                    "searcher": "TuneBOHB" if algorithm == "bohb" else "BasicVariantGenerator (grid of the simulated configs)",
                    "pending": pending}
        return tuner, settings

    def _bohb_searcher(self, plan, run):
        from ray.tune.search.bohb import TuneBOHB

        from nasalloc.simulator.schedulers.sampling import TableSource

        from .raytrainable import TableRows

        table = plan.table()
        bohb = TuneBOHB(space=table.space, metric=self.task.metric_name, mode=self.task.mode, seed=self.task.seed)
        return TableRows(bohb, TableSource(table.space, table.configs), run)

    def interrupt(self) -> None:
        (self.out / STOPPING).write_text(self.stopper.reason or "stop")


def _dirname(trial) -> str:
    return f"trial_{trial.config['trial']['id']}"  # Ray's default spells out the whole config


def simulated_trials(plan, task: SplitTask, split, n: int) -> list:
    """The configs (table rows) the simulation of this split gave trials 0..n-1, in order."""
    from nasalloc.simulator.engine import simulate

    result = simulate(task.make_scheduler(), split, plan.time_model(), plan.table(), seed=task.seed,
                      algorithm=task.algorithm, record_events=True)
    starts = {e.trial_id: e for e in result.events if e.kind == "start"}
    if sorted(starts) != list(range(n)):
        raise UserError(f"{task.label}: the simulation started trials {sorted(starts)[:5]}..., not the "
                        f"{n} of Ray's num_samples; cannot hand Ray the same configs")
    return [{"id": i, "row": int(starts[i].extra["row"]), "config": dict(starts[i].config)} for i in range(n)]


def record_errors(out: Path, results, task: SplitTask, elapsed_s: float) -> None:
    """A ``fail`` record for each trial Ray reports as errored that has none of its own (it
    failed before it could write one: in its set-up, say)."""
    from nasalloc.io import JsonlAppender
    from nasalloc.records import Event

    for result in results:
        if result.error is None:
            continue
        trial_id = int(result.config["trial"]["id"])
        log = out / "ray_events" / f"trial_{trial_id}.jsonl"
        records = list(read_jsonl(log)) if log.exists() else []
        if records and records[-1]["kind"] == "fail":
            continue
        epoch = max([r["epoch"] for r in records if r["kind"] == "epoch"], default=0)
        with JsonlAppender(log) as appender:
            appender.write(Event(time_s=round(elapsed_s, 4), kind="fail", trial_id=trial_id, epoch=epoch,
                                 gpus=task.gpus_per_trial, error=str(result.error).splitlines()[0][:300]).to_dict())


def merge_events(out: Path) -> list:
    """Every trial's records in one ``events.jsonl``, in time order (replaced atomically); starts
    dated as :func:`_date_starts_from_their_trigger` says."""
    from nasalloc.io import atomic_write_text
    import json

    records = []
    for path in sorted((out / "ray_events").glob("trial_*.jsonl")):
        records.extend(read_jsonl(path))
    _date_starts_from_their_trigger(records)
    records.sort(key=lambda r: r["time_s"])  # stable: a trial's own records keep their order at equal times
    atomic_write_text(out / "events.jsonl", "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return records


def _date_starts_from_their_trigger(records: list) -> None:
    """A start or resume is dated when Ray could have begun it, not when its actor was set up.

    Ray starts a trial when something frees GPUs or makes it runnable (a trial ending or
    pausing, a rung completing: every such event ends a segment) and then creates its actor,
    which the actor's own clock cannot see. So a segment's ``time_s`` becomes the latest
    segment end before its set-up (the search's start when there is none: the first trials, or
    TuneBOHB creating trials one at a time) and the set-up time moves to ``extra.ray_setup_s``.
    Start-up measured from it then holds Ray's actor creation, as ``profile --launcher ray``
    measures it; it is a lower bound when another trial's end came in between.
    """
    import bisect

    ends = sorted(r["time_s"] for r in records if r["kind"] in ("pause", "stop", "complete", "fail"))

    for record in records:
        if record["kind"] in ("start", "resume") and "ray_setup_s" not in record.get("extra", {}):
            setup = record["time_s"]
            before = bisect.bisect_right(ends, setup)
            record.setdefault("extra", {})["ray_setup_s"] = setup
            record["time_s"] = ends[before - 1] if before else 0.0


def write_trace(out: Path, events: list, task: SplitTask) -> None:
    """``trace.csv`` of the run (one row per epoch) from its records."""
    from nasalloc.trace import TraceWriter
    from nasalloc.workloads.registry import load_workload

    workload = load_workload(task.workload)
    configs = {e["trial_id"]: e.get("config") or {} for e in events if e["kind"] == "start"}
    path = out / "trace.csv"
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    with TraceWriter(partial, config_names=list(workload.search_space().keys())) as trace:
        for e in events:
            if e["kind"] != "epoch":
                continue
            extra = e.get("extra") or {}
            seconds = float(extra.get("train_s") or 0) + float(extra.get("eval_s") or 0)
            trace.write({"trial_id": e["trial_id"], "config": configs.get(e["trial_id"], {}), "epoch": e["epoch"],
                         "val_metric": e["metric"], "test_metric": e.get("test_metric"),
                         "metric_name": task.metric_name, "mode": task.mode, "epoch_seconds": seconds,
                         "gpus_per_trial": task.gpus_per_trial, "start_s": e.get("began_s"), "end_s": e["time_s"],
                         "workload": getattr(workload, "name", "")})
    os.replace(partial, path)


def _interrupt_class():
    from ray.tune.stopper import Stopper

    class Interrupt(Stopper):
        """Ray's experiment-wide stop when a signal or the time limit asks nasalloc to stop."""

        def __init__(self, split_run: RaySplitRun):
            self.split_run = split_run

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            stopper = self.split_run.stopper
            if stopper is not None and stopper.check():
                self.split_run.interrupt()
                return True
            return False

    return Interrupt


def _progress_class():
    from ray.tune import Callback

    class ProgressLines(Callback):
        """A line per trial that ends or pauses, a heartbeat on results (nasalloc's progress)."""

        def __init__(self, split_run: RaySplitRun):
            self.split_run = split_run

        def _now(self) -> float:
            return time.time() - float(self.split_run.run_settings["t0"])

        def on_step_end(self, iteration, trials, **info):
            progress, statuses = self.split_run.progress, [t.status for t in trials]
            progress.running, progress.paused = statuses.count("RUNNING"), statuses.count("PAUSED")
            progress.finished, progress.failed = statuses.count("TERMINATED"), statuses.count("ERROR")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.split_run.progress.heartbeat(self._now(), f"trial {result.get('nasalloc_trial')} "
                                                           f"@{result.get('training_iteration')}")

        def on_trial_save(self, iteration, trials, trial, **info):
            self.split_run.progress.line(self._now(), f"{trial} checkpointed")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.split_run.progress.line(self._now(), f"{trial} ended")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.split_run.progress.line(self._now(), f"{trial} FAILED")

    return ProgressLines


def _Interrupt(split_run):  # noqa: N802  (built lazily: ray is imported only when used)
    return _interrupt_class()(split_run)


def _Progress(split_run):  # noqa: N802
    return _progress_class()(split_run)


register_executor("ray", RayTuneExecutor)
