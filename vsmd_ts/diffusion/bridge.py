"""Gaussian algebra of a linear base SDE between two fixed endpoints: bridges, conditional scores, adjoints.

For the per-coordinate linear SDEs of :mod:`vsmd_ts.diffusion.sde`
(``da = beta F a dt + sqrt(beta q) e_K dw``), with ``Phi(t, s)`` and
``Sigma(t, s)`` the transition of ``a_t | a_s`` (:meth:`LinearSDE.transition`
with ``s``), the time ``T`` (the prior end, ``1`` in the ASBM paper) and
the data end ``0``:

* the **bridge** ``p(a_t | a_0, a_T)`` is Gaussian. It is the product of the
  forward prediction ``N(Phi(t, 0) a_0, S)``, ``S = Sigma(t, 0)``, and the
  backward one ``N(Phi(t, T) a_T, P)``, ``P = Phi(t, T) Sigma(T, t) Phi(t, T)^T``::

      mean = P (S + P)^{-1} Phi(t, 0) a_0 + S (S + P)^{-1} Phi(t, T) a_T,
      cov  = S (S + P)^{-1} P.

  This equals the textbook conditioning ``m_t = Phi(t,0) a_0 + Sigma(t,0)
  Phi(T,t)^T Sigma(T,0)^{-1} (a_T - Phi(T,0) a_0)`` (``S + P`` is
  ``Sigma(T, 0)`` pulled back to ``t``), but has no subtraction, so it stays
  accurate where ``S`` or ``P`` vanishes (``t -> 0``, ``t -> T``; the
  position variance of a momentum SDE is ``O(t^3)`` there) and is exact at
  both ends;
* the **conditional score** ``grad_{a_t} log p(a_t | a_0) = -Sigma(t, 0)^{-1} (a_t - Phi(t, 0) a_0)``;
* the **lean adjoint** of the linear drift (Adjoint Matching; ASBS App. A.1):
  ``d a~/dt = -(beta F)^T a~`` has the closed form ``a~_t = Phi(T, t)^T a~_T``,
  independent of the path, so no adjoint ODE is integrated.

Blocks are float64 with shape ``(N, *data_shape, K, K)``; states ``(N, K, *data_shape)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .linalg import apply_block, cholesky_block, congruence, transpose_block
from .sde import LinearSDE

__all__ = ["BridgeCoefficients", "adjoint_propagator", "bridge", "bridge_sample", "conditional_score", "propagate_adjoint"]


@dataclass
class BridgeCoefficients:
    """The bridge ``a_t | a_0, a_T ~ N(coef0 a_0 + coef1 a_T, cov)``, float64 blocks ``(N, *data_shape, K, K)``.

    ``chol`` is the lower Cholesky factor of ``cov``.
    """

    coef0: torch.Tensor
    coef1: torch.Tensor
    cov: torch.Tensor
    chol: torch.Tensor

    def mean(self, a0: torch.Tensor, a1: torch.Tensor) -> torch.Tensor:
        """Bridge mean ``(N, K, *data_shape)`` (float64) for endpoints ``a0``, ``a1`` of that shape."""
        return apply_block(self.coef0, a0.double()) + apply_block(self.coef1, a1.double())


def _end(sde: LinearSDE, t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, sde.T, dtype=torch.float64)


def bridge(sde: LinearSDE, t, sigma0: Optional[torch.Tensor] = None) -> BridgeCoefficients:
    """Coefficients of the base bridge ``p(a_t | a_0, a_T)`` at times ``t``.

    Parameters
    ----------
    sde
        The base (reference) SDE.
    t
        Times in ``[0, T]``, scalar or ``(N,)``.
    sigma0
        Covariance block of ``a_0`` given what is conditioned on; ``None``
        (default) conditions on the full ``a_0`` (its velocity included), as
        ASBM's couplings do. ``sde._initial_cov(...)`` gives the bridge from
        the data alone when the velocity is marginalised.

    Returns
    -------
    :class:`BridgeCoefficients` with blocks of shape ``(*t.shape, *data_shape, K, K)``.
    """
    t = sde._as_time(t).to(torch.float64)
    K = sde.num_channels
    if sigma0 is None:
        sigma0 = torch.zeros(K, K, dtype=torch.float64)
    fwd = sde.transition(t, sigma0=sigma0)  # Phi(t, 0), S
    bwd = sde.transition(_end(sde, t), s=t)  # Phi(T, t), Sigma(T, t)
    back = torch.linalg.inv(bwd.mean_coef)  # Phi(t, T): det e^{tr F dB} > 0, well conditioned
    S, P = fwd.cov, congruence(back, bwd.cov)
    inv = torch.linalg.inv(S + P)  # Sigma(T, 0) pulled back to t: invertible, the base is controllable
    cov = S @ inv @ P
    cov = 0.5 * (cov + transpose_block(cov))
    return BridgeCoefficients(P @ inv @ fwd.mean_coef, S @ inv @ back, cov, cholesky_block(cov))


def bridge_sample(
    sde: LinearSDE,
    a0: torch.Tensor,
    a1: torch.Tensor,
    t: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    noise: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Draw ``a_t ~ p(a_t | a_0, a_T)`` of the base SDE.

    Parameters
    ----------
    a0, a1
        Endpoints ``(N, K, *data_shape)`` at times 0 and ``T``.
    t
        Times ``(N,)``.
    noise
        Standard normal ``(N, K, *data_shape)``; drawn when omitted.

    Returns
    -------
    ``(N, K, *data_shape)`` in the dtype of ``a0`` (the algebra runs in float64).
    """
    br = bridge(sde, t)
    if noise is None:
        noise = torch.randn(a0.shape, generator=generator, device=a0.device, dtype=a0.dtype)
    return (br.mean(a0, a1) + apply_block(br.chol, noise.double())).to(a0.dtype)


