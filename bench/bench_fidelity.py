"""What scheduler fidelity changed in the plan: the default scenario before and after.

"Before" is the default sweep (`nasalloc simulate --budget 64`, embedded profile and curves,
Ray semantics, 10 seeds) as commit 6dfaf9a simulated it, the last commit before the schedulers
followed Ray Tune's HyperBandScheduler / HyperBandForBOHB and HpBandSter decision for decision
(tests/simulator/test_peer_streams.py). It was made with

    git worktree add /tmp/before 6dfaf9a
    python3 -m venv --system-site-packages /tmp/venv-before
    /tmp/venv-before/bin/pip install --no-deps -e /tmp/before
    /tmp/venv-before/bin/nasalloc simulate --budget 64 --out /tmp/sim-before
    cp /tmp/sim-before/simulations.csv bench/data/fidelity_before_6dfaf9a.csv

"After" is the same sweep with the code as it is (run here, or read with --after CSV).

    python bench/bench_fidelity.py [--after results/simulate/simulations.csv]

It prints, per algorithm and split, the mean makespan over the seeds before and after and the
change, then the best split of each algorithm before and after.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
BEFORE = HERE / "data" / "fidelity_before_6dfaf9a.csv"


def after_rows(path: str | None) -> pd.DataFrame:
    if path:
        return pd.read_csv(path)
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "nasalloc", "simulate", "--budget", "64", "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        return pd.read_csv(Path(out) / "simulations.csv")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", help="simulations.csv of the default sweep (default: run it now)")
    args = parser.parse_args(argv)
    before, after = pd.read_csv(BEFORE), after_rows(args.after)
    keys = ["algorithm", "gpus_per_trial"]
    table = (before.groupby(keys)["makespan_s"].mean().rename("before_h") / 3600).to_frame().join(
        after.groupby(keys)["makespan_s"].mean().rename("after_h") / 3600)
    table["change"] = table["after_h"] / table["before_h"] - 1
    seeds = sorted(set(before["seed"])), sorted(set(after["seed"]))
    print(f"default sweep, mean makespan over seeds {seeds[0][0]}..{seeds[0][-1]} (before) and "
          f"{seeds[1][0]}..{seeds[1][-1]} (after), hours")
    print(f"{'algorithm':<10}{'GPUs/trial':>11}{'before':>10}{'after':>10}{'change':>9}")
    for (algorithm, gpus), row in table.iterrows():
        print(f"{algorithm:<10}{gpus:>11g}{row.before_h:>10.1f}{row.after_h:>10.1f}{row.change:>+9.1%}")
    print()
    for algorithm in table.index.get_level_values(0).unique():
        part = table.loc[algorithm]
        b, a = part["before_h"].idxmin(), part["after_h"].idxmin()
        verdict = "same split" if b == a else "BEST SPLIT CHANGED"
        print(f"{algorithm:<10} best before {b:g} GPUs/trial ({part.before_h[b]:.1f} h), "
              f"after {a:g} GPUs/trial ({part.after_h[a]:.1f} h): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
