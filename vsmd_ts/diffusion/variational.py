"""Stochastic-approximation training of the variational score A (Algorithm 1).

Training alternates between a *backward* stage (denoising score matching with
A frozen) and a *forward* stage (a gradient step on the variational loss of
eq. 13 for A, evaluated on backward trajectories simulated with the current
score, the network frozen). :class:`AlternationSchedule` says which stage a
step belongs to, as fractions of the run; :class:`ATraining` adds the A update's
learning rate and trajectories to it (the settings a front end exposes);
:class:`VariationalScoreUpdater` caches the simulated trajectories of a forward
stage and returns its loss.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping, Optional

import torch

from .losses import VariationalLoss
from .samplers import euler_maruyama, splitting, time_grid
from .sde import LinearSDE

__all__ = ["ATraining", "AlternationSchedule", "Trajectories", "VariationalScoreUpdater", "simulate_backward"]


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


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class ATraining(AlternationSchedule):
    """How Algorithm 1 trains the variational score A: the alternation schedule and the A update.

    An :class:`AlternationSchedule` (``warmup``, ``cooldown``, ``cycle``,
    ``forward_fraction``, fractions of the run) with the settings of its
    forward (A-update) phases. Frozen and validated at construction:
    ``ValueError`` naming the field for a value out of range.

    Parameters
    ----------
    warmup, cooldown, cycle, forward_fraction
        See :class:`AlternationSchedule` (defaults 0.2, 0.4, 0.12, 1/6: the
        authors' time-series schedule at any run length).
    lr
        Learning rate of A (a positive finite number; default 1e-3): A has
        its own parameter group of the one optimiser
        (:func:`~vsmd_ts.diffusion.make_optimizer`).
    trajectory_steps
        Euler-Maruyama steps of the backward trajectories simulated at the
        start of each forward phase (a positive integer; default 50).
    num_trajectories
        Number of those trajectories, seeded by the rows of the batch (a
        positive integer; default 256).
    """

    lr: float = 1e-3
    trajectory_steps: int = 50
    num_trajectories: int = 256

    def __post_init__(self):
        for name in ("warmup", "cooldown", "cycle", "forward_fraction", "lr"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value):
                raise ValueError(f"ATraining.{name} must be a finite number, got {value!r}")
        super().__post_init__()
        if not self.lr > 0:
            raise ValueError(f"ATraining.lr must be positive, got {self.lr!r}")
        for name in ("trajectory_steps", "num_trajectories"):
            value = getattr(self, name)
            if not _is_real(value) or not float(value).is_integer() or value < 1:
                raise ValueError(f"ATraining.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    @classmethod
    def of(cls, value: Optional[Any] = None) -> "ATraining":
        """An :class:`ATraining` from ``None`` (the defaults), an instance, or a mapping of some of its fields.

        ``ValueError`` naming the unknown keys of a mapping, or the field whose value is out of range.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"A_training must be an ATraining, a dict of its fields or None, got {value!r}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in value if k not in names)
        if unknown:
            raise ValueError(f"unknown A_training field(s) {', '.join(map(repr, unknown))}; known: {', '.join(names)}")
        return cls(**value)

    def as_dict(self) -> dict:
        """The fields as a plain dict (JSON primitives): what a serialised front end stores."""
        return asdict(self)

    @property
    def schedule(self) -> AlternationSchedule:
        """The alternation schedule alone."""
        return AlternationSchedule(self.warmup, self.cooldown, self.cycle, self.forward_fraction)


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
    sampler: str = "euler_maruyama",
) -> Trajectories:
    """Simulate ``num`` backward trajectories with ``steps`` steps of the reverse SDE.

    Starts from the sampling prior, records each state and the frozen policy
    ``z_hat`` at every grid time. ``cond`` (if given) has ``num`` rows;
    ``prior`` and ``data_var`` choose the prior (:meth:`LinearSDE.prior_cov`).
    ``sampler``: ``"euler_maruyama"`` (the authors'; one score call per step,
    but its marginals drift by ``O(beta dt)``, which biases the minimiser of
    the loss, e.g. by +0.03 for VSULD at beta 10 with 100 steps) or
    ``"splitting"`` (exact linear part, see
    :func:`~vsmd_ts.diffusion.samplers.splitting`; one more score call per
    step for the policy at the recorded state).
    """
    if sampler not in ("euler_maruyama", "splitting"):
        raise ValueError(f"sampler must be 'euler_maruyama' or 'splitting', got {sampler!r}")
    a = sde.prior_sample(num, kind=prior, data_var=data_var, generator=generator, device=device)
    states, times, policies = [], [], []

    def record(i, t, state, score):
        tt = t.expand(state.shape[0]).to(state.device)
        if score is None:  # the splitting sampler calls the score at the midpoint only
            score = score_fn(state, tt, cond)
        states.append(state)
        times.append(tt)
        policies.append(loss.policy(sde, state, tt, score))

    simulate = euler_maruyama if sampler == "euler_maruyama" else splitting
    simulate(score_fn, sde, a, time_grid(sde, steps, device=device), cond, generator, callback=record)
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
        Prior of the simulation (see :meth:`LinearSDE.prior_cov`). Only
        ``"fixed"`` lets the minimiser of the loss depend on the data through
        the prior; the A-dependent priors make the score term cancel the
        divergence (Stein's identity), see :meth:`LinearSDE.prior_cov`.
    minibatch
        Number of cached states per loss evaluation (``None``: all).
    data_var
        Per-coordinate data variance for the ``"data"`` prior.
    sampler
        Simulation of the trajectories, see :func:`simulate_backward`.
    """

    def __init__(self, steps: int = 100, frozen_policy: str = "score", prior: str = "data",
                 minibatch: Optional[int] = None, data_var=1.0, sampler: str = "euler_maruyama"):
        self.steps = int(steps)
        self.sampler = sampler
        self.loss_fn = VariationalLoss(frozen_policy)
        self.prior = prior
        self.data_var = data_var
        self.minibatch = minibatch
        self.cache: Optional[Trajectories] = None

    def refresh(self, score_fn: Callable, sde: LinearSDE, num: int, cond=None, generator=None, device=None) -> None:
        self.cache = simulate_backward(
            score_fn, sde, num, self.steps, cond, self.loss_fn, self.prior, generator, device, self.data_var,
            self.sampler,
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

    def _coord_loss(self, sde: LinearSDE) -> torch.Tensor:
        """Loss summed over all cached states, per coordinate ``data_shape``, float64."""
        c = self.cache
        return self.loss_fn(sde, c.states.double(), c.times, c.policy.double()).sum(0)

    def solve(self, sde: LinearSDE, max_iter: int = 30, tol: float = 1e-6, max_step: float = 0.5) -> int:
        """Set A to the minimiser of the loss on all cached states; return the Newton iterations.

        The loss is a sum of one term per coordinate (diagonal A), so the
        Hessian in ``theta`` (``A_v = A_max tanh(theta)``) is diagonal and
        the Hessian-vector product with ones gives it. Each iteration takes a
        Newton step per coordinate (a gradient-sign step where the curvature
        is not positive), at most ``max_step`` in ``theta``, halved until the
        coordinate's loss does not increase. This is the closed-form /
        second-order A update: it reaches the minimiser of one forward phase
        whatever the learning rate.
        """
        if self.cache is None:
            raise RuntimeError("call refresh() before solve(): no trajectories are cached")
        theta = sde.A.theta
        if not theta.requires_grad:
            raise ValueError("the SDE has no learned A (learn_A=False)")
        bound = math.atanh(1 - 1e-6)  # keeps |A| < A_max
        for it in range(1, max_iter + 1):
            with torch.enable_grad():
                L = self._coord_loss(sde)
                (g,) = torch.autograd.grad(L.sum(), theta, create_graph=True)
                (h,) = torch.autograd.grad(g.sum(), theta)
            L, g = L.detach(), g.detach()
            step = torch.where(h > 0, -g / h.clamp_min(1e-30), -torch.sign(g) * max_step).clamp(-max_step, max_step)
            start = theta.detach().clone()
            newton_close = bool((h > 0).all()) and float(step.abs().max()) < 0.05
            for _ in range(30):
                with torch.no_grad():
                    theta.copy_((start + step).clamp(-bound, bound))
                    if newton_close:  # near the minimum a Newton step needs no check (saves a pass)
                        break
                    worse = self._coord_loss(sde) > L + 1e-12 * L.abs()
                if not worse.any():
                    break
                step = torch.where(worse, 0.5 * step, step)
            if float((theta.detach() - start).abs().max()) < tol:
                return it
        return max_iter

    def minimiser(self, sde: LinearSDE, **kwargs) -> torch.Tensor:
        """``A_v`` that minimises the loss on the cached states (A of ``sde`` is left unchanged)."""
        start = sde.A.theta.detach().clone()
        try:
            self.solve(sde, **kwargs)
            return sde.A().detach().clone()
        finally:
            with torch.no_grad():
                sde.A.theta.copy_(start)
