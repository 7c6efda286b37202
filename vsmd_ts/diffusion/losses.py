"""Losses: denoising score matching (eq. 11) and the variational loss for A (eq. 13).

Both return unreduced, per-element values; the training loop reduces.
"""

from __future__ import annotations

from typing import Optional

import torch

from .sde import LinearSDE

__all__ = ["DSMLoss", "VariationalLoss", "evaluation_loss", "sample_times"]


def sample_times(sde: LinearSDE, n: int, device=None, generator=None, stratified: bool = True) -> torch.Tensor:
    """``n`` times in ``[eps, T]``, uniform; stratified (one per bin) to cut variance."""
    u = torch.rand(n, device=device, generator=generator)
    if stratified:
        u = (torch.arange(n, device=device) + u) / n
        u = u[torch.randperm(n, device=device, generator=generator)]
    return sde.eps + (sde.T - sde.eps) * u


class DSMLoss:
    """Denoising score matching on the last channel, noise-prediction form (eq. 11).

    With ``a_t = mean + L eps`` and the score ``s = -net / L_KK``, the loss
    ``|L_KK s + eps_K|^2 = |eps_K - net(a_t, t, cond)|^2`` is eq. (11) on the
    velocity component weighted by ``L_KK(t)^2``. Only the last channel's score
    enters the reverse SDE and the probability-flow ODE, so it is the only one
    learned. ``A`` is held fixed (detached) in this loss.

    Parameters
    ----------
    stratified
        Stratified uniform times over the batch.
    """

    def __init__(self, stratified: bool = True):
        self.stratified = stratified

    def __call__(
        self,
        sde: LinearSDE,
        net,
        x0: torch.Tensor,
        cond=None,
        mask: Optional[torch.Tensor] = None,
        t: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Per-element loss ``(N, *data_shape)``.

        Parameters
        ----------
        sde
            The forward SDE.
        net
            Noise predictor ``net(a, t, cond) -> (N, *data_shape)``.
        x0
            Data ``(N, *data_shape)``. Entries where ``mask`` is 0 may be NaN.
        cond
            Conditioning passed to ``net``.
        mask
            Observed-value mask, shape of ``x0``; unobserved entries are
            zero-filled before perturbation and contribute no loss.
        t
            Times ``(N,)``; drawn uniformly in ``[eps, T]`` when omitted.
        """
        if mask is not None:
            if mask.shape != x0.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} differs from data shape {tuple(x0.shape)}")
            mask = mask.to(x0.dtype)
            if not torch.isfinite(x0[mask > 0]).all():
                raise ValueError("observed entries (mask = 1) of x0 contain NaN or inf")
            x0 = torch.where(mask > 0, x0, torch.zeros_like(x0))
        elif not torch.isfinite(x0).all():
            raise ValueError("x0 contains NaN or inf; pass an observed-value mask to train on partly missing data")
        if t is None:
            t = sample_times(sde, x0.shape[0], x0.device, generator, self.stratified)
        a_t, eps = sde.perturb(x0, t, generator)
        loss = (net(a_t, t, cond) - eps[:, -1]) ** 2
        return loss if mask is None else loss * mask


@torch.no_grad()
def evaluation_loss(sde: LinearSDE, net, x0: torch.Tensor, cond=None, seed: int = 1234) -> float:
    """Mean DSM loss on ``x0`` with fixed times (a stratified grid) and seeded noise.

    Deterministic, so values before and after training are comparable.
    """
    was_training = net.training
    net.eval()
    n = x0.shape[0]
    t = sde.eps + (sde.T - sde.eps) * (torch.arange(n, device=x0.device, dtype=torch.float32) + 0.5) / n
    g = torch.Generator(device=x0.device).manual_seed(seed)
    loss = DSMLoss(stratified=False)(sde, net, x0, cond, t=t, generator=g).mean()
    net.train(was_training)
    return float(loss)


class VariationalLoss:
    """Stochastic-approximation loss for the variational score A (eq. 13, Algorithm 1).

    On states ``a_j`` of backward trajectories simulated with the current
    score (no gradient), with the frozen backward policy ``z_hat_j``::

        L(A) = sum_j dt [ |z_A|^2 / 2 + z_A . z_hat + g^2 tr(A_last) ],   z_A = g (A a)_last,

    where ``g^2 tr(A_last)`` is the exact divergence of the linear forward
    policy (no Hutchinson estimate). Returns per-element values
    ``(N, *data_shape)``; their mean times ``T`` estimates the time integral.

    Parameters
    ----------
    frozen_policy
        ``"score"``: ``z_hat = g s`` (the VSMD code); ``"score_minus_forward"``:
        ``z_hat = g (s - A a)`` (SB-FBSDE / VSDM).
    """

    def __init__(self, frozen_policy: str = "score"):
        if frozen_policy not in ("score", "score_minus_forward"):
            raise ValueError(f"frozen_policy must be 'score' or 'score_minus_forward', got {frozen_policy!r}")
        self.frozen_policy = frozen_policy

    def policy(self, sde: LinearSDE, a: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Frozen backward policy ``z_hat`` for states ``a`` with score ``score``."""
        g = sde.per_sample(sde.diffusion(t), score)
        if self.frozen_policy == "score":
            return g * score
        return g * (score - sde.forward_control(a).detach())

    def __call__(self, sde: LinearSDE, a: torch.Tensor, t: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """Per-element loss ``(N, *data_shape)`` for states ``a`` ``(N, K, *data_shape)`` at times ``t`` ``(N,)``."""
        g2 = sde.per_sample(sde.beta(t) * sde.noise_var, z_hat)
        z_A = g2.sqrt() * sde.forward_control(a)
        divergence = g2 * sde.control_trace().to(a.dtype)
        return 0.5 * z_A**2 + z_A * z_hat + divergence
