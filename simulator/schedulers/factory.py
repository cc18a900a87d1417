"""One entry point that builds any scheduler from plain arguments (CLI, plans, sweeps)."""

from __future__ import annotations

from typing import Optional

from nasalloc.errors import UserError

from .asha import ASHA
from .base import Scheduler
from .brackets import check_semantics
from .common import SeedLike

ALGORITHMS = ("hyperband", "asha", "bohb")


def make_scheduler(algorithm: str, *, source, max_t: int, min_t: int = 1, eta: int = 3,
                   semantics: str = "ray", mode: str = "max", seed: SeedLike = 0,
                   trials: Optional[int] = None, brackets: Optional[int] = None,
                   variant: Optional[str] = None, pending: Optional[int] = None,
                   **bohb_kwargs) -> Scheduler:
    """A fresh scheduler. ``asha`` takes ``trials`` and ``variant`` (default: ``stopping`` for
    ray semantics, ``promotion`` for reference); ``hyperband``/``bohb`` take exactly one of
    ``trials`` or ``brackets`` and, in Ray semantics, ``pending`` (trials Ray's controller creates
    ahead: default 200 for hyperband, Ray's BasicVariantGenerator, and 1 for bohb, TuneBOHB);
    ``bohb`` also takes the HpBandSter sampler options."""
    if algorithm not in ALGORITHMS:
        raise UserError(f"algorithm={algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    check_semantics(semantics)
    common = dict(max_t=max_t, min_t=min_t, eta=eta, semantics=semantics, mode=mode, seed=seed)
    if algorithm != "bohb" and bohb_kwargs:
        raise UserError(f"{', '.join(sorted(bohb_kwargs))}: options only bohb takes, "
                        f"not {algorithm}")
    if algorithm != "asha" and variant is not None:
        raise UserError(f"variant={variant!r}: only asha has variants, not {algorithm}")
    if algorithm == "asha":
        if brackets is not None:
            raise UserError(f"brackets={brackets!r}: asha has no brackets; give trials=N")
        if pending is not None:
            raise UserError(f"pending={pending!r}: asha starts trials in the order they are "
                            "created, so how many Ray creates ahead does not change it")
        return ASHA(source, trials=trials, variant=variant, **common)
    if algorithm == "hyperband":
        from .hyperband import HyperBand

        return HyperBand(source, trials=trials, brackets=brackets, pending=pending, **common)
    from .bohb import BOHB

    return BOHB(source, trials=trials, brackets=brackets, pending=pending, **common, **bohb_kwargs)