def conditional_score(
    sde: LinearSDE, a0: torch.Tensor, a_t: torch.Tensor, t, sigma0: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``grad_{a_t} log p(a_t | a_0) = -Sigma(t, 0)^{-1} (a_t - Phi(t, 0) a_0)``, all K channels.

    Parameters
    ----------
    a0, a_t
        States ``(N, K, *data_shape)``.
    t
        Times ``(N,)`` or a scalar, ``t > 0``.
    sigma0
        As in :func:`bridge`; ``None`` conditions on the full ``a_0``.

    Returns
    -------
    ``(N, K, *data_shape)`` in the dtype of ``a_t``. At ``t = T`` this is
    the corrector-matching target ``grad_{a_1} log p(a_1 | a_0)``.
    """
    K = sde.num_channels
    if sigma0 is None:
        sigma0 = torch.zeros(K, K, dtype=torch.float64)
    tr = sde.transition(sde._as_time(t, a_t), sigma0=sigma0)
    resid = a_t.double() - apply_block(tr.mean_coef, a0.double())
    return -apply_block(torch.linalg.inv(tr.cov), resid).to(a_t.dtype)


def adjoint_propagator(sde: LinearSDE, t) -> torch.Tensor:
    """``Phi(T, t)^T``: the lean adjoint is ``a~_t = Phi(T, t)^T a~_T``.

    Solves ``d a~/dt = -beta(t) F^T a~`` backwards from ``T`` in closed form
    (ASBS eq. 26b with a linear base drift; for VP this is the scalar
    ``exp(-1/2 int_t^T beta)`` of ASBS eq. 37). Blocks ``(*t.shape, *data_shape, K, K)``, float64.
    """
    t = sde._as_time(t).to(torch.float64)
    return transpose_block(sde.transition(_end(sde, t), s=t).mean_coef)


def propagate_adjoint(sde: LinearSDE, adj1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Lean adjoint ``a~_t = Phi(T, t)^T a~_T`` for ``adj1`` ``(N, K, *data_shape)`` and times ``t`` ``(N,)``."""
    return apply_block(adjoint_propagator(sde, t), adj1.double()).to(adj1.dtype)
