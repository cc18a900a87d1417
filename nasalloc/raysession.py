"""The private Ray cluster nasalloc starts on this machine when it runs something through Ray
(``validate --executor ray``, ``profile --launcher ray``): never an existing cluster, no
dashboard, workers' output kept out of nasalloc's own. Ray is imported only here and only then."""

from __future__ import annotations

import os
from typing import Optional

from nasalloc.errors import UserError

INSTALL = "pip install 'nasalloc[ray]'"


def require_ray(what: str) -> None:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise UserError(f"{what} needs Ray Tune, which is not installed here: {INSTALL}") from None


def start_local_ray(num_gpus: Optional[float] = None) -> None:
    """Start (once per process) a throwaway one-machine Ray cluster; ``num_gpus`` virtual GPUs on CPU."""
    import logging

    import ray

    if ray.is_initialized():
        return
    # a private cluster of this process on this machine: no token to share with anyone
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING, object_store_memory=200_000_000)


def stop_local_ray() -> None:
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
