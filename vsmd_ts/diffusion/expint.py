"""Block algebra of the exponential multistep samplers (:func:`vsmd_ts.diffusion.samplers.exp_multistep`).

The PF-ODE of a :class:`~vsmd_ts.diffusion.sde.LinearSDE` is split into the
exact PF-ODE of standardised Gaussian reference data, a linear ODE with
time-dependent K x K blocks per coordinate, and a remainder carried by one
"reference-denoised" value ``z`` per coordinate. This module computes, once
per time grid, the exact propagators of the linear part and the weights with
which a polynomial ``z(u)`` enters each step. Everything here acts on blocks,
not on the batch, and runs in float64 on the CPU.
"""

from __future__ import annotations

import torch

from .sde import LinearSDE

__all__ = ["REFERENCE_VAR", "multistep_plan", "reference_pf"]

REFERENCE_VAR = 1.0  # data variance of the reference Gaussian: the front ends standardise data
# where |c| is below this fraction of its largest value on the grid, z is carried over instead of divided by c
C_GUARD = 1e-3
# a past score call enters a step's polynomial only while its |c| is at least KAPPA x that of the newest call:
# z = (s + e^T a) / c divides a learned score's error by c, and near T (where c crosses zero for under-damped
# SDEs) extrapolating from a call with a much smaller |c| multiplied that error by the ratio (sde_pc2 at 20 NFE
# blew up on an exchange validation run: CRPS-Sum 0.025 against 0.0085). On fine grids neighbouring |c| agree,
# so the order is kept.
KAPPA = 0.5


def reference_pf(sde: LinearSDE, t: torch.Tensor, lam: float = 0.5):
    """Blocks of the PF-ODE (``lam = 1/2``) or of the reverse SDE's drift (``lam = 1``) of
    reference data ``x_0 ~ N(z, REFERENCE_VAR)``, ``v_0 ~ N(0, 1)``.

    Their marginal at ``t`` is ``N(Phi e_1 z, C_t)``, with last-channel score
    ``s = -e^T a + c z``, ``e = (C_t^{-1})_{K,:}``, ``c = (C_t^{-1} Phi)_{K,1}``.
    Any score is written so by defining ``z = (s + e^T a) / c``: constant for
    reference data, exact in the mean for any data, slowly varying for
    standardised data (DPM-Solver++'s data prediction is the limit
    ``REFERENCE_VAR -> 0``, stiff at small t for momentum SDEs).

    ``t``: times ``(n,)`` float64, ``t = 0`` allowed (``C_0`` is regular).
    Returns ``L`` ``(n, *data_shape, K, K)``, the linear part
    ``F + lam q e_K e^T`` in integrated time, ``e`` ``(n, *data_shape, K)`` and
    ``c`` ``(n, *data_shape)``.
    """
    K = sde.num_channels
    S0 = torch.zeros(K, K, dtype=torch.float64, device=t.device)
    S0[0, 0] = REFERENCE_VAR
    S0[-1, -1] = 1.0 if K > 1 else REFERENCE_VAR  # initial velocity N(0, 1)
    tr = sde.transition(t, sigma0=S0)
    P = torch.linalg.inv(tr.cov)
    L = sde.drift_matrix().to(P).expand_as(P).clone()
    L[..., -1, :] += lam * sde.noise_var * P[..., -1, :]
    return L, P[..., -1, :], (P @ tr.mean_coef)[..., -1, 0]


