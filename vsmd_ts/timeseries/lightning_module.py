"""Lightning wrapper that trains :class:`VSMDModel` with the alternating schedule of Algorithm 1."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

import lightning.pytorch as pl
import torch
from gluonts.core.component import validated
from gluonts.itertools import select
from torch.nn.utils import get_total_norm

from vsmd_ts.diffusion import ATraining, VariationalScoreUpdater, VSMDObjective, get_sampler, make_optimizer

from .module import VSMDModel

__all__ = ["TrainingDivergedError", "VSMDLightningModule", "describe_weights", "divergence_advice", "non_finite_weights"]

logger = logging.getLogger(__name__)

# defaults the estimator shares: AdamW's learning rate of the network and its weight decay (chosen on exchange
# validation windows, benchmarks/archive/RESULTS-2026-12-05.md, section 0.9); A's learning rate and Algorithm 1's
# alternation schedule are the core's ATraining defaults
LR, WEIGHT_DECAY = 1e-3, 1e-2


class TrainingDivergedError(FloatingPointError):
    """Training produced a non-finite loss or weight; the message names the step, the members and the parameters
    and suggests the causes (a ``FloatingPointError``, as the predictor's for non-finite forecasts)."""


def non_finite_weights(named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> List[Tuple[str, int, int]]:
    """``(name, non-finite count, size)`` of each floating tensor with a NaN or infinite entry."""
    out = []
    for name, tensor in named_tensors:
        if torch.is_floating_point(tensor):
            bad = int((~torch.isfinite(tensor.detach())).sum())
            if bad:
                out.append((name, bad, tensor.numel()))
    return out


def describe_weights(bad: List[Tuple[str, int, int]], shown: int = 4) -> str:
    """``"member 0 'rnn.weight_ih_l0' (48 of 48), ..."`` for :func:`non_finite_weights`'s list (names of the
    :class:`VSMDLightningModule`: ``members.<k>.<parameter>``)."""

    def label(name: str) -> str:
        head, _, rest = name.partition(".")
        k, _, rest = rest.partition(".")
        return f"member {k} {rest!r}" if head == "members" and k.isdigit() else repr(name)

    total = sum(n for _, n, _ in bad)
    text = ", ".join(f"{label(name)} ({n} of {size})" for name, n, size in bad[:shown])
    more = f" and {len(bad) - shown} more tensor(s)" if len(bad) > shown else ""
    return f"{total} non-finite weight(s): {text}{more}"


def divergence_advice(lr: float, precision: Any = None) -> str:
    """The likely causes of non-finite losses or weights, and what to change."""
    switch = ("; train in float32 with trainer_kwargs={'precision': '32-true'}" if precision is not None
              and "32" not in str(precision) and "64" not in str(precision) else "")
    return (f"likely causes: data of extreme magnitude or an outlier far from the values around it (rescale the data, "
            f"or replace the outlier by NaN), a learning rate too large (lr={lr:g}: lower it), or the precision "
            f"({precision or 'of the run'}{switch})")


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
    weight_decay
        AdamW weight decay of the network parameters.
    A_training
        Fields of :class:`~vsmd_ts.diffusion.ATraining` (``None``: its
        defaults): the alternation schedule, as fractions of the run, A's
        learning rate (its own parameter group of the one optimiser) and the
        backward trajectories simulated at the start of each A phase (from the
        sampling prior, by Euler-Maruyama); the optimiser moves A by gradient
        steps on the variational loss of the ``"score"`` policy.
    num_batches_per_epoch
        Batches per epoch; with the trainer's ``max_epochs`` it gives the run
        length that the schedule's fractions refer to (GluonTS loaders have no
        length Lightning could read).
    ensemble_size
        Number of independently initialised models (``K``) trained side by side
        on the same batches, each with its own A; forecasts mix their samples
        (path ``j`` comes from member ``j mod K``), so the predictive
        distribution is the members' equal-weight mixture. Costs ``K`` times
        the training and nothing more at sampling.
    naive_share
        Share of each window's sample paths drawn from the naive forecast of
        the modelled quantity (:meth:`VSMDModel.naive`: the Gaussian random
        walk of the scaled, whitened increments, or the Gaussian seasonal
        naive for seasonal differences and levels) instead of the diffusion, at random path
        positions: the predictive distribution is the linear pool
        ``(1 - share) x model + share x naive``. A hedge towards the naive
        forecast where the model is too sure of itself; it costs less
        sampling, not more.
    """

    @validated()
    def __init__(
        self,
        model_kwargs: dict,
        lr: float = LR,
        weight_decay: float = WEIGHT_DECAY,
        A_training: Optional[Dict[str, Any]] = None,
        num_batches_per_epoch: int = 50,
        ensemble_size: int = 1,
        naive_share: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= naive_share <= 1.0:
            raise ValueError(f"naive_share must be in [0, 1], got {naive_share}")
        if int(ensemble_size) < 1:
            raise ValueError(f"ensemble_size must be a positive integer, got {ensemble_size}")
        self.A_training = ATraining.of(A_training)
        self.members = torch.nn.ModuleList(VSMDModel(**model_kwargs) for _ in range(int(ensemble_size)))
        self.lr = lr
        self.weight_decay = weight_decay
        self.num_batches_per_epoch = num_batches_per_epoch
        self.naive_share = float(naive_share)
        self.inputs = self.model.describe_inputs()
        self.objectives = [
            VSMDObjective(
                m.sde,
                m.denoiser,
                self.A_training.schedule,
                VariationalScoreUpdater(self.A_training.trajectory_steps, prior=m.prior),
                num_trajectories=self.A_training.num_trajectories,
            )
            for m in self.members
        ]

    @property
    def model(self) -> VSMDModel:
        """The first (with ``ensemble_size=1`` the only) member."""
        return self.members[0]

    @property
    def objective(self) -> VSMDObjective:
        return self.objectives[0]

    def set_sampler(self, sampler: str, steps: int, time_grid_rho: Optional[float] = None) -> None:
        """Sample with ``sampler``, ``steps`` steps per forecast step (and grid spacing ``time_grid_rho``
        when given) from now on, in every member."""
        get_sampler(sampler)  # fail on an unknown name before changing anything
        for m in self.members:
            m.sampler_name, m.sampler_steps = sampler, int(steps)
            if time_grid_rho is not None:
                m.time_grid_rho = float(time_grid_rho)

    def forward(self, *args, num_parallel_samples: Optional[int] = None, **kwargs) -> torch.Tensor:
        """Forecast samples ``(B, S, prediction_length, D)``; path ``j`` from member ``j mod K`` (the
        naive forecast's share of paths, if any, taken out first and placed at random positions)."""
        S = num_parallel_samples or self.model.num_parallel_samples
        walks = round(self.naive_share * S)
        if walks == 0:
            return self._members_mixture(*args, num_parallel_samples=S, **kwargs)
        parts = [self.model.naive(*args, num_parallel_samples=walks, **kwargs)]
        if walks < S:
            parts.insert(0, self._members_mixture(*args, num_parallel_samples=S - walks, **kwargs))
        # random positions: any subset of the paths is a draw from the pool
        return torch.cat(parts, dim=1)[:, torch.randperm(S, device=parts[0].device)]

    def _members_mixture(self, *args, num_parallel_samples: int, **kwargs) -> torch.Tensor:
        S, K = num_parallel_samples, len(self.members)
        if K == 1:
            return self.model(*args, num_parallel_samples=S, **kwargs)
        parts = [m(*args, num_parallel_samples=len(range(k, S, K)), **kwargs) for k, m in enumerate(self.members) if k < S]
        out = parts[0].new_empty(parts[0].shape[0], S, *parts[0].shape[2:])
        for k, part in enumerate(parts):
            out[:, k::K] = part
        return out

    def _member_loss(self, member: VSMDModel, objective: VSMDObjective, batch):
        x0, cond, mask = member.training_inputs(
            **select(self.inputs, batch),
            future_target=batch["future_target"],
            future_observed_values=batch["future_observed_values"],
        )
        return objective(self.global_step, self._total_steps(), x0, cond, mask)

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
        # members share the schedule, hence the stage; summed, each member gets its own training's gradient
        losses, stages = zip(*(self._member_loss(m, o, batch) for m, o in zip(self.members, self.objectives)))
        loss, stage = sum(losses), stages[0]
        # checked with the weights after the optimiser step (on_train_batch_end): one synchronisation per step
        self._step_health = (self.global_step, torch.stack([x.detach().float().reshape(()) for x in losses]))
        batch_size, per_member = batch["past_target"].shape[0], loss.detach() / len(self.members)
        if stage == "forward":
            self.log("A_loss", per_member, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        else:
            self.log("train_loss", per_member, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True)
        if self.model.sde.learns_A:
            A_mean = torch.stack([m.sde.control_trace().mean() for m in self.members]).mean()
            self.log("A_mean", A_mean, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Stop training with :class:`TrainingDivergedError` at the first non-finite loss or weight.

        One fused check per step: the members' losses and the Euclidean norm
        of all parameters (``torch.nn.utils.get_total_norm``, one multi-tensor
        kernel per device and dtype, about 1 ms for the 5.4 M parameters of an
        electricity-shaped ensemble of 5 on one CPU thread; non-finite when a
        weight is, or when the weights are beyond about 1e16 in magnitude),
        reduced over DDP processes so that they all stop together, read with
        one synchronisation. What is wrong is looked up only once it fails.
        """
        health = getattr(self, "_step_health", None)
        if health is None:
            return
        step, losses = health
        self._step_health = None
        params = [p.detach() for p in self.parameters()]
        norm = get_total_norm(params).to(losses.device) if params else losses.new_zeros(())
        bad = (~torch.isfinite(losses)).any() | ~torch.isfinite(norm)
        bad = self.trainer.strategy.reduce(bad.float(), reduce_op="sum")
        if bool(bad > 0):
            raise TrainingDivergedError(self._divergence_report(step, losses, batch_idx))

    def _divergence_report(self, step: int, losses: torch.Tensor, batch_idx: int) -> str:
        values = losses.tolist()
        what = []
        if not all(map(math.isfinite, values)):
            values = ", ".join(f"member {k}: {x}" for k, x in enumerate(values) if not math.isfinite(x))
            what.append(f"the training loss is not finite ({values})")
        bad = non_finite_weights(self.named_parameters())
        if bad:
            what.append(f"the optimiser step left {describe_weights(bad)}")
        elif not what:
            largest = max((float(p.detach().abs().max()) for p in self.parameters() if p.numel()), default=0.0)
            what.append(f"the weights reached magnitude {largest:.3g}, so large that their norm overflows float32"
                        if largest > 1e15 else "another DDP process met a non-finite loss or weight")
        precision = getattr(self.trainer, "precision", None)
        return (f"training diverged at step {step} (epoch {self.current_epoch}, batch {batch_idx}; counted from 0): "
                f"{'; '.join(what)}. Training is stopped rather than continued with weights that give only NaN "
                f"forecasts; {divergence_advice(self.lr, precision)}")

    def validation_step(self, batch, batch_idx: int):
        # the same diffusion times and noise at every epoch, so val_loss compares checkpoints, not draws
        with torch.random.fork_rng(devices=[] if batch["past_target"].device.type == "cpu" else None):
            torch.manual_seed(batch_idx)
            val_loss = sum(
                m.loss(
                    **select(self.inputs, batch),
                    future_target=batch["future_target"],
                    future_observed_values=batch["future_observed_values"],
                ).mean()
                for m in self.members
            ) / len(self.members)
        self.log("val_loss", val_loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["past_target"].shape[0], sync_dist=True)
        return val_loss

    def on_train_end(self) -> None:
        # the end-of-training A diagnostic of the core, kept in self.A_status and logged at INFO: the forecasts do not
        # need A at its fixed point (the score network is trained for whatever A is), so there is nothing to act on
        statuses = [o.A_status(warn=False) for o in self.objectives]
        # the least settled member speaks for the ensemble
        self.A_status = next((st for st in statuses if st is not None and not st["converged"]), statuses[0])
        if self.A_status is not None and not self.A_status["converged"]:
            logger.info(
                "A is still moving at the end of training (last change %.3g, distance to the minimiser of the last "
                "forward phase %.3g): more A phases, or larger A steps (A_training's lr), would let it settle",
                self.A_status["last_change"], self.A_status["gap"],
            )

    def configure_optimizers(self):
        return make_optimizer(self.members, lr=self.lr, A_lr=self.A_training.lr, weight_decay=self.weight_decay)
