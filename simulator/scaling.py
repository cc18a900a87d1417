"""The scaling model: epoch seconds of the reference config as a function of its GPUs.

One definition, shared by the profiler (which fits the parameters, see
``nasalloc.profiler.fit``) and the simulator (which evaluates them for every split)::

    epoch_s(g, nodes) = t_fixed + ((t_compute / g) ** gamma + sync(g, nodes) ** gamma) ** (1 / gamma)

    sync(g, nodes) = 0                                       for g <= 1
                   = (s0 + s1 * (g - 2)) * (inter_node if nodes > 1 else 1)   otherwise

``t_fixed`` is per-epoch work that does not shrink with more ranks (evaluation, data loading
overheads), ``t_compute / g`` the data-parallel compute of a fixed global batch split across g
ranks, and ``sync`` the gradient all-reduce (Pollux-style: a fixed latency ``s0`` and a term
growing with ranks ``s1``), costlier by ``inter_node`` when ranks span nodes. ``gamma`` >= 1 is
the overlap of compute and synchronisation (1: none, large: full overlap), as in Pollux
(Qiao et al., OSDI 2021). Parameters the data cannot identify are fixed at 0 (or 1 for
``gamma`` and ``inter_node``) by the fit and say so in ``fixed``.

Fractional g (< 1) means 1/g trials share one GPU: each runs at ``epoch_s(1)`` times the
co-location slowdown measured for that many co-located trials (:meth:`colocated_slowdown`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from nasalloc.errors import UserError

PARAMS = ("t_fixed", "t_compute", "s0", "s1", "gamma", "inter_node")


@dataclass
class ScalingModel:
    t_fixed: float = 0.0
    t_compute: float = 1.0
    s0: float = 0.0
    s1: float = 0.0
    gamma: float = 1.0
    inter_node: float = 1.0
    #: co-located trials k (as a string key in JSON) -> per-trial slowdown against running alone
    colocation: dict = field(default_factory=dict)
    #: parameters the fit could not identify and held fixed
    fixed: list = field(default_factory=list)
    #: largest and smallest GPU counts measured; predictions outside are extrapolated
    measured_min_gpus: Optional[float] = None
    measured_max_gpus: Optional[float] = None

    def __post_init__(self) -> None:
        for name in PARAMS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UserError(f"scaling model parameter {name}={value!r} must be a finite number >= 0")
        if self.t_compute + self.t_fixed <= 0:
            raise UserError("scaling model needs t_compute + t_fixed > 0")
        if self.gamma < 1:
            raise UserError(f"scaling model parameter gamma={self.gamma!r} must be >= 1")

    def sync_seconds(self, gpus: float, nodes: int = 1) -> float:
        if gpus <= 1:
            return 0.0
        return (self.s0 + self.s1 * (gpus - 2)) * (self.inter_node if nodes > 1 else 1.0)

    def epoch_seconds(self, gpus: float, nodes: int = 1) -> float:
        """Seconds of one epoch of the reference config on ``gpus`` (fractional: shared GPU)."""
        if gpus <= 0:
            raise UserError(f"GPUs per trial must be > 0, got {gpus!r}")
        if gpus < 1:
            return self.epoch_seconds(1.0) * self.colocated_slowdown(round(1 / gpus))
        compute = self.t_compute / gpus
        sync = self.sync_seconds(gpus, nodes)
        g = self.gamma
        overlapped = compute + sync if g == 1 else (compute ** g + sync ** g) ** (1.0 / g)
        return self.t_fixed + overlapped

    def colocated_slowdown(self, trials_per_gpu: int) -> float:
        """Per-trial slowdown when ``trials_per_gpu`` trials share one GPU (1 = alone).

        Between measured counts it interpolates in log-log space; beyond them it assumes the
        GPU is time-sliced (slowdown proportional to the count), which is also the default
        when nothing was measured.
        """
        k = int(trials_per_gpu)
        if k <= 1:
            return 1.0
        known = {int(key): float(v) for key, v in self.colocation.items()}
        if k in known:
            return known[k]
        points = sorted([(1, 1.0), *known.items()])
        below = [p for p in points if p[0] < k][-1]
        above = [p for p in points if p[0] > k]
        if not above:  # extrapolate by time slicing from the largest measured count
            return below[1] * k / below[0]
        (k0, s0), (k1, s1) = below, above[0]
        w = (math.log(k) - math.log(k0)) / (math.log(k1) - math.log(k0))
        return math.exp(math.log(s0) + w * (math.log(s1) - math.log(s0)))

    def extrapolated(self, gpus: float) -> bool:
        """True when ``gpus`` lies outside the measured range."""
        if self.measured_min_gpus is None or self.measured_max_gpus is None:
            return True
        return not (self.measured_min_gpus <= gpus <= self.measured_max_gpus)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ScalingModel":
        if not isinstance(data, dict):
            raise UserError(f"scaling model must be an object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"scaling model has unknown field(s) {sorted(unknown)}")
        missing = [p for p in ("t_compute",) if p not in data]
        if missing:
            raise UserError(f"scaling model is missing field(s) {missing}")
        return cls(**data)
