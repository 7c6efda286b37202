"""Settings of the shared training path, importable without Lightning (front ends extend them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vsmd_ts.diffusion import TRAJECTORY_STEPS, AlternationSchedule

__all__ = ["FitConfig"]

_SCHEDULE = AlternationSchedule()  # the core's alternation defaults, read in one place


@dataclass
class FitConfig:
    """Optimisation, Algorithm 1 and run-control settings shared by the front ends.

    Parameters
    ----------
    steps
        Optimiser steps of the whole run.
    lr, A_lr, weight_decay, lr_warmup, lr_schedule, grad_clip
        See :class:`~vsmd_ts.training.module.DiffusionModule`.
    ema_decay, ema_warmup
        EMA of all weights; ``ema_warmup`` uses ``min(decay, (1+n)/(10+n))``.
    warmup, cooldown, cycle, forward_fraction
        :class:`~vsmd_ts.diffusion.AlternationSchedule` (fractions of ``steps``).
    num_trajectories, trajectory_steps, frozen_policy, prior, data_var
        Backward trajectories of each A phase (:class:`~vsmd_ts.diffusion.VariationalScoreUpdater`).
    seed
        Seeds the diffusion noise.
    log_every, ckpt_every
        Steps between metric rows and between checkpoints (0: off).
    max_minutes
        Time budget of this call; training stops and checkpoints after it.
    accelerator, devices, strategy, precision
        Lightning Trainer settings (``devices > 1``: DDP; ``precision="auto"``: see
        :func:`vsmd_ts.training.precision.resolve_precision`).
    progress
        Progress bar.
    """

    steps: int = 2000
    lr: float = 1e-3
    A_lr: float = 1e-3
    weight_decay: float = 0.0
    lr_warmup: int = 0
    lr_schedule: str = "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    warmup: float = _SCHEDULE.warmup
    cooldown: float = _SCHEDULE.cooldown
    cycle: float = _SCHEDULE.cycle
    forward_fraction: float = _SCHEDULE.forward_fraction
    num_trajectories: int = 256
    trajectory_steps: int = TRAJECTORY_STEPS
    frozen_policy: str = "score"
    prior: str = "data"
    data_var: object = 1.0
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 0
    max_minutes: Optional[float] = None
    accelerator: str = "cpu"
    devices: object = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress: bool = False
