"""How fast are the schedulers' decisions? Drives each scheduler through the fake clock.

    python bench/bench_schedulers.py [--trials 10000] [--bohb-trials 10000] [--slots 16]
                                     [--source table|space]

For each scheduler it prints trials, results (epochs reported), decisions (suggest + on_result
+ on_failure calls), the seconds spent inside the scheduler and the decisions per second; the
fake clock's own time (heap, random metrics) is left out. BOHB refits KDEs and scores 64
candidates per new config, so it is about 30x slower per trial (still ~1 ms).
"""

from __future__ import annotations

import argparse
import time

import ConfigSpace as CS
import numpy as np

from nasalloc.simulator.schedulers import SpaceSource, TableSource, make_scheduler
from nasalloc.simulator.schedulers.fakeclock import FakeClock


class Timed:
    """Forwards to a scheduler and adds up the seconds spent in it."""

    def __init__(self, scheduler):
        self.inner = scheduler
        self.seconds = 0.0
        self.name = scheduler.name

    def _timed(self, method, *args):
        began = time.perf_counter()
        try:
            return method(*args)
        finally:
            self.seconds += time.perf_counter() - began

    def suggest(self):
        return self._timed(self.inner.suggest)

    def on_result(self, trial_id, epoch, metric):
        return self._timed(self.inner.on_result, trial_id, epoch, metric)

    def on_failure(self, trial_id):
        return self._timed(self.inner.on_failure, trial_id)


def space() -> CS.ConfigurationSpace:
    cs = CS.ConfigurationSpace()
    cs.add([CS.Float("lr", (1e-4, 1e-1), log=True), CS.Integer("width", (8, 256)),
            CS.Float("dropout", (0.0, 0.6)), CS.Categorical("opt", ["sgd", "adam", "rms"])])
    return cs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--bohb-trials", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--max-t", type=int, default=81)
    parser.add_argument("--source", choices=["table", "space"], default="table")
    args = parser.parse_args()

    cs = space()
    if args.source == "table":
        rng = np.random.default_rng(0)
        source = TableSource(cs, [SpaceSource(cs).sample(rng) for _ in range(1000)])
    else:
        source = SpaceSource(cs)
    runs = [("hyperband", "ray", None, args.trials), ("hyperband", "reference", None, args.trials),
            ("asha", "ray", "stopping", args.trials), ("asha", "reference", "promotion", args.trials),
            ("bohb", "ray", None, args.bohb_trials), ("bohb", "reference", None, args.bohb_trials)]
    print(f"fake clock: {args.slots} slots, max_t={args.max_t}, eta=3, source={args.source} "
          f"({len(source) or 'continuous'} configs), 1% of epochs fail")
    header = f"{'scheduler':<28}{'trials':>8}{'results':>10}{'decisions':>11}" \
             f"{'sched s':>9}{'decisions/s':>13}{'us/trial':>10}"
    print(header)
    for algorithm, semantics, variant, trials in runs:
        scheduler = make_scheduler(algorithm, source=source, max_t=args.max_t, eta=3,
                                   semantics=semantics, seed=0, trials=trials, variant=variant)
        timed = Timed(scheduler)
        clock = FakeClock(timed, args.slots, seed=1, fail_prob=0.01).run()
        label = f"{algorithm}/{semantics}" + (f"/{variant}" if variant else "")
        decisions = clock.decisions
        print(f"{label:<28}{scheduler.num_started:>8}{clock.counts['result']:>10}"
              f"{decisions:>11}{timed.seconds:>9.3f}{decisions / timed.seconds:>13,.0f}"
              f"{timed.seconds / scheduler.num_started * 1e6:>10.1f}", flush=True)
    print(f"summary: HyperBand and ASHA ran {args.trials} trials each, BOHB {args.bohb_trials}"
          " (BOHB's per-trial cost grows with the observations its KDEs hold)")


if __name__ == "__main__":
    main()