def _exp_weights(sde: LinearSDE, t: torch.Tensor, npoly: int, substeps: int = 16, stochastic: bool = False):
    """Exact propagators and polynomial weights of the steps of the reference-split PF-ODE or reverse SDE.

    In ``u = log(t + eps)`` the PF-ODE reads ``da/du = J (L a - q/2 c z e_K)``
    with ``J = dB/du``; the reverse SDE (``stochastic``) has ``q`` for ``q/2``
    and the noise ``sqrt(q J |du|) e_K``. If ``z(u) = sum_j D_j (u - u_i)^j``
    on step ``i``, ``a_{i+1} = Psi_i a_i + sum_j W_ij D_j`` (+ noise of
    covariance ``Sigma_i``). ``Psi``, ``W``, ``Sigma`` depend on the blocks
    only (not on the batch); RK4 with ``substeps`` steps in ``u``, where the
    linear part is not stiff, all steps at once. ``t``: ``(n + 1,)`` float64
    grid (its end may be 0). Returns ``Psi`` ``(n, *data_shape, K, K)``, ``W``
    ``(n, *data_shape, K, npoly)`` and ``Sigma`` ``(n, *data_shape, K, K)``
    (``None`` for the PF-ODE).
    """
    lam = 1.0 if stochastic else 0.5
    u = torch.log(t + sde.eps)
    frac = torch.linspace(0, 1, 2 * substeps + 1, dtype=torch.float64, device=t.device)
    uu = u[:-1, None] + (u[1:] - u[:-1])[:, None] * frac  # (n, 2 substeps + 1)
    tt = (uu.exp() - sde.eps).clamp_min(0)
    L, _, c = reference_pf(sde, tt.reshape(-1), lam)
    n, K, blocks = len(t) - 1, L.shape[-1], L.shape[1:-2]
    L, c = L.reshape(uu.shape + L.shape[1:]), c.reshape(uu.shape + blocks)
    view = uu.shape + (1,) * len(blocks)
    du = (uu - u[:-1, None]).reshape(view)
    forcing = torch.stack([-lam * sde.noise_var * c * du**j for j in range(npoly)], -1)
    J = (sde.beta(tt) * (tt + sde.eps)).reshape(view + (1, 1))
    JL, Jf = J * L, J[..., 0] * forcing  # Jf: forcing of the last channel

    def f(k, Z):
        dZ = JL[:, k] @ Z
        dZ[..., -1, K:] += Jf[:, k]
        return dZ

    Q = torch.zeros(K, K, dtype=L.dtype, device=L.device)
    Q[-1, -1] = sde.noise_var

    def g(k, S):  # covariance of the noise gathered since the step's start; du < 0, so it grows
        JLk = JL[:, k]
        return JLk @ S + S @ JLk.transpose(-1, -2) - J[:, k] * Q

    Z = torch.cat([torch.eye(K, dtype=L.dtype).expand(L[:, 0].shape), L.new_zeros(L[:, 0].shape[:-1] + (npoly,))], -1)
    S = torch.zeros_like(Z[..., :K]) if stochastic else None
    h = ((u[1:] - u[:-1]) / substeps).reshape((n,) + (1,) * (Z.dim() - 1))

    def rk4(rhs, m, X):  # substep m; the midpoint is the odd sample 2m + 1
        k1 = rhs(2 * m, X)
        k2 = rhs(2 * m + 1, X + 0.5 * h * k1)
        k3 = rhs(2 * m + 1, X + 0.5 * h * k2)
        k4 = rhs(2 * m + 2, X + h * k3)
        return X + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    for m in range(substeps):
        Z = rk4(f, m, Z)
        if stochastic:
            S = rk4(g, m, S)
    return Z[..., :K], Z[..., K:], S


def _point_weights(W: torch.Tensor, us: torch.Tensor) -> torch.Tensor:
    """Weights ``(npts, *data_shape, K)`` with which values at ``us`` (offsets from the step's
    start) enter the step through their interpolating polynomial: ``sum_j W_j (V^{-1})_jk``."""
    Vinv = torch.linalg.inv(us[:, None] ** torch.arange(len(us), dtype=us.dtype))
    return torch.einsum("...j,jk->k...", W[..., : len(us)], Vinv)


def _history_weights(W: torch.Tensor, us: torch.Tensor, abs_c: torch.Tensor) -> torch.Tensor:
    """:func:`_point_weights` per coordinate through the newest points only, as long as their ``|c|``
    (``abs_c`` ``(npts, *data_shape)``, newest first) stays at least ``KAPPA`` x the newest one's;
    the points left out get weight 0."""
    count = (abs_c >= KAPPA * abs_c[:1]).cumprod(0).sum(0).unsqueeze(-1)  # (*data_shape, 1), >= 1
    out = torch.zeros((len(us),) + W.shape[:-1], dtype=W.dtype, device=W.device)
    for k in range(1, len(us) + 1):
        out[:k] = torch.where(count == k, _point_weights(W, us[:k]), out[:k])
    return out


