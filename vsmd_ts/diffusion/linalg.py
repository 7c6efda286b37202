"""Closed-form algebra on per-coordinate K x K blocks (K = 1 or 2).

Every SDE in this package is linear and acts independently on each data
coordinate, so its 2d x 2d (or d x d) matrices are block diagonal with 1 x 1
or 2 x 2 blocks. Blocks are stored as tensors of shape ``(..., K, K)`` and a
state as ``(N, K, *data_shape)``. All transition algebra runs in float64.
"""

from __future__ import annotations

import torch

__all__ = [
    "apply_block",
    "congruence",
    "cholesky_block",
    "expm_block",
    "lyapunov_integral",
    "transpose_block",
]


def transpose_block(M: torch.Tensor) -> torch.Tensor:
    return M.transpose(-1, -2)


def apply_block(M: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Multiply each coordinate's block with that coordinate's K-vector.

    Parameters
    ----------
    M
        Blocks, shape ``(N, *data_shape, K, K)`` or ``(*data_shape, K, K)``
        (or anything broadcastable to them).
    a
        State, shape ``(N, K, *data_shape)``.

    Returns
    -------
    Tensor of shape ``(N, K, *data_shape)`` and the dtype of ``a``.
    """
    K = a.shape[1]
    M = M.to(a.dtype)
    rows = [sum(M[..., i, j] * a[:, j] for j in range(K)) for i in range(K)]
    return torch.stack(rows, dim=1)


def expm_block(M: torch.Tensor) -> torch.Tensor:
    """Matrix exponential of 1 x 1 or 2 x 2 blocks in closed form.

    For 2 x 2 blocks this is the Cayley-Hamilton form
    ``exp(M) = e^m [C I + S (M - m I)]`` with ``m = tr M / 2``,
    ``q = m^2 - det M``, ``C = cosh(sqrt q)``, ``S = sinh(sqrt q) / sqrt q``
    (``cos``/``sin`` when ``q < 0``, the under-damped case, and a Taylor series
    near the critically damped case ``q = 0``).
    """
    if M.shape[-1] == 1:
        return M.exp()
    a, b = M[..., 0, 0], M[..., 0, 1]
    c, d = M[..., 1, 0], M[..., 1, 1]
    m = 0.5 * (a + d)
    q = (0.5 * (a - d)) ** 2 + b * c  # m^2 - det M, without cancelling m^2
    small = q.abs() < 1e-8
    q_safe = torch.where(small, torch.ones_like(q), q)
    r = q_safe.abs().sqrt()
    C = torch.where(q_safe > 0, torch.cosh(r), torch.cos(r))
    S = torch.where(q_safe > 0, torch.sinh(r), torch.sin(r)) / r
    C = torch.where(small, 1 + q / 2 + q * q / 24, C)
    S = torch.where(small, 1 + q / 6 + q * q / 120, S)
    e = m.exp()
    top = torch.stack([e * (C + S * (a - m)), e * S * b], dim=-1)
    bottom = torch.stack([e * S * c, e * (C + S * (d - m))], dim=-1)
    return torch.stack([top, bottom], dim=-2)


def _entries(M: torch.Tensor):
    return M[..., 0, 0], M[..., 0, 1], M[..., 1, 0], M[..., 1, 1]


def _sym(p: torch.Tensor, r: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Symmetric 2 x 2 blocks ``[[p, r], [r, q]]``."""
    return torch.stack([torch.stack([p, r], -1), torch.stack([r, q], -1)], dim=-2)


def congruence(M: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """``M S M^T`` for symmetric ``S``, written out entry by entry (batched 2 x 2
    ``matmul`` is an order of magnitude slower on CPU)."""
    if M.shape[-1] == 1:
        return M * M * S
    a, b, c, d = _entries(M)
    p, r, q = S[..., 0, 0], S[..., 0, 1], S[..., 1, 1]
    ap_br, ar_bq = a * p + b * r, a * r + b * q  # first row of M S
    cp_dr, cr_dq = c * p + d * r, c * r + d * q  # second row
    return _sym(ap_br * a + ar_bq * b, ap_br * c + ar_bq * d, cp_dr * c + cr_dq * d)


def lyapunov_integral(
    F: torch.Tensor,
    Q: torch.Tensor,
    B: torch.Tensor,
    Sigma_inf: torch.Tensor,
    series_threshold: float = 0.5,
    terms: int = 18,
) -> torch.Tensor:
    """Covariance gained from zero by ``dS/dB = F S + S F^T + Q`` over ``B``.

    Equals ``int_0^B e^{Fs} Q e^{F^T s} ds``. For large ``B`` it is evaluated
    as ``Sigma_inf - e^{FB} Sigma_inf e^{F^T B}`` with the stationary
    covariance; for small ``B``, where that difference cancels
    catastrophically (the x-variance of a momentum SDE is O(B^3)), as the
    series ``sum_n B^n / n! L^{n-1}(Q)`` with ``L(X) = F X + X F^T``; with
    ``B |F| < 0.5`` its truncation error is below 1e-13 relative.

    Parameters
    ----------
    F, Q, Sigma_inf
        Blocks ``(..., K, K)`` in float64; ``Q`` and ``Sigma_inf`` symmetric,
        ``Sigma_inf`` solves ``F S + S F^T + Q = 0``.
    B
        Integrated time ``int beta``, broadcastable to the blocks' batch
        shape with two trailing singleton dims.
    """
    closed = Sigma_inf - congruence(expm_block(F * B), Sigma_inf)
    norm = F.abs().amax(dim=(-2, -1), keepdim=True)
    Bs = torch.minimum(B, series_threshold / norm.clamp_min(1e-12))  # keeps the unused branch finite
    if F.shape[-1] == 1:
        f = F
        term = Q * Bs
        series = term
        for n in range(2, terms + 1):
            term = 2 * f * term * (Bs / n)
            series = series + term
    else:
        f00, f01, f10, f11 = _entries(F)
        Bs = Bs[..., 0, 0]
        p, r, q = Q[..., 0, 0] * Bs, Q[..., 0, 1] * Bs, Q[..., 1, 1] * Bs
        sp, sr, sq = p, r, q
        for n in range(2, terms + 1):
            h = Bs / n
            p, r, q = (
                2 * (f00 * p + f01 * r) * h,
                (f00 * r + f01 * q + f10 * p + f11 * r) * h,
                2 * (f10 * r + f11 * q) * h,
            )
            sp, sr, sq = sp + p, sr + r, sq + q
        series = _sym(sp, sr, sq)
    return torch.where(B * norm < series_threshold, series, closed)


def cholesky_block(S: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of symmetric positive semi-definite 1x1 / 2x2 blocks."""
    if S.shape[-1] == 1:
        return S.clamp_min(0).sqrt()
    tiny = torch.finfo(S.dtype).tiny
    L00 = S[..., 0, 0].clamp_min(tiny).sqrt()
    L10 = S[..., 1, 0] / L00
    L11 = (S[..., 1, 1] - L10 * L10).clamp_min(0).sqrt()
    zero = torch.zeros_like(L00)
    return torch.stack(
        [torch.stack([L00, zero], -1), torch.stack([L10, L11], -1)], dim=-2
    )
