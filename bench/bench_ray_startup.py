"""What Ray adds to a trial's start-up: ``nasalloc profile`` with the local and the Ray launcher,
side by side in one run (alternating rounds, so machine load hits both alike).

Printed per launcher and GPU count (CPU ranks): the measured start-up (launch until every rank
is ready to train) in each round and its mean, and the ratio ray / local. The difference is
what a plan for a Ray Tune run must charge per trial start beyond the ranks' own start-up.

    python bench/bench_ray_startup.py [--rounds 2] [--gpus 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def profile(launcher: str, gpus: str, out: Path) -> dict:
    subprocess.run([sys.executable, "-m", "nasalloc", "profile", "--gpus", gpus, "--device", "cpu", "--workload",
                    "digits", "--warmup", "1", "--epochs", "1", "--launcher", launcher, "--noise-epochs", "none",
                    "--out", str(out)], check=True, capture_output=True, env=dict(os.environ))
    data = json.loads(out.read_text())
    return {m["gpus"]: m["startup_s"] for m in data["measurements"] if m.get("kind") == "ddp"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gpus", default="1,2")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    scratch = Path(tempfile.mkdtemp(prefix="nasalloc-ray-startup-"))
    seen: dict = {"local": {}, "ray": {}}
    for round_ in range(args.rounds):
        for launcher in ("local", "ray") if round_ % 2 == 0 else ("ray", "local"):
            for gpus, seconds in profile(launcher, args.gpus, scratch / f"{launcher}{round_}.json").items():
                seen[launcher].setdefault(gpus, []).append(seconds)
            print(f"round {round_ + 1}: {launcher} done", flush=True)
    print(f"\nstart-up of a profiling job (digits, CPU ranks, {args.rounds} round(s), seconds)")
    print(f"{'g':>3} {'local rounds':>20} {'mean':>6} {'ray rounds':>20} {'mean':>6} {'ray/local':>9}")
    for gpus in sorted(seen["local"]):
        local, ray = seen["local"][gpus], seen["ray"].get(gpus, [])
        fmt = lambda xs: " ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        ratio = statistics.mean(ray) / statistics.mean(local) if ray else float("nan")
        print(f"{gpus:>3g} {fmt(local):>20} {statistics.mean(local):>6.2f} {fmt(ray):>20} "
              f"{statistics.mean(ray) if ray else float('nan'):>6.2f} {ratio:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
