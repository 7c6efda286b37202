"""Training of toy models: residual-MLP score network and variational score A.

The front end supplies a dataset (a fresh seeded batch per step) and a
network; training runs on the shared Lightning path
(:func:`vsmd_ts.training.fit`): each step is one stage of Algorithm 1 given
by :class:`~vsmd_ts.diffusion.VSMDObjective`, denoising score matching of the
network (A frozen) or a stochastic-approximation step on A (network frozen).
SDEs without a learned A (CLD, ULD, VP) only do DSM. An EMA of all weights
(network and A) is what sampling uses. ``OUT/last.ckpt`` is written every
``ckpt_every`` steps, at the end and on Ctrl-C; ``resume=True`` continues it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Optional, Union

import torch

from vsmd_ts.diffusion import (
    SDE_NAMES,
    ResidualMLP,
    ScoreModel,
    evaluation_loss,
    make_sde,
)

from vsmd_ts.training.config import FitConfig

from .data import get_dataset
from .sampling import PRIORS, evaluate

__all__ = ["ToyConfig", "build_model", "load_checkpoint", "model_from_checkpoint", "train"]

@dataclass
class ToyConfig(FitConfig):
    """Configuration of one toy run (all fields are plain values, saved in the checkpoint).

    Optimisation, Algorithm 1 and run-control fields are those of
    :class:`~vsmd_ts.training.FitConfig`; the toys change only the defaults
    listed here and add their data, network and evaluation fields.

    Parameters
    ----------
    dataset
        One of :data:`vsmd_ts.toys.DATASETS`.
    sde
        ``vsuld``, ``vscld``, ``cld``, ``uld``, ``vsdm`` or ``vp``.
    beta
        Speed of the forward SDE (``beta_max`` for ``vp``).
    damping_ratio
        R for ``vsuld``/``uld`` (default 0.7, as in the paper's toys).
    prior
        Sampling prior (also the start of the simulated trajectories of the
        A update): ``transition`` (the paper's, default), ``data`` or ``stationary``.
    hidden, num_blocks
        Width and depth of the residual MLP (the authors use 256 and 6).
    batch_size
        Points per optimiser step (all processes together under DDP).
    A_lr
        Learning rate of A (default 1e-2).
    lr_schedule, lr_warmup
        ``"cosine"`` (default): the network's learning rate decays from ``lr``
        to ``lr / 10`` over the run after a linear warm-up of ``lr_warmup``
        steps (``None``: 2 % of the run); ``"constant"``. A's is constant.
    ema_decay, ema_warmup
        EMA of all weights (network and A): 0.995, no warm-up, by default.
    num_trajectories
        Backward trajectories per A phase (default 512).
    data_var
        Per-axis data variance for the ``data`` prior (``None``: the dataset's).
    ckpt_every, progress
        Checkpoint every 500 steps and show a progress bar by default.
    resume
        Continue from ``OUT/last.ckpt`` when it exists.
    eval_every
        Steps between PMF-RMSE evaluations of the EMA model during training
        (0: none), with ``eval_num`` samples and ``eval_steps`` Heun steps.
    threads
        ``torch.set_num_threads`` (0: leave as is).
    """

    # FitConfig fields whose toy defaults differ
    prior: str = "transition"
    A_lr: float = 1e-2
    lr_schedule: str = "cosine"
    lr_warmup: Optional[int] = None
    ema_decay: float = 0.995
    ema_warmup: bool = False
    num_trajectories: int = 512
    data_var: object = None
    ckpt_every: int = 500
    progress: bool = True
    # toy-only fields
    dataset: str = "spiral-8y"
    sde: str = "vsuld"
    beta: float = 5.0
    damping_ratio: Optional[float] = None
    hidden: int = 128
    num_blocks: int = 3
    batch_size: int = 512
    resume: bool = False
    eval_every: int = 0
    eval_num: int = 2000
    eval_steps: int = 25
    threads: int = 0

    def validate(self) -> "ToyConfig":
        get_dataset(self.dataset)  # raises on an unknown name
        if self.sde.lower() not in SDE_NAMES:
            raise ValueError(f"unknown sde {self.sde!r}; choose one of {', '.join(SDE_NAMES)}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; choose one of {', '.join(PRIORS)}")
        for name in ("hidden", "num_blocks", "steps", "batch_size", "num_trajectories", "trajectory_steps", "eval_num", "eval_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "A_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if min(self.log_every, self.eval_every, self.ckpt_every) < 0:
            raise ValueError("log_every, eval_every and ckpt_every must be >= 0")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def build_model(cfg: ToyConfig) -> ScoreModel:
    """``ScoreModel(sde, ResidualMLP)`` for a configuration (the SDE holds A)."""
    sde = make_sde(cfg.sde, (2,), beta=cfg.beta, damping_ratio=cfg.damping_ratio)
    net = ResidualMLP((2,), num_channels=sde.num_channels, hidden=cfg.hidden, num_blocks=cfg.num_blocks)
    return ScoreModel(sde, net)


def _A_values(sde) -> list:
    if not sde.learns_A:
        return []
    return [round(float(v), 6) for v in sde.control_trace().detach().flatten()]


def load_checkpoint(path: Union[str, os.PathLike], advice: Optional[str] = None) -> dict:
    """Read a checkpoint written by :func:`train` (a file, or a run folder holding ``last.ckpt``).

    Raises :class:`~vsmd_ts.training.CheckpointError` (a ``ValueError``) naming the file for a missing,
    empty, damaged or foreign one (``advice``: what to do, in the message).
    """
    from vsmd_ts.training import load_checkpoint as load

    return load(path, front_end="vsmd_ts.toys", advice=advice)


def model_from_checkpoint(ckpt: Union[dict, str, os.PathLike], ema: bool = True):
    """Rebuild a trained model.

    Returns
    -------
    (model, config, data_var): the :class:`~vsmd_ts.diffusion.ScoreModel` in
    eval mode (EMA weights by default, as used for sampling), the run's
    :class:`ToyConfig` and the per-axis data variance (list of 2).
    """
    from vsmd_ts.training.checkpoint import load_weights, state_dicts

    source = "the checkpoint" if isinstance(ckpt, dict) else ckpt
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = ToyConfig.from_dict(ckpt["vsmd"]["toy_config"])
    model = build_model(cfg)
    ema_state, raw_state = state_dicts(ckpt)
    load_weights(model, ema_state if ema else raw_state, source)
    model.eval()
    return model, cfg, list(ckpt["vsmd"]["data_var"])


def _fit_config(cfg: ToyConfig, data_var: list) -> FitConfig:
    fit_cfg = FitConfig(**{f.name: getattr(cfg, f.name) for f in fields(FitConfig)})
    warmup = cfg.lr_warmup if cfg.lr_warmup is not None else max(1, round(0.02 * cfg.steps))
    return replace(fit_cfg, lr_warmup=warmup if cfg.lr_schedule == "cosine" else 0, data_var=data_var)


def train(cfg: ToyConfig, out: Optional[Union[str, os.PathLike]] = None) -> dict:
    """Train (or, with ``cfg.resume``, continue) a toy model; returns a summary dict.

    Parameters
    ----------
    cfg
        Run configuration.
    out
        Folder for ``last.ckpt``, ``metrics.csv`` and ``summary.json``
        (``None``: write nothing).

    Returns
    -------
    Summary with the evaluation DSM loss before and after training (fixed
    noise, 1024 points), the A values, training seconds (CPU process time and
    wall), the ``history`` rows, with ``eval_every`` the PMF-RMSE curve of the
    EMA model, and the trained models under ``"model"`` and ``"ema_model"``.
    """
    from vsmd_ts.training import fit

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dataset = get_dataset(cfg.dataset)
    data_var = list(cfg.data_var) if cfg.data_var is not None else dataset.variance().tolist()
    torch.manual_seed(cfg.seed)  # initial weights
    model = build_model(cfg)

    def batch(step: int, rank: int, world: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(((cfg.seed * 2**31 + step) * 64 + rank) % 2**63)
        return dataset.sample(len(range(rank, cfg.batch_size, world)), g)  # the ranks share the global batch

    eval_curve = []

    def eval_ema(step: int, ema_model) -> None:
        res = evaluate(ema_model, dataset, cfg.eval_num, cfg.eval_steps, cfg.prior, data_var, seed=cfg.seed, num_true=20_000)
        eval_curve.append({"step": step, "pmf_rmse": res["pmf_rmse"], "marginal_rmse": res["marginal_rmse"]})

    eval_x = dataset.sample(1024, torch.Generator().manual_seed(777))
    if cfg.resume and out is not None and (Path(out) / "last.ckpt").is_file():  # another front end's file fails here
        load_checkpoint(out, advice="train without --resume, or in another --out folder")
    summary = {"eval_loss_start": evaluation_loss(model.sde, model.net, eval_x), "A_v_start": _A_values(model.sde)}
    cpu0 = time.process_time()
    res = fit(model, batch, _fit_config(cfg, data_var), out=out, resume=cfg.resume,
              meta={"toy_config": cfg.to_dict(), "data_var": data_var}, eval_x=eval_x,
              every=[(cfg.eval_every, eval_ema)] if cfg.eval_every else [])
    ema_model = res.ema_model
    summary.update(
        steps=res.step, start_step=res.start_step,
        train_cpu_seconds=round(time.process_time() - cpu0, 1), train_wall_seconds=res.train_seconds,
        eval_loss_end=res.module.eval_loss(), ema_eval_loss_end=res.module.eval_loss(ema_model),
        A_v_end=_A_values(model.sde), ema_A_v_end=_A_values(ema_model.sde),
        parameters=sum(p.numel() for p in model.net.parameters()), data_var=data_var,
        history=[{k: v for k, v in row.items() if v != ""} for row in res.history],
        eval_curve=eval_curve, config=cfg.to_dict(), checkpoint=res.checkpoint,
    )
    if out is not None:
        (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["model"], summary["ema_model"] = model.eval(), ema_model.eval()
    return summary
