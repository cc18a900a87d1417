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
   10 seeds), end to end (plots included) with ``--jobs`` processes, now and at BASE.
   Target: under 4 s of wall time with 2 jobs.

    python bench/bench_simulate.py [--jobs N] [--base main] [--slots 4,16,64,1024] [--no-sweep]
"""

from __future__ import annotations

import argparse
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
def measure(cases: list, paths: tuple) -> list:
    """For each (algorithm, slots): seconds (wall, CPU; best of the repeats), epochs and SimPy
    events of every path asked (``fast``, ``epoch``; the code before has only one path)."""
    from nasalloc.simulator.cluster import make_split
    from nasalloc.simulator.engine import simulate
    from nasalloc.simulator.schedulers import make_scheduler
    from nasalloc.simulator.schedulers.sampling import TableSource
    from nasalloc.simulator.setup import prepare

    out = []
    prepared = {}
    for algorithm, slots in cases:
        if slots not in prepared:
            prepared[slots] = prepare(budget=slots, seeds=1, out=tempfile.mkdtemp(), jobs=1)
        p = prepared[slots]
        spec, table = p.spec, p.table
        source = TableSource(table.space, table.configs)
        row = {"algorithm": algorithm, "slots": slots, "trials": _trials(slots)}
        for path in paths:
            best = None
            for _ in range(1 if slots >= 1024 else 2):
                scheduler = make_scheduler(algorithm, source=source, max_t=spec.max_t, min_t=spec.min_t,
                                           eta=spec.eta, semantics="ray", mode=spec.mode, seed=0,
                                           trials=_trials(slots))
                extra = {"epoch_by_epoch": True} if path == "epoch" else {}
                wall, cpu = time.perf_counter(), time.process_time()
                result = simulate(scheduler, make_split(slots, spec.gpus_per_node, 1.0), p.time_model, table,
                                  seed=0, record_events=False, **extra)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if best is None or wall < best[0]:
                    best = (wall, cpu, result.epochs, result.sim_events)
            row[path] = dict(zip(("wall", "cpu", "epochs", "events"), best))
        out.append(row)
    return out


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


def _old_tree(base: str, into: str) -> str:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", base], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(into)
    return into


def _in_old_code(root: str, command: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", root, json.dumps(command)],
                          check=True, capture_output=True, text=True, cwd=root)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker(root: str, command: dict) -> None:
    _shim(root)
    import nasalloc.simulator.engine as engine

    assert engine.__file__.startswith(root), engine.__file__  # the code before, not the installed one
    if command["what"] == "engine":
        print(json.dumps(measure([tuple(c) for c in command["cases"]], ("fast",))))
    else:
        elapsed, cpu, epochs, runs = default_sweep(command["jobs"])
        print(json.dumps({"wall": elapsed, "cpu": cpu, "epochs": epochs, "runs": runs}))


# -- the default sweep ---------------------------------------------------------------------------
def default_sweep(jobs: int) -> tuple:
    import csv

    from nasalloc.cli import main

    with tempfile.TemporaryDirectory() as out:
        args = ["simulate", "--budget", "64", "--out", out, "--jobs", str(jobs), "--quiet"]
        began, cpu_began = time.perf_counter(), _cpu_seconds()
        try:
            main(args)
        except SystemExit as exit_:
            if exit_.code:
                raise
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
    parser.add_argument("--base", default="main", help="git revision of the code before [default: main]")
    parser.add_argument("--slots", default="4,16,64,1024")
    parser.add_argument("--no-sweep", action="store_true", help="skip the default sweep")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker[0], json.loads(args.worker[1]))
        return

    slots = [int(s) for s in args.slots.split(",")]
    cases = [(a, s) for s in slots for a in ALGORITHMS]
    with tempfile.TemporaryDirectory() as tmp:
        old_root = _old_tree(args.base, tmp)
        print(f"engine alone: 1 GPU per trial, max(1000, 2 x slots) trials, Ray semantics, no records; "
              f"best of 2 runs (1 at 1,024 slots); before = {args.base} "
              f"({subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', args.base], capture_output=True, text=True).stdout.strip()})")
        print(f"{'algorithm':<9} {'slots':>5} {'epochs':>8}  {'epochs/s wall':>13} {'epochs/s CPU':>12}  "
              f"{'x bare SimPy':>12}  {'epoch-path/fast':>15}  {'before/fast':>11}  target")
        for case in cases:
            new = measure([case], ("fast", "epoch"))[0]
            old = _in_old_code(old_root, {"what": "engine", "cases": [case]})[0]
            fast, epoch = new["fast"], new["epoch"]
            bare = bare_simpy(epoch["events"])
            ratio = fast["wall"] / bare
            verdict = "met" if ratio <= TARGET[case[0]] else f"missed by {ratio / TARGET[case[0]]:.1f}x"
            print(f"{case[0]:<9} {case[1]:>5} {fast['epochs']:>8,}  {fast['epochs'] / fast['wall']:>13,.0f} "
                  f"{fast['epochs'] / max(fast['cpu'], 1e-9):>12,.0f}  {ratio:>11.1f}x  "
                  f"{epoch['wall'] / fast['wall']:>14.2f}x  {old['fast']['wall'] / fast['wall']:>10.2f}x  "
                  f"<= {TARGET[case[0]]:.0f}x: {verdict}")
            sys.stdout.flush()
        print("  (x bare SimPy: engine seconds / seconds of a bare SimPy loop of as many events as the "
              "epoch-by-epoch path processes; epoch-path/fast and before/fast: how many times longer those take)")
        if not args.no_sweep:
            elapsed, cpu, epochs, runs = default_sweep(args.jobs)
            old = _in_old_code(old_root, {"what": "sweep", "jobs": args.jobs})
            verdict = "PASS" if elapsed < 4 else f"FAIL by {elapsed / 4:.1f}x"
            print(f"default sweep `nasalloc simulate --budget 64` (--jobs {args.jobs}): {runs} runs, {epochs:,} "
                  f"trial-epochs in {elapsed:.1f} s wall ({cpu:.1f} s CPU, all processes) -> "
                  f"{epochs / elapsed:,.0f} trial-epochs/s [{verdict}: target < 4 s on 2 cores]")
            print(f"  before ({args.base}): {old['runs']} runs, {old['epochs']:,} trial-epochs in {old['wall']:.1f} s "
                  f"wall ({old['cpu']:.1f} s CPU) -> {old['wall'] / elapsed:.2f}x the time now")
            print(f"  load average now {os.getloadavg()[0]:.1f} (2 cores shared: wall times depend on the neighbours)")


if __name__ == "__main__":
    main()
