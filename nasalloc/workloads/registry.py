"""Find a workload by name: a built-in one (``digits``, ``resnet``) or a user's factory
``package.module:factory`` (a callable returning a :class:`~nasalloc.workloads.base.Workload`).

Options (``data_dir``, ``steps_per_epoch``, ...) are passed to the factory where its signature
accepts them and silently left out where it does not, so one command line serves every
workload.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from ..errors import UserError
from .base import Workload

# name -> "module:factory" of the built-in workloads (imported only when asked for).
WORKLOADS = {
    "digits": "nasalloc.workloads.digits:DigitsWorkload",
    "digits-long": "nasalloc.workloads.digits:LongDigitsWorkload",
    "resnet": "nasalloc.workloads.resnet:ResNetWorkload",
}


def _resolve(spec: str) -> Callable:
    target = WORKLOADS.get(spec, spec)
    if ":" not in target:
        raise UserError(f"workload {spec!r} is unknown: expected one of {', '.join(WORKLOADS)} "
                        f"or package.module:factory")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"workload {spec!r}: cannot import module {module_name!r} ({err})") from None
    except Exception as err:  # a user module that raises while importing
        raise UserError(f"workload {spec!r}: importing {module_name!r} failed: {type(err).__name__}: {err}") from None
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            raise UserError(f"workload {spec!r}: module {module_name!r} has no attribute {attribute!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise UserError(f"workload {spec!r}: {attribute!r} is not callable")
    return factory


def _accepted(factory: Callable, options: dict) -> dict:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return dict(options)
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return dict(options)
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in options.items() if k in names}


def load_workload(spec: str, **options) -> Workload:
    """The workload named by ``spec``; ``None`` options are left out (the factory's default).
    ``spec`` may also be ``{"name": ..., "options": {...}}`` (how validation hands a plan's
    workload with its profiled options, e.g. the batch policy, to the rank processes)."""
    if isinstance(spec, dict):
        options = {**(spec.get("options") or {}), **options}
        spec = spec.get("name")
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"workload {spec!r} is empty: expected one of {', '.join(WORKLOADS)} or package.module:factory")
    factory = _resolve(spec.strip())
    options = {k: v for k, v in options.items() if v is not None}
    try:
        workload = factory(**_accepted(factory, options))
    except UserError:
        raise
    except Exception as err:
        message = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"workload {spec!r}: its factory failed: {type(err).__name__}: {message}") from None
    if not isinstance(workload, Workload):
        raise UserError(f"workload {spec!r}: factory returned {type(workload).__name__}, "
                        f"expected a nasalloc.workloads.base.Workload")
    return workload
