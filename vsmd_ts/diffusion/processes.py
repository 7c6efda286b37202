"""The VSMD momentum SDE (eq. 5 of the paper), the overdamped VSDM/VP baselines and the damping transform.

Each is a :class:`~vsmd_ts.diffusion.sde.LinearSDE`: it supplies its drift
block ``F``, its stationary covariance and its transition moments, and the
base class turns them into perturbations, scores and priors.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .linalg import oscillator_moments, overdamped_moments
from .sde import LinearSDE, _check_positive

__all__ = ["MomentumSDE", "OverdampedSDE", "damping_transform", "inverse_damping_transform"]


def damping_transform(
    A_v: torch.Tensor, gamma: float, damping_ratio: float
) -> torch.Tensor:
    """``A_x`` that gives damping ratio ``R`` for velocity score ``A_v`` (eq. 14).

    Solves ``gamma^2 (1 - 2 A_v)^2 = 4 R (1 - 2 gamma A_x)``, i.e. the
    forward oscillator's friction ``gamma_bar = beta gamma (1 - 2 A_v) / 2``
    and frequency ``omega_0^2 = beta^2 (1 - 2 gamma A_x) / 4`` satisfy
    ``gamma_bar^2 = 4 R omega_0^2``. ``R = 1`` is critical damping.
    """
    return (1.0 - gamma**2 * (1.0 - 2.0 * A_v) ** 2 / (4.0 * damping_ratio)) / (
        2.0 * gamma
    )


def inverse_damping_transform(
    A_x: torch.Tensor, gamma: float, damping_ratio: float
) -> torch.Tensor:
    """``A_v = 1/2 - sqrt(R (1 - 2 gamma A_x)) / gamma``; needs ``1 - 2 gamma A_x > 0``."""
    return 0.5 - torch.sqrt(damping_ratio * (1.0 - 2.0 * gamma * A_x)) / gamma


class _BoundedScore(nn.Module):
    """Diagonal variational score ``A = A_max tanh(theta)``, one entry per coordinate.

    The bound keeps the forward SDE stable (``1 - 2 A > 0``) without clipping.
    """

    def __init__(self, data_shape, A_init: float, A_max: float, learn: bool):
        super().__init__()
        if not 0 < A_max < 0.5:
            raise ValueError(f"A_max must lie in (0, 0.5) to keep 1 - 2A > 0, got {A_max}")
        if not abs(A_init) < A_max:
            raise ValueError(f"A_init must lie in (-A_max, A_max) = ({-A_max}, {A_max}), got {A_init}")
        self.A_max = float(A_max)
        theta = torch.full(tuple(data_shape), math.atanh(A_init / A_max))
        if learn:
            self.theta = nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)

    def forward(self) -> torch.Tensor:
        return self.A_max * torch.tanh(self.theta)

    def set_(self, A: torch.Tensor) -> None:
        """Set A (e.g. in tests); values must lie strictly inside the bound."""
        A = torch.as_tensor(A, dtype=self.theta.dtype).expand_as(self.theta)
        if (A.abs() >= self.A_max).any():
            raise ValueError(f"|A| must be smaller than A_max={self.A_max}")
        with torch.no_grad():
            self.theta.copy_(torch.atanh(A / self.A_max))


class MomentumSDE(LinearSDE):
    """Velocity-augmented forward SDE of VSMD (eq. 5), per coordinate::

        dx = beta/2 v dt
        dv = beta/2 [-(1 - 2 gamma A_x) x - gamma (1 - 2 A_v) v] dt + sqrt(beta gamma) dw

    ``A_v`` is learned (bounded); ``A_x`` follows from the damping transform
    with damping ratio ``R``. ``learn_A=False`` with ``A_init=0`` gives CLD
    (``R = 1``) or plain under-damped Langevin (``R < 1``).

    Parameters
    ----------
    data_shape
        Shape of one data point.
    beta
        Constant speed ``beta > 0``.
    gamma
        Friction of the base CLD process (2 is critical for ``A = 0``).
    damping_ratio
        ``R`` in ``(0, 1]``: 1 gives VSCLD, ``< 1`` VSULD.
    learn_A
        Whether ``A_v`` is a trainable parameter.
    A_init
        Initial ``A_v`` (0 as in Algorithm 1).
    A_max
        Bound ``|A_v| < A_max < 1/2``.
    initial_velocity
        ``"marginal"`` (default): ``v_0 ~ N(0, 1)`` is integrated out of the
        transition (``Sigma_0 = diag(0, 1)``), the Rao-Blackwellised form of
        eq. (11) with the same minimiser and a lower-variance target;
        ``"sample"``: ``v_0`` is drawn and conditioned on (``Sigma_0 = 0``),
        as in the authors' code, where ``L_vv -> 0`` as ``t -> 0``.
    T, eps
        Horizon and small-time cut-off.
    """

    num_channels = 2

    def __init__(
        self,
        data_shape: Sequence[int],
        beta: float = 10.0,
        gamma: float = 2.0,
        damping_ratio: float = 1.0,
        learn_A: bool = True,
        A_init: float = 0.0,
        A_max: float = 0.4,
        initial_velocity: str = "marginal",
        T: float = 1.0,
        eps: float = 1e-3,
    ):
        super().__init__(data_shape, T, eps)
        self.beta_value = _check_positive("beta", beta)
        self.gamma = _check_positive("gamma", gamma)
        R = float(damping_ratio)
        if not (math.isfinite(R) and 0 < R <= 1):
            raise ValueError(f"damping_ratio R must lie in (0, 1] (1 = critical, < 1 = under-damped), got {damping_ratio!r}")
        self.damping_ratio = R
        if initial_velocity not in ("marginal", "sample"):
            raise ValueError(f"initial_velocity must be 'marginal' or 'sample', got {initial_velocity!r}")
        self.initial_velocity = initial_velocity
        self.initial_cov_last = 1.0 if initial_velocity == "marginal" else 0.0
        self.noise_var = self.gamma
        self.learns_A = bool(learn_A)
        self.A = _BoundedScore(self.data_shape, A_init, A_max, learn_A)

    @property
    def A_v(self) -> torch.Tensor:
        return self.A()

    @property
    def A_x(self) -> torch.Tensor:
        return damping_transform(self.A_v, self.gamma, self.damping_ratio)

    def beta(self, t):
        return torch.full_like(torch.as_tensor(t, dtype=torch.float64), self.beta_value)

    def beta_int(self, t):
        return self.beta_value * torch.as_tensor(t)

    def _omega2_k(self, detach: bool):
        A_v = self.A_v.to(torch.float64)
        if detach:
            A_v = A_v.detach()
        omega2 = self.gamma**2 * (1 - 2 * A_v) ** 2 / (4 * self.damping_ratio)  # = 1 - 2 gamma A_x
        k = self.gamma * (1 - 2 * A_v)
        return omega2, k

    def drift_matrix(self, detach: bool = True) -> torch.Tensor:
        omega2, k = self._omega2_k(detach)
        half = torch.full_like(k, 0.5)
        return torch.stack(
            [torch.stack([torch.zeros_like(k), half], -1), torch.stack([-0.5 * omega2, -0.5 * k], -1)],
            dim=-2,
        )

    def stationary_cov(self) -> torch.Tensor:
        omega2, k = self._omega2_k(True)
        vv = self.gamma / k  # = 1 / (1 - 2 A_v)
        zero = torch.zeros_like(k)
        return torch.stack([torch.stack([vv / omega2, zero], -1), torch.stack([zero, vv], -1)], dim=-2)

    def _moments(self, B, sigma0):
        s0_vv = self.initial_cov_last
        if sigma0 is not None:
            if sigma0.shape != (2, 2) or bool(sigma0[0].abs().sum() != 0) or bool(sigma0[1, 0] != 0):
                return None  # a general initial covariance: generic block algebra
            s0_vv = float(sigma0[1, 1])
        k = self._omega2_k(True)[1].to(B.device)
        return oscillator_moments(B, k, self.damping_ratio, self.gamma, s0_vv)

    def initial_state(self, x0, generator=None):
        if self.initial_velocity == "sample":
            v0 = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        else:
            v0 = torch.zeros_like(x0)
        return torch.stack([x0, v0], dim=1)

    def forward_control(self, a):
        A_x = self.A_x.to(a.dtype)
        A_v = self.A_v.to(a.dtype)
        return A_x * a[:, 0] + A_v * a[:, 1]

    def control_trace(self):
        return self.A_v

    def extra_repr(self):
        return (
            super().extra_repr()
            + f", beta={self.beta_value}, gamma={self.gamma}, damping_ratio={self.damping_ratio},"
            f" learn_A={self.learns_A}, initial_velocity={self.initial_velocity!r}"
        )


class OverdampedSDE(LinearSDE):
    """Overdamped OU forward SDE without velocity (VSDM and VP baselines)::

        dx = -beta(t)/2 (1 - 2 A) x dt + sqrt(beta(t)) dw

    With a learned diagonal ``A`` and constant ``beta`` this is VSDM's
    time-invariant variational SDE; with ``A = 0`` and the linear schedule
    ``beta(t) = beta_min + t (beta_max - beta_min)`` it is the VP SDE
    (continuous-time DDPM, as in TimeGrad).

    Parameters
    ----------
    data_shape
        Shape of one data point.
    beta
        Constant speed (``schedule="constant"``) or ``beta_max``
        (``schedule="linear"``).
    beta_min
        Start of the linear schedule.
    schedule
        ``"constant"`` or ``"linear"``.
    learn_A, A_init, A_max
        Diagonal variational score ``A`` with ``|A| < A_max < 1/2``.
    T, eps
        Horizon and small-time cut-off.
    """

    num_channels = 1
    noise_var = 1.0

    def __init__(
        self,
        data_shape: Sequence[int],
        beta: float = 10.0,
        beta_min: float = 0.1,
        schedule: str = "constant",
        learn_A: bool = True,
        A_init: float = 0.0,
        A_max: float = 0.4,
        T: float = 1.0,
        eps: float = 1e-3,
    ):
        super().__init__(data_shape, T, eps)
        if schedule not in ("constant", "linear"):
            raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
        self.schedule = schedule
        self.beta_value = _check_positive("beta", beta)
        self.beta_min = _check_positive("beta_min", beta_min)
        if schedule == "linear" and self.beta_min > self.beta_value:
            raise ValueError(f"beta_min ({beta_min}) must not exceed beta ({beta})")
        self.learns_A = bool(learn_A)
        self.A = _BoundedScore(self.data_shape, A_init, A_max, learn_A)

    def beta(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.schedule == "constant":
            return torch.full_like(t, self.beta_value)
        return self.beta_min + t * (self.beta_value - self.beta_min)

    def beta_int(self, t):
        t = torch.as_tensor(t)
        if self.schedule == "constant":
            return self.beta_value * t
        return self.beta_min * t + 0.5 * t * t * (self.beta_value - self.beta_min)

    def drift_matrix(self, detach: bool = True):
        A = self.A().to(torch.float64)
        if detach:
            A = A.detach()
        return (-0.5 * (1 - 2 * A))[..., None, None]

    def _moments(self, B, sigma0):
        if sigma0 is not None and sigma0.numel() != 1:
            return None
        s0 = 0.0 if sigma0 is None else float(sigma0.reshape(()))
        f = self.drift_matrix()[..., 0, 0].to(B.device)
        phi, cov, chol = overdamped_moments(B, f, s0)
        return (phi,), (cov,), (chol,)

    def stationary_cov(self):
        A = self.A().detach().to(torch.float64)
        return (1 / (1 - 2 * A))[..., None, None]

    def forward_control(self, a):
        return self.A().to(a.dtype) * a[:, 0]

    def control_trace(self):
        return self.A()

    def extra_repr(self):
        return super().extra_repr() + f", beta={self.beta_value}, schedule={self.schedule!r}, learn_A={self.learns_A}"
