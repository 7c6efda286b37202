"""2-D toy distributions of the paper's section 5.1, sampled on the fly.

Four datasets: ``"spiral"`` and ``"checkerboard"`` and their stretched
versions ``"spiral-8y"`` (Y axis stretched 8x) and ``"checkerboard-6x"`` (X
axis stretched 6x).

Constructions (after VSDM's ``data.py``, which VSMD reuses):

* spiral: ``theta = sqrt(U) 3 pi - pi / 2``, ``r = theta + pi``, point
  ``r (cos theta, sin theta) + 0.25 N(0, I)`` with ``U ~ U[0, 1]``;
* checkerboard: uniform on ``[-2 pi, 2 pi]^2``, kept where ``sin x_1`` and
  ``sin x_2`` have different signs (rejection sampling).

Scaling. Each family is divided by **one global constant** so that its
unstretched version has unit standard deviation (pooled over both axes); the
stretch is applied afterwards. The stretched axis therefore has a standard
deviation of about 8 (spiral-8y) or 6 (checkerboard-6x) while the other axis
stays at about 1. Nothing is normalised per axis: the scale gap between the
axes is the effect the experiment studies. The paper's data are the same up to
one global factor (and a shift: the authors map ``x -> 2x - 1``), e.g. its
spiral-8y is the raw spiral times ``(0.4, 3.2)``. As in the paper the spiral is
not centred (its mean is about ``(0.4, 0.09)`` before the stretch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

__all__ = ["DATASETS", "ToyDataset", "get_dataset", "sample_dataset"]

# Pooled standard deviation of the raw spiral (Monte Carlo, 2e5 points: 5.61)
# and the exact one of the raw checkerboard (uniform on [-2 pi, 2 pi]).
SPIRAL_SCALE = 5.6
CHECKERBOARD_SCALE = 2 * math.pi / math.sqrt(3.0)

_SPECS = {
    "spiral": ("spiral", (1.0, 1.0)),
    "spiral-8y": ("spiral", (1.0, 8.0)),
    "checkerboard": ("checkerboard", (1.0, 1.0)),
    "checkerboard-6x": ("checkerboard", (6.0, 1.0)),
}
DATASETS = tuple(_SPECS)


def _check_num(num) -> int:
    if isinstance(num, bool) or not isinstance(num, int) or num <= 0:
        raise ValueError(f"number of samples must be a positive int, got {num!r}")
    return num


def _raw_spiral(num: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    u = torch.rand(num, generator=generator, dtype=torch.float64)
    theta = u.sqrt() * 3 * math.pi - math.pi / 2
    r = theta + math.pi
    points = torch.stack([r * theta.cos(), r * theta.sin()], dim=1)
    return points + 0.25 * torch.randn(num, 2, generator=generator, dtype=torch.float64)


def _raw_checkerboard(num: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    chunks, have = [], 0
    while have < num:
        # about half of the draws are kept; 3x oversampling (as in VSDM) rarely needs a second round
        c = (2 * torch.rand(3 * (num - have), 2, generator=generator, dtype=torch.float64) - 1) * 2 * math.pi
        s = torch.sin(c)
        keep = (s[:, 0] * s[:, 1]) < 0  # different signs, exact zeros dropped
        chunks.append(c[keep])
        have += int(keep.sum())
    return torch.cat(chunks)[:num]


@dataclass(frozen=True)
class ToyDataset:
    """A 2-D toy distribution in model units.

    Attributes
    ----------
    name
        One of :data:`DATASETS`.
    family
        ``"spiral"`` or ``"checkerboard"``.
    stretch
        Factor per axis applied after the global scaling, e.g. ``(1, 8)``.
    scale
        Global constant the raw points are divided by.
    """

    name: str
    family: str
    stretch: Tuple[float, float]
    scale: float

    data_shape = (2,)

    @property
    def stretched_axis(self) -> Optional[int]:
        """Index of the stretched axis (``None`` for the unstretched datasets)."""
        big = [i for i, s in enumerate(self.stretch) if s != 1.0]
        return big[0] if big else None

    def sample(self, num: int, generator: Optional[torch.Generator] = None, dtype=torch.float32) -> torch.Tensor:
        """Draw ``num`` points, shape ``(num, 2)``; reproducible with a seeded ``generator``."""
        num = _check_num(num)
        raw = _raw_spiral(num, generator) if self.family == "spiral" else _raw_checkerboard(num, generator)
        stretch = torch.tensor(self.stretch, dtype=torch.float64)
        return (raw / self.scale * stretch).to(dtype)

    def variance(self, num: int = 200_000, seed: int = 12345) -> torch.Tensor:
        """Per-axis variance ``(2,)`` from a fixed Monte Carlo sample (for the ``"data"`` prior)."""
        x = self.sample(num, torch.Generator().manual_seed(seed), dtype=torch.float64)
        return x.var(0).to(torch.float32)


def get_dataset(name: str) -> ToyDataset:
    """Look a toy dataset up by name (case-insensitive)."""
    key = str(name).lower()
    if key not in _SPECS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {', '.join(DATASETS)}")
    family, stretch = _SPECS[key]
    scale = SPIRAL_SCALE if family == "spiral" else CHECKERBOARD_SCALE
    return ToyDataset(key, family, stretch, scale)


def sample_dataset(name: str, num: int, seed: Optional[int] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``num`` points ``(num, 2)`` of dataset ``name``; ``seed`` makes a fresh generator."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    return get_dataset(name).sample(num, generator)
