"""Sampling from trained image checkpoints and writing sample grids.

Samples are drawn by integrating the probability-flow ODE with Heun's method
on a uniform time grid from ``T`` to ``eps`` (what every number in the paper
uses; 125 steps, 249 score evaluations, for CIFAR-10), starting from the
Gaussian prior of the (EMA) forward SDE. ASBM checkpoints sample the reverse
SDE of the backward network by Euler-Maruyama from ``N(0, I)``, one network
call per step (:func:`sampling_method`).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch

from vsmd_ts.diffusion import ScoreModel

from .config import TrainConfig, build_asbm_model, build_model
from .data import to_uint8

__all__ = ["generate", "load_checkpoint", "make_grid", "model_from_checkpoint", "sampling_method", "save_grid"]


def sampling_method(cfg: TrainConfig) -> Tuple[str, str]:
    """``(sampler, prior)`` a run's samples are drawn with.

    VSMD: Heun on the probability-flow ODE from the ``"data"`` prior; ASBM:
    Euler-Maruyama on the reverse SDE of the backward network alone (one
    network call per step) from ASBM's energy prior ``N(0, I)`` (``"fixed"``).
    """
    return ("euler_maruyama", "fixed") if cfg.method == "asbm" else ("heun", "data")

def load_checkpoint(path: Union[str, os.PathLike], map_location="cpu", advice: Optional[str] = None) -> dict:
    """Read a checkpoint written by :func:`vsmd_ts.images.train` (tensors and plain values only).

    Raises :class:`~vsmd_ts.training.CheckpointError` (a ``ValueError``) naming the file for a missing,
    empty, damaged or foreign one (``advice``: what to do, in the message).
    """
    from vsmd_ts.training import load_checkpoint as load

    return load(path, map_location, front_end="vsmd_ts.images", advice=advice)


def model_from_checkpoint(
    ckpt: Union[dict, str, os.PathLike], ema: bool = True, device=None
) -> Tuple[ScoreModel, TrainConfig, float]:
    """Rebuild the score model of a checkpoint.

    Parameters
    ----------
    ckpt
        Checkpoint dict or path.
    ema
        Load the EMA weights (U-Net and A), as the paper samples with; else
        the raw weights.
    device
        Where to put the model (default: CPU).

    Returns
    -------
    (model, config, data_var): the :class:`~vsmd_ts.diffusion.ScoreModel` in
    eval mode, the run's configuration and the per-pixel data variance used
    by the sampling prior. ASBM checkpoints give a
    :class:`~vsmd_ts.training.asbm.BridgeScoreModel` (backward network and
    frozen control) or, from ``OUT/stage1``, the
    :class:`~vsmd_ts.training.asbm.ForwardNets` of stage 1.
    """
    from vsmd_ts.training.checkpoint import load_weights, state_dicts

    source = "the checkpoint" if isinstance(ckpt, dict) else ckpt
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = TrainConfig.from_dict(ckpt["vsmd"]["image_config"]).resolved()
    model = build_asbm_model(cfg, ckpt["vsmd"].get("asbm_stage", 2)) if cfg.method == "asbm" else build_model(cfg)
    ema_state, raw_state = state_dicts(ckpt)
    load_weights(model, ema_state if ema else raw_state, source)
    model.eval()
    if device is not None:
        model.to(device)
    return model, cfg, float(ckpt["vsmd"].get("data_var", 1.0))


@torch.no_grad()
def generate(
    model: ScoreModel,
    num: int,
    steps: int = 100,
    seed: int = 0,
    batch_size: int = 256,
    data_var: float = 1.0,
    device=None,
    progress: bool = False,
    sampler: str = "heun",
    prior: str = "data",
) -> torch.Tensor:
    """Draw ``num`` images with Heun's method on the probability-flow ODE (or ``sampler``).

    Parameters
    ----------
    model
        Score model ``ScoreModel(sde, unet)`` (eval mode).
    num
        Number of images.
    steps
        Sampler steps (Heun: ``2 * steps`` score evaluations per image).
    seed
        Seed of the prior draws (same seed and ``batch_size``, same images).
    batch_size
        Images per ODE solve.
    data_var
        Per-pixel data variance for the prior (the data part that survives to ``T``).
    device
        Device of the computation (default: the model's).
    progress
        tqdm bar over the steps.
    sampler, prior
        A name of :data:`vsmd_ts.diffusion.SAMPLERS` and the prior at ``T``
        (:func:`sampling_method` gives a run's).

    Returns
    -------
    Images ``(num, C, H, W)``, float32 on the CPU, clipped to ``[-1, 1]``.
    """
    from vsmd_ts.training import draw_samples

    x = draw_samples(model, num, steps, sampler, prior, data_var, seed, batch_size, device=device, progress=progress).x
    if not torch.isfinite(x).all():
        warnings.warn("sampling produced non-finite values; they are set to 0 (check the checkpoint)")
        x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return x.clamp(-1, 1).cpu()


def make_grid(images: torch.Tensor, nrow: Optional[int] = None, padding: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` in ``[-1, 1]`` into a ``uint8`` array ``(H', W', C)``.

    ``nrow`` images per row (default: about ``sqrt(N)``).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = int(nrow or math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, dtype=np.uint8)
    pix = to_uint8(images).permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = pix[i]
    return grid


def save_grid(
    images: torch.Tensor,
    path: Union[str, os.PathLike],
    nrow: Optional[int] = None,
    min_width: int = 384,
) -> Path:
    """Write a PNG grid of images ``(N, C, H, W)`` in ``[-1, 1]``.

    Small images are enlarged by an integer nearest-neighbour factor so the
    grid is at least ``min_width`` pixels wide (pixels stay sharp).
    """
    import matplotlib.image  # writes the PNG through Pillow; no pyplot, no GUI backend

    grid = make_grid(images, nrow)
    factor = max(1, math.ceil(min_width / grid.shape[1]))
    grid = grid.repeat(factor, axis=0).repeat(factor, axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if grid.shape[2] == 1:
        matplotlib.image.imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=255, format="png")
    else:
        matplotlib.image.imsave(path, grid, format="png")
    return path
