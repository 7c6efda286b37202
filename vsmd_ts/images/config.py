"""Configuration of an image run and construction of the model it describes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from vsmd_ts.diffusion import TRAJECTORY_STEPS, AlternationSchedule, ScoreModel, make_sde

from .precond import GaussianResidualPrecond
from .unet import UNet

__all__ = ["PRESETS", "RUNTIME_FIELDS", "TrainConfig", "build_model"]

# Per-dataset defaults for every field left at None. "digits" is sized to train
# in minutes on one CPU thread; "cifar10" follows the paper's section 5.3 where
# it states values (score lr 3e-4, A lr 3e-6, EMA 0.9999, beta 10, dropout 0.1,
# forward/backward 100/500 steps, no warm-up or cool-down, 125 Heun steps) with
# a DDPM-like U-Net (38.3M parameters) instead of the authors' larger ADM.
PRESETS = {
    "digits": dict(
        image_size=8,
        base_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=2,
        attn_resolutions=(4,),
        num_heads=4,
        dropout=0.0,
        steps=3000,
        batch_size=64,
        lr=1e-3,
        A_lr=3e-6,
        lr_warmup=100,
        ema_decay=0.999,
        warmup=0.2,
        cooldown=0.2,
        cycle_steps=600,
        num_trajectories=64,
        ckpt_every=500,
        sample_steps=100,
        log_every=10,
    ),
    "cifar10": dict(
        image_size=32,
        base_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        num_heads=4,
        dropout=0.1,
        steps=200_000,
        batch_size=256,
        lr=3e-4,
        A_lr=3e-6,
        lr_warmup=5000,
        ema_decay=0.9999,
        warmup=0.0,
        cooldown=0.0,
        cycle_steps=600,
        num_trajectories=256,
        ckpt_every=5000,
        sample_steps=125,
        log_every=100,
    ),
}

# Fields that may change when a run is resumed; the others come from the checkpoint.
RUNTIME_FIELDS = frozenset(
    {
        "data_dir",
        "out",
        "steps",
        "max_minutes",
        "resume",
        "accelerator",
        "devices",
        "strategy",
        "precision",
        "num_threads",
        "ckpt_every",
        "sample_every",
        "sample_steps",
        "num_samples",
        "log_every",
        "progress",
        "fid_inception",
        "fid_num",
    }
)


@dataclass
class TrainConfig:
    """Everything that defines an image training run (``None``: dataset preset).

    Parameters
    ----------
    dataset
        ``"digits"`` (embedded, CPU-sized) or ``"cifar10"`` (local python batches).
    data_dir
        CIFAR-10 folder (the ``cifar-10-batches-py`` folder or its parent).
    out
        Output folder: ``last.ckpt``, ``metrics.csv``, ``samples.png``,
        ``data.png``, ``summary.json``.
    image_size
        Side length (digits: 8 keeps the original pixels, larger is upsampled).
    sde, beta, damping_ratio
        Forward SDE of :func:`vsmd_ts.diffusion.make_sde` (``None``: the
        registry default, beta 10, R 0.7 for ``"vsuld"``/``"uld"``): ``"vscld"``
        (critical damping, learned A), ``"vsuld"`` (under-damped, ``R`` =
        ``damping_ratio``, 0.9 in the authors' CIFAR-10 code), ``"cld"`` or
        ``"uld"`` (A = 0).
    precond
        ``"none"`` (default): the U-Net predicts the velocity noise directly
        (the paper's parametrisation); ``"gaussian"``: the U-Net learns the
        residual of the exact noise prediction for per-pixel Gaussian data
        (:class:`~vsmd_ts.images.precond.GaussianResidualPrecond`; our
        addition, no better on digits in benchmarks/results_images.md).
    base_channels, channel_mult, num_res_blocks, attn_resolutions, num_heads, dropout
        :class:`~vsmd_ts.images.unet.UNet` size.
    steps
        Total optimiser steps of the run (the alternation schedule is laid out
        over them).
    batch_size
        Global batch size (split evenly over devices).
    lr, A_lr
        AdamW learning rates of the U-Net and of the variational score A.
    weight_decay
        AdamW weight decay of the U-Net.
    lr_warmup
        Linear learning-rate warm-up of the U-Net, in steps.
    grad_clip
        Gradient-norm clip of the U-Net (paper: 1.0; 0 disables).
    ema_decay
        EMA decay of the weights (U-Net and A) used for sampling.
    warmup, cooldown
        Fractions of the run that train the score only, at the start and end.
    cycle_steps
        Length of one backward+forward cycle (paper: 500 + 100 = 600).
    forward_fraction
        Fraction of each cycle spent on A updates.
    num_trajectories, trajectory_steps, frozen_policy
        Backward trajectories simulated per A phase (at most the per-device
        batch), their Euler-Maruyama steps and the frozen policy of eq. (13).
    seed
        Seed of initialisation, data order and noise.
    accelerator, devices, strategy, precision
        Lightning Trainer settings (``devices=2`` runs DDP on two GPUs).
    num_threads
        ``torch.set_num_threads`` on CPU (None: leave as is).
    max_minutes
        Stop (and checkpoint) after this much training time in this call;
        resume later.
    resume
        Continue from ``out/last.ckpt`` (True) or from a given path. The
        model, SDE, data and optimiser settings come from the checkpoint; the
        fields in :data:`RUNTIME_FIELDS` that this config sets (not ``None``)
        replace the saved ones, e.g. a larger ``steps`` extends the run.
    ckpt_every, sample_every, log_every
        Checkpoint, sample-grid and metrics intervals in steps (0: off).
    sample_steps, num_samples
        Heun steps and number of images of the sample grids.
    progress
        tqdm progress bars.
    fid_inception, fid_num
        Local Inception file for FID after training, and how many samples
        (0: no FID).
    """

    dataset: str = "digits"
    data_dir: Optional[str] = None
    out: str = "runs/images"
    image_size: Optional[int] = None
    sde: str = "vscld"
    beta: Optional[float] = None
    damping_ratio: Optional[float] = None
    precond: str = "none"
    base_channels: Optional[int] = None
    channel_mult: Optional[Tuple[int, ...]] = None
    num_res_blocks: Optional[int] = None
    attn_resolutions: Optional[Tuple[int, ...]] = None
    num_heads: Optional[int] = None
    dropout: Optional[float] = None
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    A_lr: Optional[float] = None
    weight_decay: float = 0.0
    lr_warmup: Optional[int] = None
    grad_clip: float = 1.0
    ema_decay: Optional[float] = None
    warmup: Optional[float] = None
    cooldown: Optional[float] = None
    cycle_steps: Optional[int] = None
    forward_fraction: float = AlternationSchedule.forward_fraction
    num_trajectories: Optional[int] = None
    trajectory_steps: int = TRAJECTORY_STEPS
    frozen_policy: str = "score"
    seed: int = 0
    accelerator: str = "auto"
    devices: object = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_threads: Optional[int] = None
    max_minutes: Optional[float] = None
    resume: object = False
    ckpt_every: Optional[int] = None
    sample_every: int = 0
    sample_steps: Optional[int] = None
    num_samples: int = 64
    log_every: Optional[int] = None
    progress: bool = True
    fid_inception: Optional[str] = None
    fid_num: int = 0

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` field filled from the dataset preset, validated."""
        name = self.dataset.lower()
        if name not in PRESETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(PRESETS)}")
        values = {k: v for k, v in dataclasses.asdict(self).items()}
        values["dataset"] = name
        for k, v in PRESETS[name].items():
            if values.get(k) is None:
                values[k] = v
        values["channel_mult"] = tuple(int(m) for m in values["channel_mult"])
        values["attn_resolutions"] = tuple(int(r) for r in values["attn_resolutions"])
        cfg = TrainConfig(**values)
        if cfg.steps < 1 or cfg.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {cfg.steps}, {cfg.batch_size}")
        if cfg.precond not in ("gaussian", "none"):
            raise ValueError(f"precond must be 'gaussian' or 'none', got {cfg.precond!r}")
        if not 0 <= cfg.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {cfg.ema_decay}")
        return cfg

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(d["channel_mult"]) if d["channel_mult"] is not None else None
        d["attn_resolutions"] = list(d["attn_resolutions"]) if d["attn_resolutions"] is not None else None
        d["devices"] = d["devices"] if isinstance(d["devices"], (int, str)) else str(d["devices"])
        d["resume"] = d["resume"] if isinstance(d["resume"], (bool, str)) else str(d["resume"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def data_shape(self) -> tuple:
        channels = 1 if self.dataset == "digits" else 3
        return (channels, self.image_size, self.image_size)


def build_model(cfg: TrainConfig) -> ScoreModel:
    """``ScoreModel(sde, net)`` for a resolved config (holds the network and the SDE with A).

    ``net`` is the U-Net, wrapped in
    :class:`~vsmd_ts.images.precond.GaussianResidualPrecond` when
    ``cfg.precond == "gaussian"`` (call its ``set_data_stats`` before training).
    """
    shape = cfg.data_shape()
    sde = make_sde(cfg.sde, shape, beta=cfg.beta, damping_ratio=cfg.damping_ratio)
    net = UNet(
        shape,
        num_channels=sde.num_channels,
        base_channels=cfg.base_channels,
        channel_mult=cfg.channel_mult,
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=cfg.attn_resolutions,
        num_heads=cfg.num_heads,
        dropout=cfg.dropout,
    )
    if cfg.precond == "gaussian":
        net = GaussianResidualPrecond(sde, net, shape)
    return ScoreModel(sde, net)
