"""BOHB's proposals now and before, side by side in one run, and that they are the same.

Every case runs a BOHB search twice, with the current code and with the code at ``--base``
(``git archive`` extracted into a temporary folder and run in a worker process through
bench_simulate's import shim), the runs interleaved so that the machine's load hits both alike.
Each side times what its ``BOHB._new_config`` takes (every proposal: random draws and
model-based ones) and returns the proposals (table row of every config, in order) and how many
came from the model; the bench stops with an error unless both sides proposed the same.

Cases: the SimPy engine on the embedded profile and curves, 1 GPU per trial on 4, 64 and 1,024
slots (1,000 or 2 x slots trials, Ray semantics, as bench_simulate runs it), and the test
fixture's FakeClock search (tests/simulator/test_bohb_proposals.py) in both semantics.

    python bench/bench_bohb_proposals.py [--base REV] [--repeats 3] [--slots 4,64,1024]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_simulate  # noqa: E402  (its old-tree extraction and import shim)



def timed_proposals(run) -> dict:
    """Run ``run(wrap)`` where ``wrap(scheduler)`` times its ``_new_config``; the seconds spent
    proposing, the proposals' rows and the model-based count."""
    spent = [0.0]
    rows: list = []

    def wrap(scheduler):
        inner = scheduler._new_config

        def timed():
            began = time.perf_counter()
            config = inner()
            spent[0] += time.perf_counter() - began
            rows.append(int(config["_row"]))
            return config

        scheduler._new_config = timed
        return scheduler

    gc.collect()
    picks = run(wrap)
    return {"seconds": spent[0], "rows": rows, "model": picks}


_PREPARED: dict = {}


def case_engine(slots: int) -> dict:
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

    def run(wrap):
        scheduler = wrap(make_scheduler("bohb", source=source, max_t=spec.max_t, min_t=spec.min_t, eta=spec.eta,
                                        semantics="ray", mode=spec.mode, seed=0,
                                        trials=bench_simulate._trials(slots)))
        simulate(scheduler, make_split(slots, spec.gpus_per_node, 1.0), prepared.time_model, prepared.table,
                 seed=0, record_events=False)
        return scheduler.model_based_picks

    return timed_proposals(run)


def case_fakeclock(semantics: str) -> dict:
    from nasalloc.simulator.curvetable import load_curve_table
    from nasalloc.simulator.schedulers import TableSource, make_scheduler
    from nasalloc.simulator.schedulers.fakeclock import FakeClock

    table = load_curve_table(None)

    def run(wrap):
        scheduler = wrap(make_scheduler("bohb", source=TableSource(table.space, table.configs), max_t=27, eta=3,
                                        semantics=semantics, mode=table.mode, seed=7, brackets=8))
        FakeClock(scheduler, 8, seed=3, fail_prob=0.02).run()
        return scheduler.model_based_picks

    return timed_proposals(run)


def measure(case: list) -> dict:
    kind, arg = case
    return case_engine(int(arg)) if kind == "engine" else case_fakeclock(arg)


def _worker(root: str) -> None:
    bench_simulate._shim(root)
    import nasalloc.simulator.schedulers.bohb as bohb

    assert bohb.__file__.startswith(root), bohb.__file__
    for line in sys.stdin:
        print(json.dumps(measure(json.loads(line))), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="git revision of the code before [default: where this branch left main]")
    parser.add_argument("--slots", default="4,64,1024")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case and side, best kept")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    args.base = args.base or bench_simulate.default_base()
    cases = [["engine", s] for s in args.slots.split(",")] + [["fakeclock", "ray"], ["fakeclock", "reference"]]
    with tempfile.TemporaryDirectory() as tmp:
        old = _OldProposals(bench_simulate._old_tree(args.base, tmp))
        print(f"BOHB proposals (every _new_config call, random and model-based), now vs before = {args.base}; "
              f"best of {args.repeats} interleaved runs")
        print(f"{'case':<20} {'proposals':>9} {'model':>5}  {'before ms/proposal':>18} {'now ms/proposal':>15}  "
              f"{'before/now':>10}  same proposals")
        for case in cases:
            best: dict = {}
            for _ in range(args.repeats):
                runs = {"now": measure(case), "before": old.ask(case)}
                for key, run in runs.items():
                    if key not in best or run["seconds"] < best[key]["seconds"]:
                        best[key] = run
            now, before = best["now"], best["before"]
            same = now["rows"] == before["rows"] and now["model"] == before["model"]
            count = len(now["rows"])
            print(f"{case[0] + ' ' + str(case[1]):<20} {count:>9,} {now['model']:>5}  "
                  f"{1e3 * before['seconds'] / count:>18.3f} {1e3 * now['seconds'] / count:>15.3f}  "
                  f"{before['seconds'] / now['seconds']:>9.2f}x  {'yes' if same else 'NO'}")
            sys.stdout.flush()
            if not same:
                old.close()
                raise SystemExit(f"{case}: the proposals differ from the code before")
        old.close()


class _OldProposals(bench_simulate.OldCode):
    """The worker of the code before, running this file's cases."""

    def __init__(self, root: str):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", root], cwd=root, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)


if __name__ == "__main__":
    main()
