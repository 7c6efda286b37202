"""A compact U-Net noise predictor for velocity-augmented image states.

The network follows the DDPM/ADM layout that the paper's image experiments use
(the authors run EDM's port of ADM, "DhariwalUNet"), scaled down: residual
blocks whose GroupNorm output is modulated by the time embedding
(scale/shift), self-attention at low resolutions, strided-convolution
down-sampling and nearest-neighbour up-sampling with skip connections.

For VSMD the input is the augmented state ``a = (x, v)`` with shape
``(N, K, C, H, W)`` (``K = 2`` for the momentum SDEs); the ``K`` channels of
each colour channel are stacked into ``K * C`` input channels. The output is
the predicted velocity noise ``eps_v``, shape ``(N, C, H, W)``, so that
``score_v = -eps_v / L_vv(t)`` (see :class:`vsmd_ts.diffusion.ScoreModel`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vsmd_ts.diffusion import SinusoidalEmbedding

__all__ = ["StateUNet", "UNet"]


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch (identity at init)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    # the largest divisor of `channels` not above `groups`: small widths still work
    g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
    return nn.GroupNorm(g, channels)


class ResBlock(nn.Module):
    """Pre-activation residual block with time-embedding scale/shift.

    ``(N, c_in, H, W), (N, emb_dim) -> (N, c_out, H, W)``.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = _norm(c_out, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions, ``(N, c, H, W) -> same``."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.heads = num_heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        # (N, heads, HW, c/heads) for scaled_dot_product_attention
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class _Level(nn.Module):
    """Residual blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, blocks: Sequence[ResBlock], attn: Optional[Sequence[nn.Module]]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn) if attn else None


def _check_sizes(data_shape, channel_mult, num_res_blocks):
    """Validated ``(data_shape, channel_mult)`` tuples of a U-Net."""
    data_shape = tuple(int(s) for s in data_shape)
    if len(data_shape) != 3:
        raise ValueError(f"data_shape must be (C, H, W), got {data_shape}")
    channel_mult = tuple(int(m) for m in channel_mult)
    if not channel_mult or min(channel_mult) < 1:
        raise ValueError(f"channel_mult must be a non-empty sequence of positive ints, got {channel_mult}")
    factor = 2 ** (len(channel_mult) - 1)
    if data_shape[1] % factor or data_shape[2] % factor:
        raise ValueError(
            f"image size {data_shape[1]}x{data_shape[2]} must be divisible by 2**(len(channel_mult) - 1) = {factor}; "
            "use fewer levels or pad/upsample the images"
        )
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
    return data_shape, channel_mult


class UNet(nn.Module):
    """U-Net noise predictor ``net(a, t, cond=None) -> eps_hat``.

    Parameters
    ----------
    data_shape
        ``(C, H, W)`` of one image. ``H`` and ``W`` must be divisible by
        ``2 ** (len(channel_mult) - 1)``.
    num_channels
        ``K``: channels of the augmented state per colour channel (2 for
        ``(x, v)``, 1 for overdamped SDEs).
    base_channels
        Width at the highest resolution.
    channel_mult
        Width multiplier per resolution level; each further level halves the
        resolution.
    num_res_blocks
        Residual blocks per level on the way down (one more on the way up).
    attn_resolutions
        Resolutions (side lengths) with self-attention after each residual
        block; the bottleneck always has one attention block.
    num_heads
        Attention heads.
    dropout
        Dropout inside residual blocks (0.1 for CIFAR-10 in the paper).
    norm_groups
        GroupNorm groups (reduced automatically for narrow layers).
    num_classes
        Number of classes for a class-conditional model (``cond`` holds
        integer labels ``(N,)``); 0 for unconditional.

    Notes
    -----
    Shapes: ``a`` is ``(N, K, C, H, W)``, ``t`` is ``(N,)`` with values in
    ``[eps, T]``; the output is ``(N, C, H, W)``. The output layer is
    zero-initialised, so the untrained network predicts zero noise.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        num_channels: int = 2,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (8,),
        num_heads: int = 4,
        dropout: float = 0.0,
        norm_groups: int = 32,
        num_classes: int = 0,
    ):
        super().__init__()
        data_shape, channel_mult = _check_sizes(data_shape, channel_mult, num_res_blocks)
        C, H, W = data_shape
        self.data_shape = data_shape
        self.num_channels = int(num_channels)
        self.num_classes = int(num_classes)
        attn_resolutions = {int(r) for r in attn_resolutions}
        ch = int(base_channels)
        emb_dim = 4 * ch

        # t in [eps, 1] is scaled by 1000 inside the embedding (the authors feed 999 t)
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(ch), nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.class_embed = nn.Embedding(self.num_classes, emb_dim) if self.num_classes else None
        self.inp = nn.Conv2d(self.num_channels * C, ch, 3, padding=1)

        def attn(c, res):
            return [AttnBlock(c, num_heads, norm_groups)] if res in attn_resolutions else []

        # down path: remember the widths of every skip tensor
        skips = [ch]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c, res = ch, H
        for level, mult in enumerate(channel_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(c, ch * mult, emb_dim, dropout, norm_groups))
                c = ch * mult
                attns.extend(attn(c, res))
                skips.append(c)
            self.down.append(_Level(blocks, attns))
            if level < len(channel_mult) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
                res //= 2

        self.mid1 = ResBlock(c, c, emb_dim, dropout, norm_groups)
        self.mid_attn = AttnBlock(c, num_heads, norm_groups)
        self.mid2 = ResBlock(c, c, emb_dim, dropout, norm_groups)

        # up path: num_res_blocks + 1 blocks per level, each eats one skip tensor
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(c + skips.pop(), ch * mult, emb_dim, dropout, norm_groups))
                c = ch * mult
                attns.extend(attn(c, res))
            self.up.append(_Level(blocks, attns))
            if level > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
                res *= 2
        assert not skips

        self.out_norm = _norm(c, norm_groups)
        self.out = _zero(nn.Conv2d(c, C, 3, padding=1))

    def forward(self, a: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Predicted velocity noise ``(N, C, H, W)`` for states ``a`` ``(N, K, C, H, W)`` at times ``t`` ``(N,)``."""
        expected = (self.num_channels,) + self.data_shape
        if a.dim() != 5 or tuple(a.shape[1:]) != expected:
            raise ValueError(f"expected a state of shape (N, {', '.join(map(str, expected))}), got {tuple(a.shape)}")
        n = a.shape[0]
        emb = self.time_embed(t.reshape(-1).expand(n) if t.numel() == 1 else t)
        if self.class_embed is not None:
            if cond is None:
                raise ValueError("this U-Net is class-conditional (num_classes > 0) and needs integer labels as cond")
            emb = emb + self.class_embed(cond.long().reshape(n))
        emb = emb.to(a.dtype)

        h = self.inp(a.reshape((n, -1) + self.data_shape[1:]))
        hs = [h]
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.blocks):
                h = block(h, emb)
                if level.attn is not None:
                    h = level.attn[j](h)
                hs.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)

        for i, level in enumerate(self.up):
            for j, block in enumerate(level.blocks):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
                if level.attn is not None:
                    h = level.attn[j](h)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))

    def extra_repr(self) -> str:
        params = sum(p.numel() for p in self.parameters())
        return f"data_shape={self.data_shape}, num_channels={self.num_channels}, params={params / 1e6:.2f}M"


class StateUNet(UNet):
    """U-Net that predicts every channel of the state: ``(N, K, C, H, W) -> (N, K, C, H, W)``.

    ASBM's corrector ``h`` (the adjoint needs its gradient in ``x`` and
    ``v``). The ``K`` channels enter and leave as ``K * C`` image channels:
    a :class:`UNet` on data ``(K * C, H, W)`` with one state channel; the
    other arguments are :class:`UNet`'s.
    """

    def __init__(self, data_shape: Sequence[int], num_channels: int = 2, **kwargs):
        C, H, W = (int(s) for s in data_shape)
        super().__init__((int(num_channels) * C, H, W), num_channels=1, **kwargs)
        self.state_shape = (int(num_channels), C, H, W)

    def forward(self, a: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Prediction ``(N, K, C, H, W)`` for states ``a`` ``(N, K, C, H, W)`` at times ``t`` ``(N,)``."""
        if a.dim() != 5 or tuple(a.shape[1:]) != self.state_shape:
            raise ValueError(f"expected a state of shape (N, {', '.join(map(str, self.state_shape))}), "
                             f"got {tuple(a.shape)}")
        n = a.shape[0]
        return super().forward(a.reshape((n, 1) + self.data_shape), t, cond).reshape((n,) + self.state_shape)
