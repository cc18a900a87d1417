"""The search schedulers (HyperBand, ASHA, BOHB) as pure decision objects: see base.py for the
contract, brackets.py for the bracket tables and docs/schedulers.md for the two semantics."""

from .asha import ASHA, VARIANTS
from .base import (COMPLETED, DONE, ENDED, FAILED, PAUSED, RUNNING, STOPPED, WAIT, Action,
                   Decision, Resume, Scheduler, Start)
from .bohb import BOHB
from .brackets import SEMANTICS, asha_rungs, hyperband_brackets
from .factory import ALGORITHMS, make_scheduler
from .hyperband import HyperBand
from .sampling import SpaceSource, TableSource, config_to_vector, vector_to_config

__all__ = [
    "ALGORITHMS", "SEMANTICS", "VARIANTS", "ASHA", "BOHB", "HyperBand", "Scheduler", "SpaceSource",
    "TableSource", "make_scheduler", "hyperband_brackets", "asha_rungs", "config_to_vector",
    "vector_to_config", "Action", "Decision", "Start", "Resume", "WAIT", "DONE", "RUNNING",
    "PAUSED", "STOPPED", "COMPLETED", "FAILED", "ENDED",
]
