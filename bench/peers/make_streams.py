"""Decision streams from the peers' own code, written as the fixtures the tests replay.

Run in a virtual environment of its own (not in CI; see bench/peers/README.md):

    python3 -m venv .peers && .peers/bin/pip install "ray[tune]==2.60.0" hpbandster==0.7.4
    .peers/bin/python bench/peers/make_streams.py --out tests/fixtures/peer_streams

Each scenario drives one peer scheduler on the fake cluster of
``simulator/schedulers/peerclock.py`` (loaded by path: nasalloc itself is not installed here):

* Ray Tune's ``HyperBandScheduler``, ``HyperBandForBOHB`` and ``ASHAScheduler`` with fake trials
  and a small model of ``TuneController`` (``RayController`` below, read from Ray 2.60's
  ``tune/execution/tune_controller.py``): up to ``pending`` trials are created ahead and given
  to ``on_trial_add``; after every event ``choose_trial_to_run`` is asked once and a PAUSED trial
  it names is staged; free slots go to the staged and created trials first in, first out (the
  actor manager's order); ``stop_trial`` calls ``on_trial_remove`` or ``on_trial_complete`` as
  the controller does. Every decision comes from Ray's classes.
* HpBandSter's ``SuccessiveHalving`` iterations as ``BOHB`` builds them (``get_next_iteration``)
  with a ``Master.run``-like loop: ask the active iterations oldest first, open the next
  iteration when none has a run. Configs come from a sampler that numbers them (the KDE is not
  what is compared: nasalloc's BOHB runs with ``random_fraction=1``). A job for a budget trains
  from the config's last budget (nasalloc resumes from checkpoints; HpBandSter retrains, which
  changes only the time, and both sides get the same times).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections import deque

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _load_peerclock():
    path = os.path.join(ROOT, "simulator", "schedulers", "peerclock.py")
    spec = importlib.util.spec_from_file_location("peerclock", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peerclock = _load_peerclock()

# -- Ray Tune -------------------------------------------------------------------------------------


class FakeTrial:
    """What Ray's schedulers read of a Trial."""

    PENDING, RUNNING, PAUSED, TERMINATED, ERROR = "PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR"

    def __init__(self, number: int):
        self.number = number
        self.trial_id = f"t{number:05d}"
        self.status = self.PENDING
        self.is_saving = False
        self.last_result = None
        self.ran = False

    def __repr__(self):
        return self.trial_id


class _Searcher:
    def on_pause(self, trial_id):
        pass

    def on_unpause(self, trial_id):
        pass


class _SearchAlg:
    searcher = _Searcher()


