"""Lightning callbacks and logger of the shared training path: EMA, checkpoints, resumable CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .checkpoint import LAST

__all__ = ["EMA", "LogRows", "PriorCheck", "ResumableCSVLogger", "SaveOnStop", "EveryNSteps", "ema_multi_avg_fn",
           "last_checkpoint"]


def ema_multi_avg_fn(decay: float, warmup: bool = True):
    """EMA update for :class:`torch.optim.swa_utils.AveragedModel`.

    With ``warmup`` the decay after ``n`` updates is ``min(decay, (1 + n) / (10 + n))``,
    so the copy of the initial weights fades quickly in short runs (with a
    fixed 0.999 it would still weigh ``0.999 ** 3000 = 5%`` after 3000 steps).
    Integer buffers take the model's value.
    """

    @torch.no_grad()
    def update(ema_params, params, num_averaged):
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return update


class EMA(WeightAveraging):
    """EMA of all weights (network and A) by Lightning's weight-averaging callback.

    Checkpoints hold the EMA weights under ``state_dict`` and the raw ones under
    ``current_model_state`` (Lightning's layout). Unlike the parent class the
    trained module keeps its raw weights after ``fit``; the average is
    :attr:`average_module`.
    """

    def __init__(self, decay: float, warmup: bool = True):
        if not 0 <= decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {decay}")
        super().__init__(use_buffers=True, multi_avg_fn=ema_multi_avg_fn(decay, warmup))

    @property
    def average_module(self):
        """The averaged copy of the LightningModule (``None`` before ``fit``)."""
        return None if self._average_model is None else self._average_model.module

    def on_train_end(self, trainer, pl_module) -> None:
        pass  # keep the raw weights in the module; the final checkpoint stores both


def last_checkpoint(out) -> Path:
    return Path(out) / LAST


def _save_last(trainer) -> None:
    ckpt = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)), None)
    path = last_checkpoint(ckpt.dirpath) if ckpt is not None else None
    if path is not None:
        trainer.save_checkpoint(path, weights_only=False)  # full state: resumable


class SaveOnStop(Callback):
    """Writes ``last.ckpt`` at the end of training (also after ``max_time``), on Ctrl-C and on SIGTERM."""

    def on_train_end(self, trainer, pl_module) -> None:
        _save_last(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            _save_last(trainer)


class LogRows(Callback):
    """Writes the module's metrics row of a step before that step's checkpoint.

    Lightning runs callbacks' ``on_train_batch_end`` before the module's and
    checkpoint callbacks last; logging from the module would let a kill between
    the checkpoint and the row lose the row for good (the resumed run starts after it).
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.log_step()


class EveryNSteps(Callback):
    """Calls ``fn(step, ema_model)`` every ``every`` optimiser steps (0: never) on rank 0."""

    def __init__(self, every: int, fn: Callable, ema: Optional[EMA] = None):
        self.every, self.fn, self.ema = int(every), fn, ema

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and trainer.is_global_zero:
            module = self.ema.average_module if self.ema is not None else pl_module
            self.fn(step, module.model)


class ResumableCSVLogger(CSVLogger):
    """``OUT/metrics.csv`` that survives a resume without repeated rows.

    Lightning's CSV writer deletes an existing ``metrics.csv``; this logger
    reads it first and, when training starts at step ``k`` (after a resume),
    writes back the rows with ``step <= k``: rows logged after the checkpoint
    are logged again by the resumed run, once.
    """

    def __init__(self, save_dir):
        super().__init__(save_dir, name="", version="", flush_logs_every_n_steps=1)
        path = Path(save_dir) / "metrics.csv"
        self._previous = []
        if path.is_file():
            with open(path, newline="") as f:
                self._previous = list(csv.DictReader(f))

    def restore(self, step: int) -> None:
        """Keep the previous rows up to ``step`` (call once training knows its start step)."""
        exp = self.experiment  # creating it removes the old file
        rows = [r for r in self._previous if step > 0 and int(float(r["step"])) <= step]
        self._previous = []
        if not rows:
            return
        keys = sorted(rows[0])
        tmp = exp.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, exp.metrics_file_path)
        exp.metrics_keys = keys


class PriorCheck(Callback):
    """Prior check of the EMA control after every AM stage and at the end of stage 1; stops at the first pass.

    Binds the EMA control as :class:`~vsmd_ts.training.asbm.Stage1Objective`'s simulator at the
    start of training. ``x0`` ``(M, *data_shape)``: fixed data the check
    simulates from (:meth:`vsmd_ts.diffusion.ASBM.check_prior`, ASBM's rule:
    top eigenvalue and the mean and variance of ``|a_1|^2`` against ``M``
    prior draws); ``tol`` its relative tolerance. Each result, with its
    step, is appended to ``objective.checks``. ``batch_size``: data points
    simulated at once (default: all).
    """

    def __init__(self, objective, x0: torch.Tensor, tol: float = 0.08, seed: int = 0, batch_size: Optional[int] = None):
        self.objective, self.x0, self.tol, self.seed = objective, x0, float(tol), int(seed)
        self.batch_size = batch_size

    def on_train_start(self, trainer, pl_module) -> None:
        ema = next((cb for cb in trainer.callbacks if isinstance(cb, EMA)), None)
        self.objective.simulate_with(ema.average_module.model if ema is not None else pl_module.model)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = trainer.global_step
        if not (self.objective.schedule.ends_am(done) or done >= trainer.max_steps):
            return
        asbm = self.objective.asbm
        device = pl_module.device
        g = torch.Generator(device=device).manual_seed(self.seed)  # the same paths and prior draws at every check
        shape = (self.x0.shape[0], asbm.sde.num_channels) + tuple(self.x0.shape[1:])
        prior = torch.randn(shape, generator=g, device=device)
        result = asbm.check_prior(self.x0.to(device), prior_samples=prior, generator=g, tol=self.tol,
                                  batch_size=self.batch_size)
        self.objective.checks.append({"step": done, **result})
        if result["passed"]:
            self.objective.passed = True
            trainer.should_stop = True
