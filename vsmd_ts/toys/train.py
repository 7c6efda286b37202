"""Training of toy models: residual-MLP score network and variational score A.

Each step draws a fresh batch from the dataset (seeded) and is one stage of
Algorithm 1, given by :class:`~vsmd_ts.diffusion.VSMDObjective`: denoising
score matching of the network (``"dsm"``/``"backward"``, A frozen) or a
stochastic-approximation step on A (``"forward"``, network frozen, on
backward trajectories simulated from the sampling prior at the start of each
forward phase). SDEs without a learned A (CLD, ULD, VP) only do DSM. One
AdamW holds the network and A (A on its own learning rate); an EMA of all
weights (network and A) is what sampling uses.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from vsmd_ts.diffusion import (
    SDE_NAMES,
    AlternationSchedule,
    ResidualMLP,
    ScoreModel,
    VariationalScoreUpdater,
    VSMDObjective,
    evaluation_loss,
    make_optimizer,
    make_sde,
)

from .data import get_dataset
from .sampling import PRIORS, evaluate

__all__ = [
    "CHECKPOINT_FORMAT",
    "ToyConfig",
    "build_model",
    "evaluate_loss",
    "load_checkpoint",
    "model_from_checkpoint",
    "train",
]

CHECKPOINT_FORMAT = "vsmd_ts.toys/1"


@dataclass
class ToyConfig:
    """Configuration of one toy run (all fields are plain values, saved in the checkpoint).

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
        A update): ``transition`` (the paper's), ``data`` or ``stationary``.
    hidden, num_blocks
        Width and depth of the residual MLP (the authors use 256 and 6).
    steps, batch_size
        Optimiser steps and batch size.
    lr, A_lr
        Learning rates of the network and of A.
    lr_schedule
        ``"cosine"``: the network's learning rate decays from ``lr`` to
        ``lr / 10`` over the run (a short linear warm-up of 2 % first);
        ``"constant"``. A's learning rate is constant.
    ema_decay
        EMA decay of all weights (network and A).
    grad_clip
        Gradient-norm clip of the network (0: off).
    warmup, cooldown, cycle, forward_fraction
        Alternation schedule as fractions of ``steps``, see
        :class:`~vsmd_ts.diffusion.AlternationSchedule`.
    num_trajectories, trajectory_steps
        Backward trajectories (Euler-Maruyama steps) per A phase.
    frozen_policy
        ``score`` (VSMD code) or ``score_minus_forward`` (VSDM).
    seed
        Seeds the initial weights, the data stream and the diffusion noise.
    log_every
        Steps between rows of ``metrics.csv``.
    eval_every
        Steps between PMF-RMSE evaluations of the EMA model during training
        (0: none), with ``eval_num`` samples and ``eval_steps`` Heun steps.
    threads
        ``torch.set_num_threads`` (0: leave as is).
    progress
        tqdm bar.
    """

    dataset: str = "spiral-8y"
    sde: str = "vsuld"
    beta: float = 5.0
    damping_ratio: Optional[float] = None
    prior: str = "transition"
    hidden: int = 128
    num_blocks: int = 3
    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    A_lr: float = 1e-2
    lr_schedule: str = "cosine"
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    warmup: float = 0.2
    cooldown: float = 0.4
    cycle: float = 0.12
    forward_fraction: float = 1 / 6
    num_trajectories: int = 512
    trajectory_steps: int = 100
    frozen_policy: str = "score"
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0
    eval_num: int = 2000
    eval_steps: int = 25
    threads: int = 0
    progress: bool = True

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
        if self.log_every < 0 or self.eval_every < 0:
            raise ValueError("log_every and eval_every must be >= 0")
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


def evaluate_loss(net, sde, x0: torch.Tensor, seed: int = 1234) -> float:
    """DSM loss with fixed times and noise (see :func:`vsmd_ts.diffusion.evaluation_loss`)."""
    return evaluation_loss(sde, net, x0, seed=seed)


def _lr_lambda(kind: str, steps: int):
    """Multiplier of the network's learning rate at a step."""
    warm = max(1, round(0.02 * steps))

    def cosine(step):
        if step < warm:
            return (step + 1) / warm
        u = min(1.0, (step - warm) / max(1, steps - warm))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * u))

    return cosine if kind == "cosine" else (lambda step: 1.0)


def _A_values(sde) -> list:
    if not getattr(sde, "learns_A", False):
        return []
    A = sde.A_v if hasattr(sde, "A_v") else sde.A()
    return [round(float(v), 6) for v in A.detach().flatten()]


