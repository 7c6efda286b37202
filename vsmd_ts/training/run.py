"""One Lightning training path for the toy and image front ends.

A front end supplies a :class:`~vsmd_ts.diffusion.ScoreModel` (network and
SDE) and a batch function ``batch_fn(step, rank, world) -> x0``; :func:`fit`
does the rest: Algorithm 1 through :class:`~vsmd_ts.diffusion.VSMDObjective`,
AdamW with A on its own learning rate, gradient clipping, an EMA callback,
``OUT/last.ckpt`` every ``ckpt_every`` steps, at the end, after the time
budget and on Ctrl-C (``resume=True`` continues from it), and
``OUT/metrics.csv``.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from vsmd_ts.diffusion import AlternationSchedule, ScoreModel, VariationalScoreUpdater, VSMDObjective

from .callbacks import EMA, EveryNSteps, LogRows, ResumableCSVLogger, SaveOnStop, last_checkpoint
from .checkpoint import check_resume_checkpoint
from .config import FitConfig
from .module import DiffusionModule, StepBatches
from .precision import resolve_precision

__all__ = ["FitConfig", "FitResult", "fit"]

@dataclass
class FitResult:
    """What :func:`fit` returns: the trained module, the EMA model and run facts."""

    module: DiffusionModule
    ema_model: ScoreModel
    trainer: pl.Trainer
    start_step: int
    step: int
    train_seconds: float
    history: list = field(default_factory=list)
    checkpoint: Optional[str] = None

    @property
    def model(self) -> ScoreModel:
        return self.module.model


def _objective(model: ScoreModel, cfg: FitConfig) -> VSMDObjective:
    schedule = AlternationSchedule(cfg.warmup, cfg.cooldown, cfg.cycle, cfg.forward_fraction)
    updater = VariationalScoreUpdater(cfg.trajectory_steps, cfg.frozen_policy, prior=cfg.prior, data_var=cfg.data_var)
    return VSMDObjective(model.sde, model.net, schedule, updater, num_trajectories=cfg.num_trajectories)


def _quiet_lightning() -> None:
    # loader-worker tips do not apply to an in-memory batch function; LeafSpec: Lightning vs torch 2.13 pytree
    for msg in (".*does not have many workers.*", ".*exists and is not empty.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message=msg)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _trainer(cfg: FitConfig, out: Optional[Path], callbacks: list) -> pl.Trainer:
    strategy = cfg.strategy
    if strategy == "auto" and cfg.devices not in (1, "1", [0]):
        strategy = "ddp_find_unused_parameters_true"  # A is unused on score steps, the network on A steps
    if out is not None:
        callbacks = callbacks + [
            ModelCheckpoint(dirpath=out, save_top_k=0, save_last=True, every_n_train_steps=cfg.ckpt_every or None,
                            enable_version_counter=False),
            SaveOnStop(),
        ]
    return pl.Trainer(
        max_steps=cfg.steps, max_epochs=-1, max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        accelerator=cfg.accelerator, devices=cfg.devices, strategy=strategy,
        precision=resolve_precision(cfg.precision, cfg.accelerator),
        callbacks=callbacks, logger=ResumableCSVLogger(out) if out is not None else False,
        enable_checkpointing=out is not None, enable_progress_bar=cfg.progress, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=max(1, cfg.log_every), default_root_dir=out,
    )


def fit(
    model: ScoreModel,
    batch_fn: Callable[[int, int, int], torch.Tensor],
    cfg: FitConfig,
    out: Optional[Union[str, Path]] = None,
    resume: Union[bool, str, Path] = False,
    meta: Optional[dict] = None,
    eval_x: Optional[torch.Tensor] = None,
    every: Sequence = (),
    objective: Optional[Callable] = None,
    callbacks: Sequence = (),
) -> FitResult:
    """Train ``model`` on batches from ``batch_fn`` (see the module docstring).

    Parameters
    ----------
    model
        ``ScoreModel(sde, net)`` with its initial weights.
    batch_fn
        ``batch_fn(step, rank, world) -> x0`` of shape ``(B, *data_shape)``;
        must depend only on its arguments so a resumed run continues the stream.
    cfg
        :class:`FitConfig`.
    out
        Folder for ``last.ckpt`` and ``metrics.csv`` (``None``: write nothing).
    resume
        ``True``: continue from ``OUT/last.ckpt`` if it exists; a path: from that checkpoint.
    meta
        Plain values stored in the checkpoints under ``"vsmd"`` (front-end config).
    eval_x
        Fixed batch for :meth:`DiffusionModule.eval_loss`.
    every
        ``(n, fn)`` pairs: ``fn(step, ema_model)`` every ``n`` steps on rank 0.
    objective
        ``objective(step, total_steps, x0) -> (loss, stage)`` in place of
        Algorithm 1 (e.g. ASBM's stages, :mod:`vsmd_ts.training.asbm`); one with
        ``state_dict``/``load_state_dict`` keeps its state in the checkpoints.
    callbacks
        Further Lightning callbacks (after the EMA, so they see this step's average).
    """
    _quiet_lightning()
    out = Path(out) if out is not None else None
    module = DiffusionModule(
        model, objective if objective is not None else _objective(model, cfg), cfg.steps, cfg.lr, cfg.A_lr, cfg.weight_decay, cfg.lr_warmup, cfg.lr_schedule,
        cfg.grad_clip, cfg.log_every, cfg.seed, eval_x, meta,
    )
    ema = EMA(cfg.ema_decay, cfg.ema_warmup)
    trainer = _trainer(cfg, out, [ema, LogRows()] + [EveryNSteps(n, fn, ema) for n, fn in every] + list(callbacks))
    ckpt_path = None
    if resume is True and out is not None and last_checkpoint(out).is_file():
        ckpt_path = str(last_checkpoint(out))
    elif resume not in (True, False, None, ""):
        ckpt_path = str(resume)
    start = _start_step(ckpt_path, module)
    loader = DataLoader(StepBatches(batch_fn, start), batch_size=None)
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)
    return FitResult(
        module=module, ema_model=ema.average_module.model, trainer=trainer, start_step=start,
        step=trainer.global_step, train_seconds=round(module.train_seconds or time.perf_counter() - t0, 2),
        history=module.history, checkpoint=str(last_checkpoint(out)) if out is not None else None,
    )


def _start_step(ckpt_path: Optional[str], module: DiffusionModule) -> int:
    """The step a run resumes at; :class:`CheckpointError` for a damaged or foreign checkpoint (before Lightning)."""
    if not ckpt_path:
        return 0
    ckpt = check_resume_checkpoint(ckpt_path, module, advice="train without resuming, or in another output folder")
    return int(ckpt["global_step"])
