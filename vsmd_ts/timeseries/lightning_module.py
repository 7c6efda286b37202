"""Lightning wrapper that trains :class:`VSMDModel` with the alternating schedule of Algorithm 1."""

from __future__ import annotations

import logging
from typing import Optional

import lightning.pytorch as pl
import torch
from gluonts.core.component import validated
from gluonts.itertools import select

from vsmd_ts.diffusion import AlternationSchedule, VariationalScoreUpdater, VSMDObjective, make_optimizer

from .module import VSMDModel

__all__ = ["VSMDLightningModule"]

logger = logging.getLogger(__name__)


class VSMDLightningModule(pl.LightningModule):
    """Trains a :class:`VSMDModel`: score network and RNN by denoising score
    matching, the variational score A by stochastic approximation.

    Parameters
    ----------
    model_kwargs
        Keyword arguments of :class:`VSMDModel` (JSON primitives, so the
        predictor serialises).
    lr
        Learning rate of the RNN and denoiser.
    A_lr
        Learning rate of the variational score A (its own parameter group of
        the one optimiser).
    weight_decay
        AdamW weight decay of the network parameters.
    warmup, cooldown, cycle, forward_fraction
        :class:`~vsmd_ts.diffusion.AlternationSchedule`, as fractions of the run.
    trajectory_steps
        Steps of the backward trajectories used for A.
    num_trajectories
        Trajectories simulated at the start of each A phase.
    frozen_policy
        ``"score"`` (VSMD code) or ``"score_minus_forward"`` (SB-FBSDE/VSDM).
    A_update, trajectory_sampler
        ``"gradient"`` (the optimiser moves A) or ``"newton"`` (A set to the
        minimiser at each refresh, see :class:`~vsmd_ts.diffusion.VSMDObjective`);
        sampler of the backward trajectories (``"euler_maruyama"`` or ``"splitting"``).
    A_prior
        Prior of the backward trajectories of the A update (``None``: the
        sampling prior). ``"fixed"`` is the one under which A can react to the data.
    num_batches_per_epoch
        Batches per epoch; with the trainer's ``max_epochs`` it gives the run
        length that the schedule's fractions refer to (GluonTS loaders have no
        length Lightning could read).
    """

    @validated()
    def __init__(
        self,
        model_kwargs: dict,
        lr: float = 1e-3,
        A_lr: float = 1e-3,
        weight_decay: float = 1e-8,
        warmup: float = 0.2,
        cooldown: float = 0.4,
        cycle: float = 0.12,
        forward_fraction: float = 1 / 6,
        trajectory_steps: int = 50,
        num_trajectories: int = 256,
        frozen_policy: str = "score",
        A_update: str = "gradient",
        A_prior: Optional[str] = None,
        trajectory_sampler: str = "euler_maruyama",
        num_batches_per_epoch: int = 50,
    ) -> None:
        super().__init__()
        self.model = VSMDModel(**model_kwargs)
        self.lr = lr
        self.A_lr = A_lr
        self.weight_decay = weight_decay
        self.num_batches_per_epoch = num_batches_per_epoch
        self.inputs = self.model.describe_inputs()
        self.objective = VSMDObjective(
            self.model.sde,
            self.model.denoiser,
            AlternationSchedule(warmup, cooldown, cycle, forward_fraction),
            VariationalScoreUpdater(trajectory_steps, frozen_policy, prior=A_prior or self.model.prior,
                                    sampler=trajectory_sampler),
            num_trajectories=num_trajectories,
            A_update=A_update,
        )

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def _training_inputs(self, batch):
        return self.model.training_inputs(
            **select(self.inputs, batch),
            future_target=batch["future_target"],
            future_observed_values=batch["future_observed_values"],
        )

    def _total_steps(self) -> int:
        """Optimiser steps of the whole run, as Lightning counts ``global_step``.

        ``trainer.estimated_stepping_batches`` honours ``max_steps``,
        ``limit_train_batches`` and ``accumulate_grad_batches`` (the
        estimator's loader has a length); loaders without one fall back to
        ``max_epochs x num_batches_per_epoch``.
        """
        if self.trainer.max_epochs is None or (self.trainer.max_epochs < 0 and self.trainer.max_steps < 0):
            raise ValueError("VSMD training needs max_epochs or max_steps: the A schedule is a fraction of the run")
        steps = self.trainer.estimated_stepping_batches
        if steps < 0 or steps == float("inf"):  # no loader length: Lightning cannot count
            steps = int(self.trainer.max_epochs) * self.num_batches_per_epoch
        return int(steps)

    def training_step(self, batch, batch_idx: int):
        x0, cond, mask = self._training_inputs(batch)
        loss, stage = self.objective(self.global_step, self._total_steps(), x0, cond, mask)
        batch_size = batch["past_target"].shape[0]
        if stage == "forward":
            self.log("A_loss", loss, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        else:
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True)
        if self.model.sde.learns_A:
            self.log("A_mean", self.model.sde.control_trace().mean(), on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int):
        # the same diffusion times and noise at every epoch, so val_loss compares checkpoints, not draws
        with torch.random.fork_rng(devices=[] if batch["past_target"].device.type == "cpu" else None):
            torch.manual_seed(batch_idx)
            val_loss = self.model.loss(
                **select(self.inputs, batch),
                future_target=batch["future_target"],
                future_observed_values=batch["future_observed_values"],
            ).mean()
        self.log("val_loss", val_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["past_target"].shape[0], sync_dist=True)
        return val_loss

    def on_train_end(self) -> None:
        # the end-of-training A diagnostic of the core: logged, not raised (the run is over)
        self.A_status = self.objective.A_status(warn=False)
        if self.A_status is not None and not self.A_status["converged"]:
            logger.warning(
                "A is still moving at the end of training (last change %.3g, distance to the minimiser of the last "
                "forward phase %.3g): more A phases, or larger A steps (A_lr) with A_update='gradient', would let it settle",
                self.A_status["last_change"], self.A_status["gap"],
            )

    def configure_optimizers(self):
        return make_optimizer(self.model, lr=self.lr, A_lr=self.A_lr, weight_decay=self.weight_decay)
