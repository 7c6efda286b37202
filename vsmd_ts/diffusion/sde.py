"""Forward SDEs: the linear base class shared by the VSMD momentum SDE and its baselines.

All processes are linear, time-homogeneous up to the scalar speed ``beta(t)``
and act on each data coordinate independently::

    da = beta(t) F a dt + sqrt(beta(t) q) e_K dw,

where ``a`` is the state of one coordinate (``(x, v)`` for the momentum SDEs,
``x`` alone for the overdamped ones), ``F`` a K x K block that depends on the
variational score ``A`` and ``e_K`` the last unit vector (noise enters the
velocity only). With ``B(t) = int_0^t beta`` the transition is Gaussian::

    mean = e^{F B} a_0,     cov = e^{F B} Sigma_0 e^{F^T B} + int_0^B e^{Fs} Q e^{F^T s} ds,

which :mod:`vsmd_ts.diffusion.linalg` evaluates in closed form in float64.

States have shape ``(N, K, *data_shape)``; the network predicts the noise of
the last channel (the velocity noise for momentum SDEs) and the score of that
channel is ``-eps_hat / L_KK(t)`` with ``L`` the Cholesky factor of the
transition covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from .linalg import (
    apply_block,
    cholesky_block,
    congruence,
    expm_block,
    lyapunov_integral,
    stack_block,
    transpose_block,
)

__all__ = ["LinearSDE", "Transition"]


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return value


@dataclass
class Transition:
    """Gaussian transition ``a_t | a_0``, one K x K block per coordinate (float64).

    ``mean_coef``: ``e^{F B(t)}``, ``cov``: covariance, ``chol``: its lower
    Cholesky factor; shapes ``(N, *data_shape, K, K)`` for a batch of times.
    """

    mean_coef: torch.Tensor
    cov: torch.Tensor
    chol: torch.Tensor


class LinearSDE(nn.Module):
    """Base class of the per-coordinate linear forward SDEs.

    Subclasses define ``num_channels`` (K), the drift block
    :meth:`drift_matrix`, the noise variance ``q`` per unit ``beta`` on the
    last channel, the stationary covariance and the variational score.

    Parameters
    ----------
    data_shape
        Shape of one data point, e.g. ``(d,)`` for a d-variate series,
        ``(C, H, W)`` for images.
    T
        Horizon of the forward process.
    eps
        Small-time cut-off ``delta``: training times are drawn from
        ``[eps, T]`` and samplers stop at ``eps``.
    """

    num_channels: int = 1
    learns_A: bool = False

    def __init__(self, data_shape: Sequence[int], T: float = 1.0, eps: float = 1e-3):
        super().__init__()
        data_shape = tuple(int(s) for s in data_shape)
        if not data_shape or any(s <= 0 for s in data_shape):
            raise ValueError(f"data_shape must be a non-empty tuple of positive ints, got {data_shape}")
        self.data_shape = data_shape
        self.T = _check_positive("T", T)
        self.eps = _check_positive("eps", eps)
        if self.eps >= self.T:
            raise ValueError(f"eps ({eps}) must be smaller than T ({T})")

    def A_parameters(self) -> list:
        """Trainable parameters of the variational score A (empty when A is fixed or absent)."""
        A = getattr(self, "A", None)
        return list(A.parameters()) if isinstance(A, nn.Module) else []

    # --------------------------------------------------------------- schedule
    def beta(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def beta_int(self, t: torch.Tensor) -> torch.Tensor:
        """``B(t) = int_0^t beta(s) ds``."""
        raise NotImplementedError

    # ------------------------------------------------- per-coordinate blocks
    def drift_matrix(self, detach: bool = True) -> torch.Tensor:
        """``F``, shape ``(*data_shape, K, K)`` (or broadcastable), float64."""
        raise NotImplementedError

    def stationary_cov(self) -> torch.Tensor:
        """``Sigma_inf`` solving ``F S + S F^T + Q = 0``, float64 blocks."""
        raise NotImplementedError

    noise_var: float = 1.0  # q: diffusion variance per unit beta on the last channel
    initial_cov_last: float = 0.0  # variance of the last channel at t = 0 (marginalised)

    def forward_control(self, a: torch.Tensor) -> torch.Tensor:
        """``(A a)`` on the last channel, shape ``(N, *data_shape)`` (differentiable in A)."""
        return torch.zeros_like(a[:, -1])

    def control_trace(self) -> torch.Tensor:
        """Diagonal of A on the last channel (enters the exact divergence)."""
        return torch.zeros(self.data_shape)

    # ---------------------------------------------------------------- helpers
    def noise_block(self, device=None) -> torch.Tensor:
        """``Q``: the K x K diffusion block per unit ``beta``, float64.

        The forward SDE's noise covariance per unit time is ``beta(t) Q``;
        only the last channel is noised, so ``Q = q e_K e_K^T`` with
        ``q = noise_var``. Samplers use it to integrate linear parts exactly.
        """
        K = self.num_channels
        Q = torch.zeros(K, K, dtype=torch.float64, device=device)
        Q[-1, -1] = self.noise_var
        return Q

    def _initial_cov(self, device) -> torch.Tensor:
        K = self.num_channels
        S0 = torch.zeros(K, K, dtype=torch.float64, device=device)
        S0[-1, -1] = self.initial_cov_last
        return S0

    def _time_view(self, B: torch.Tensor) -> torch.Tensor:
        """Reshape integrated times ``(N,)`` or ``()`` to broadcast over blocks."""
        return B.reshape(B.shape + (1,) * (len(self.data_shape) + 2))

    @staticmethod
    def _algebra_device(t: torch.Tensor) -> torch.device:
        # MPS has no float64; do the small block algebra on the CPU there.
        return torch.device("cpu") if t.device.type == "mps" else t.device

    def _as_time(self, t, like: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not torch.is_tensor(t):
            t = torch.tensor(float(t), device=None if like is None else like.device)
        return t

    # ---------------------------------------------------------------- physics
    @staticmethod
    def per_sample(value: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Broadcast a scalar or per-sample ``(N,)`` quantity over a state ``a``."""
        value = torch.as_tensor(value).to(device=a.device, dtype=a.dtype)
        return value.reshape(value.shape + (1,) * (a.dim() - value.dim())) if value.dim() else value

    def drift(self, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward drift ``beta(t) F a``; ``a`` is ``(N, K, *data_shape)``, ``t`` is ``()`` or ``(N,)``."""
        F = self.drift_matrix().to(a.device)
        return self.per_sample(self.beta(t), a) * apply_block(F, a)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion coefficient ``sqrt(beta(t) q)`` of the last channel."""
        return torch.sqrt(self.beta(t) * self.noise_var)

    def _moments(self, B: torch.Tensor, sigma0: Optional[torch.Tensor]):
        """Fused transition entries ``(phi, cov, chol)`` (see :meth:`transition_entries`)
        for integrated times ``B`` of shape ``(N, 1, ..., 1)``; ``None`` where a
        subclass has no fused form (the generic block algebra is used then)."""
        return None

    def _integrated_time(self, t: torch.Tensor, s, device) -> torch.Tensor:
        """``B(t) - B(s)`` in float64 on ``device`` (``B(t)`` when ``s`` is ``None``)."""
        B = self.beta_int(t.to(device, torch.float64))
        if s is not None:
            B = B - self.beta_int(self._as_time(s, t).to(device, torch.float64))
        return B

    def _start_cov(self, s, sigma0, device):
        """Initial covariance block: ``sigma0``, else zero from a given start time ``s`` (the
        state at ``s`` is known), else the SDE's convention at time 0."""
        if sigma0 is None and s is not None:
            return torch.zeros(self.num_channels, self.num_channels, dtype=torch.float64, device=device)
        return sigma0

    def transition_entries(self, t, sigma0: Optional[torch.Tensor] = None, s=None):
        """Transition as separate entries, without assembling K x K blocks.

        Returns ``(phi, cov, chol)``, each a tuple of the K*K entries (row
        major) of shape ``(N, *data_shape)`` (or ``data_shape`` for scalar
        ``t``), float64 on the algebra device, or ``None`` when the SDE has no
        fused form. This is what training uses: about fifty element-wise
        operations per call instead of several hundred. ``s``: start time, as
        in :meth:`transition`.
        """
        t = self._as_time(t)
        device = self._algebra_device(t)
        B = self._integrated_time(t, s, device)
        B = B.reshape(B.shape + (1,) * len(self.data_shape))
        out = self._moments(B, self._start_cov(s, sigma0, device))
        if out is None or device == t.device:
            return out
        return tuple(tuple(e.to(t.device) for e in part) for part in out)

    def transition(self, t, sigma0: Optional[torch.Tensor] = None, s=None) -> Transition:
        """Closed-form Gaussian transition at time(s) ``t`` (float64).

        Parameters
        ----------
        t
            Scalar or tensor of shape ``(N,)``.
        sigma0
            Covariance block of the start state; defaults to the SDE's
            convention at time 0 (zero, or the marginalised initial velocity)
            and to zero when ``s`` is given.
        s
            Start time (scalar or ``(N,)``, ``s <= t``); ``None`` is 0. With it
            this is ``a_t | a_s``: ``mean_coef = Phi(t, s) = e^{F (B(t) - B(s))}``
            and ``cov = Sigma(t, s)``, so ``Phi(t, s) Phi(s, r) = Phi(t, r)``.
        """
        t = self._as_time(t)
        fused = self.transition_entries(t, sigma0, s)
        if fused is not None:
            if self.num_channels == 1:
                return Transition(*(e[0][..., None, None] for e in fused))
            return Transition(*(stack_block(*e) for e in fused))
        device = self._algebra_device(t)
        B = self._time_view(self._integrated_time(t, s, device))
        F = self.drift_matrix().to(device)
        Q = self.noise_block(device)
        Sinf = self.stationary_cov().to(device)
        Phi = expm_block(F * B)
        cov = lyapunov_integral(F, Q, B, Sinf)
        sigma0 = self._start_cov(s, sigma0, device)
        S0 = self._initial_cov(device) if sigma0 is None else sigma0.to(device, torch.float64)
        if bool((S0 != 0).any()):
            cov = cov + congruence(Phi, S0)
        out = Transition(Phi, cov, cholesky_block(cov))
        if device != t.device:
            out = Transition(*(x.to(t.device) for x in (out.mean_coef, out.cov, out.chol)))
        return out

    def noise_scale(self, t: torch.Tensor) -> torch.Tensor:
        """``L_KK(t)``: the score of the last channel is ``-eps_hat / L_KK``.

        Returns float32 of shape ``(N, *data_shape)`` for ``t`` of shape ``(N,)``
        (broadcastable over ``data_shape``).
        """
        t = self._as_time(t)
        one = self._one_time(t)
        if one is None:
            return self._last_chol(t).to(torch.float32)
        L = self._cached_last_chol(one)
        return L if t.dim() == 0 else L.expand((t.shape[0],) + L.shape)

    @staticmethod
    def _one_time(t: torch.Tensor) -> Optional[torch.Tensor]:
        """``t`` as a 0-dim tensor when it holds one time (a scalar, or a batch of equal
        times, as samplers pass), else ``None``: memoised per-time values apply then."""
        if t.dim() == 0:
            return t
        if t.dim() == 1 and t.numel() > 1 and bool((t == t[0]).all()):
            return t[0]
        return None

    def _cached_last_chol(self, t: torch.Tensor) -> torch.Tensor:
        """``L_KK`` (float32) at one time, memoised while A is unchanged."""
        return self._cached(t, "chol", lambda s: self._last_chol(s).to(torch.float32))

    def _cached(self, t: torch.Tensor, name, compute):
        """``compute(t)`` at one time ``t``, memoised under ``name`` while A is unchanged.

        Samplers query the same few grid times for every forecast step and
        sample path; A is frozen meanwhile, so each value is computed once.
        The key holds A's in-place version counter (optimiser steps and
        ``load_state_dict`` bump it), so an updated A is never served stale.
        """
        A = getattr(self, "A", None)
        version = () if A is None else tuple((id(p), p._version) for p in A.parameters(recurse=False)) + tuple(
            (id(b), b._version) for b in A.buffers(recurse=False)
        )
        cache = self.__dict__.setdefault("_time_cache", {})
        if cache.get("version") != version or len(cache) > 4096:
            cache.clear()
            cache["version"] = version
        key = (name, float(t), str(t.device))
        if key not in cache:
            cache[key] = compute(t)
        return cache[key]

    def _last_chol(self, t: torch.Tensor) -> torch.Tensor:
        fused = self.transition_entries(t)
        return self.transition(t).chol[..., -1, -1] if fused is None else fused[2][-1]

    def _check_data(self, x0: torch.Tensor) -> None:
        if tuple(x0.shape[1:]) != self.data_shape:
            raise ValueError(
                f"expected data of shape (N, {', '.join(map(str, self.data_shape))}), got {tuple(x0.shape)}"
            )

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, generator=None):
        """Draw ``a_t ~ p(a_t | x_0)``.

        Parameters
        ----------
        x0
            Data, ``(N, *data_shape)``; must be finite.
        t
            Times, ``(N,)``.

        Returns
        -------
        (a_t, eps): the state ``(N, K, *data_shape)`` and the standard normal
        noise ``(N, K, *data_shape)`` with ``a_t = mean + L eps``.
        """
        self._check_data(x0)
        if not torch.isfinite(x0).all():
            raise ValueError("x0 contains NaN or inf; mask missing values and replace them before perturbing")
        a0 = self.initial_state(x0, generator)
        fused = self.transition_entries(t)
        eps = torch.randn(a0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if fused is None:
            tr = self.transition(t)
            mean = apply_block(tr.mean_coef, a0.double())
            return (mean + apply_block(tr.chol, eps.double())).to(x0.dtype), eps
        phi, _, chol = fused
        K = self.num_channels
        # a_t = Phi a_0 + L eps, row by row in float64 (L is lower triangular)
        rows = []
        for i in range(K):
            terms = [phi[i * K + j] * a0[:, j] for j in range(K)] + [chol[i * K + j] * eps[:, j] for j in range(i + 1)]
            row = terms[0]
            for term in terms[1:]:
                row = row.add_(term)
            rows.append(row)
        return torch.stack(rows, dim=1).to(x0.dtype), eps

    def initial_state(self, x0: torch.Tensor, generator=None) -> torch.Tensor:
        """Mean of ``a_0`` given ``x_0`` (the data; zero or a draw for the velocity)."""
        return x0.unsqueeze(1)

    def score_target(self, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Full conditional score ``-L^{-T} eps`` of ``p(a_t | a_0)``, shape of ``eps``."""
        L = self.transition(t).chol
        Linv_T = transpose_block(torch.linalg.inv(L))
        return -apply_block(Linv_T, eps.double()).to(eps.dtype)

    def prior_cov(self, kind: str = "data", data_var=1.0) -> torch.Tensor:
        """Covariance block ``(*data_shape, K, K)`` (float64) of the sampling prior at ``T``.

        kind
            ``"data"``: the marginal at ``T`` for independent data coordinates
            of variance ``data_var`` (a float, or a tensor broadcastable to
            ``data_shape``; standardised data: 1), which accounts for the part
            of the data that survives to ``T``; ``"transition"``: the paper's
            ``Sigma_{T|0}`` (drops that part); ``"stationary"``: ``Sigma_inf``;
            ``"fixed"``: ``N(0, I)`` for every channel whatever ``A`` is (the
            authors' prior for the A-update trajectories; for VSDM and CLD it
            is the stationary law at ``A = 0``, for ULD that law is
            ``diag(R, 1)``).

        Which priors let ``A`` adapt to the data: the first three depend on
        ``A`` and follow the forward law at ``T``. When the backward
        trajectories then follow the forward marginals (exact score), Stein's
        identity gives ``E[x d_v log p] = 0`` and ``E[v d_v log p] = -1``, so
        in the variational loss (:class:`~vsmd_ts.diffusion.losses.VariationalLoss`)
        the score term cancels the divergence for every ``A`` and only the
        control's kinetic energy ``1/2 int g^2 E|A a|^2`` is left: its
        minimiser does not depend on the data (0 for VSDM/VSCLD, the ``A_v``
        that offsets the damping transform's spring for VSULD). Only the
        ``"fixed"`` prior, which does not move with ``A``, breaks the
        cancellation by the data-dependent gap between the prior and the
        forward law at ``T``, and so gives a data-dependent minimiser.
        """
        device = self.control_trace().device
        blocks = torch.ones(self.data_shape + (1, 1), dtype=torch.float64, device=device)
        if kind == "fixed":
            return torch.eye(self.num_channels, dtype=torch.float64, device=device) * blocks
        if kind == "stationary":
            return self.stationary_cov().to(device) * blocks
        T = torch.tensor(self.T, device=device)
        if kind == "transition":
            return self.transition(T).cov
        if kind != "data":
            raise ValueError(f"unknown prior kind {kind!r}; use 'data', 'transition', 'stationary' or 'fixed'")
        return self.marginal_cov(T, data_var)

    def marginal_cov(self, t, data_var=1.0) -> torch.Tensor:
        """Covariance blocks ``(*t.shape, *data_shape, K, K)`` (float64) of the marginal of ``a_t``
        for independent data coordinates ``x_0 ~ N(0, data_var)`` and ``v_0 ~ N(0, 1)``.

        ``data_var`` is a float or a tensor broadcastable to ``data_shape``.
        At ``t = T`` this is the ``"data"`` prior.
        """
        return self._marginal_cov(self.transition(self._as_time(t)), data_var)

    def _marginal_cov(self, tr: Transition, data_var) -> torch.Tensor:
        var = torch.as_tensor(data_var, dtype=torch.float64, device=tr.cov.device).expand(self.data_shape)
        if not (torch.isfinite(var).all() and (var >= 0).all()):
            raise ValueError(f"data_var must be finite and non-negative, got {data_var}")
        K = self.num_channels
        # what the transition leaves out of Cov(a_0): the data's variance, and v_0's unless it is marginalised
        S0 = torch.zeros(self.data_shape + (K, K), dtype=torch.float64, device=var.device)
        S0[..., 0, 0] = var
        if K == 2:
            S0[..., 1, 1] = 1.0 - self.initial_cov_last
        return tr.cov + congruence(tr.mean_coef, S0)

    def gaussian_noise_prediction(self, a: torch.Tensor, t: torch.Tensor, data_var=1.0) -> torch.Tensor:
        """The optimal noise prediction ``E[eps_K | a_t]`` when the data are independent ``N(0, data_var)``.

        It is the exact last-channel score of :meth:`marginal_cov` times
        ``-L_KK(t)``: ``L_KK (Sigma_t^{-1} a)_K``, linear in ``a``
        ``(N, K, *data_shape)``; ``t`` is ``()`` or ``(N,)``. Returns
        ``(N, *data_shape)`` in the dtype of ``a``. For standardised data this
        is a closed-form denoiser, and a network added to it learns only what
        the data have beyond that Gaussian.
        """
        t = self._as_time(t, a)
        one = self._one_time(t)
        if one is not None and not torch.is_tensor(data_var):
            coefs = self._cached(one, ("gauss", float(data_var)), lambda s: self._gaussian_coefs(s, data_var))
        else:
            coefs = self._gaussian_coefs(t, data_var)
        return sum(c.to(a.dtype) * a[:, i] for i, c in enumerate(coefs))

    def _gaussian_coefs(self, t: torch.Tensor, data_var) -> list:
        """Per-channel coefficients ``(*t.shape, *data_shape)`` of :meth:`gaussian_noise_prediction`, float32."""
        tr = self.transition(t)
        M, L_KK = self._marginal_cov(tr, data_var), tr.chol[..., -1, -1]
        if self.num_channels == 1:
            coefs = [L_KK / M[..., 0, 0]]
        else:  # last row of the inverse of a symmetric 2 x 2 block
            det = M[..., 0, 0] * M[..., 1, 1] - M[..., 0, 1] ** 2
            coefs = [-L_KK * M[..., 0, 1] / det, L_KK * M[..., 0, 0] / det]
        return [c.to(torch.float32) for c in coefs]

    def prior_sample(
        self,
        num: int,
        kind: str = "data",
        data_var=1.0,
        generator=None,
        device=None,
        dtype=torch.float32,
    ) -> torch.Tensor:
        """Draw ``num`` prior states ``(num, K, *data_shape)`` from ``N(0, prior_cov)``."""
        L = cholesky_block(self.prior_cov(kind, data_var))
        eps = torch.randn((num, self.num_channels) + self.data_shape, generator=generator, device=device, dtype=dtype)
        return apply_block(L.to(eps.device), eps)

    def extra_repr(self) -> str:
        return f"data_shape={self.data_shape}, T={self.T}, eps={self.eps}"
