"""The end-of-run summary of a profile: per GPU count the epoch seconds, speedup, efficiency
and fit error, with predictions outside the measured range marked as extrapolated."""

from __future__ import annotations

from typing import Optional

import numpy as np

from nasalloc.simulator.scaling import ScalingModel


def summary_rows(profile: dict, extra_gpus: Optional[list] = None) -> list:
    """One row per measured (g, nodes), then predictions for ``extra_gpus`` (default: the
    skipped counts and two doublings past the largest measured one)."""
    model = ScalingModel.from_dict(profile["model"])
    points = {(p["gpus"], p["nodes"]): p for p in profile["fit"]["points"]}
    base = points.get((1.0, 1), {}).get("measured_s") or model.epoch_seconds(1)
    rows = []
    for (g, nodes), p in sorted(points.items()):
        speedup = base / p["measured_s"]
        rows.append({"gpus": g, "nodes": nodes, "epoch_s": p["measured_s"], "speedup": speedup,
                     "efficiency": speedup / g, "predicted_s": p["predicted_s"], "fit_error": p["rel_error"],
                     "loo_error": p["loo_rel_error"], "extrapolated": False, "kind": "measured"})
    for k, slowdown in sorted(model.colocation.items(), key=lambda kv: int(kv[0])):
        g = 1.0 / int(k)
        epochs = [e for m in profile["measurements"] if m["kind"] == "colocated" and m["trials_per_gpu"] == int(k)
                  for e in m["epoch_seconds"]]
        rows.append({"gpus": g, "nodes": 1, "epoch_s": float(np.mean(epochs)), "speedup": None,
                     "efficiency": None, "predicted_s": model.epoch_seconds(g), "fit_error": None,
                     "loo_error": None, "extrapolated": False, "kind": f"{k} co-located, slowdown {slowdown:.2f}x"})
    if extra_gpus is None:
        largest = max(g for g, _ in points)
        extra_gpus = sorted({s["gpus"] for s in profile.get("skipped", [])} | {largest * 2, largest * 4})
    measured = {g for g, _ in points}
    for g in extra_gpus:
        if g in measured:
            continue
        predicted = model.epoch_seconds(g)
        speedup = base / predicted if g >= 1 else None
        rows.append({"gpus": g, "nodes": 1, "epoch_s": predicted, "speedup": speedup,
                     "efficiency": None if speedup is None else speedup / g, "predicted_s": predicted,
                     "fit_error": None, "loo_error": None, "extrapolated": model.extrapolated(g),
                     "kind": "predicted"})
    return rows


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_summary(profile: dict) -> str:
    """The summary table and a line on the fit's quality."""
    header = f"{'GPUs':>6} {'nodes':>5} {'epoch s':>9} {'speedup':>8} {'effic.':>7} {'fit err':>8} {'LOO err':>8}  note"
    lines = [header]
    for r in summary_rows(profile):
        g = f"{r['gpus']:g}"
        note = r["kind"] + (" (extrapolated)" if r["extrapolated"] else "")
        lines.append(f"{g:>6} {r['nodes']:>5} {r['epoch_s']:>9.3f} {_num(r['speedup'], '8.2f'):>8} "
                     f"{_num(r['efficiency'], '7.0%'):>7} {_num(r['fit_error'], '8.1%'):>8} "
                     f"{_num(r['loo_error'], '8.1%'):>8}  {note}")
    fit = profile["fit"]
    r2 = f"R² {fit['r2']:.3f}" if fit["r2"] is not None else f"R² n/a ({fit['r2_reason']})"
    loo = (f"leave-one-out error {fit['loo_rel_error']:.1%} mean, {fit['loo_max_rel_error']:.1%} max"
           if fit["loo_rel_error"] is not None else f"leave-one-out n/a ({fit['loo_reason']})")
    model = profile["model"]
    params = ", ".join(f"{k}={model[k]:.4g}" for k in ("t_fixed", "t_compute", "s0", "s1", "gamma", "inter_node")
                       if k not in model["fixed"])
    lines.append(f"fit ({fit['kind']}): {params}; held: {', '.join(model['fixed']) or 'none'}; {r2}; {loo}")
    return "\n".join(lines)
