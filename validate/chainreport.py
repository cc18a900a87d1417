"""Predicted against measured for a chain of allocations, in validate's own report.

A plan simulated under an allocation model (``nasalloc simulate --time-limit ...``) predicts each
split's chain: how many allocations, the time to result (wall time from the first allocation's
start to the last result, queue waits included) and the time inside allocations. The run
records what really happened in ``state.json``'s ``allocations`` (one entry per invocation that
worked on the split, see :mod:`.state`). :func:`chain_comparison` sets the two side by side for
a report row (``report.json``: ``splits[i].chain``) and :func:`chain_lines` prints them.

The prediction is the chain simulation of the split for the plan's seed (the run's direct
prediction, as ``predicted_makespan_s`` is without the model), not the plan's mean over seeds.
A finished run is also re-simulated under the same model with everything measured (the run's
costs and metrics, as the plain re-simulation, and its mean allocation start-up and queue wait:
:func:`resimulated_chain`), so a miss splits into the time model's (predicted against
re-simulated) and the chain model's (re-simulated against measured).
Measured, per allocation: its start (``began_unix``, the process's start: under sbatch's
``exec`` the job's), when the runner was ready to launch trials (the allocation's start-up,
``--allocation-start`` in the model), and when its last trial left; the queue wait is the time
from one allocation's end to the next one's start (it includes the report written at the end
and the batch system's own delay).
"""

from __future__ import annotations

import math
from typing import Optional

from nasalloc.simulator.labels import duration


def allocation_model_of(plan) -> Optional[object]:
    """The plan's AllocationModel, or None for a plan simulated without one."""
    from dataclasses import fields

    from nasalloc.simulator.allocation import AllocationModel

    data = plan.data.get("allocation") or {}
    if not data.get("time_limit_s") and not data.get("node_mtbf_h") and not data.get("checkpoint_every"):
        return None
    known = {f.name for f in fields(AllocationModel)}
    return AllocationModel(**{k: v for k, v in data.items() if k in known})


def predicted_chain(plan, choice, gpus_per_node=None) -> Optional[dict]:
    """The chain the plan's model predicts for this split (plan's seed), or None without a model."""
    from nasalloc.simulator.batchscaling import stretched_table
    from nasalloc.simulator.cluster import make_split
    from nasalloc.simulator.engine import simulate

    model = allocation_model_of(plan)
    if model is None or getattr(choice, "policy", None):
        return None
    split = make_split(plan.budget, gpus_per_node or plan.gpus_per_node, choice.gpus_per_trial)
    table = stretched_table(plan.table(), choice.gpus_per_trial, plan.batch_scaling())  # as predict() reads it
    result = simulate(plan.scheduler_factory(choice.algorithm)(), split, plan.time_model(), table,
                      seed=plan.seed(choice.algorithm), algorithm=choice.algorithm, record_events=False,
                      allocation=model)
    chain = result.chain
    rows = chain["per_allocation"]
    return {"allocations": chain["allocations"], "time_to_result_s": chain["time_to_result_s"],
            "compute_s": chain["compute_s"], "queue_wait_s": model.requeue_wait_s,
            "queue_waits_s": [b["start_s"] - a["end_s"] for a, b in zip(rows, rows[1:])],
            "allocation_start_s": model.allocation_start_s}


def resimulated_chain(plan, task, split, measured, run_dir, chain: Optional[dict]) -> Optional[dict]:
    """The plan's allocation model replayed with the run's measured costs, allocation start-up and
    queue wait (None without a model, or before the run finished)."""
    from dataclasses import replace

    from nasalloc.errors import UserError

    from .compare import resimulate

    model = allocation_model_of(plan)
    seen = (chain or {}).get("measured") or {}
    if model is None or not seen.get("time_to_result_s") or not measured.trials:
        return None
    try:
        model = replace(model, allocation_start_s=seen["allocation_start_mean_s"],
                        requeue_wait_s=seen["queue_wait_mean_s"], requeue_spread_s=0.0)
        result = resimulate(task.make_scheduler, split, plan.table(), measured, run_dir, seed=task.seed,
                            algorithm=task.algorithm, allocation=model)
    except UserError as err:  # a measured start-up longer than an allocation's time to train
        return {"error": str(err)}
    return {"allocations": result.chain["allocations"], "time_to_result_s": result.chain["time_to_result_s"],
            "compute_s": result.chain["compute_s"]}


def measured_chain(state: dict) -> Optional[dict]:
    """What the run's ``state.json`` says about its allocations (None: none recorded)."""
    rows = [a for a in state.get("allocations") or [] if a.get("began_unix") is not None]
    if not rows:
        return None
    waits = [b["began_unix"] - a["ended_unix"] for a, b in zip(rows, rows[1:])]
    starts = [a["ready_unix"] - a["began_unix"] for a in rows]
    return {"allocations": len(rows),
            "time_to_result_s": rows[-1]["ended_unix"] - rows[0]["began_unix"] if state.get("finished") else None,
            "compute_s": sum(a["ended_unix"] - a["began_unix"] for a in rows),
            "queue_waits_s": waits, "queue_wait_mean_s": sum(waits) / len(waits) if waits else 0.0,
            "allocation_start_s": starts, "allocation_start_mean_s": sum(starts) / len(starts),
            "ended": [a.get("ended") for a in rows]}


def chain_comparison(predicted: Optional[dict], measured: Optional[dict]) -> Optional[dict]:
    """A report row's ``chain``: both sides and the time error; None when neither side has one."""
    if predicted is None and (measured is None or measured["allocations"] < 2):
        return None
    error = math.nan
    if predicted and measured and measured["time_to_result_s"]:
        error = (predicted["time_to_result_s"] - measured["time_to_result_s"]) / measured["time_to_result_s"]
    return {"predicted": predicted, "measured": measured, "time_to_result_rel_error": error}


def chain_lines(report: dict) -> list:
    """One line per split with a chain: allocations, time to result, queue waits, start-ups."""
    lines = []
    for row in report.get("splits", []):
        chain = row.get("chain")
        if not chain:
            continue
        p, m = chain["predicted"] or {}, chain["measured"] or {}
        label = f"{row['algorithm']} {row['which']} g={row['gpus_per_trial']:g}"
        text = lambda v: "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else duration(v)  # noqa: E731
        error = chain.get("time_to_result_rel_error")
        error = f" ({100 * error:+.0f}%)" if error is not None and math.isfinite(error) else ""
        r = chain.get("resimulated") or {}
        resim = (f"; re-simulated with the measured costs: {r['allocations']} allocation(s), "
                 f"{text(r['time_to_result_s'])}" if "allocations" in r else "")
        lines.append(f"chain {label}: allocations predicted {p.get('allocations', '-')}, measured "
                     f"{m.get('allocations', '-')}; time to result predicted {text(p.get('time_to_result_s'))}, "
                     f"measured {text(m.get('time_to_result_s'))}{error}; queue wait predicted "
                     f"{text(p.get('queue_wait_s'))}, measured {text(m.get('queue_wait_mean_s'))} mean; "
                     f"allocation start-up predicted {text(p.get('allocation_start_s'))}, measured "
                     f"{text(m.get('allocation_start_mean_s'))} mean{resim}")
    return lines