def load_checkpoint(path: Union[str, os.PathLike]) -> dict:
    """Read a checkpoint written by :func:`train` (a file, or a run folder holding ``checkpoint.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (training writes OUT/checkpoint.pt)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a vsmd_ts.toys checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    return ckpt


def model_from_checkpoint(ckpt: Union[dict, str, os.PathLike], ema: bool = True):
    """Rebuild a trained model.

    Returns
    -------
    (model, config, data_var): the :class:`~vsmd_ts.diffusion.ScoreModel` in
    eval mode (EMA weights by default, as used for sampling), the run's
    :class:`ToyConfig` and the per-axis data variance (list of 2).
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = ToyConfig.from_dict(ckpt["config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt["ema"] if ema else ckpt["model"])
    model.eval()
    return model, cfg, list(ckpt["data_var"])


def train(cfg: ToyConfig, out: Optional[Union[str, os.PathLike]] = None) -> dict:
    """Train a toy model; returns a summary dict.

    Parameters
    ----------
    cfg
        Run configuration.
    out
        Folder for ``checkpoint.pt``, ``metrics.csv`` and ``summary.json``
        (``None``: write nothing; the summary then holds the models under
        ``"model"`` and ``"ema_model"``).

    Returns
    -------
    Summary with the evaluation DSM loss before and after training (fixed
    noise, 1024 points), the final A values, training seconds (CPU process
    time and wall), the ``history`` rows and, with ``eval_every``, the PMF-RMSE
    curve of the EMA model.
    """
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dataset = get_dataset(cfg.dataset)
    data_var = dataset.variance().tolist()

    torch.manual_seed(cfg.seed)  # initial weights and the objective's row choice
    model = build_model(cfg)
    sde, net = model.sde, model.net
    optimizer = make_optimizer(model, lr=cfg.lr, A_lr=cfg.A_lr)
    net_lambda = _lr_lambda(cfg.lr_schedule, cfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [net_lambda if g.get("name") == "score" else (lambda s: 1.0) for g in optimizer.param_groups]
    )
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
    updater = VariationalScoreUpdater(cfg.trajectory_steps, cfg.frozen_policy, prior=cfg.prior, data_var=data_var)
    schedule = AlternationSchedule(cfg.warmup, cfg.cooldown, cfg.cycle, cfg.forward_fraction)
    objective = VSMDObjective(sde, net, schedule, updater, num_trajectories=cfg.num_trajectories)

    eval_x = dataset.sample(1024, torch.Generator().manual_seed(777))
    summary = {"eval_loss_start": evaluate_loss(net, sde, eval_x), "A_v_start": _A_values(sde)}
    history, window = [], {}
    eval_curve = []

    def eval_ema(step: int):
        res = evaluate(ema.module, dataset, cfg.eval_num, cfg.eval_steps, cfg.prior, data_var, seed=cfg.seed, num_true=20_000)
        eval_curve.append({"step": step, "pmf_rmse": res["pmf_rmse"], "marginal_rmse": res["marginal_rmse"]})
        return res["pmf_rmse"]

    bar = tqdm(total=cfg.steps, desc=f"train {cfg.sde}-{cfg.beta:g} {cfg.dataset}", disable=not cfg.progress)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    net.train()
    for step in range(cfg.steps):
        x0 = dataset.sample(cfg.batch_size, data_gen)
        loss, stage = objective(step, cfg.steps, x0, generator=noise_gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if stage != "forward" and cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        ema.update_parameters(model)

        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss at step {step} ({stage}); lower the learning rate")
        w = window.setdefault(stage, [0.0, 0])
        w[0] += value
        w[1] += 1
        done = step + 1
        if cfg.log_every and (done % cfg.log_every == 0 or done == cfg.steps):
            row = {"step": done, **{f"loss_{k}": v[0] / v[1] for k, v in window.items()}, "A_v": _A_values(sde)}
            history.append(row)
            window = {}
            score_loss = [row[k] for k in ("loss_dsm", "loss_backward") if k in row]
            bar.set_postfix(stage=stage, loss=f"{score_loss[0]:.4f}" if score_loss else "-", A_v=row["A_v"] or "-")
        if cfg.eval_every and done % cfg.eval_every == 0:
            bar.set_postfix(stage=stage, pmf_rmse=f"{eval_ema(done):.2e}")
        bar.update(1)
    bar.close()

    summary.update(
        steps=cfg.steps,
        train_cpu_seconds=round(time.process_time() - cpu0, 1),
        train_wall_seconds=round(time.perf_counter() - wall0, 1),
        eval_loss_end=evaluate_loss(net, sde, eval_x),
        ema_eval_loss_end=evaluate_loss(ema.module.net, ema.module.sde, eval_x),
        A_v_end=_A_values(sde),
        ema_A_v_end=_A_values(ema.module.sde),
        parameters=sum(p.numel() for p in net.parameters()),
        data_var=data_var,
        history=history,
        eval_curve=eval_curve,
        config=cfg.to_dict(),
    )
    if out is None:
        summary["model"], summary["ema_model"] = model, ema.module
        return summary

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.to_dict(),
        "step": cfg.steps,
        "data_var": data_var,
        "model": model.state_dict(),
        "ema": ema.module.state_dict(),
    }
    tmp = out / "checkpoint.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out / "checkpoint.pt")  # never leave a half-written checkpoint
    _write_history(out / "metrics.csv", history)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["checkpoint"] = str(out / "checkpoint.pt")
    return summary


def _write_history(path: Path, history: Sequence[dict]) -> None:
    keys = ["step", "loss_dsm", "loss_backward", "loss_forward", "A_v"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(keys)
        for row in history:
            writer.writerow([json.dumps(row[k]) if k == "A_v" else row.get(k, "") for k in keys])
