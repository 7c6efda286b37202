"""Small shared networks: time embedding, residual MLP denoiser, Gaussian residual and score wrappers."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .sde import LinearSDE

__all__ = ["ResidualMLP", "ScoreModel", "SinusoidalEmbedding"]


class SinusoidalEmbedding(nn.Module):
    """Sinusoidal features of a continuous time ``t in [0, T]``, ``(N,) -> (N, dim)``.

    ``t`` is multiplied by ``scale`` first so that the frequencies
    ``1 .. 1/max_period`` cover the range of diffusion times.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = (self.scale * t.float())[:, None] * self.freqs[None]
        return torch.cat([args.cos(), args.sin()], dim=-1)


class _ResidualBlock(nn.Module):
    def __init__(self, hidden: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.film = nn.Linear(emb_dim, 2 * hidden)
        self.net = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )

    def forward(self, h, emb):
        scale, shift = self.film(emb).chunk(2, dim=-1)
        return h + self.net(self.norm(h) * (1 + scale) + shift)


class ResidualMLP(nn.Module):
    """Noise-prediction network for flat data.

    Input: a state ``(N, K, *data_shape)``, times ``(N,)`` and an optional
    conditioning vector ``(N, cond_dim)``; output: the predicted noise of the
    last channel ``(N, *data_shape)``. Time (and the condition) modulate each
    residual block (FiLM).

    Parameters
    ----------
    data_shape
        Shape of one data point (flattened internally).
    num_channels
        K: 2 for momentum SDEs, 1 for overdamped ones.
    hidden
        Width of the residual stream.
    num_blocks
        Number of residual blocks.
    time_dim
        Size of the sinusoidal time embedding.
    cond_dim
        Size of the conditioning vector (0: unconditional).
    dropout
        Dropout inside the blocks.
    """

    def __init__(
        self,
        data_shape,
        num_channels: int = 2,
        hidden: int = 256,
        num_blocks: int = 4,
        time_dim: int = 64,
        cond_dim: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.data_shape = tuple(data_shape)
        d = math.prod(self.data_shape)
        self.cond_dim = cond_dim
        self.time_embed = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, hidden), nn.SiLU())
        self.cond_embed = nn.Linear(cond_dim, hidden) if cond_dim else None
        self.inp = nn.Linear(num_channels * d, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, hidden, dropout) for _ in range(num_blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, d))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, a: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        emb = self.time_embed(t)
        if self.cond_embed is not None:
            if cond is None:
                raise ValueError("this network was built with cond_dim > 0 and needs a condition")
            emb = emb + self.cond_embed(cond)
        h = self.inp(a.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).view((a.shape[0],) + self.data_shape)


class ScoreModel(nn.Module):
    """Score of the last channel from a noise-prediction network.

    ``score(a, t, cond) = -net(a, t, cond) / L_KK(t)`` where ``L`` is the
    Cholesky factor of the forward transition (the paper's parametrisation;
    with it the loss of eq. 11 becomes ``|eps - net|^2``).
    """

    def __init__(self, sde: LinearSDE, net: nn.Module):
        super().__init__()
        self.sde = sde
        self.net = net

    def forward(self, a: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        eps_hat = self.net(a, t, cond)
        scale = self.sde.noise_scale(t).to(eps_hat.device, eps_hat.dtype)
        return -eps_hat / scale

