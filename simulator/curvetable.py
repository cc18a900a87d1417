"""Learning curves as the engine reads them: arrays indexed by (table row, epoch).

Built from :class:`nasalloc.trace.Curves` (a trace or the shipped digits benchmark). Only
configs whose curve reaches ``max_epochs`` are kept: a simulated trial may train that far.

Relative cost of a config (how much longer its epoch takes than the reference config's, which
the profile timed): the mean recorded ``epoch_seconds`` of that config over the mean recorded
``epoch_seconds`` of the reference row. The reference row is the recorded config nearest to
the profile's ``workload.config`` when the profile and the curves name the same workload, else
nearest to the workload's own ``reference_config()`` when it is a built-in workload, else the
row of median mean epoch seconds (then costs are relative to a typical config). Where the
nearest row is not the reference config and the workload is built in, the reference epoch is
instead the median over all rows of seconds / the workload's estimated relative cost
(``table_from_curves``). The choice is stated in ``reference_note``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from nasalloc.errors import UserError


@dataclass
class CurveTable:
    val: np.ndarray            # (rows, max_epochs) validation metric after each epoch
    test: np.ndarray           # (rows, max_epochs), NaN where the curves have no test metric
    rel_cost: np.ndarray       # (rows,) epoch seconds relative to the reference config
    configs: list              # hyperparameters per row
    metric_name: str = "accuracy"
    mode: str = "max"
    workload: str = ""
    reference_row: Optional[int] = None
    reference_note: str = ""
    path: str = ""
    sha256: str = ""
    trial_ids: list = field(default_factory=list)
    train_seeds: list = field(default_factory=list)  # per row: its recorded training seed, or None
    space: object = None       # the ConfigSpace space the configs come from (for sampling)

    @property
    def rows(self) -> int:
        return len(self.configs)

    @property
    def max_epochs(self) -> int:
        return self.val.shape[1]

    @property
    def has_test(self) -> bool:
        return bool(np.isfinite(self.test).any())

    def truncated(self, max_epochs: int) -> "CurveTable":
        """Only the configs whose curve reaches ``max_epochs``, cut at ``max_epochs``."""
        if max_epochs > self.max_epochs:
            raise UserError(f"--max-epochs {max_epochs} is beyond the curves' {self.max_epochs} epochs"
                            f"{' (' + self.path + ')' if self.path else ''}")
        keep = np.flatnonzero(np.isfinite(self.val[:, max_epochs - 1]))
        if keep.size == 0:
            raise UserError(f"no curve in {self.path or 'the curves'} reaches {max_epochs} epochs")
        position = {int(old): new for new, old in enumerate(keep)}
        return CurveTable(val=self.val[keep, :max_epochs], test=self.test[keep, :max_epochs],
                          rel_cost=self.rel_cost[keep], configs=[self.configs[i] for i in keep],
                          metric_name=self.metric_name, mode=self.mode, workload=self.workload,
                          reference_row=position.get(self.reference_row), reference_note=self.reference_note, path=self.path,
                          sha256=self.sha256, trial_ids=[self.trial_ids[i] for i in keep] if self.trial_ids else [],
                          train_seeds=[self.train_seeds[i] for i in keep] if self.train_seeds else [],
                          space=self.space)


def table_from_curves(curves, reference_config: Optional[dict] = None, reference_source: str = "",
                      cost_model=None) -> CurveTable:
    """Arrays of :class:`nasalloc.trace.Curves`, with each row's relative cost.

    ``cost_model(config)``: the workload's estimate of a config's epoch cost relative to the
    reference config. When the nearest recorded config is not the reference config itself, the
    seconds of one reference epoch are taken from all rows at once (the median of
    ``seconds / cost_model(config)``) rather than from that one other config: on the shipped
    digits curves the nearest row (depth 1 where the reference has depth 2) trains in 0.027 s
    against 0.056 s implied by all 250 rows, which made every predicted epoch 2x too long.
    """
    val = curves.val_matrix()
    mean_seconds = np.array([float(np.mean(s)) if len(s) else np.nan for s in curves.epoch_seconds])
    if not np.all(np.isfinite(mean_seconds)) or np.any(mean_seconds <= 0):
        bad = int(np.flatnonzero(~(np.isfinite(mean_seconds) & (mean_seconds > 0)))[0])
        raise UserError(f"curves: trial {curves.trial_ids[bad]} has no positive epoch_seconds "
                        f"(needed for its relative cost)")
    if reference_config:
        row = curves.nearest(reference_config)
        note = (f"relative cost: epoch seconds over those of trial {curves.trial_ids[row]}, the recorded config "
                f"nearest the reference config of {reference_source}")
        anchor = _anchor_seconds(curves, row, reference_config, mean_seconds, cost_model)
        if anchor is not None:
            note = (f"relative cost: epoch seconds over {anchor:.4g} s, the reference epoch of {reference_source} "
                    f"implied by all {len(mean_seconds)} recorded configs and the workload's cost model (median of "
                    f"seconds / estimated relative cost; the nearest recorded config, trial "
                    f"{curves.trial_ids[row]}, is not the reference config)")
            return _table(curves, val, mean_seconds / anchor, row, note)
    else:
        order = np.argsort(mean_seconds, kind="stable")
        row = int(order[(len(order) - 1) // 2])
        note = (f"relative cost: epoch seconds over the median config's (trial {curves.trial_ids[row]}); "
                f"no reference config of this workload is known")
    return _table(curves, val, mean_seconds / mean_seconds[row], row, note)


def _table(curves, val, rel_cost, row: int, note: str) -> CurveTable:
    return CurveTable(val=val, test=curves.test_matrix(), rel_cost=rel_cost,
                      configs=list(curves.configs), metric_name=curves.metric_name, mode=curves.mode,
                      workload=curves.workload, reference_row=row, reference_note=note,
                      trial_ids=list(curves.trial_ids), train_seeds=list(curves.train_seeds))


def _anchor_seconds(curves, row: int, reference: dict, mean_seconds, cost_model) -> Optional[float]:
    """Seconds of one reference epoch from every row and the cost model; None where the nearest
    row is the reference config (its own seconds are exact) or the model cannot price a row."""
    if cost_model is None or all(curves.configs[row].get(k) == v for k, v in reference.items()):
        return None
    try:
        costs = np.array([float(cost_model(c)) for c in curves.configs])
    except Exception:  # a config the model does not know (another space): keep the nearest row
        return None
    if not np.all(np.isfinite(costs) & (costs > 0)):
        return None
    return float(np.median(mean_seconds / costs))


def reference_config_for(workload: str, profile: Optional[dict]) -> tuple[Optional[dict], str]:
    """The config the profile timed, when it is of this workload; else the built-in workload's."""
    profiled = (profile or {}).get("workload") or {}
    if workload and profiled.get("name") == workload and profiled.get("config"):
        return dict(profiled["config"]), "the profile"
    if workload:
        try:
            from nasalloc.workloads.registry import WORKLOADS, load_workload
        except ImportError:
            return None, ""
        if workload in WORKLOADS:
            return dict(load_workload(workload).reference_config()), f"workload {workload!r}"
    return None, ""


