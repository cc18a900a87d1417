"""Benchmark of `nasalloc simulate`, measured side by side in one run.

1. The default sweep, ``nasalloc simulate --budget 64`` (3 algorithms x every default split x
   10 seeds, embedded profile and curves), timed end to end (plots included) with ``--jobs``
   processes (default: 2, the target machine's cores). Target: under 30 s on 2 cores.
2. In one process: the engine on every (algorithm, split) of that sweep for one seed, without
   records, against a bare SimPy loop processing the same number of events (one process
   yielding timeouts). Their ratio says how close the engine (scheduler decisions included)
   comes to the limit SimPy sets; the per-algorithm lines show where the time goes.

    python bench/bench_simulate.py [--jobs N] [--curves FILE]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import simpy


def bare_simpy(events: int) -> float:
    """Seconds SimPy takes to process ``events`` timeouts in one loop."""
    env = simpy.Environment()

    def loop(env):
        for _ in range(events):
            yield env.timeout(1.0)

    env.process(loop(env))
    began = time.perf_counter()
    env.run()
    return time.perf_counter() - began


def default_sweep(jobs: int, curves) -> tuple:
    from nasalloc.cli import main

    with tempfile.TemporaryDirectory() as out:
        args = ["simulate", "--budget", "64", "--out", out, "--jobs", str(jobs), "--quiet"]
        if curves:
            args += ["--curves", curves]
        began = time.perf_counter()
        cpu_began = _cpu_seconds()
        try:
            main(args)
        except SystemExit as exit_:
            if exit_.code:
                raise
        elapsed = time.perf_counter() - began
        cpu = _cpu_seconds() - cpu_began
        import csv

        rows = list(csv.DictReader(open(f"{out}/simulations.csv")))
    return elapsed, cpu, rows


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the sweep's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def engine_alone(curves) -> dict:
    from nasalloc.simulator.cluster import make_split
    from nasalloc.simulator.engine import simulate
    from nasalloc.simulator.schedulers import make_scheduler
    from nasalloc.simulator.schedulers.sampling import TableSource
    from nasalloc.simulator.setup import prepare

    prepared = prepare(budget=64, curves_path=curves, seeds=1, out=tempfile.mkdtemp(), jobs=1)
    spec, table = prepared.spec, prepared.table
    source = TableSource(table.space, table.configs)
    per_algorithm = {}
    for algorithm in spec.algorithms:
        seconds = events = epochs = 0
        for g in spec.splits:
            scheduler = make_scheduler(algorithm, source=source, max_t=spec.max_t, min_t=spec.min_t, eta=spec.eta,
                                       semantics=spec.semantics, mode=spec.mode, seed=spec.seeds[0],
                                       **spec.limits(algorithm))
            began = time.perf_counter()
            result = simulate(scheduler, make_split(spec.budget, spec.gpus_per_node, g), prepared.time_model, table,
                              seed=spec.seeds[0], record_events=False)
            seconds += time.perf_counter() - began
            events += result.sim_events
            epochs += result.epochs
        per_algorithm[algorithm] = (seconds, events, epochs)
    return per_algorithm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--curves", default=None, help="trace file [default: the shipped digits benchmark]")
    args = parser.parse_args()

    elapsed, cpu, rows = default_sweep(args.jobs, args.curves)
    epochs = sum(int(r["epochs"]) for r in rows)
    verdict = "PASS" if elapsed < 30 else "FAIL"
    print(f"default sweep `nasalloc simulate --budget 64` (--jobs {args.jobs}): {len(rows)} runs, "
          f"{epochs:,} trial-epochs in {elapsed:.1f} s wall -> {epochs / elapsed:,.0f} trial-epochs/s "
          f"[{verdict}: target < 30 s on 2 cores]")
    # On a shared machine wall time depends on the neighbours; CPU time does not.
    print(f"  CPU time of the sweep (all processes): {cpu:.1f} s = {cpu / 2:.1f} s on 2 dedicated cores "
          f"(load average now {__import__('os').getloadavg()[0]:.1f})")

    alone = engine_alone(args.curves)
    total_s = sum(s for s, _, _ in alone.values())
    total_events = sum(e for _, e, _ in alone.values())
    total_epochs = sum(n for _, _, n in alone.values())
    bare_s = bare_simpy(total_events)
    print(f"one process, one seed per split: engine {total_events:,} SimPy events ({total_epochs:,} trial-epochs) "
          f"in {total_s:.2f} s = {total_events / total_s:,.0f} events/s, {total_epochs / total_s:,.0f} "
          f"trial-epochs/s")
    print(f"bare SimPy loop, same {total_events:,} events: {bare_s:.3f} s = {total_events / bare_s:,.0f} events/s")
    print(f"ratio engine / bare SimPy: {total_s / bare_s:.1f}x the time")
    for algorithm, (seconds, events, n) in alone.items():
        print(f"  {algorithm:<9} {seconds:6.2f} s  {events:>8,} events  {n:>8,} trial-epochs  "
              f"{seconds / bare_simpy(events):6.1f}x bare SimPy")


if __name__ == "__main__":
    main()
