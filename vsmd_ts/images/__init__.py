"""Unconditional image generation with VSMD (the paper's section 5.3).

The same core engine as the time-series front end (:mod:`vsmd_ts.diffusion`):
a velocity-augmented forward SDE with a learned diagonal variational score A
(critical damping ``"vscld"`` or under-damping ``"vsuld"``), a U-Net that
predicts the velocity noise from the stacked ``(x, v)`` channels, training by
Algorithm 1 (denoising score matching alternating with A updates), an EMA of
the weights and Heun sampling of the probability-flow ODE.

``method="asbm"`` trains ASBM's two stages instead (U-Net forward control
and corrector, then a backward U-Net by bridge matching; see
:mod:`vsmd_ts.images.train`), sampled by the reverse SDE of the backward network.

Command line: ``python -m vsmd_ts.images train|sample|fid --help``.

Importing this package loads torch only; Lightning (training, through
:mod:`vsmd_ts.training`), scikit-learn
(digits) and torchmetrics (FID) are imported when used.
"""

from .config import PRESETS, TrainConfig, build_model
from .data import (
    CIFAR10NotFoundError,
    ImageDataset,
    load_cifar10,
    load_dataset,
    load_digits_images,
)
from .fid import FIDUnavailableError, compute_fid, load_inception
from .sampling import generate, load_checkpoint, make_grid, model_from_checkpoint, save_grid
from .train import train
from .unet import UNet

__all__ = [
    "CIFAR10NotFoundError",
    "FIDUnavailableError",
    "ImageDataset",
    "PRESETS",
    "TrainConfig",
    "UNet",
    "build_model",
    "compute_fid",
    "generate",
    "load_checkpoint",
    "load_cifar10",
    "load_dataset",
    "load_digits_images",
    "load_inception",
    "make_grid",
    "model_from_checkpoint",
    "save_grid",
    "train",
]
