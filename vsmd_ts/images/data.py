"""Image datasets for the VSMD image front end: scikit-learn digits and CIFAR-10.

Images are kept in memory as one tensor (the datasets are small) and batches are
drawn by index, so training needs no DataLoader workers and resumes exactly.
Model inputs are scaled to ``[-1, 1]`` (the paper's CIFAR-10 convention,
``2 x - 1`` for ``x`` in ``[0, 1]``).

* ``digits``: the 1797 8x8 grey-scale digits bundled with scikit-learn
  (values 0..16), bilinearly upsampled when a larger ``image_size`` is asked
  for. No download; needs ``scikit-learn``.
* ``cifar10``: the "python version" batches of CIFAR-10 (Krizhevsky 2009),
  read from a local folder. Nothing is downloaded.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CIFAR10_TEST_FILES",
    "CIFAR10_TRAIN_FILES",
    "CIFAR10NotFoundError",
    "DATASETS",
    "ImageDataset",
    "find_cifar10_dir",
    "load_cifar10",
    "load_dataset",
    "load_digits_images",
    "to_uint8",
]

DATASETS = ("digits", "cifar10")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
_CIFAR10_DIRNAME = "cifar-10-batches-py"


class CIFAR10NotFoundError(FileNotFoundError):
    """The CIFAR-10 python batches are not where the user said they are."""


@dataclass
class ImageDataset:
    """Images in memory with their labels.

    Attributes
    ----------
    images
        ``(N, C, H, W)``; ``uint8`` in ``[0, 255]`` or floating in ``[0, 1]``.
    labels
        ``(N,)`` int64 class labels.
    name
        Dataset name.
    hflip
        Whether :meth:`batch` flips images horizontally at random (the only
        augmentation of the paper's CIFAR-10 runs; off for digits).
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    hflip: bool = False

    def __post_init__(self):
        if self.images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def data_shape(self) -> tuple:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])

    def to(self, device) -> "ImageDataset":
        """The same data on ``device`` (e.g. the whole of CIFAR-10 as uint8 on a GPU, 150 MB)."""
        return ImageDataset(self.images.to(device), self.labels.to(device), self.name, self.hflip)

    def batch(
        self, index: torch.Tensor, generator: Optional[torch.Generator] = None, augment: bool = True
    ) -> torch.Tensor:
        """Images ``index`` as float32 in ``[-1, 1]``, shape ``(len(index), C, H, W)``.

        With ``augment`` and ``hflip``, each image is flipped left-right with
        probability 1/2 (``generator``: a CPU generator).
        """
        x = self.images[index.to(self.images.device)]
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else 2.0 * x.float() - 1.0
        if self.hflip and augment:
            flip = torch.rand(x.shape[0], generator=generator) < 0.5
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
        return x

    @torch.no_grad()
    def pixel_stats(self, chunk: int = 4096):
        """Per-pixel mean and variance ``(C, H, W)`` in model units (``[-1, 1]``), without flips."""
        total = torch.zeros(self.data_shape, dtype=torch.float64, device=self.images.device)
        total_sq = torch.zeros_like(total)
        for start in range(0, len(self), chunk):
            x = self.batch(torch.arange(start, min(start + chunk, len(self))), augment=False).double()
            total += x.sum(0)
            total_sq += (x * x).sum(0)
        n = len(self)
        mean = total / n
        var = (total_sq - n * mean * mean).clamp_min(0) / max(n - 1, 1)
        return mean.float(), var.float()

    def iter_batches(self, batch_size: int = 500):
        """All images in order, without augmentation, as float batches in ``[-1, 1]``."""
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))), augment=False)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-range images (``[-1, 1]``) to ``uint8`` in ``[0, 255]`` (values outside are clipped)."""
    return ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


# ---------------------------------------------------------------------- digits
def load_digits_images(image_size: int = 8) -> ImageDataset:
    """scikit-learn's 8x8 digits as ``(1797, 1, S, S)`` float images in ``[0, 1]``.

    Parameters
    ----------
    image_size
        Side length ``S >= 8``; 8 keeps the original pixels, larger sizes are
        bilinear upsampling (the U-Net needs sides divisible by
        ``2 ** (levels - 1)``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'digits' dataset needs scikit-learn: pip install scikit-learn (or vsmd_ts[images])"
        ) from err
    image_size = int(image_size)
    if image_size < 8:
        raise ValueError(f"digits are 8x8; image_size must be >= 8, got {image_size}")
    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(0, 1)
    return ImageDataset(x.contiguous(), torch.as_tensor(bunch.target, dtype=torch.int64), "digits", hflip=False)