def cost_model_for(workload: str, reference: Optional[dict]):
    """A built-in workload's relative cost of a config against ``reference`` (None: not built in)."""
    if not workload or not reference:
        return None
    try:
        from nasalloc.workloads.registry import WORKLOADS, load_workload
    except ImportError:
        return None
    if workload not in WORKLOADS:
        return None
    model = load_workload(workload)
    base = model.relative_cost(reference)
    return lambda config: model.relative_cost(config) / base


def load_curve_table(path: Optional[str] = None, profile: Optional[dict] = None) -> CurveTable:
    """Read a trace as learning curves; ``None`` is the shipped digits benchmark."""
    from nasalloc.trace import DEFAULT_CURVES, Curves, read_trace

    if path is None:
        from nasalloc.data import data_path

        source = data_path(DEFAULT_CURVES)
        if not source.is_file():
            raise UserError(f"the shipped learning curves nasalloc/data/{DEFAULT_CURVES} are missing from this "
                            f"installation; pass --curves FILE (a trace, docs/formats.md)")
        shown = f"<embedded {DEFAULT_CURVES}>"
    else:
        source, shown = path, str(path)
    frame = read_trace(source)
    curves = Curves.from_trace(frame, shown)
    reference, where = reference_config_for(curves.workload, profile)
    table = table_from_curves(curves, reference, where, cost_model_for(curves.workload, reference))
    table.path = shown
    table.sha256 = _sha256(source)
    table.space = _config_space(curves)
    return table


def _config_space(curves):
    try:
        return curves.config_space()
    except ImportError:  # the workload registry is not importable: a space from the values
        from nasalloc.trace import space_from_values

        return space_from_values(curves.configs)


def _sha256(source) -> str:
    digest = hashlib.sha256()
    with source.open("rb") if hasattr(source, "open") and not isinstance(source, str) else open(source, "rb") as h:
        for block in iter(lambda: h.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
