"""Shared Lightning training path of the toy and image front ends.

Lives outside :mod:`vsmd_ts.diffusion` so the core stays torch-only. The
front ends supply a dataset (a batch function of the step) and a network;
:func:`fit` trains them by Algorithm 1 with EMA, checkpoints, resume, CSV
metrics and a time budget. :func:`load_checkpoint` and :func:`state_dicts`
and :func:`draw_samples` read what it wrote without importing Lightning (the other names import it
on first use); a missing, empty, damaged or foreign file raises :class:`CheckpointError` naming it.
"""

from importlib import import_module

from .checkpoint import CheckpointError, CheckpointNotFoundError, load_checkpoint, read_torch_file, state_dicts
from .config import FitConfig
from .sampling import Samples, draw_samples, nfe_per_step, steps_for_nfe

_LAZY = {
    "DiffusionModule": "module",
    "StepBatches": "module",
    "lr_multiplier": "module",
    "EMA": "callbacks",
    "ResumableCSVLogger": "callbacks",
    "ema_multi_avg_fn": "callbacks",
    "FitResult": "run",
    "fit": "run",
}

__all__ = sorted([*_LAZY, "CheckpointError", "CheckpointNotFoundError", "FitConfig", "Samples", "draw_samples",
                  "load_checkpoint", "nfe_per_step", "read_torch_file", "state_dicts", "steps_for_nfe"])


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
