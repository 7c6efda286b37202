"""Training of toy models: residual-MLP score network and variational score A, or ASBM.

The front end supplies a dataset (a fresh seeded batch per step) and a
network; training runs on the shared Lightning path
(:func:`vsmd_ts.training.fit`): each step is one stage of Algorithm 1 given
by :class:`~vsmd_ts.diffusion.VSMDObjective`, denoising score matching of the
network (A frozen) or a stochastic-approximation step on A (network frozen).
SDEs without a learned A (CLD, ULD, VP) only do DSM. An EMA of all weights
(network and A) is what sampling uses. ``OUT/last.ckpt`` is written every
``ckpt_every`` steps, at the end and on Ctrl-C; ``resume=True`` continues it.

``method="asbm"`` trains ASBM (:mod:`vsmd_ts.training.asbm`) on a base SDE
without a learned A: stage 1 (forward control and corrector, by corrector and
adjoint matching, until the prior check passes or ``asbm_stage1_steps`` end;
``OUT/stage1/last.ckpt``), then stage 2 (the backward network by bridge
matching on the frozen coupling, ``steps`` steps; ``OUT/last.ckpt``), each a
fit of the shared path. The memoryless twin is the default method on a
memoryless base (``sde="vp", beta=20``: plain DSM with the same network).
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
    ASBM,
    SDE_NAMES,
    ResidualMLP,
    ScoreModel,
    evaluation_loss,
    is_momentum,
    make_sde,
)
from vsmd_ts.diffusion.asbm import check_simulation
from vsmd_ts.diffusion.registry import learns_A

from vsmd_ts.training.config import FitConfig

from .data import get_dataset
from .sampling import PRIORS, asbm_sampling_model, evaluate

__all__ = ["METHODS", "ToyConfig", "build_asbm_nets", "build_model", "load_checkpoint", "model_from_checkpoint", "train"]

METHODS = ("vsmd", "asbm")
# defaults that depend on the method: (sde, beta, prior); ASBM: its non-memoryless VP base and energy prior N(0, I)
_METHOD_DEFAULTS = {"vsmd": ("vsuld", 5.0, "transition"), "asbm": ("vp", 4.0, "fixed")}

@dataclass
class ToyConfig(FitConfig):
    """Configuration of one toy run (all fields are plain values, saved in the checkpoint).

    Optimisation, Algorithm 1 and run-control fields are those of
    :class:`~vsmd_ts.training.FitConfig`; the toys change only the defaults
    listed here and add their data, network and evaluation fields.

    Parameters
    ----------
    method
        ``"vsmd"`` (default: DSM and, for the VS SDEs, the A update) or
        ``"asbm"`` (the two stages of ASBM on the base SDE ``sde``).
    dataset
        One of :data:`vsmd_ts.toys.DATASETS`.
    sde
        ``vsuld``, ``vscld``, ``cld``, ``uld``, ``vsdm`` or ``vp``; for ASBM the
        base, one without a learned A (``vp``, ``cld``, ``uld``). Default
        ``vsuld``, for ASBM ``vp``.
    beta
        Speed of the forward SDE (``beta_max`` for ``vp``). Default 5, for
        ASBM 4 (VP 0.1 -> 4 is ASBM's non-memoryless base; CLD 4 keeps about
        as much memory).
    damping_ratio
        R for ``vsuld``/``uld`` (default 0.7, as in the paper's toys).
    prior
        Sampling prior (also the start of the simulated trajectories of the
        A update): ``transition`` (the paper's, default), ``data``,
        ``stationary`` or ``fixed`` (``N(0, I)``: ASBM's energy prior and its default).
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
    asbm_stage1_steps
        Step budget of ASBM's stage 1 (CM and AM steps together); it ends
        earlier at the first passed prior check. Stage 2 runs ``steps`` steps.
    asbm_cm_steps, asbm_am_steps
        Optimiser steps of one corrector-matching and one adjoint-matching
        stage (CM first; ASBM: 5 and 15 epochs, here 1 : 3 as well). The
        alternation is an IPF: on the stretched toys (variance 64 or 36 on
        one axis, VP 0.1 -> 4 keeping 36 % of the mean) the exact iteration
        needs about 8 cycles to bring the terminal variance within 2 % of 1,
        and an AM stage settles in about 50 steps, so short cycles (50 + 150).
    asbm_refresh_every
        Steps between buffer refreshes, each simulating one data batch (ASBM
        draws each coupling about 5 times before the next refresh replaces it).
    asbm_buffer_size
        Replay buffer capacity (ASBM: 20 000).
    asbm_am_sim_steps, asbm_cm_sim_steps
        Steps of the forward simulations for AM buffers, stage 2 and the prior
        check, and for CM buffers (ASBM: 19 and 99 Euler-Maruyama steps).
    asbm_sim_scheme, asbm_sim_grid
        Integrator and time grid of those simulations
        (:func:`vsmd_ts.diffusion.asbm.simulate_controlled`). Default: stochastic
        Heun on the quadratic grid (finer near ``T``). ASBM's Euler-Maruyama on
        the uniform grid cannot pass the prior check here: to pull data of
        variance 64 into ``N(0, 1)`` the control's gain reaches about 12 at
        ``T``, and 19 Euler-Maruyama steps of the exact Schroedinger-bridge
        control end with variance 1.21 (99 steps: 1.04; Heun, quadratic grid: 0.99).
    asbm_lr
        Constant learning rate of stage 1 (control and corrector, one AdamW).
    asbm_check_num
        Data points the prior check simulates (fixed draws; ASBM: up to 51 200).
    """

    # FitConfig fields whose toy defaults differ (prior: None = the method's)
    prior: Optional[str] = None
    A_lr: float = 1e-2
    lr_schedule: str = "cosine"
    lr_warmup: Optional[int] = None
    ema_decay: float = 0.995
    ema_warmup: bool = False
    num_trajectories: int = 512
    data_var: object = None
    ckpt_every: int = 500
    progress: bool = True
    # toy-only fields (sde, beta: None = the method's default)
    method: str = "vsmd"
    dataset: str = "spiral-8y"
    sde: Optional[str] = None
    beta: Optional[float] = None
    damping_ratio: Optional[float] = None
    hidden: int = 128
    num_blocks: int = 3
    batch_size: int = 512
    resume: bool = False
    eval_every: int = 0
    eval_num: int = 2000
    eval_steps: int = 25
    threads: int = 0
    asbm_stage1_steps: int = 3000
    asbm_cm_steps: int = 50
    asbm_am_steps: int = 150
    asbm_refresh_every: int = 5
    asbm_buffer_size: int = 20000
    asbm_am_sim_steps: int = 19
    asbm_cm_sim_steps: int = 19
    asbm_sim_scheme: str = "heun"
    asbm_sim_grid: str = "quadratic"
    asbm_lr: float = 1e-3
    asbm_check_num: int = 10000

    def __post_init__(self):
        sde, beta, prior = _METHOD_DEFAULTS.get(self.method, _METHOD_DEFAULTS["vsmd"])
        self.sde = sde if self.sde is None else self.sde
        self.beta = beta if self.beta is None else self.beta
        self.prior = prior if self.prior is None else self.prior

    def validate(self) -> "ToyConfig":
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        get_dataset(self.dataset)  # raises on an unknown name
        if self.sde.lower() not in SDE_NAMES:
            raise ValueError(f"unknown sde {self.sde!r}; choose one of {', '.join(SDE_NAMES)}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; choose one of {', '.join(PRIORS)}")
        if self.method == "asbm" and learns_A(self.sde):
            raise ValueError(f"ASBM needs a fixed base SDE (vp, cld or uld), got {self.sde!r}, which learns A")
        asbm_ints = ("asbm_stage1_steps", "asbm_cm_steps", "asbm_am_steps", "asbm_refresh_every", "asbm_buffer_size",
                     "asbm_am_sim_steps", "asbm_cm_sim_steps", "asbm_check_num")
        for name in ("hidden", "num_blocks", "steps", "batch_size", "num_trajectories", "trajectory_steps", "eval_num",
                     "eval_steps") + asbm_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        check_simulation(self.asbm_sim_scheme, self.asbm_sim_grid, ("asbm_sim_scheme", "asbm_sim_grid"))
        for name in ("lr", "A_lr", "asbm_lr"):
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


def build_asbm_nets(cfg: ToyConfig):
    """ASBM's base SDE and networks for a configuration: ``(sde, control, corrector, score_net)``.

    Momentum bases draw ``v_0`` and condition on it (``initial_velocity="sample"``):
    ASBM couples full states. All three networks are the toy residual MLP;
    the control and the score predict the last channel ``(N, 2)``, the
    corrector all ``K`` channels ``(N, K, 2)``.
    """
    extra = {"initial_velocity": "sample"} if is_momentum(cfg.sde) else {}
    sde = make_sde(cfg.sde, (2,), beta=cfg.beta, damping_ratio=cfg.damping_ratio, **extra)
    K = sde.num_channels

    def mlp(shape, channels):
        return ResidualMLP(shape, num_channels=channels, hidden=cfg.hidden, num_blocks=cfg.num_blocks)

    return sde, mlp((2,), K), mlp((K, 2), 1), mlp((2,), K)


def _asbm_model(cfg: ToyConfig, stage: int):
    """The model ASBM trains in ``stage`` 1 (:class:`~vsmd_ts.training.asbm.ForwardNets`) or 2
    (:class:`~vsmd_ts.training.asbm.BridgeScoreModel`, whose control is frozen)."""
    from vsmd_ts.training.asbm import BridgeScoreModel, ForwardNets

    sde, control, corrector, score_net = build_asbm_nets(cfg)
    return ForwardNets(sde, control, corrector) if stage == 1 else BridgeScoreModel(sde, score_net, control)


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
    :class:`ToyConfig` and the per-axis data variance (list of 2). ASBM
    checkpoints give a :class:`~vsmd_ts.training.asbm.BridgeScoreModel`
    (stage 2: backward network and frozen control) or, from
    ``OUT/stage1``, the :class:`~vsmd_ts.training.asbm.ForwardNets` of stage 1.
    """
    from vsmd_ts.training.checkpoint import load_weights, state_dicts

    source = "the checkpoint" if isinstance(ckpt, dict) else ckpt
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    cfg = ToyConfig.from_dict(ckpt["vsmd"]["toy_config"])
    if cfg.method == "asbm":
        model = _asbm_model(cfg, ckpt["vsmd"].get("asbm_stage", 2))
    else:
        model = build_model(cfg)
    ema_state, raw_state = state_dicts(ckpt)
    load_weights(model, ema_state if ema else raw_state, source)
    model.eval()
    return model, cfg, list(ckpt["vsmd"]["data_var"])


def _fit_config(cfg: ToyConfig, data_var: list) -> FitConfig:
    fit_cfg = FitConfig(**{f.name: getattr(cfg, f.name) for f in fields(FitConfig)})
    warmup = cfg.lr_warmup if cfg.lr_warmup is not None else max(1, round(0.02 * cfg.steps))
    return replace(fit_cfg, lr_warmup=warmup if cfg.lr_schedule == "cosine" else 0, data_var=data_var)


def _batches(cfg: ToyConfig, dataset):
    """``batch(step, rank, world) -> (B_rank, 2)``: a fresh seeded data batch per step (a resumed run continues it)."""

    def batch(step: int, rank: int, world: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(((cfg.seed * 2**31 + step) * 64 + rank) % 2**63)
        return dataset.sample(len(range(rank, cfg.batch_size, world)), g)  # the ranks share the global batch

    return batch


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
    ASBM runs: see :func:`_train_asbm`.
    """
    from vsmd_ts.training import fit

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dataset = get_dataset(cfg.dataset)
    data_var = list(cfg.data_var) if cfg.data_var is not None else dataset.variance().tolist()
    if cfg.resume and out is not None and (Path(out) / "last.ckpt").is_file():  # another front end's file fails here
        load_checkpoint(out, advice="train without --resume, or in another --out folder")
    torch.manual_seed(cfg.seed)  # initial weights
    if cfg.method == "asbm":
        return _train_asbm(cfg, out, dataset, data_var)
    model = build_model(cfg)
    batch = _batches(cfg, dataset)
    eval_curve = []

    def eval_ema(step: int, ema_model) -> None:
        res = evaluate(ema_model, dataset, cfg.eval_num, cfg.eval_steps, cfg.prior, data_var, seed=cfg.seed, num_true=20_000)
        eval_curve.append({"step": step, "pmf_rmse": res["pmf_rmse"], "marginal_rmse": res["marginal_rmse"]})

    eval_x = dataset.sample(1024, torch.Generator().manual_seed(777))
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


def _train_asbm(cfg: ToyConfig, out, dataset, data_var: list) -> dict:
    """ASBM's two stages, each a fit of the shared path; see the module docstring.

    Stage 1 writes ``OUT/stage1/last.ckpt`` (``asbm_stage`` 1 in its metadata,
    the buffer and the prior checks in its objective state), stage 2
    ``OUT/last.ckpt`` (``asbm_stage`` 2; backward network and frozen control).
    A resume continues stage 1 unless it had ended, then stage 2.

    Returns
    -------
    Summary: ``stage1_steps``, ``stage1_passed``, ``prior_checks`` (every
    check: step, mean/cov errors, top eigenvalues, ``|a_1|^2`` errors,
    ``passed``), ``steps`` (of stage 2), CPU and wall seconds of both
    stages, ``history`` rows (``stage`` 1 or 2), ``eval_curve`` (Heun on the
    SB's probability-flow ODE, ``eval_steps`` steps), and the stage-2 models under ``"model"`` and
    ``"ema_model"`` (:class:`~vsmd_ts.training.asbm.BridgeScoreModel`,
    the latter with the EMA backward network).
    """
    from vsmd_ts.training.asbm import ForwardNets, Stage1Schedule, fit_asbm

    sde, control, corrector, score_net = build_asbm_nets(cfg)
    cpu0 = time.process_time()
    summary = {"parameters": sum(p.numel() for p in score_net.parameters()), "data_var": data_var}
    eval_curve = []

    def eval_ema(step: int, ema_model) -> None:
        # Heun on the SB's probability-flow ODE (both networks), as the default method's curve uses its PF-ODE
        res = evaluate(asbm_sampling_model(ema_model, "heun"), dataset, cfg.eval_num, cfg.eval_steps, cfg.prior,
                       data_var, seed=cfg.seed, num_true=20_000)
        eval_curve.append({"step": step, "pmf_rmse": res["pmf_rmse"], "marginal_rmse": res["marginal_rmse"]})

    run = fit_asbm(
        ForwardNets(sde, control, corrector), score_net, _batches(cfg, dataset), _fit_config(cfg, data_var),
        Stage1Schedule(cfg.asbm_cm_steps, cfg.asbm_am_steps, cfg.asbm_refresh_every), cfg.asbm_stage1_steps,
        cfg.asbm_lr, dataset.sample(cfg.asbm_check_num, torch.Generator().manual_seed(778)),
        am_sim_steps=cfg.asbm_am_sim_steps, cm_sim_steps=cfg.asbm_cm_sim_steps, buffer_size=cfg.asbm_buffer_size,
        sim_scheme=cfg.asbm_sim_scheme, sim_grid=cfg.asbm_sim_grid,
        out=out, resume=cfg.resume, meta={"toy_config": cfg.to_dict(), "data_var": data_var},
        front_end="vsmd_ts.toys", every=[(cfg.eval_every, eval_ema)] if cfg.eval_every else [],
    )
    record, res, model = run.stage1, run.result, run.model
    summary.update(stage1_steps=record["steps"], stage1_passed=record["passed"], prior_checks=record["checks"])
    history2 = [{"stage": 2, **{k: v for k, v in r.items() if v != ""}} for r in res.history]
    summary.update(
        steps=res.step, start_step=res.start_step, train_cpu_seconds=round(time.process_time() - cpu0, 1),
        train_wall_seconds=res.train_seconds, history=run.history1 + history2, eval_curve=eval_curve,
        eval_loss_start=None, ema_eval_loss_end=None, eval_loss_end=None, A_v_start=[], A_v_end=[], ema_A_v_end=[],
        config=cfg.to_dict(), checkpoint=res.checkpoint,
    )
    if out is not None:
        (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["model"], summary["ema_model"] = model.eval(), res.ema_model.eval()
    return summary