class RayController:
    """The part of TuneController that decides creation and start order (see module doc)."""

    def __init__(self, scheduler, scenario: dict):
        self.scheduler = scheduler
        self.pending = scenario["pending"]
        self.limit = scenario["trials"]
        self.metric = "score"
        self.trials: list[FakeTrial] = []
        self.queue: deque = deque()
        self.search_alg = _SearchAlg()

    # what schedulers call on the controller
    def get_trials(self):
        return list(self.trials)

    def stop_trial(self, trial):
        if trial.status in (FakeTrial.ERROR, FakeTrial.TERMINATED):
            return
        if trial.status in (FakeTrial.PENDING, FakeTrial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == FakeTrial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
        if trial in self.queue:
            self.queue.remove(trial)
        trial.status = FakeTrial.TERMINATED

    # the controller's step, before each event
    def step(self):
        while sum(t.status == FakeTrial.PENDING for t in self.trials) < self.pending \
                and len(self.trials) < self.limit:
            trial = FakeTrial(len(self.trials))
            self.trials.append(trial)
            self.scheduler.on_trial_add(self, trial)
            self.queue.append(trial)
        chosen = self.scheduler.choose_trial_to_run(self)
        if chosen is not None and chosen.status == FakeTrial.PAUSED:
            chosen.status = FakeTrial.PENDING
            self.queue.append(chosen)

    # the adapter interface of peerclock.run
    def next(self):
        self.step()
        if not self.queue:
            return None
        trial = self.queue.popleft()
        kind = "r" if trial.ran else "s"
        trial.status, trial.ran = FakeTrial.RUNNING, True
        milestone = self._milestone(trial)
        self.step()
        return kind, trial.number, milestone

    def _milestone(self, trial):
        info = getattr(self.scheduler, "_trial_info", {})
        entry = info.get(trial) or info.get(trial.trial_id)
        if isinstance(entry, tuple):  # HyperBand: (bracket, band)
            return int(entry[0]._cumul_r)
        return 0  # ASHA: no milestone (nasalloc's ASHA reports its next rung; not compared)

    def result(self, number, epoch, value):
        trial = self.trials[number]
        result = {"training_iteration": epoch, self.metric: value}
        trial.last_result = result
        decision = self.scheduler.on_trial_result(self, trial, result)
        if decision == "PAUSE":
            trial.status = FakeTrial.PAUSED
        elif decision == "STOP":
            self.stop_trial(trial)
        self.step()
        return {"CONTINUE": "c", "PAUSE": "p", "STOP": "s"}[decision]

    def failure(self, number):
        trial = self.trials[number]
        self.scheduler.on_trial_error(self, trial)
        trial.status = FakeTrial.ERROR
        self.step()

    def finish(self):
        ended = all(t.status in (FakeTrial.TERMINATED, FakeTrial.ERROR) for t in self.trials)
        return "done" if ended and len(self.trials) == self.limit else "hang"


def ray_scheduler(scenario: dict):
    from ray.tune.schedulers import ASHAScheduler, HyperBandForBOHB, HyperBandScheduler

    kind, mode = scenario["peer"], scenario["mode"]
    if kind == "ray-hyperband":
        return HyperBandScheduler(metric="score", mode=mode, max_t=scenario["max_t"],
                                  reduction_factor=scenario["eta"])
    if kind == "ray-bohb":
        return HyperBandForBOHB(metric="score", mode=mode, max_t=scenario["max_t"],
                                reduction_factor=scenario["eta"])
    return ASHAScheduler(metric="score", mode=mode, max_t=scenario["max_t"],
                         grace_period=scenario["min_t"], reduction_factor=scenario["eta"])


# -- HpBandSter -----------------------------------------------------------------------------------


class _Job:
    def __init__(self, config_id, config, budget, result, exception=None):
        self.id = config_id
        self.kwargs = {"config": config, "budget": budget}
        self.timestamps = {}
        self.result = result
        self.exception = exception


class HpBandSterMaster:
    """Master.run's choice of the next job, one job per free slot."""

    def __init__(self, scenario: dict):
        import numpy as np
        from hpbandster.optimizers.iterations import SuccessiveHalving

        self.np, self.SuccessiveHalving = np, SuccessiveHalving
        self.eta, self.mode = scenario["eta"], scenario["mode"]
        min_budget, max_budget = scenario["min_t"], scenario["max_t"]
        # as hpbandster.optimizers.bohb.BOHB.__init__ computes them
        self.max_SH_iter = -int(np.log(min_budget / max_budget) / np.log(self.eta)) + 1
        self.budgets = max_budget * np.power(self.eta, -np.linspace(self.max_SH_iter - 1, 0,
                                                                    self.max_SH_iter))
        self.left = scenario["brackets"]
        self.iterations = []
        self.numbers: dict = {}  # config id -> trial number (creation order)
        self.running: dict = {}  # trial number -> [config id, config, budget]
        self.last_budget: dict = {}
        self.created = 0

    def _sampler(self, budget):
        self.created += 1
        return {"n": self.created - 1}, {}

    def _next_iteration(self, iteration):
        # as BOHB.get_next_iteration builds it
        np = self.np
        s = self.max_SH_iter - 1 - (iteration % self.max_SH_iter)
        n0 = int(np.floor(self.max_SH_iter / (s + 1)) * self.eta ** s)
        ns = [max(int(n0 * (self.eta ** (-i))), 1) for i in range(s + 1)]
        return self.SuccessiveHalving(HPB_iter=iteration, num_configs=ns,
                                      budgets=self.budgets[(-s - 1):],
                                      config_sampler=self._sampler)

    def next(self):
        while True:
            run = None
            for iteration in self.iterations:
                if not iteration.is_finished:
                    run = iteration.get_next_run()
                    if run is not None:
                        break
            if run is not None:
                config_id, config, budget = run
                number = self.numbers.setdefault(config_id, config["n"])
                kind = "r" if number in self.last_budget else "s"
                self.running[number] = [config_id, config, budget]
                return kind, number, int(round(budget))
            if self.left > 0:
                self.iterations.append(self._next_iteration(len(self.iterations)))
                self.left -= 1
                continue
            return None

    def result(self, number, epoch, value):
        config_id, config, budget = self.running[number]
        if epoch < int(round(budget)):
            return "c"
        loss = -value if self.mode == "max" else value
        loss = float(loss)
        del self.running[number]
        self.last_budget[number] = epoch
        self._register(config_id, config, budget, {"loss": loss, "info": {}})
        return "j"

    def failure(self, number):
        config_id, config, budget = self.running.pop(number)
        self.last_budget.setdefault(number, 0)
        self._register(config_id, config, budget, None, exception="crashed")

    def _register(self, config_id, config, budget, result, exception=None):
        iteration = self.iterations[config_id[0]]
        iteration.register_result(_Job(config_id, config, budget, result, exception))

    def finish(self):
        done = all(i.is_finished for i in self.iterations) and self.left == 0
        return "done" if done else "hang"


# -- scenarios --------------------------------------------------------------------------------------


HPBANDSTER_TIES = (
    "HpBandSter ranks a stage with numpy's argsort (quicksort kind), which orders equal losses "
    "as the SIMD sort numpy picks for the CPU puts them (x86-simd-sort with AVX-512 here: "
    "unstable even for 9 items), so tied streams are not portable between machines. nasalloc "
    "makes the same argsort call; its streams here have no ties.")
EXCLUDED = {"hpbandster-bohb": [HPBANDSTER_TIES,
                                "budgets that are not whole epochs (e.g. max 100, eta 3)"],
            "ray-asha": ["milestones: ASHAScheduler has none to report (compared as 0)"]}


def scenarios():
    """Several max_t/eta/min_t, 1/4/16 slots, min and max mode, ties, NaNs, failures."""
    out = []

    def add(**scenario):
        scenario.setdefault("mode", "max")
        scenario.setdefault("min_t", 1)
        scenario["name"] = "{peer}-{max_t}-{eta}-{min_t}-s{slots}-{mode}-{tag}".format(**scenario)
        out.append(scenario)

    seed = 0
    for peer in ("ray-hyperband", "ray-bohb"):
        for max_t, eta, trials in ((9, 3, 40), (27, 3, 60), (81, 3, 150), (16, 2, 50)):
            for slots in (1, 4, 16):
                for pending in ((200, 1) if peer == "ray-hyperband" else (1, 200)):
                    seed += 1
                    mode = "min" if seed % 2 else "max"
                    add(peer=peer, max_t=max_t, eta=eta, slots=slots, trials=trials, mode=mode,
                        pending=pending, seed=seed, grid=0.05 if seed % 3 == 0 else None,
                        nan_prob=0.03 if seed % 4 == 0 else 0.0,
                        fail_prob=0.01 if seed % 5 == 0 else 0.0, tag=f"p{pending}-{seed}")
    for max_t, eta, min_t, trials in ((9, 3, 1, 60), (81, 3, 1, 200), (100, 4, 1, 120),
                                      (27, 3, 3, 80)):
        for slots in (1, 4, 16):
            seed += 1
            add(peer="ray-asha", max_t=max_t, eta=eta, min_t=min_t, slots=slots, trials=trials,
                pending=200, seed=seed, mode="min" if seed % 2 else "max",
                grid=0.05 if seed % 3 == 0 else None, nan_prob=0.03 if seed % 4 == 0 else 0.0,
                fail_prob=0.01 if seed % 5 == 0 else 0.0, tag=str(seed))
    for max_t, eta, min_t, brackets in ((9, 3, 1, 6), (27, 3, 1, 8), (81, 3, 1, 5),
                                        (243, 3, 1, 5), (16, 2, 1, 5), (27, 3, 3, 4)):
        for slots in (1, 4, 16):
            seed += 1
            # no ties (grid): see HPBANDSTER_TIES
            add(peer="hpbandster-bohb", max_t=max_t, eta=eta, min_t=min_t, slots=slots,
                brackets=brackets, seed=seed, mode="min" if seed % 2 else "max",
                grid=None, nan_prob=0.05 if seed % 2 == 0 else 0.0,
                fail_prob=0.02 if seed % 3 == 0 else 0.0, tag=str(seed))
    for slots in (1, 4, 16):  # many crashes: HpBandSter refills stages, Ray refills brackets
        seed += 1
        add(peer="hpbandster-bohb", max_t=27, eta=3, slots=slots, brackets=4, seed=seed,
            nan_prob=0.6, fail_prob=0.05, tag=f"crashes-{seed}")
        for peer in ("ray-hyperband", "ray-bohb"):
            seed += 1
            add(peer=peer, max_t=27, eta=3, slots=slots, trials=60, seed=seed,
                pending=200 if peer == "ray-hyperband" else 1, nan_prob=0.2, fail_prob=0.04,
                tag=f"crashes-{seed}")
    return out


def stream_of(scenario: dict) -> list[str]:
    if scenario["peer"].startswith("ray-"):
        scheduler = ray_scheduler(scenario)
        adapter = RayController(scheduler, scenario)
    else:
        adapter = HpBandSterMaster(scenario)
    return peerclock.run(adapter, scenario)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the fixture files")
    args = parser.parse_args(argv)
    import ray

    versions = {"ray": ray.__version__, "hpbandster": _version("hpbandster"),
                "numpy": __import__("numpy").__version__, "python": sys.version.split()[0]}
    os.makedirs(args.out, exist_ok=True)
    by_peer: dict = {}
    for scenario in scenarios():
        stream = stream_of(scenario)
        by_peer.setdefault(scenario["peer"], []).append({**scenario, "stream": stream})
        print(f"{scenario['name']}: {len(stream)} events, ends {stream[-1]}", flush=True)
    for peer, items in by_peer.items():
        doc = {"peer": peer, "versions": versions, "generator": "bench/peers/make_streams.py",
               "clock": "simulator/schedulers/peerclock.py", "excluded": EXCLUDED.get(peer, []),
               "scenarios": items}
        path = os.path.join(args.out, f"{peer}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(doc, handle, separators=(",", ":"))
            handle.write("\n")
        os.replace(tmp, path)
        print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB)")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    sys.exit(main())
