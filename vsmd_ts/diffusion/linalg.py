"""Closed-form algebra on per-coordinate K x K blocks (K = 1 or 2).

Every SDE in this package is linear and acts independently on each data
coordinate, so its 2d x 2d (or d x d) matrices are block diagonal with 1 x 1
or 2 x 2 blocks. Blocks are stored as tensors of shape ``(..., K, K)`` and a
state as ``(N, K, *data_shape)``. All transition algebra runs in float64.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "apply_block",
    "congruence",
    "cholesky_block",
    "expm_block",
    "lyapunov_integral",
    "oscillator_moments",
    "overdamped_moments",
    "stack_block",
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


# ----------------------------------------------------------------------------
# Fused transition moments. Both SDE families reduce to a handful of
# element-wise float64 operations on the (N, *data_shape) grid; everything
# per coordinate (or per time) is computed once on the small axis.


def stack_block(e00, e01, e10, e11) -> torch.Tensor:
    """Assemble 2 x 2 blocks ``(..., 2, 2)`` from four broadcastable entries."""
    shape = torch.broadcast_shapes(e00.shape, e01.shape, e10.shape, e11.shape)
    out = torch.empty(shape + (2, 2), dtype=e00.dtype, device=e00.device)
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = e00, e01, e10, e11
    return out


_SERIES_CACHE: dict = {}


def _oscillator_series(R: float, terms: int):
    """Taylor coefficients (highest order first) of the scaled noise covariance.

    ``W(u) = int_0^u e^{G s} e_2 e_2^T e^{G^T s} ds = sum_n u^n / n! L^{n-1}(e_2 e_2^T)``
    with ``G = [[0, 1/2], [-1/(8R), -1/2]]`` and ``L(X) = G X + X G^T``; computed
    once per ``R`` in Python floats (entries ``(W00, W01, W11)``).
    """
    key = (R, terms)
    if key not in _SERIES_CACHE:
        g10 = -1.0 / (8.0 * R)
        p, r, q = 0.0, 0.0, 1.0  # L^0(E) = E
        coefs, fact = [], 1.0
        for n in range(1, terms + 1):
            fact *= n
            coefs.append((p / fact, r / fact, q / fact))
            # L(X) for symmetric X = [[p, r], [r, q]] and G01 = 1/2, G11 = -1/2
            p, r, q = r, 0.5 * q + g10 * p - 0.5 * r, 2.0 * g10 * r - q
        _SERIES_CACHE[key] = coefs[::-1]
    return _SERIES_CACHE[key]


def _horner(coefs, u: torch.Tensor) -> torch.Tensor:
    """``sum_{n>=1} c_n u^n`` from coefficients listed highest order first."""
    acc = torch.full_like(u, coefs[0])
    for c in coefs[1:]:
        acc = acc.mul_(u).add_(c)
    return acc.mul_(u)


def oscillator_moments(
    B: torch.Tensor,
    k: torch.Tensor,
    damping_ratio: float,
    gamma: float,
    s0_vv: float = 0.0,
    series_threshold: float = 0.5,
    terms: int = 22,
):
    """Transition of the per-coordinate momentum SDE, entry by entry (float64).

    The drift block is ``F = [[0, 1/2], [-omega^2/2, -k/2]]`` with
    ``omega^2 = k^2 / (4R)`` and noise ``Q = diag(0, gamma)``. With
    ``D = diag(k, 1)``, ``D F D^{-1} = k G`` for the fixed matrix
    ``G = [[0, 1/2], [-1/(8R), -1/2]]``, so every moment is a function of the
    single number ``u = k B`` per element, rescaled by powers of ``k``::

        e^{FB} = D^{-1} e^{G u} D,
        cov    = (gamma / k) D^{-1} [W(u) + sigma e^{Gu} E e^{G^T u}] D^{-1},

    with ``E = e_2 e_2^T``, ``sigma = s0_vv k / gamma`` and ``W(u) =
    Sigma_inf~ - e^{Gu} Sigma_inf~ e^{G^T u}``, ``Sigma_inf~ = diag(4R, 1)``.
    Where ``u < series_threshold`` that difference cancels (``W_00 = O(u^3)``)
    and the Taylor series of ``W`` is used instead (truncation < 1e-16
    relative); it is evaluated only on the rows (times) that need it.

    Parameters
    ----------
    B
        Integrated times ``int beta``, shape ``(N, 1, ..., 1)`` (one per sample,
        broadcast over the data axes) or ``()``; float64.
    k
        Friction per coordinate ``gamma (1 - 2 A_v) > 0``, shape ``data_shape``; float64.
    damping_ratio, gamma
        ``R`` in ``(0, 1]`` and the noise variance per unit beta.
    s0_vv
        Initial velocity variance (1: marginalised ``v_0``, 0: conditioned on).

    Returns
    -------
    ``(phi, cov, chol)``: tuples of the four entries ``(00, 01, 10, 11)`` of
    ``e^{FB}``, the covariance and its lower Cholesky factor, each of shape
    ``broadcast(B, k)``.
    """
    R = float(damping_ratio)
    u = B * k
    c = math.sqrt((1.0 - R) / (16.0 * R))
    e = torch.exp(-0.25 * u)
    if c > 0:
        C, S = torch.cos(c * u), torch.sin(c * u).div_(c)  # under-damped: rotation
    else:
        C, S = torch.ones_like(u), u  # critical: the limit c -> 0
    eS = e * S
    t00 = e * C
    t11 = t00 - 0.25 * eS
    t00 = t00.add_(eS, alpha=0.25)
    t01, t10 = 0.5 * eS, eS.mul_(-1.0 / (8.0 * R))
    sigma = s0_vv * k / gamma
    p, w = 4.0 * R, 1.0 - sigma
    w00 = p - (p * t00 * t00 + w * t01 * t01)
    w01 = -(p * t00 * t10 + w * t01 * t11)
    w11 = 1.0 - (p * t10 * t10 + w * t11 * t11)
    _series_rows(u, B, k, R, sigma, (t01, t11), (w00, w01, w11), series_threshold, terms)
    return _rescale(k, gamma, (t00, t01, t10, t11), (w00, w01, w11))


def _series_rows(u, B, k, R, sigma, t_last, w, threshold, terms) -> None:
    """Overwrite ``w = (W00, W01, W11)`` in place by the Taylor series where ``u < threshold``.

    Only the rows (leading index: one time each) with some ``u < threshold``
    are evaluated, so the cost is proportional to the share of small times.
    """
    if B.dim() == 0 or B.numel() == 1:
        rows = None
        u_r = u
    else:
        small = B.reshape(-1) * k.min() < threshold
        if not bool(small.any()):
            return
        rows = small.nonzero().squeeze(1)
        u_r = u.index_select(0, rows)
    t01, t11 = (t.index_select(0, rows) if rows is not None else t for t in t_last)
    extra = (t01 * t01, t01 * t11, t11 * t11)  # e^{Gu} E e^{G^T u} without the cancelling part
    coefs = _oscillator_series(R, terms)
    use = u_r < threshold
    for j, target in enumerate(w):
        series = _horner([cf[j] for cf in coefs], u_r.clone()) + sigma * extra[j]
        if rows is None:
            target.copy_(torch.where(use, series, target))
        else:
            target.index_copy_(0, rows, torch.where(use, series, target.index_select(0, rows)))


def _rescale(k, gamma, t, w):
    """Undo ``D = diag(k, 1)``: moments in the original coordinates, with the Cholesky factor."""
    g = gamma / k
    sg = g.sqrt()
    t00, t01, t10, t11 = t
    w00, w01, w11 = w
    phi = (t00, t01 / k, t10 * k, t11)
    cov = (w00 * (g / (k * k)), w01 * (g / k), w01 * (g / k), w11 * g)
    l00 = w00.clamp_min(torch.finfo(w00.dtype).tiny).sqrt_()
    l10 = w01 / l00
    l11 = (w11 - l10 * l10).clamp_min_(0).sqrt_()
    chol = (l00 * (sg / k), torch.zeros_like(l00), l10 * sg, l11 * sg)
    return phi, cov, chol


def overdamped_moments(B: torch.Tensor, f: torch.Tensor, s0: float = 0.0):
    """Transition of ``dx = beta f x dt + sqrt(beta) dw`` (K = 1), float64.

    ``mean_coef = e^{fB}``, ``cov = (e^{2fB} - 1) / (2f) + e^{2fB} s0``, written
    with ``expm1`` so that it keeps full relative accuracy as ``B -> 0``.

    Parameters
    ----------
    B
        Integrated times, shape ``(N, 1, ..., 1)`` or ``()``.
    f
        Drift per coordinate ``-(1 - 2A)/2 < 0``, shape ``data_shape``.
    s0
        Initial variance.

    Returns
    -------
    ``(phi, cov, chol)`` of shape ``broadcast(B, f)``.
    """
    fB = B * f
    phi = fB.exp()
    cov = torch.expm1(2 * fB).div_(2 * f)
    if s0:
        cov = cov.add_(phi * phi, alpha=s0)
    return phi, cov, cov.sqrt()
