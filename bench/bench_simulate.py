"""Benchmark of the simulator, measured side by side in one run.

1. The engine alone, per algorithm and for 4, 16, 64 and 1,024 slots (1 GPU per trial on as
   many GPUs, the embedded profile and curves, Ray semantics, ``--trials`` trials, no records):
   simulated trial-epochs per real second and per CPU second of the milestone-to-milestone
   engine; its time against a bare SimPy loop processing as many events as the epoch-by-epoch
   path does (one process yielding timeouts: what SimPy itself costs for an epoch-by-epoch
   simulation); against the epoch-by-epoch path (``epoch_by_epoch=True``); and against the code
   before this change (``git archive BASE`` extracted into a temporary folder and run in a
   subprocess through an import shim, so both run here, one after the other).
   Targets: ASHA and HyperBand within 3x of bare SimPy, BOHB within 10x.
2. The default sweep, ``nasalloc simulate --budget 64`` (3 algorithms x every default split x
   10 seeds), end to end with ``--jobs`` processes, now and at BASE: the whole command in a fresh
   process as a user runs it (interpreter start, imports and plots included), alternately,
   ``--repeats`` times each, the quickest kept.
   Target: under 4 s of wall time with 2 jobs.

    python bench/bench_simulate.py [--jobs N] [--base REV] [--slots 4,16,64,1024] [--no-sweep]
                                   [--free-proposals]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import simpy

ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS = ("asha", "hyperband", "bohb")
TARGET = {"asha": 3.0, "hyperband": 3.0, "bohb": 10.0}


def bare_simpy(events: int) -> float:
    """Seconds SimPy takes to process ``events`` timeouts in one loop (best of 3)."""
    best = float("inf")
    for _ in range(3):
        env = simpy.Environment()

        def loop(env):
            for _ in range(events):
                yield env.timeout(1.0)

        env.process(loop(env))
        began = time.perf_counter()
        env.run()
        best = min(best, time.perf_counter() - began)
    return best


def _trials(slots: int) -> int:
    return max(1000, 2 * slots)


# -- the engine alone (runs in this process for the current code, in a subprocess for BASE) -----
_PREPARED: dict = {}


def measure_once(algorithm: str, slots: int, path: str) -> dict:
    """One run of the engine: seconds (wall, CPU), trial-epochs and SimPy events. ``path``:
    ``fast`` (the default engine; the only one the code before has) or ``epoch``."""
    from nasalloc.simulator.cluster import make_split
    from nasalloc.simulator.engine import simulate
    from nasalloc.simulator.schedulers import make_scheduler
    from nasalloc.simulator.schedulers.sampling import TableSource
    from nasalloc.simulator.setup import prepare

    if slots not in _PREPARED:
        prepared = prepare(budget=slots, seeds=1, out=tempfile.mkdtemp(), jobs=1)
        _PREPARED[slots] = (prepared, TableSource(prepared.table.space, prepared.table.configs))
    prepared, source = _PREPARED[slots]
    spec = prepared.spec
    scheduler = make_scheduler(algorithm, source=source, max_t=spec.max_t, min_t=spec.min_t, eta=spec.eta,
                               semantics="ray", mode=spec.mode, seed=0, trials=_trials(slots))
    extra = {"epoch_by_epoch": True} if path == "epoch" else {}
    gc.collect()  # each run starts from the same heap, whichever ran before it
    wall, cpu = time.perf_counter(), time.process_time()
    result = simulate(scheduler, make_split(slots, spec.gpus_per_node, 1.0), prepared.time_model, prepared.table,
                      seed=0, record_events=False, **extra)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "epochs": result.epochs,
            "events": result.sim_events}


def _shim(root: str) -> None:
    """Import ``nasalloc`` (and its subpackages, laid out as pyproject's package-dir maps them)
    from the tree at ``root`` instead of the installed one."""
    import importlib.util

    def load(name, folder):
        spec = importlib.util.spec_from_file_location(name, f"{folder}/__init__.py",
                                                      submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    top = load("nasalloc", f"{root}/nasalloc")
    for sub in ("simulator", "profiler", "validate"):
        if Path(f"{root}/{sub}/__init__.py").exists():
            setattr(top, sub, load(f"nasalloc.{sub}", f"{root}/{sub}"))


def default_base() -> str:
    """Where this branch left main: the code before."""
    return subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True,
                          capture_output=True, text=True).stdout.strip()[:10]


def _old_tree(base: str, into: str) -> str:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", base], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(into)
    return into


class OldCode:
    """A process running the code before: one JSON command a line in, one JSON answer out, so
    its runs interleave with the current code's (the machine's load then hits both alike)."""

    def __init__(self, root: str):
        self.root = root
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", root], cwd=root, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def ask(self, command: dict) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the worker running the code before died (see its error above)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _worker(root: str) -> None:
    _shim(root)
    import nasalloc.simulator.engine as engine

    assert engine.__file__.startswith(root), engine.__file__  # the code before, not the installed one
    for line in sys.stdin:
        command = json.loads(line)
        answer = measure_once(command["algorithm"], command["slots"], "fast")
        print(json.dumps(answer), flush=True)


# -- the default sweep ---------------------------------------------------------------------------
# BOHB proposing at no cost: a random config each time (its model still consulted, as a real
# proposal's first step), everything else unchanged. A bound, not a search anyone would run.
FREE_PROPOSALS = ("import nasalloc.simulator.schedulers.bohb as bohb; "
                  "bohb.BOHB._new_config = lambda self: (self.model_budget(), "
                  "self.source.sample(self._rng, self._source_state))[1]; ")


def default_sweep(jobs: int, root: str = None, prelude: str = "") -> tuple:
    """``nasalloc simulate --budget 64 --jobs N`` as a user runs it: a fresh process (interpreter
    start and imports included), of the code at ``root`` (through _shim) or the installed one,
    after ``prelude`` (Python). Its wall seconds, CPU seconds (it and its workers), trial-epochs
    and runs."""
    import csv

    with tempfile.TemporaryDirectory() as out:
        args = ["simulate", "--budget", "64", "--out", out, "--jobs", str(jobs), "--quiet"]
        shim = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_simulate; bench_simulate._shim({root!r}); " \
            if root else ""
        shim += prelude
        began, cpu_began = time.perf_counter(), _cpu_seconds()
        subprocess.run([sys.executable, "-c", f"{shim}from nasalloc.cli import main; main({args!r})"], check=True,
                       cwd=root or ROOT, stdout=subprocess.DEVNULL)
        elapsed, cpu = time.perf_counter() - began, _cpu_seconds() - cpu_began
        with open(f"{out}/simulations.csv") as handle:
            rows = list(csv.DictReader(handle))
    return elapsed, cpu, sum(int(r["epochs"]) for r in rows), len(rows)


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the sweep's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# -- report --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--base", default=None,
                        help="git revision of the code before [default: where this branch left main]")
    parser.add_argument("--slots", default="4,16,64,1024")
    parser.add_argument("--no-sweep", action="store_true", help="skip the default sweep")
    parser.add_argument("--free-proposals", action="store_true",
                        help="also time the default sweep with BOHB's proposals replaced by random draws "
                             "(what cheaper proposals could give at most)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case, best kept (1 at 1,024 slots)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        return

    args.base = args.base or default_base()
    slots = [int(s) for s in args.slots.split(",")]
    cases = [(a, s) for s in slots for a in ALGORITHMS]
    with tempfile.TemporaryDirectory() as tmp:
        old = OldCode(_old_tree(args.base, tmp))
        print(f"engine alone: 1 GPU per trial, max(1000, 2 x slots) trials, Ray semantics, no records; "
              f"best of {args.repeats} interleaved runs (1 at 1,024 slots); before = {args.base} "
              f"({subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', args.base], capture_output=True, text=True).stdout.strip()})")
        print(f"{'algorithm':<9} {'slots':>5} {'epochs':>8}  {'epochs/s wall':>13} {'epochs/s CPU':>12}  "
              f"{'x bare SimPy':>12}  {'epoch-path/fast':>15}  {'before/fast':>11}  target")
        for case in cases:
            best: dict = {}
            for _ in range(1 if case[1] >= 1024 else args.repeats):
                runs = {"fast": measure_once(*case, "fast"), "epoch": measure_once(*case, "epoch"),
                        "old": old.ask({"what": "engine", "algorithm": case[0], "slots": case[1]})}
                runs["bare"] = {"wall": bare_simpy(runs["epoch"]["events"])}
                for key, run in runs.items():
                    if key not in best or run["wall"] < best[key]["wall"]:
                        best[key] = run
            fast, epoch, bare = best["fast"], best["epoch"], best["bare"]["wall"]
            ratio = fast["wall"] / bare
            verdict = "met" if ratio <= TARGET[case[0]] else f"missed by {ratio / TARGET[case[0]]:.1f}x"
            print(f"{case[0]:<9} {case[1]:>5} {fast['epochs']:>8,}  {fast['epochs'] / fast['wall']:>13,.0f} "
                  f"{fast['epochs'] / max(fast['cpu'], 1e-9):>12,.0f}  {ratio:>11.1f}x  "
                  f"{epoch['wall'] / fast['wall']:>14.2f}x  {best['old']['wall'] / fast['wall']:>10.2f}x  "
                  f"<= {TARGET[case[0]]:.0f}x: {verdict}")
            sys.stdout.flush()
        print("  (x bare SimPy: engine seconds / seconds of a bare SimPy loop of as many events as the "
              "epoch-by-epoch path processes; epoch-path/fast and before/fast: how many times longer those take)")
        if not args.no_sweep:  # whole commands, now and before alternately, the quickest of each kept
            nows, befores, frees = [], [], []
            for _ in range(args.repeats):
                nows.append(default_sweep(args.jobs))
                befores.append(default_sweep(args.jobs, old.root))
                if args.free_proposals:
                    frees.append(default_sweep(args.jobs, prelude=FREE_PROPOSALS))
            elapsed, cpu, epochs, runs = min(nows)
            before = dict(zip(("wall", "cpu", "epochs", "runs"), min(befores)))
            verdict = "PASS" if elapsed < 4 else f"FAIL by {elapsed / 4:.1f}x"
            print(f"default sweep `nasalloc simulate --budget 64` (--jobs {args.jobs}): {runs} runs, {epochs:,} "
                  f"trial-epochs in {elapsed:.1f} s wall ({cpu:.1f} s CPU, all processes) -> "
                  f"{epochs / elapsed:,.0f} trial-epochs/s [{verdict}: target < 4 s on 2 cores]")
            print(f"  before ({args.base}): {before['runs']} runs, {before['epochs']:,} trial-epochs in "
                  f"{before['wall']:.1f} s wall ({before['cpu']:.1f} s CPU) -> {before['wall'] / elapsed:.2f}x the time now")
            print(f"  every run, alternately (wall s): now {', '.join(f'{r[0]:.1f}' for r in nows)}; "
                  f"before {', '.join(f'{r[0]:.1f}' for r in befores)}")
            if frees:
                free = min(frees)
                print(f"  with BOHB's proposals free (random configs, the rest unchanged): {free[0]:.1f} s wall "
                      f"({free[1]:.1f} s CPU) -> {free[0] / elapsed:.2f}x the time now "
                      f"(every run: {', '.join(f'{r[0]:.1f}' for r in frees)})")
            print(f"  load average now {os.getloadavg()[0]:.1f} (2 cores shared: wall times depend on the neighbours)")
        old.close()


if __name__ == "__main__":
    main()
