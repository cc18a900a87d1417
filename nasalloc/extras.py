"""Optional parts of the installation, and the one-line message when one is missing.

Planning (``nasalloc simulate``, ``nasalloc sbatch``) needs no torch; ``nasalloc profile`` and
``nasalloc validate`` train real models and need the ``train`` extra
(``pip install 'nasalloc[train]'``, or a CUDA build of torch installed first).
"""

from __future__ import annotations

import importlib

from .errors import UserError

TRAIN_EXTRA = "train"


def require_torch(command: str) -> None:
    """Raise a one-line UserError naming the extra to install when torch cannot be imported."""
    try:
        importlib.import_module("torch")
    except ImportError as err:
        raise UserError(f"nasalloc {command} trains models and needs PyTorch, which is not installed here "
                        f"({err}): pip install 'nasalloc[{TRAIN_EXTRA}]' (or your CUDA build of torch); "
                        f"planning with nasalloc simulate does not need it") from None