# --------------------------------------------------------------------- CIFAR-10
def _expected_files(split: str) -> Sequence[str]:
    if split == "train":
        return CIFAR10_TRAIN_FILES
    if split == "test":
        return CIFAR10_TEST_FILES
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def find_cifar10_dir(data_dir: Union[str, os.PathLike], split: str = "train") -> Path:
    """Folder that holds the CIFAR-10 python batches of ``split``.

    ``data_dir`` may be the ``cifar-10-batches-py`` folder itself or its parent.
    Raises :class:`CIFAR10NotFoundError` naming the expected files otherwise.
    """
    names = _expected_files(split)
    if data_dir is None:
        raise CIFAR10NotFoundError(
            "cifar10 needs --data-dir: a folder with the CIFAR-10 python batches "
            f"({', '.join(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES)}), e.g. the "
            f"'{_CIFAR10_DIRNAME}' folder extracted from cifar-10-python.tar.gz "
            "(https://www.cs.toronto.edu/~kriz/cifar.html); nothing is downloaded"
        )
    root = Path(data_dir).expanduser()
    candidates = [root, root / _CIFAR10_DIRNAME]
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            return folder
    missing = [n for n in names if not (root / n).is_file() and not (root / _CIFAR10_DIRNAME / n).is_file()]
    where = "does not exist" if not root.exists() else f"lacks {', '.join(missing) or 'a complete set of files'}"
    raise CIFAR10NotFoundError(
        f"CIFAR-10 {split} batches not found: {root} {where}. Expected the python-pickle files "
        f"{', '.join(names)} in {root} or in {root / _CIFAR10_DIRNAME} (extract cifar-10-python.tar.gz "
        "from https://www.cs.toronto.edu/~kriz/cifar.html there; nothing is downloaded at run time)"
    )


def _read_batch(path: Path):
    # The official batches are Python-2 pickles with bytes keys; re-pickled copies may use str keys.
    # Only open files you trust: pickle can run code.
    with open(path, "rb") as f:
        try:
            d = pickle.load(f, encoding="bytes")
        except Exception as err:
            raise ValueError(f"{path} is not a CIFAR-10 python batch (pickle load failed: {err})") from err
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (expected a dict, got {type(d).__name__})")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (keys {sorted(d)}; need 'data' and 'labels')")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    labels = np.asarray(d["labels"], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    # rows are 1024 red, 1024 green, 1024 blue values, each plane row-major
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir, split: str = "train", hflip: Optional[bool] = None) -> ImageDataset:
    """CIFAR-10 ``split`` (``"train"``: 50 000 images, ``"test"``: 10 000) as uint8 ``(N, 3, 32, 32)``.

    Parameters
    ----------
    data_dir
        Folder with the python batches (or its parent); see :func:`find_cifar10_dir`.
    split
        ``"train"`` or ``"test"``.
    hflip
        Random horizontal flips in :meth:`ImageDataset.batch` (default: on for train).
    """
    folder = find_cifar10_dir(data_dir, split)
    parts = [_read_batch(folder / n) for n in _expected_files(split)]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageDataset(images, labels, "cifar10", hflip=(split == "train") if hflip is None else bool(hflip))


# ------------------------------------------------------------------- dispatcher
def load_dataset(name: str, data_dir=None, image_size: Optional[int] = None, split: str = "train") -> ImageDataset:
    """Load ``"digits"`` (``image_size`` default 8) or ``"cifar10"`` (from ``data_dir``; 32x32 only)."""
    name = name.lower()
    if name == "digits":
        if split != "train":
            raise ValueError("digits has a single split ('train'): all 1797 images")
        return load_digits_images(8 if image_size is None else image_size)
    if name == "cifar10":
        if image_size not in (None, 32):
            raise ValueError(f"cifar10 images are 32x32; got image_size={image_size}")
        return load_cifar10(data_dir, split)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
