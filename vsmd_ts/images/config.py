"""Configuration of an image run and construction of the model it describes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from vsmd_ts.diffusion import SDE_NAMES, TRAJECTORY_STEPS, AlternationSchedule, ScoreModel, is_momentum, make_sde
from vsmd_ts.diffusion.registry import learns_A

from .precond import GaussianResidualPrecond
from .unet import StateUNet, UNet

__all__ = ["ASBM_PRESETS", "METHODS", "PRESETS", "RUNTIME_FIELDS", "TrainConfig", "build_asbm_model", "build_asbm_nets",
           "build_model"]

METHODS = ("vsmd", "asbm")

# Per-dataset defaults for every field left at None. "digits" is sized to train
# in minutes on one CPU thread; "cifar10" follows the paper's section 5.3 where
# it states values (score lr 3e-4, A lr 3e-6, EMA 0.9999, beta 10, dropout 0.1,
# forward/backward 100/500 steps, no warm-up or cool-down, 125 Heun steps) with
# a DDPM-like U-Net (38.3M parameters) instead of the authors' larger ADM.
PRESETS = {
    "digits": dict(
        sde="vscld",
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
        sde="vscld",
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

# ASBM's defaults (method="asbm"), before the dataset's preset above fills the rest. The base is
# ASBM's non-memoryless VP 0.1 -> 4 with the energy prior N(0, I). "num_res_blocks" sizes the
# backward network, "asbm_forward_res_blocks" the forward control u and corrector h: the same U-Net
# with fewer residual blocks, as ASBM runs (4 and 2 on CIFAR-10). "digits" runs on one CPU thread, but a
# stage-2 step simulates fresh couplings (19 control calls), several times the cost of a VSMD step.
# "cifar10" follows the official CIFAR-10 run (docs asbm.md section 3): U-Net 128 channels, mult
# 1,2,2,2, attention at 16, dropout 0.1; stage 1 AdamW 1e-4, batch 128, EMA 0.999, CM stages of 5 and
# AM stages of 15 epochs (CM first), buffer 20 000, EM grids of 20 (AM) and 100 (CM) points, at most
# 1000 epochs, prior check on up to 51 200 data; stage 2 lr 2e-4, 600 epochs of 50 000 couplings
# (the released checkpoint), 100 EM steps to sample. A stage-1 epoch is taken as one pass over the
# buffer (20 000 / 128 = 156 steps, refreshed by 4096 couplings: one batch every 5 steps); asbm.md
# states neither this nor a warm-up (none here). Not reproduced: the check starts at epoch 300 there.
ASBM_PRESETS = {
    "digits": dict(
        sde="vp",
        beta=4.0,
        num_res_blocks=2,
        asbm_forward_res_blocks=1,
        steps=3000,
        batch_size=64,
        lr=1e-3,
        lr_warmup=100,
        ema_decay=0.999,
        sample_steps=100,
        asbm_stage1_steps=2000,
        asbm_cm_steps=100,
        asbm_am_steps=300,
        asbm_refresh_every=5,
        asbm_buffer_size=2000,
        asbm_am_sim_steps=19,
        asbm_cm_sim_steps=99,
        asbm_lr=1e-3,
        asbm_check_num=1797,
        asbm_check_batch=512,
    ),
    "cifar10": dict(
        sde="vp",
        beta=4.0,
        num_res_blocks=4,
        asbm_forward_res_blocks=2,
        steps=234_375,
        batch_size=128,
        lr=2e-4,
        lr_warmup=0,
        ema_decay=0.999,
        sample_steps=100,
        asbm_stage1_steps=156_250,
        asbm_cm_steps=780,
        asbm_am_steps=2340,
        asbm_refresh_every=5,
        asbm_buffer_size=20_000,
        asbm_am_sim_steps=19,
        asbm_cm_sim_steps=99,
        asbm_lr=1e-4,
        asbm_check_num=51_200,
        asbm_check_batch=1024,
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
        "asbm_stage1_steps",  # a budget, like steps: a resume may extend stage 1
        "asbm_check_batch",
    }
)


@dataclass
class TrainConfig:
    """Everything that defines an image training run (``None``: dataset preset).

    Parameters
    ----------
    method
        ``"vsmd"`` (default: Algorithm 1) or ``"asbm"`` (ASBM's two stages on
        the base ``sde``; defaults from :data:`ASBM_PRESETS`).
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
        Forward SDE of :func:`vsmd_ts.diffusion.make_sde` (default ``"vscld"``,
        for ASBM ``"vp"``; ``beta`` ``None``: the registry default, beta 10,
        for ASBM 4; R 0.7 for ``"vsuld"``/``"uld"``): ``"vscld"``
        (critical damping, learned A), ``"vsuld"`` (under-damped, ``R`` =
        ``damping_ratio``, 0.9 in the authors' CIFAR-10 code), ``"cld"`` or
        ``"uld"`` (A = 0); ASBM's base is one without a learned A (``"vp"``,
        ``"cld"``, ``"uld"``).
    precond
        ``"none"`` (default): the U-Net predicts the velocity noise directly
        (the paper's parametrisation); ``"gaussian"``: the U-Net learns the
        residual of the exact noise prediction for per-pixel Gaussian data
        (:class:`~vsmd_ts.images.precond.GaussianResidualPrecond`; our
        addition, no better on digits in benchmarks/results_images.md).
    base_channels, channel_mult, num_res_blocks, attn_resolutions, num_heads, dropout
        :class:`~vsmd_ts.images.unet.UNet` size (for ASBM the backward network's).
    steps
        Total optimiser steps of the run (the alternation schedule is laid out
        over them); for ASBM the steps of stage 2.
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
    asbm_forward_res_blocks
        Residual blocks per level of ASBM's forward control ``u`` and
        corrector ``h`` (otherwise the backward network's U-Net).
    asbm_stage1_steps
        Step budget of ASBM's stage 1 (CM and AM steps together); it ends
        earlier at the first passed prior check.
    asbm_cm_steps, asbm_am_steps
        Optimiser steps of one corrector-matching and one adjoint-matching stage (CM first).
    asbm_refresh_every
        Steps between replay-buffer refreshes, each simulating one data batch.
    asbm_buffer_size
        Replay-buffer capacity (ASBM: 20 000).
    asbm_am_sim_steps, asbm_cm_sim_steps
        Euler-Maruyama steps of the forward simulations for AM buffers, stage 2
        and the prior check, and for CM buffers (ASBM: 19 and 99).
    asbm_lr
        Constant learning rate of stage 1 (control and corrector, one AdamW).
    asbm_check_num, asbm_check_batch
        Data points of the prior check (at most the dataset; ASBM: up to
        51 200) and how many are simulated at once.
    """

    method: str = "vsmd"
    dataset: str = "digits"
    data_dir: Optional[str] = None
    out: str = "runs/images"
    image_size: Optional[int] = None
    sde: Optional[str] = None
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
    asbm_forward_res_blocks: Optional[int] = None
    asbm_stage1_steps: Optional[int] = None
    asbm_cm_steps: Optional[int] = None
    asbm_am_steps: Optional[int] = None
    asbm_refresh_every: Optional[int] = None
    asbm_buffer_size: Optional[int] = None
    asbm_am_sim_steps: Optional[int] = None
    asbm_cm_sim_steps: Optional[int] = None
    asbm_lr: Optional[float] = None
    asbm_check_num: Optional[int] = None
    asbm_check_batch: Optional[int] = None

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` field filled from the dataset preset (ASBM's first), validated."""
        name = self.dataset.lower()
        if name not in PRESETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(PRESETS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        values = {k: v for k, v in dataclasses.asdict(self).items()}
        values["dataset"] = name
        presets = [ASBM_PRESETS[name], PRESETS[name]] if self.method == "asbm" else [PRESETS[name]]
        for preset in presets:
            for k, v in preset.items():
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
        if cfg.sde.lower() not in SDE_NAMES:
            raise ValueError(f"unknown sde {cfg.sde!r}; choose one of {', '.join(SDE_NAMES)}")
        if cfg.method == "asbm":
            cfg._check_asbm()
        return cfg

    def _check_asbm(self) -> None:
        if learns_A(self.sde):
            raise ValueError(f"ASBM needs a fixed base SDE (vp, cld or uld), got {self.sde!r}, which learns A")
        if self.precond != "none":
            raise ValueError("ASBM's networks take no preconditioning; use precond='none'")
        for name in ("asbm_forward_res_blocks", "asbm_stage1_steps", "asbm_cm_steps", "asbm_am_steps",
                     "asbm_refresh_every", "asbm_buffer_size", "asbm_am_sim_steps", "asbm_cm_sim_steps",
                     "asbm_check_num", "asbm_check_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.asbm_lr > 0:
            raise ValueError(f"asbm_lr must be positive, got {self.asbm_lr!r}")

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


def _unet(cfg: TrainConfig, num_channels: int, num_res_blocks: int, cls=UNet) -> UNet:
    """A U-Net of the config's size with ``num_res_blocks`` blocks per level."""
    return cls(
        cfg.data_shape(),
        num_channels=num_channels,
        base_channels=cfg.base_channels,
        channel_mult=cfg.channel_mult,
        num_res_blocks=num_res_blocks,
        attn_resolutions=cfg.attn_resolutions,
        num_heads=cfg.num_heads,
        dropout=cfg.dropout,
    )


def build_model(cfg: TrainConfig) -> ScoreModel:
    """``ScoreModel(sde, net)`` for a resolved config (holds the network and the SDE with A).

    ``net`` is the U-Net, wrapped in
    :class:`~vsmd_ts.images.precond.GaussianResidualPrecond` when
    ``cfg.precond == "gaussian"`` (call its ``set_data_stats`` before training).
    """
    shape = cfg.data_shape()
    sde = make_sde(cfg.sde, shape, beta=cfg.beta, damping_ratio=cfg.damping_ratio)
    net = _unet(cfg, sde.num_channels, cfg.num_res_blocks)
    if cfg.precond == "gaussian":
        net = GaussianResidualPrecond(sde, net, shape)
    return ScoreModel(sde, net)


def build_asbm_nets(cfg: TrainConfig):
    """ASBM's base SDE and networks for a resolved config: ``(sde, control, corrector, score_net)``.

    The control ``u`` ``(N, K, C, H, W) -> (N, C, H, W)`` and the corrector
    ``h`` ``-> (N, K, C, H, W)`` (:class:`~vsmd_ts.images.unet.StateUNet`)
    are U-Nets with ``asbm_forward_res_blocks`` blocks per level, the backward
    noise predictor ``(N, K, C, H, W) -> (N, C, H, W)`` one with
    ``num_res_blocks``. Momentum bases draw ``v_0`` and condition on it
    (``initial_velocity="sample"``): ASBM couples full states.
    """
    extra = {"initial_velocity": "sample"} if is_momentum(cfg.sde) else {}
    sde = make_sde(cfg.sde, cfg.data_shape(), beta=cfg.beta, damping_ratio=cfg.damping_ratio, **extra)
    K = sde.num_channels
    return (sde, _unet(cfg, K, cfg.asbm_forward_res_blocks), _unet(cfg, K, cfg.asbm_forward_res_blocks, StateUNet),
            _unet(cfg, K, cfg.num_res_blocks))


def build_asbm_model(cfg: TrainConfig, stage: int = 2):
    """The model ASBM trains in ``stage`` 1 (:class:`~vsmd_ts.training.asbm.ForwardNets`) or 2
    (:class:`~vsmd_ts.training.asbm.BridgeScoreModel`: backward network and frozen control)."""
    from vsmd_ts.training.asbm import BridgeScoreModel, ForwardNets

    sde, control, corrector, score_net = build_asbm_nets(cfg)
    return ForwardNets(sde, control, corrector) if stage == 1 else BridgeScoreModel(sde, score_net, control)
