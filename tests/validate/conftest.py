"""A real closed loop on CPU, built once per session: profile digits on 1 and 2 gloo ranks,
simulate a budget of 2 with small HyperBand and ASHA settings, and hand the plan to the
validation tests (which run it for real)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Small searches: 9 epochs, eta 3, two trials each; splits of 1 and 2 "GPUs" (CPU ranks).
SIMULATE_ARGS = ["--budget", "2", "--algorithms", "hyperband,asha", "--gpus-per-trial", "1,2",
                 "--max-epochs", "9", "--eta", "3", "--trials", "2", "--seeds", "2", "--jobs", "1"]


def nasalloc(*args, cwd=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "nasalloc", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"nasalloc {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def start_nasalloc(*args, cwd=None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "nasalloc", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _curves(root: Path) -> list:
    """The shipped digits curves; where this checkout lacks them, a small trace recorded now."""
    from nasalloc.data import data_path
    from nasalloc.trace import DEFAULT_CURVES

    if data_path(DEFAULT_CURVES).is_file():
        return []
    trace = root / "curves.csv"
    subprocess.run([sys.executable, "-m", "nasalloc.workloads.benchmark", "--configs", "8", "--epochs", "9",
                    "--out", str(trace)], check=True, capture_output=True, timeout=600)
    return ["--curves", trace]


@pytest.fixture(scope="session")
def closed_loop_plan(tmp_path_factory) -> Path:
    """plan.json of a real CPU profile of digits (1 and 2 ranks) simulated on a budget of 2."""
    root = tmp_path_factory.mktemp("closed_loop")
    profile = root / "profile.json"
    nasalloc("profile", "--gpus", "1,2", "--device", "cpu", "--workload", "digits", "--warmup", "1",
             "--epochs", "2", "--launcher", "local", "--out", profile, cwd=root)
    nasalloc("simulate", "--profile", profile, *SIMULATE_ARGS, *_curves(root), "--out", root / "sim", cwd=root)
    plan = root / "sim" / "plan.json"
    assert plan.is_file()
    return plan


@pytest.fixture(scope="session")
def adaptive_plan(closed_loop_plan, tmp_path_factory) -> Path:
    """plan.json of the same profile simulated with --policies double:1,2 (3 seeds): its best
    adaptive policy for asha is double:1,2 (trials start on one rank and go on on two)."""
    root = tmp_path_factory.mktemp("adaptive_plan")
    profile = closed_loop_plan.parent.parent / "profile.json"
    args = list(SIMULATE_ARGS)
    args[args.index("--seeds") + 1] = "3"
    nasalloc("simulate", "--profile", profile, *args, *_curves(root), "--policies", "double:1,2",
             "--out", root / "sim", cwd=root)
    return root / "sim" / "plan.json"
