"""Small synthetic inputs for the simulator tests: curve tables, traces, profiles, splits."""

from __future__ import annotations

import json

import ConfigSpace as CS
import numpy as np
import pandas as pd

from nasalloc.simulator.cluster import make_split
from nasalloc.simulator.curvetable import CurveTable
from nasalloc.simulator.scaling import ScalingModel
from nasalloc.simulator.schedulers import make_scheduler
from nasalloc.simulator.schedulers.sampling import TableSource
from nasalloc.simulator.timemodel import TimeModel

SPACE = CS.ConfigurationSpace(seed=0)
SPACE.add([CS.Float("lr", (0.001, 0.1), log=True), CS.Integer("width", (8, 64))])


def make_table(rows: int = 40, epochs: int = 27, seed: int = 0, costs: bool = True) -> CurveTable:
    """Saturating learning curves; relative costs between 0.5 and 2 (or all 1)."""
    rng = np.random.default_rng(seed)
    lr = np.round(10 ** rng.uniform(-3, -1, rows), 6)
    width = rng.integers(8, 65, rows)
    tau = rng.uniform(1, epochs / 2, rows)
    top = rng.uniform(0.5, 0.99, rows)
    e = np.arange(1, epochs + 1)
    val = top[:, None] * (1 - np.exp(-e[None, :] / tau[:, None]))
    rel = rng.uniform(0.5, 2.0, rows) if costs else np.ones(rows)
    table = CurveTable(val=val, test=val - 0.01, rel_cost=rel,
                       configs=[{"lr": float(a), "width": int(w)} for a, w in zip(lr, width)],
                       workload="synthetic", space=SPACE)
    return table


def time_model(epoch_s: float = 10.0, startup_s: float = 0.0, save_s: float = 0.0, load_s: float = 0.0,
               cv: float = 0.0, **scaling) -> TimeModel:
    """Reference epoch = ``epoch_s`` on one GPU, linear scaling unless ``scaling`` says otherwise."""
    model = ScalingModel(t_fixed=0.0, t_compute=epoch_s, **scaling)
    return TimeModel(scaling=model, overheads={"startup_s": startup_s, "checkpoint_save_s": save_s,
                                               "checkpoint_load_s": load_s, "eval_s": 0.0},
                     epoch_cv=cv, gpus_per_node=4)


def scheduler(algorithm: str, table: CurveTable, *, max_t: int, semantics: str = "ray", seed: int = 0, **limits):
    if not limits:
        limits = {"trials": 20} if algorithm == "asha" else {"brackets": 1}
    extra = {}
    return make_scheduler(algorithm, source=TableSource(table.space, table.configs), max_t=max_t, eta=3,
                          semantics=semantics, mode=table.mode, seed=seed, **limits, **extra)


def split(budget: int, gpus_per_trial: float, gpus_per_node: int = 4):
    return make_split(budget, gpus_per_node, gpus_per_trial)


def write_trace(path, rows: int = 30, epochs: int = 9, seed: int = 0, workload: str = "synthetic") -> None:
    """A learning-curve benchmark in the trace format (docs/formats.md)."""
    table = make_table(rows, epochs, seed)
    records = []
    for r, config in enumerate(table.configs):
        for e in range(epochs):
            records.append({"trial_id": r, "config.lr": config["lr"], "config.width": config["width"],
                            "epoch": e + 1, "val_metric": table.val[r, e], "test_metric": table.test[r, e],
                            "metric_name": "accuracy", "mode": "max",
                            "epoch_seconds": 0.2 * table.rel_cost[r], "gpus_per_trial": 1.0,
                            "start_s": 0.0, "end_s": 0.0, "workload": workload})
    pd.DataFrame(records).to_csv(path, index=False)


def write_profile(path, **changes) -> dict:
    """A small valid profile; ``changes`` replace top-level fields (None removes one)."""
    profile = {
        "schema": "nasalloc.profile/1", "source": "test",
        "hardware": {"gpus_per_node": 4},
        "overheads": {"startup_s": 3.0, "checkpoint_save_s": 0.5, "checkpoint_load_s": 0.5, "eval_s": 0.1},
        "variability": {"epoch_cv": 0.02},
        "model": {"t_fixed": 0.5, "t_compute": 20.0, "s0": 0.5, "s1": 0.05, "gamma": 1.0, "inter_node": 1.5,
                  "colocation": {"2": 1.6}, "measured_min_gpus": 1, "measured_max_gpus": 8},
    }
    for key, value in changes.items():
        if value is None:
            profile.pop(key, None)
        else:
            profile[key] = value
    with open(path, "w") as handle:
        json.dump(profile, handle)
    return profile
