"""LightningModule that trains a :class:`~vsmd_ts.diffusion.ScoreModel` by Algorithm 1."""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import IterableDataset

from vsmd_ts.diffusion import A_summary, ScoreModel, VSMDObjective, evaluation_loss, make_optimizer
from vsmd_ts.training.distributed import process_group

__all__ = ["DiffusionModule", "StepBatches", "lr_multiplier"]

LOSS_KEYS = ("loss_dsm", "loss_backward", "loss_forward")


def lr_multiplier(step: int, total: int, warmup: int = 0, schedule: str = "constant", floor: float = 0.1) -> float:
    """Multiplier of the network's learning rate at optimiser step ``step``.

    Linear warm-up over ``warmup`` steps, then ``"constant"`` 1 or a
    ``"cosine"`` decay from 1 to ``floor`` at ``total``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    u = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * u))


class _Multiplier:
    # a callable object (not a lambda) so LambdaLR's state_dict stays picklable
    def __init__(self, total, warmup, schedule):
        self.total, self.warmup, self.schedule = total, warmup, schedule

    def __call__(self, step):
        return lr_multiplier(step, self.total, self.warmup, self.schedule)


class StepBatches(IterableDataset):
    """Endless stream of ``(step, x0)`` with ``x0 = batch_fn(step, rank, world)``.

    Each batch is a function of the global step, so a resumed run sees the
    data it would have seen without the interruption; ``start`` is the step
    the run starts (or resumes) at.
    """

    def __init__(self, batch_fn: Callable[[int, int, int], torch.Tensor], start: int = 0):
        self.batch_fn, self.start = batch_fn, int(start)

    def __iter__(self):
        rank, world = process_group() or (0, 1)
        step = self.start
        while True:
            yield step, self.batch_fn(step, rank, world)
            step += 1


class DiffusionModule(pl.LightningModule):
    """Score network and variational score A trained by :class:`~vsmd_ts.diffusion.VSMDObjective`.

    Parameters
    ----------
    model
        ``ScoreModel(sde, net)``; the SDE holds A.
    objective
        Alternating loss of Algorithm 1 built on ``model.sde`` and ``model.net``, or
        any ``objective(step, total_steps, x0) -> (loss, stage)``; its
        ``LOSS_KEYS`` (default those of Algorithm 1) are the loss columns of
        the metrics, and its ``state_dict``, if it has one, is checkpointed.
    total_steps
        Length of the run (the alternation schedule and the learning-rate
        schedule are laid out over it).
    lr, A_lr, weight_decay
        AdamW learning rates of the network and of A, weight decay of the network.
    lr_warmup, lr_schedule
        See :func:`lr_multiplier` (A keeps a constant rate).
    grad_clip
        Gradient-norm clip of the network on score steps (0: off).
    log_every
        Steps between metric rows (0: none).
    seed
        Seeds the diffusion noise, per device and start step.
    eval_x
        Fixed batch for the deterministic evaluation loss (optional).
    meta
        Plain values stored in every checkpoint (``checkpoint["vsmd"]``).
    """

    def __init__(self, model: ScoreModel, objective: VSMDObjective, total_steps: int, lr: float, A_lr: float,
                 weight_decay: float = 0.0, lr_warmup: int = 0, lr_schedule: str = "constant", grad_clip: float = 1.0,
                 log_every: int = 50, seed: int = 0, eval_x: Optional[torch.Tensor] = None, meta: Optional[dict] = None):
        super().__init__()
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        self.model, self.objective = model, objective
        self.total_steps, self.lr, self.A_lr, self.weight_decay = int(total_steps), lr, A_lr, weight_decay
        self.lr_warmup, self.lr_schedule, self.grad_clip = int(lr_warmup), lr_schedule, float(grad_clip)
        self.log_every, self.seed, self.meta = int(log_every), int(seed), dict(meta or {})
        self.eval_x = eval_x
        self.history: list = []
        self.train_seconds = 0.0
        self._window: dict = {}
        self._stage = "dsm"
        self._t0 = None

    # ------------------------------------------------------------ lifecycle
    def on_train_start(self) -> None:
        step = self.global_step
        # noise differs per device and continues deterministically after a resume
        torch.manual_seed(self.seed * 1_000_003 + 7919 * self.global_rank + step)
        for logger in self.loggers:
            if hasattr(logger, "restore") and self.trainer.is_global_zero:
                logger.restore(step)
        self._t0 = time.perf_counter()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vsmd"] = {**self.meta, "train_seconds": self._seconds()}
        if hasattr(self.objective, "state_dict"):  # e.g. ASBM's replay buffer and prior checks
            checkpoint["objective_state"] = self.objective.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_seconds = float(checkpoint.get("vsmd", {}).get("train_seconds", 0.0))
        if hasattr(self.objective, "load_state_dict") and "objective_state" in checkpoint:
            self.objective.load_state_dict(checkpoint["objective_state"])
        for sched in checkpoint.get("lr_schedulers", []):
            # keep this run's learning-rate schedule (a resume may extend total_steps)
            sched["lr_lambdas"] = [None] * len(sched.get("lr_lambdas", []))

    def _seconds(self) -> float:
        return self.train_seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def on_train_end(self) -> None:
        self.train_seconds, self._t0 = self._seconds(), None

    # ------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int):
        step, x0 = batch
        if int(step) != self.global_step:  # the stream and the optimiser must agree after a resume
            raise RuntimeError(f"data stream at step {int(step)} but the trainer is at step {self.global_step}")
        loss, self._stage = self.objective(self.global_step, self.total_steps, x0)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss at step {self.global_step} ({self._stage}); lower the learning rate")
        w = self._window.setdefault(self._stage, [0.0, 0])
        w[0], w[1] = w[0] + value, w[1] + 1
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # the network only, on score steps (A steps leave the network without gradient)
        if self._stage != "forward" and self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.net.parameters(), self.grad_clip)

    def log_step(self) -> None:
        """Log a metrics row if this optimiser step is due one (called by :class:`~.callbacks.LogRows`)."""
        done = self.global_step
        if self.log_every and (done % self.log_every == 0 or done == self.total_steps):
            self._log_row(done)

    def _log_row(self, done: int) -> None:
        row = {k: "" for k in getattr(self.objective, "LOSS_KEYS", LOSS_KEYS)}
        row.update({f"loss_{k}": s / n for k, (s, n) in self._window.items()})
        row.update(lr=self.trainer.optimizers[0].param_groups[0]["lr"], **A_summary(self.model.sde),
                   train_seconds=round(self._seconds(), 2))
        self._window = {}
        self.history.append({"step": done, **row})
        if self.trainer.is_global_zero:
            for logger in self.loggers:
                logger.log_metrics(row, step=done)

    def configure_optimizers(self):
        opt = make_optimizer(self.model, lr=self.lr, A_lr=self.A_lr, weight_decay=self.weight_decay)
        net_lr = _Multiplier(self.total_steps, self.lr_warmup, self.lr_schedule)
        lambdas = [net_lr if g.get("name") == "score" else _Multiplier(0, 0, "constant") for g in opt.param_groups]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def eval_loss(self, model: Optional[ScoreModel] = None) -> Optional[float]:
        """Deterministic DSM loss on ``eval_x`` (``None`` without it) of ``model`` (default: this one)."""
        if self.eval_x is None:
            return None
        model = model or self.model
        x = self.eval_x.to(next(model.parameters()).device)
        return evaluation_loss(model.sde, model.net, x)
