"""Gaussian-residual preconditioning of the noise predictor (not in the paper).

With the paper's noise-prediction parametrisation the network must output
``E[eps_v | a_t]``. For momentum SDEs at small ``t`` that target is a
near-cancellation of two large linear terms in ``x_t`` and ``v_t`` (their
coefficients grow like ``1 / (L_xx L_vv)``, about 2400 at ``t = 1e-3`` for
``beta = 10``), and the score ``-eps_hat / L_vv`` amplifies any relative
error of ``eps_hat`` (for instance from averaging weights in an EMA) into
pixel noise in the last sampling steps. We therefore split the prediction into

* the exact optimum for *Gaussian* data with the training set's per-pixel mean
  ``mu`` and variance ``s2`` (closed form from the SDE's transition), and
* a learned residual ``F`` of the data prediction, scaled by the posterior
  standard deviation of that Gaussian model (EDM's ``c_out``).

Per coordinate, with ``a_t = Phi a_0 + L eps``, ``a_0 = (x_0, 0)`` (the
velocity is marginalised, the core's default) and ``p = Phi[:, 0]``::

    D      = mu + g . (a_t - p mu) + c_out F,    g = s2 (s2 p p^T + Sigma)^-1 p,
    c_out  = sqrt(s2 - s2 p . g)                 (posterior std of x_0 | a_t),
    eps_v  = (L^-1 a_t)_v - k x_0,               k = (L^-1 p)_v,
    eps_hat = (L^-1 a_t)_v - k D.

``eps_hat`` is linear in ``a_t`` and ``F``; its coefficients are computed in
float64 so the large terms cancel exactly. The training loss
``|eps_v - eps_hat|^2`` equals ``(k c_out)^2 |F - F*|^2`` with an O(1)
target ``F*``; ``|k c_out|`` is about 1 at small ``t`` and falls to about 0
near ``T``, where the Gaussian part is already the answer. This is the
"mixed score" idea of CLD-SGM (Dockhorn et al. 2022) with per-pixel data
statistics, and plays the role of EDM's ``c_skip``/``c_out``/``c_in``. The
wrapped module still returns ``eps_hat`` with the signature
``net(a, t, cond)``, so the core's loss, score model and samplers are
unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vsmd_ts.diffusion import LinearSDE

__all__ = ["GaussianResidualPrecond"]

_MIN_VAR = 1e-3  # keeps a residual for pixels that never vary in the training set


class GaussianResidualPrecond(nn.Module):
    """``eps_hat = eps_gauss(a_t, t) + w(t) F(c_in a_t, t)`` around a U-Net ``F``.

    Parameters
    ----------
    sde
        The forward SDE (kept as a plain reference, not a submodule: its A
        belongs to the score model, and must not become a parameter of the
        network for DDP or the optimiser groups). Momentum SDEs need
        ``initial_velocity="marginal"``.
    net
        Network ``F(a_scaled, t, cond)`` with input ``(N, K, C, H, W)`` and
        output ``(N, C, H, W)``.
    data_shape
        ``(C, H, W)``.

    Notes
    -----
    Buffers ``data_mean`` and ``data_var`` (per pixel, model units) are set
    with :meth:`set_data_stats` before training and saved in the state dict.
    """

    def __init__(self, sde: LinearSDE, net: nn.Module, data_shape):
        super().__init__()
        if sde.num_channels == 2 and getattr(sde, "initial_velocity", "marginal") != "marginal":
            raise ValueError("Gaussian-residual preconditioning needs initial_velocity='marginal'")
        object.__setattr__(self, "sde", sde)
        self.net = net
        self.register_buffer("data_mean", torch.zeros(tuple(data_shape)))
        self.register_buffer("data_var", torch.ones(tuple(data_shape)))

    @torch.no_grad()
    def set_data_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Set the per-pixel mean and variance ``(C, H, W)`` of the training images (model units)."""
        self.data_mean.copy_(mean)
        self.data_var.copy_(var.clamp_min(_MIN_VAR))

    @torch.no_grad()
    def coefficients(self, t: torch.Tensor) -> dict:
        """Per-pixel coefficients at times ``t`` ``(N,)``; float32, shapes ``(N, C, H, W)`` or ``(1, C, H, W)``."""
        same = t.dim() == 1 and t.numel() > 1 and bool((t == t[0]).all())
        tt = t[:1] if same else t.reshape(-1)
        tr = self.sde.transition(tt)
        Phi, S, L = tr.mean_coef, tr.cov, tr.chol  # (n, C, H, W, K, K) float64
        mu = self.data_mean.to(Phi)
        s2 = self.data_var.to(Phi)
        if self.sde.num_channels == 1:
            p, Sxx, L00 = Phi[..., 0, 0], S[..., 0, 0], L[..., 0, 0]
            m = s2 * p * p + Sxx
            g = s2 * p / m
            c_out = (s2 - s2 * p * g).clamp_min(0).sqrt()
            k = p / L00
            coef = {"x": 1 / L00 - k * g, "b": -k * mu * (1 - g * p), "w": -k * c_out,
                    "in_x": m.rsqrt(), "mx": p * mu}
        else:
            p0, p1 = Phi[..., 0, 0], Phi[..., 1, 0]
            Sxx, Sxv, Svv = S[..., 0, 0], S[..., 0, 1], S[..., 1, 1]
            L00, L10, L11 = L[..., 0, 0], L[..., 1, 0], L[..., 1, 1]
            m00, m01, m11 = s2 * p0 * p0 + Sxx, s2 * p0 * p1 + Sxv, s2 * p1 * p1 + Svv
            det = m00 * m11 - m01 * m01
            g0 = s2 * (m11 * p0 - m01 * p1) / det
            g1 = s2 * (m00 * p1 - m01 * p0) / det
            c_out = (s2 - s2 * (p0 * g0 + p1 * g1)).clamp_min(0).sqrt()
            k = (p1 - L10 * p0 / L00) / L11
            coef = {
                "x": -L10 / (L00 * L11) - k * g0,  # (L^-1 a)_v - k g . a, collected per channel
                "v": 1 / L11 - k * g1,
                "b": -k * mu * (1 - g0 * p0 - g1 * p1),
                "w": -k * c_out,
                "in_x": m00.rsqrt(),
                "in_v": m11.rsqrt(),
                "mx": p0 * mu,
                "mv": p1 * mu,
            }
        return {name: value.float() for name, value in coef.items()}

    def forward(self, a: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        c = {k: v.to(a.device) for k, v in self.coefficients(t).items()}
        x = a[:, 0]
        if a.shape[1] == 1:
            inp = ((x - c["mx"]) * c["in_x"]).unsqueeze(1)
            gauss = c["x"] * x + c["b"]
        else:
            v = a[:, 1]
            inp = torch.stack([(x - c["mx"]) * c["in_x"], (v - c["mv"]) * c["in_v"]], dim=1)
            gauss = c["x"] * x + c["v"] * v + c["b"]
        return gauss + c["w"] * self.net(inp, t, cond)
