"""Exact marginals and scores of Gaussian data under the (per-coordinate linear) forward SDEs.

If ``x_0 ~ N(m, S)`` (full covariance over ``d`` coordinates) and ``v_0 ~ N(0, I)``, the
marginal of ``a_t`` is Gaussian with mean ``e^{FB} (m, 0)`` and covariance
``Phi Cov(a_0) Phi^T + Sigma_noise``, assembled here as full ``(K d) x (K d)`` matrices.
These are the references the tests and the sampler benchmark check samplers against.
"""

from __future__ import annotations

import torch

from .sde import LinearSDE

__all__ = ["exact_sample", "exact_score_fn", "full_blocks", "marginal"]


def full_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """Per-coordinate (d, K, K) blocks -> (K d, K d) with index k * d + i."""
    d, K, _ = blocks.shape
    out = torch.zeros(K * d, K * d, dtype=blocks.dtype)
    for k in range(K):
        for l in range(K):
            out[k * d : (k + 1) * d, l * d : (l + 1) * d] = torch.diag(blocks[:, k, l])
    return out


def marginal(sde: LinearSDE, m: torch.Tensor, S: torch.Tensor, t: float):
    """Mean (K d,) and covariance (K d, K d) of a_t for x_0 ~ N(m, S), float64."""
    d, K = m.shape[0], sde.num_channels
    tt = torch.tensor(float(t), dtype=torch.float64)
    tr = sde.transition(tt, sigma0=torch.zeros(K, K, dtype=torch.float64))
    Phi = full_blocks(tr.mean_coef.expand(d, K, K))
    noise = full_blocks(tr.cov.expand(d, K, K))
    cov0 = torch.eye(K * d, dtype=torch.float64)
    cov0[:d, :d] = S
    mean0 = torch.zeros(K * d, dtype=torch.float64)
    mean0[:d] = m
    return Phi @ mean0, Phi @ cov0 @ Phi.T + noise


def exact_score_fn(sde: LinearSDE, m: torch.Tensor, S: torch.Tensor):
    """score_fn(a, t, cond) giving the exact last-channel score of the Gaussian marginal."""
    d, K = m.shape[0], sde.num_channels
    cache = {}

    def score_fn(a, t, cond=None):
        key = float(t[0])
        if key not in cache:
            mu, C = marginal(sde, m, S, key)
            cache[key] = (mu, torch.linalg.inv(C)[(K - 1) * d :])  # rows of the last channel
        mu, P = cache[key]
        return (-(a.double().reshape(a.shape[0], K * d) - mu) @ P.T).to(a.dtype)

    return score_fn


def exact_sample(sde: LinearSDE, m, S, t: float, n: int, generator=None):
    """``n`` draws ``(n, K, d)`` (float32) of the exact marginal of ``a_t``."""
    mu, C = marginal(sde, m, S, t)
    L = torch.linalg.cholesky(C)
    z = torch.randn(n, C.shape[0], dtype=torch.float64, generator=generator)
    return (mu + z @ L.T).float().reshape(n, sde.num_channels, m.shape[0])
