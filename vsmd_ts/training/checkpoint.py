"""Reading checkpoints of :func:`vsmd_ts.training.fit` (torch only, no Lightning import).

Every loader of a checkpoint goes through :func:`read_torch_file`, which
turns the low-level errors of ``torch.load`` (``EOFError``, ``OSError``,
``UnpicklingError``, ``KeyError``...) into a :class:`CheckpointError` that
names the file, says what is wrong with it and what to do.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Optional, Union

import torch

__all__ = [
    "LAST",
    "CheckpointError",
    "CheckpointNotFoundError",
    "check_resume_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_torch_file",
    "state_dicts",
]

LAST = "last.ckpt"

# key of a front end's configuration in ckpt["vsmd"] -> the front end (and its command line)
FRONT_ENDS = {"toy_config": "vsmd_ts.toys", "image_config": "vsmd_ts.images"}

_ADVICE = "pass a checkpoint written by vsmd_ts training (OUT/last.ckpt)"
_DAMAGED = "a damaged file cannot be repaired: use an intact copy or train again"


class CheckpointError(ValueError):
    """A checkpoint is missing, empty, damaged or of another kind.

    The message names the file, says what is wrong with it and what to do.
    """


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (a :class:`CheckpointError` and a ``FileNotFoundError``)."""


def read_torch_file(path: Union[str, Path], map_location="cpu", what: str = "a checkpoint",
                    advice: str = _ADVICE) -> object:
    """``torch.load(path, weights_only=True)``, with a :class:`CheckpointError` for any file it cannot read.

    Parameters
    ----------
    path
        The file.
    what
        What the file should be, for the messages (``"a checkpoint"``).
    advice
        What to do, appended to every message.
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise CheckpointNotFoundError(f"{path} {reason} (expected {what}); {advice}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes: an interrupted save or copy?), not {what}; {advice}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever torch.load raises, the file is unreadable
        reason, damaged = _why(err)
        suffix = f" ({_DAMAGED})" if damaged else ""
        raise CheckpointError(f"{path} is not {what}: {reason}; {advice}{suffix}") from None


def _why(err: Exception) -> tuple:
    """``(reason, damaged)``: what ``torch.load``'s error says about the file, in words."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:  # a pickled Python object: a file of another program
            return (f"it holds a pickled {found.group(1)} object, which no vsmd_ts file contains "
                    "(a file of another program?)"), False
        found = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        detail = found.group(1).strip() if found else "unreadable pickle data"
        return f"it is truncated or damaged, or not a torch file at all ({detail})", True
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    detail = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return f"it is truncated or damaged, or not a torch file at all ({detail})", True


def _front_end(ckpt: dict) -> Optional[str]:
    meta = ckpt.get("vsmd") if isinstance(ckpt, dict) else None
    if isinstance(meta, dict):
        for key, name in FRONT_ENDS.items():
            if key in meta:
                return name
    return None


def load_checkpoint(path: Union[str, Path], map_location="cpu", front_end: Optional[str] = None,
                    advice: Optional[str] = None) -> dict:
    """Read a checkpoint written by :func:`fit` (tensors and plain values only).

    Parameters
    ----------
    path
        The checkpoint, or the run folder holding ``last.ckpt``.
    front_end
        ``"vsmd_ts.toys"`` or ``"vsmd_ts.images"``: also require a checkpoint of that front end.
    advice
        What to do, appended to the messages (default: pass a checkpoint of ``front_end``).

    Raises
    ------
    CheckpointError
        (a ``ValueError``; :class:`CheckpointNotFoundError`, also a ``FileNotFoundError``, for a
        missing file) naming the file, for a missing, empty, damaged or foreign file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    written_by = f"python -m {front_end} train" if front_end else "vsmd_ts training"
    advice = advice or f"pass a checkpoint written by {written_by} (OUT/{LAST}, or the folder OUT)"
    what = f"a {front_end} checkpoint" if front_end else "a vsmd_ts training checkpoint"
    ckpt = read_torch_file(path, map_location, what=what, advice=advice)
    if not isinstance(ckpt, dict) or "vsmd" not in ckpt or "state_dict" not in ckpt:
        held = "a dict without a 'vsmd' entry" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise CheckpointError(f"{path} is not {what}: it holds {held}; {advice}")
    if front_end is not None:
        other = _front_end(ckpt)
        if other != front_end:
            kind = f"a {other} checkpoint" if other else "a checkpoint of no known front end"
            hint = f" (use python -m {other})" if other else ""
            raise CheckpointError(f"{path} is {kind}{hint}, not {what}; {advice}")
    return ckpt


def check_resume_checkpoint(path: Union[str, Path], module: torch.nn.Module, advice: Optional[str] = None) -> dict:
    """Check a Lightning checkpoint that training is to resume from, before Lightning reads it.

    The file must be readable, hold a full training state (weights, optimiser
    and loop states: not a ``save_weights_only`` file) and weights whose names
    and shapes are those of ``module``. Returns the checkpoint.

    Raises
    ------
    CheckpointError
        Naming the file, what is wrong with it and what to do.
    """
    path = Path(path)
    advice = advice or "resume from a checkpoint that training of this model wrote, or train without a checkpoint"
    ckpt = read_torch_file(path, what="a training checkpoint", advice=advice)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        held = "a dict without a 'state_dict' entry" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise CheckpointError(f"{path} is not a Lightning training checkpoint: it holds {held}; {advice}")
    theirs = ckpt["state_dict"]
    ours = module.state_dict()
    missing = [k for k in ours if k not in theirs]
    extra = [k for k in theirs if k not in ours]
    other = _front_end(ckpt)
    if missing or extra:
        kind = f"a {other} checkpoint" if other else "the checkpoint of a different model"
        names = (f"{len(missing)} of this model's weights missing, e.g. {missing[0]!r}" if missing
                 else f"{len(extra)} weights this model lacks, e.g. {extra[0]!r}")
        raise CheckpointError(f"{path} is {kind} ({names}); {advice}")
    for k, v in ours.items():
        w = theirs[k]
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != tuple(v.shape):
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise CheckpointError(
                f"{path} holds the weights of a model of another size ({k!r} has shape {shape} in the file, "
                f"{tuple(v.shape)} in this model); build the model with the options of the run that wrote it, "
                f"or {advice}"
            )
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(
            f"{path} holds only weights (saved with save_weights_only=True), not the optimiser and loop states "
            f"that resuming needs; {advice}"
        )
    return ckpt


def load_weights(model: torch.nn.Module, state: dict, source: object = "the checkpoint") -> None:
    """``model.load_state_dict(state)``, with a :class:`CheckpointError` naming ``source`` when they do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(err).__name__)
        raise CheckpointError(
            f"{source}: its weights do not fit the model its configuration describes ({detail}); "
            "was it written by another version of vsmd_ts? Train again with this version"
        ) from None


def state_dicts(ckpt: dict) -> tuple:
    """``(ema, raw)`` state dicts of the ``ScoreModel`` in a checkpoint of :func:`fit`."""

    def strip(state):
        return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}

    ema = strip(ckpt["state_dict"])
    raw = strip(ckpt.get("current_model_state", ckpt["state_dict"]))
    return ema, raw
