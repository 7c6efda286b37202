"""Training pieces shared by the front ends: the alternating objective and the optimiser."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
from torch import nn

from .losses import DSMLoss
from .nets import ScoreModel
from .sde import LinearSDE
from .variational import AlternationSchedule, VariationalScoreUpdater

__all__ = ["VSMDObjective", "make_optimizer", "split_A_parameters"]


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
    """

    def __init__(
        self,
        sde: LinearSDE,
        net: nn.Module,
        schedule: Optional[AlternationSchedule] = None,
        updater: Optional[VariationalScoreUpdater] = None,
        num_trajectories: int = 256,
        dsm: Optional[DSMLoss] = None,
    ):
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
        if self.updater.cache is None or self.schedule.phase_start(step, total_steps):
            n = min(self.num_trajectories, x0.shape[0])
            rows = torch.randperm(x0.shape[0], device=x0.device)[:n]
            sub_cond = None if cond is None else cond[rows].detach()
            was_training = self.net.training
            self.net.eval()
            self.updater.refresh(ScoreModel(self.sde, self.net), self.sde, n, sub_cond, generator, x0.device)
            self.net.train(was_training)
        return self.updater.loss(self.sde, generator).mean(), stage
