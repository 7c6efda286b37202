"""Reading checkpoints of :func:`vsmd_ts.training.fit` (torch only, no Lightning import)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

__all__ = ["LAST", "load_checkpoint", "state_dicts"]

LAST = "last.ckpt"


def load_checkpoint(path: Union[str, Path], map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`fit` (tensors and plain values only)."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (training writes OUT/last.ckpt)")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "vsmd" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a vsmd_ts training checkpoint (no 'vsmd' entry)")
    return ckpt


def state_dicts(ckpt: dict) -> tuple:
    """``(ema, raw)`` state dicts of the ``ScoreModel`` in a checkpoint of :func:`fit`."""

    def strip(state):
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}

    ema = strip(ckpt["state_dict"])
    raw = strip(ckpt.get("current_model_state", ckpt["state_dict"]))
    return ema, raw