_PLANS: dict = {}  # a forecast calls the sampler with the same grid and SDE at every step


def multistep_plan(sde: LinearSDE, t: torch.Tensor, order: int, corrector: bool, device, dtype,
                   stochastic: bool = False):
    """Everything :func:`~vsmd_ts.diffusion.samplers.exp_multistep` needs, per step ``i``:

    ``Psi[i]`` ``(1, K, K...)`` blocks for :func:`apply_block`; ``pred[i]``: weights
    ``(npts, 1, K, *data_shape)`` of ``z_i, z_{i-1}, ...`` in the predictor;
    ``corr[i]``: the change of the step-``i`` update once ``z_{i+1}`` is known
    (weights of ``z_{i+1}, z_i, ...``); ``e[i]`` ``(K, *data_shape)``;
    ``cinv[i]`` = ``1/c`` (0 where ``|c|`` is below ``C_GUARD`` of its largest value on
    the grid) and ``ok[i]`` whether no ``c`` was; with ``stochastic`` (the reverse SDE),
    ``noise[i]``: a square root of the step's noise covariance, blocks for
    :func:`apply_block`. ``t``: float64 CPU grid.
    Cached on the grid and the SDE's blocks; converted to ``device``/``dtype``.
    """
    F = sde.drift_matrix().detach().to("cpu", torch.float64)
    key = (t.numpy().tobytes(), sde.beta_int(t).numpy().tobytes(), F.numpy().tobytes(), tuple(F.shape),
           sde.noise_var, sde.eps, REFERENCE_VAR, C_GUARD, KAPPA, order, corrector, str(device), dtype, stochastic)
    if key in _PLANS:
        return _PLANS[key]
    u = torch.log(torch.cat([t[:-1], t.new_zeros(1)]) + sde.eps)
    Psi, W, Sigma = _exp_weights(sde, torch.cat([t[:-1], t.new_zeros(1)]), order + int(corrector), stochastic=stochastic)
    _, e, c = reference_pf(sde, t[:-1])
    n, pred, corr, abs_c = len(t) - 1, [], [], c.abs()
    for i in range(n):
        lo = max(i - order + 1, 0)
        pred.append(_history_weights(W[i], u[lo : i + 1].flip(0) - u[i], abs_c[lo : i + 1].flip(0)))
        if corrector and i < n - 1:
            full = _history_weights(W[i], u[lo : i + 2].flip(0) - u[i], abs_c[lo : i + 2].flip(0))
            corr.append(full - torch.cat([torch.zeros_like(full[:1]), pred[-1]]))
    ok = c.abs() > C_GUARD * c.abs().amax(0)
    cinv = torch.where(ok, 1 / torch.where(ok, c, torch.ones_like(c)), torch.zeros_like(c))

    def conv(x, lead=0):  # blocks (..., *data_shape, K) -> (..., K, *data_shape) on the sampler's device
        return x.movedim(-1, lead).to(device, dtype)

    plan = dict(Psi=Psi.unsqueeze(1).to(device, dtype), pred=[conv(w, 1).unsqueeze(1) for w in pred],
                corr=[conv(w, 1).unsqueeze(1) for w in corr], e=conv(e, 1), cinv=cinv.to(device, dtype),
                mask=ok.to(device), ok=ok.flatten(1).all(1).tolist())
    if stochastic:  # symmetric square root: the x-channel's share of the noise can be ~0 in short steps
        evals, evecs = torch.linalg.eigh(0.5 * (Sigma + Sigma.transpose(-1, -2)))
        root = (evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)) @ evecs.transpose(-1, -2)
        plan["noise"] = root.unsqueeze(1).to(device, dtype)
    if len(_PLANS) >= 16:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[key] = plan
    return plan
