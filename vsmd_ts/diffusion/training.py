"""Training pieces shared by the front ends: the alternating objective and the optimiser."""

from __future__ import annotations

import warnings
from typing import Iterable, Optional, Tuple

import torch
from torch import nn

from .losses import DSMLoss
from .nets import ScoreModel
from .sde import LinearSDE
from .variational import AlternationSchedule, VariationalScoreUpdater

__all__ = ["A_UPDATES", "VSMDObjective", "A_summary", "make_optimizer", "split_A_parameters"]

A_UPDATES = ("gradient", "newton")


def split_A_parameters(module: nn.Module) -> Tuple[list, list]:
    """``(other_parameters, A_parameters)`` of the trainable parameters of ``module``.

    A parameters are those each :class:`~vsmd_ts.diffusion.sde.LinearSDE`
    inside reports through :meth:`~vsmd_ts.diffusion.sde.LinearSDE.A_parameters`
    (found by identity, so renaming A's tensors cannot move them into the
    weight-decayed group).
    """
    A_ids, A = set(), []
    for sub in module.modules():
        if isinstance(sub, LinearSDE):
            for p in sub.A_parameters():
                if p.requires_grad and id(p) not in A_ids:
                    A_ids.add(id(p))
                    A.append(p)
    others = [p for p in module.parameters() if p.requires_grad and id(p) not in A_ids]
    return others, A


def A_summary(sde: LinearSDE) -> dict:
    """``{"A_v_mean", "A_v_absmax"}`` of the SDE's variational score (zeros when it learns none)."""
    A = sde.control_trace().detach() if sde.learns_A else torch.zeros(1)
    return {"A_v_mean": float(A.mean()), "A_v_absmax": float(A.abs().max())}


def make_optimizer(
    module: nn.Module,
    lr: float = 1e-3,
    A_lr: float = 1e-4,
    weight_decay: float = 0.0,
    extra: Iterable[nn.Parameter] = (),
) -> torch.optim.Optimizer:
    """One AdamW whose parameter groups give the variational score A its own learning rate."""
    others, A = split_A_parameters(module)
    groups = [{"params": others + list(extra), "lr": lr, "weight_decay": weight_decay, "name": "score"}]
    if A:
        groups.append({"params": A, "lr": A_lr, "weight_decay": 0.0, "name": "A"})
    return torch.optim.AdamW(groups, lr=lr)


