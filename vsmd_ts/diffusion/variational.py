"""Stochastic-approximation training of the variational score A (Algorithm 1).

Training alternates between a *backward* stage (denoising score matching with
A frozen) and a *forward* stage (a gradient step on the variational loss of
eq. 13 for A, evaluated on backward trajectories simulated with the current
score, the network frozen). :class:`AlternationSchedule` says which stage a
step belongs to, as fractions of the run; :class:`VariationalScoreUpdater`
caches the simulated trajectories of a forward stage and returns its loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .losses import VariationalLoss
from .samplers import euler_maruyama, time_grid
from .sde import LinearSDE

__all__ = ["AlternationSchedule", "Trajectories", "VariationalScoreUpdater", "simulate_backward"]


@dataclass(frozen=True)
class AlternationSchedule:
    """Which training stage a step belongs to, as fractions of the run.

    The first ``warmup`` of the steps train the score with A frozen
    (``"dsm"``) and so do the last ``cooldown`` (``"backward"``). The middle
    holds as many cycles of length ``cycle`` as fit, each made of backward
    steps followed by ``forward_fraction`` of forward steps (A updates); the
    remainder is backward. The defaults reproduce the authors' time-series
    schedule (500 warm-up, 3 x (250 + 50), 100 + 1000 cool-down out of 2500)
    for any run length.
    """

    warmup: float = 0.2
    cooldown: float = 0.4
    cycle: float = 0.12
    forward_fraction: float = 1 / 6

    def __post_init__(self):
        if not (0 <= self.warmup and 0 <= self.cooldown and self.warmup + self.cooldown <= 1):
            raise ValueError(f"need warmup, cooldown >= 0 and warmup + cooldown <= 1, got {self.warmup}, {self.cooldown}")
        if not 0 < self.cycle <= 1:
            raise ValueError(f"cycle must lie in (0, 1], got {self.cycle}")
        if not 0 <= self.forward_fraction <= 1:
            raise ValueError(f"forward_fraction must lie in [0, 1], got {self.forward_fraction}")

    def forward_phases(self, total_steps: int):
        """``[(start, stop), ...]`` of the forward (A-update) phases of a run."""
        w = round(self.warmup * total_steps)
        mid = total_steps - w - round(self.cooldown * total_steps)
        length = self.cycle * total_steps
        phases = []
        for k in range(int(mid / length + 1e-9) if mid > 0 else 0):
            lo, hi = w + round(k * length), w + round((k + 1) * length)
            start = lo + round((1 - self.forward_fraction) * (hi - lo))
            if start < hi:
                phases.append((start, hi))
        return phases

    def stage(self, step: int, total_steps: int) -> str:
        """``"dsm"`` (warm-up), ``"backward"`` or ``"forward"`` for step ``step``."""
        if step < round(self.warmup * total_steps):
            return "dsm"
        if any(lo <= step < hi for lo, hi in self.forward_phases(total_steps)):
            return "forward"
        return "backward"

    def phase_start(self, step: int, total_steps: int) -> bool:
        """Whether ``step`` opens a forward phase (time to simulate new trajectories)."""
        return any(step == lo for lo, _ in self.forward_phases(total_steps))


@dataclass
class Trajectories:
    """Flattened states ``(M, K, *data_shape)``, times ``(M,)``, policies ``(M, *data_shape)``."""

    states: torch.Tensor
    times: torch.Tensor
    policy: torch.Tensor

    def __len__(self):
        return self.states.shape[0]


@torch.no_grad()
def simulate_backward(
    score_fn: Callable,
    sde: LinearSDE,
    num: int,
    steps: int = 100,
    cond=None,
    loss: VariationalLoss = VariationalLoss(),
    prior: str = "data",
    generator: Optional[torch.Generator] = None,
    device=None,
    data_var=1.0,
) -> Trajectories:
    """Simulate ``num`` backward trajectories (Euler-Maruyama, ``steps`` steps).

    Starts from the sampling prior, records each state and the frozen policy
    ``z_hat`` at every grid time. ``cond`` (if given) has ``num`` rows;
    ``prior`` and ``data_var`` choose the prior (:meth:`LinearSDE.prior_cov`).
    """
    a = sde.prior_sample(num, kind=prior, data_var=data_var, generator=generator, device=device)
    states, times, policies = [], [], []

    def record(i, t, state, score):
        tt = t.expand(state.shape[0]).to(state.device)
        states.append(state)
        times.append(tt)
        policies.append(loss.policy(sde, state, tt, score))

    euler_maruyama(score_fn, sde, a, time_grid(sde, steps, device=device), cond, generator, callback=record)
    return Trajectories(torch.cat(states), torch.cat(times), torch.cat(policies))


class VariationalScoreUpdater:
    """Caches backward trajectories for a forward stage and evaluates eq. (13) on them.

    Parameters
    ----------
    steps
        Euler-Maruyama steps of the simulated trajectories.
    frozen_policy
        See :class:`~vsmd_ts.diffusion.losses.VariationalLoss`.
    prior
        Prior of the simulation (see :meth:`LinearSDE.prior_cov`).
    minibatch
        Number of cached states per loss evaluation (``None``: all).
    data_var
        Per-coordinate data variance for the ``"data"`` prior.
    """

    def __init__(self, steps: int = 100, frozen_policy: str = "score", prior: str = "data",
                 minibatch: Optional[int] = None, data_var=1.0):
        self.steps = int(steps)
        self.loss_fn = VariationalLoss(frozen_policy)
        self.prior = prior
        self.data_var = data_var
        self.minibatch = minibatch
        self.cache: Optional[Trajectories] = None

    def refresh(self, score_fn: Callable, sde: LinearSDE, num: int, cond=None, generator=None, device=None) -> None:
        self.cache = simulate_backward(
            score_fn, sde, num, self.steps, cond, self.loss_fn, self.prior, generator, device, self.data_var
        )

    def loss(self, sde: LinearSDE, generator=None) -> torch.Tensor:
        """Per-element variational loss on (a minibatch of) the cached states."""
        if self.cache is None:
            raise RuntimeError("call refresh() before loss(): no trajectories are cached")
        c = self.cache
        if self.minibatch is not None and self.minibatch < len(c):
            idx = torch.randperm(len(c), generator=generator, device=c.states.device)[: self.minibatch]
            return self.loss_fn(sde, c.states[idx], c.times[idx], c.policy[idx])
        return self.loss_fn(sde, c.states, c.times, c.policy)