class VSMDObjective:
    """Loss of one training step of Algorithm 1.

    ``"dsm"``/``"backward"`` steps return the mean denoising score-matching
    loss (A detached); ``"forward"`` steps return the mean variational loss
    for A on backward trajectories that are simulated with the current score
    at the start of each forward phase. SDEs without a learned A always use
    the DSM loss.

    Parameters
    ----------
    sde
        Forward SDE.
    net
        Noise predictor ``net(a, t, cond)``.
    schedule
        Stage of each step, as fractions of ``total_steps``.
    updater
        Trajectory cache and variational loss.
    num_trajectories
        Rows of the batch (and its condition) used to seed the trajectories.
    dsm
        The DSM loss object.
    A_update
        ``"gradient"``: a forward step returns the variational loss and the
        optimiser moves A (Adam moves ``theta`` by about ``A_lr`` per step, so
        the phase must hold enough steps to reach the minimiser; see
        :meth:`A_status`). ``"newton"``: at each refresh of the trajectories
        A is set to the minimiser of the loss on them
        (:meth:`VariationalScoreUpdater.solve`) and the returned loss carries
        an exactly zero gradient to A, so the optimiser leaves A there
        whatever its learning rate. Under data parallelism each process
        solves on its own trajectories (A would differ between processes):
        use ``"gradient"`` there.
    refresh_every
        Simulate new trajectories every this many forward steps (``None``:
        once per forward phase, as the authors). With an exact score each
        refresh is one step of the fixed-point iteration of Algorithm 1.
    """

    def __init__(
        self,
        sde: LinearSDE,
        net: nn.Module,
        schedule: Optional[AlternationSchedule] = None,
        updater: Optional[VariationalScoreUpdater] = None,
        num_trajectories: int = 256,
        dsm: Optional[DSMLoss] = None,
        A_update: str = "gradient",
        refresh_every: Optional[int] = None,
    ):
        if A_update not in A_UPDATES:
            raise ValueError(f"A_update must be one of {A_UPDATES}, got {A_update!r}")
        if refresh_every is not None and int(refresh_every) < 1:
            raise ValueError(f"refresh_every must be a positive int or None, got {refresh_every!r}")
        self.A_update = A_update
        self.refresh_every = None if refresh_every is None else int(refresh_every)
        self.A_at_refresh: Optional[torch.Tensor] = None  # A_v when the cached trajectories were simulated
        self._forward_count = 0
        self.sde = sde
        self.net = net
        self.schedule = schedule or AlternationSchedule()
        self.updater = updater or VariationalScoreUpdater()
        self.num_trajectories = int(num_trajectories)
        self.dsm = dsm or DSMLoss()

    def stage(self, step: int, total_steps: int) -> str:
        if not self.sde.learns_A:
            return "dsm"
        return self.schedule.stage(step, total_steps)

    def __call__(self, step: int, total_steps: int, x0: torch.Tensor, cond=None, mask=None, generator=None):
        """Return ``(loss, stage)`` for this step; ``x0`` is ``(N, *data_shape)``."""
        stage = self.stage(step, total_steps)
        if stage != "forward":
            loss = self.dsm(self.sde, self.net, x0, cond, mask, generator=generator)
            if mask is None:
                return loss.mean(), stage
            return loss.sum() / mask.sum().clamp_min(1), stage
        if self._needs_refresh(step, total_steps):
            self._refresh(x0, cond, generator)
            if self.A_update == "newton":
                self.updater.solve(self.sde)
        self._forward_count += 1
        if self.A_update == "newton":
            # value of the solved loss; an exactly zero gradient keeps Adam's moments (and A) at rest
            value = self.updater.loss(self.sde, generator).mean().detach()
            return value + 0.0 * self.sde.A.theta.sum(), stage
        return self.updater.loss(self.sde, generator).mean(), stage

    def _needs_refresh(self, step: int, total_steps: int) -> bool:
        if self.updater.cache is None or self.schedule.phase_start(step, total_steps):
            self._forward_count = 0
            return True
        return self.refresh_every is not None and self._forward_count % self.refresh_every == 0

    def _refresh(self, x0, cond, generator) -> None:
        n = min(self.num_trajectories, x0.shape[0])
        rows = torch.randperm(x0.shape[0], device=x0.device)[:n]
        sub_cond = None if cond is None else cond[rows].detach()
        was_training = self.net.training
        self.net.eval()
        self.A_at_refresh = self.sde.A().detach().clone()
        self.updater.refresh(ScoreModel(self.sde, self.net), self.sde, n, sub_cond, generator, x0.device)
        self.net.train(was_training)

    def A_status(self, tol: float = 0.01, warn: bool = True) -> Optional[dict]:
        """Whether A has settled; call at the end of training (``None`` if A never trained).

        Returns ``{"A_v", "last_change", "gap", "converged"}``: ``last_change``
        is the largest ``|A_v|`` change since the last refresh of the
        trajectories (the fixed-point iteration of Algorithm 1 has settled
        when it is small), ``gap`` the largest distance from ``A_v`` to the
        minimiser of the loss on the last trajectories (the A steps reached
        it when it is small); ``converged`` is both below ``tol``. With
        ``warn`` a :class:`RuntimeWarning` says so when A is still moving.
        """
        if not self.sde.learns_A or self.updater.cache is None:
            return None
        A = self.sde.A().detach()
        change = float((A - self.A_at_refresh).abs().max())
        gap = float((self.updater.minimiser(self.sde) - A).abs().max())
        status = {"A_v": A.clone(), "last_change": change, "gap": gap, "converged": max(change, gap) <= tol}
        if warn and not status["converged"]:
            warnings.warn(
                f"A is still moving at the end of training: last change {change:.3g}, distance to the minimiser of "
                f"the last forward phase {gap:.3g} (tol {tol}); use A_update='newton' or more/larger A steps",
                RuntimeWarning,
                stacklevel=2,
            )
        return status
