"""ASBM's two stages on the shared Lightning path (:func:`vsmd_ts.training.fit`).

The core (:class:`vsmd_ts.diffusion.ASBM`) holds the losses, the replay
buffer, the controlled simulation and the prior check; this module turns
them into objectives of :func:`~vsmd_ts.training.fit`, so each stage is one
Lightning fit with the usual EMA, checkpoints, resume and metrics:

* **stage 1**: :class:`ForwardNets` (base SDE, forward control ``u``,
  corrector ``h``) trained by :class:`Stage1Objective`, corrector matching
  and adjoint matching in alternating stages (CM first) on a replay buffer
  refreshed with couplings simulated by the **EMA** control (ASBM's
  ``--simulate-ema``) and terminal adjoints from the **trained** corrector
  (as ASBM's terminal cost: the EMA copy lags a short CM stage and slows the
  alternation). :class:`~vsmd_ts.training.callbacks.PriorCheck` runs
  the prior check of the EMA control after every AM stage and ends the fit
  at the first pass;
* **stage 2**: :class:`BridgeScoreModel` (a :class:`~vsmd_ts.diffusion.ScoreModel`
  carrying the frozen stage-1 control) trained by :class:`Stage2Objective`,
  bridge matching on fresh couplings of the frozen control every step.

Sampling: the backward network alone on the reverse SDE (a
:class:`BridgeScoreModel` is a ``ScoreModel``), or the SB's probability-flow
ODE with both networks through :class:`BridgeFlowScore`.

The front end supplies the SDE, the networks and a batch function;
:func:`fit_asbm` runs both stages (``OUT/stage1``, then ``OUT``) and their
resume. One process only: the prior check's stop decision is not shared
between ranks. Torch only at import (Lightning is imported when
:func:`fit_asbm` runs), so checkpoints load without Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from vsmd_ts.diffusion import ASBM, ScoreModel, adjoint_matching_loss, bridge_matching_loss, corrector_matching_loss

__all__ = ["ASBMFit", "BridgeFlowScore", "BridgeScoreModel", "ForwardNets", "Stage1Objective", "Stage1Schedule",
           "Stage2Objective", "fit_asbm"]


class ForwardNets(nn.Module):
    """Stage-1 model: the base SDE and the two networks trained by AM and CM.

    ``net`` holds both (the shared path clips the gradient of ``model.net``);
    ``control(a, t) -> (N, *data_shape)`` acts on the last channel,
    ``corrector(a, t) -> (N, K, *data_shape)`` is evaluated at ``t = T``.
    """

    def __init__(self, sde, control: nn.Module, corrector: nn.Module):
        super().__init__()
        self.sde = sde
        self.net = nn.ModuleDict({"control": control, "corrector": corrector})

    @property
    def control(self) -> nn.Module:
        return self.net["control"]

    @property
    def corrector(self) -> nn.Module:
        return self.net["corrector"]


class BridgeScoreModel(ScoreModel):
    """Stage-2 model: the backward noise predictor ``net`` with the frozen forward ``control`` of stage 1.

    Called like a :class:`~vsmd_ts.diffusion.ScoreModel` it returns the
    backward score ``-net / L_KK`` ``(N, *data_shape)``, what the reverse SDE
    needs; the control (no gradient) travels in its checkpoints so the
    coupling can be simulated again (prior check, probability-flow ODE).
    """

    def __init__(self, sde, net: nn.Module, control: nn.Module):
        super().__init__(sde, net)
        self.control = control.requires_grad_(False)


class BridgeFlowScore(nn.Module):
    """The SB's probability-flow ODE as a score function for the package's ODE samplers.

    ``s - u`` with ``s`` the backward score and ``u`` the forward control:
    the base PF drift ``f - g^2/2 (s - u) = f + g^2/2 (u - s)`` is the SB's.
    Two network calls per evaluation (``networks_per_call``).
    """

    networks_per_call = 2

    def __init__(self, model: BridgeScoreModel):
        super().__init__()
        self.model = model
        self.sde = model.sde

    def forward(self, a: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        return self.model(a, t, cond) - self.model.control(a, t, cond)


@dataclass(frozen=True)
class Stage1Schedule:
    """Stage-1 alternation in optimiser steps: cycles of ``cm_steps`` of CM, then ``am_steps`` of AM.

    ``refresh_every``: steps between buffer refreshes within a stage (the
    first step of a stage always refreshes its emptied buffer).
    """

    cm_steps: int
    am_steps: int
    refresh_every: int

    def __post_init__(self):
        for name in ("cm_steps", "am_steps", "refresh_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def cycle(self) -> int:
        return self.cm_steps + self.am_steps

    def stage(self, step: int) -> str:
        """``"cm"`` or ``"am"`` for (0-based) optimiser step ``step``."""
        return "cm" if step % self.cycle < self.cm_steps else "am"

    def position(self, step: int) -> int:
        """Steps since the current stage began."""
        r = step % self.cycle
        return r if r < self.cm_steps else r - self.cm_steps

    def ends_am(self, done: int) -> bool:
        """Whether ``done`` completed steps close an AM stage (time for the prior check)."""
        return done > 0 and done % self.cycle == 0


class Stage1Objective:
    """ASBM's stage 1 as an objective of :func:`~vsmd_ts.training.fit`.

    Each step: at a stage's first step the buffer is emptied; every
    ``refresh_every`` steps the step's data batch ``x0`` ``(B, *data_shape)``
    is pushed through the simulating control (``asbm``'s, the EMA copy once
    :meth:`simulate_with` bound it; the terminal adjoint takes the trained
    corrector ``nets.corrector``) into the buffer; the loss is the
    stage's (CM on ``nets.corrector``, AM on ``nets.control``) on ``B`` rows
    drawn from the buffer. The first CM stage simulates the base exactly and
    the first AM stage uses the corrector of the CM stage before it
    (ASBM's ``--init-stage bridge``).

    Parameters
    ----------
    asbm
        Core object: base SDE, simulation settings, buffer; its ``control``
        and ``corrector`` simulate.
    nets
        The trained networks.
    schedule
        :class:`Stage1Schedule`.
    """

    LOSS_KEYS = ("loss_cm", "loss_am")

    def __init__(self, asbm: ASBM, nets: ForwardNets, schedule: Stage1Schedule):
        self.asbm, self.nets, self.schedule = asbm, nets, schedule
        self.checks: List[Dict] = []
        self.passed = False

    def simulate_with(self, nets: ForwardNets) -> None:
        """Simulate couplings (and run the prior check) with the control of ``nets`` (e.g. the EMA copy)."""
        self.asbm.control = nets.control

    def __call__(self, step: int, total_steps: int, x0: torch.Tensor, cond=None, mask=None, generator=None):
        sched, asbm = self.schedule, self.asbm
        stage, pos = sched.stage(step), sched.position(step)
        if pos == 0 or asbm.stage != stage:
            asbm.start_stage(stage)
        asbm.control_trained = step >= sched.cm_steps  # an AM stage has run: CM simulates the control
        asbm.corrector_trained = True  # CM comes first, so AM always has a trained corrector
        if pos % sched.refresh_every == 0 or len(asbm.buffer) == 0:
            asbm.refresh(x0, cond, generator)
        batch = asbm.buffer.sample(x0.shape[0], generator)
        if stage == "am":
            loss = adjoint_matching_loss(asbm.sde, self.nets.control, batch["a0"], batch["a1"], batch["adj1"], cond,
                                         generator=generator)
        else:
            loss = corrector_matching_loss(asbm.sde, self.nets.corrector, batch["a0"], batch["a1"], cond)
        return loss.mean(), stage

    # checkpointed with the weights, so a resumed run continues the same buffer and knows the checks
    def state_dict(self) -> dict:
        return {"stage": self.asbm.stage, "buffer": dict(self.asbm.buffer.data), "checks": list(self.checks),
                "passed": self.passed}

    def load_state_dict(self, state: dict) -> None:
        self.asbm.stage = state["stage"]
        self.asbm.buffer.data = dict(state["buffer"])
        self.checks, self.passed = list(state["checks"]), bool(state["passed"])


class Stage2Objective:
    """ASBM's stage 2 as an objective of :func:`~vsmd_ts.training.fit`: bridge matching of ``model.net``.

    Each step simulates fresh couplings from the data batch ``x0`` with the
    frozen ``model.control`` (``am_steps`` EM steps, as ASBM's stage 2) and
    returns the mean of :func:`~vsmd_ts.diffusion.bridge_matching_loss`.
    """

    LOSS_KEYS = ("loss_bridge",)

    def __init__(self, model: BridgeScoreModel, am_steps: int = 19, sim_scheme: str = "euler", sim_grid: str = "uniform"):
        self.asbm = ASBM(model.sde, model.control, None, model.net, am_steps=am_steps, sim_scheme=sim_scheme,
                         sim_grid=sim_grid)

    def __call__(self, step: int, total_steps: int, x0: torch.Tensor, cond=None, mask=None, generator=None):
        a0, a1, _ = self.asbm.couplings(x0, cond, True, generator=generator)
        return bridge_matching_loss(self.asbm.sde, self.asbm.score_net, a0, a1, cond, generator=generator).mean(), "bridge"


@dataclass
class ASBMFit:
    """What :func:`fit_asbm` returns.

    Attributes
    ----------
    stage1
        ``{"steps", "passed", "checks"}`` of stage 1 (each check: step,
        errors, top eigenvalues, ``passed``), also stored in the stage-2 checkpoints.
    history1
        Metric rows of stage 1 trained in this call (``stage`` 1; empty when it had ended before).
    result
        The stage-2 :class:`~vsmd_ts.training.FitResult`.
    model
        The trained :class:`BridgeScoreModel` (raw backward weights, EMA control).
    """

    stage1: dict
    history1: List[dict] = field(default_factory=list)
    result: object = None
    model: Optional[BridgeScoreModel] = None


def _stage1_finished(folder: Optional[Path], resume: bool, budget: int, front_end: Optional[str]) -> Optional[dict]:
    """The stage-1 checkpoint in ``folder`` if stage 1 ended there (prior check passed or budget spent), else ``None``."""
    from .checkpoint import load_checkpoint

    if not (resume and folder is not None and (folder / "last.ckpt").is_file()):
        return None
    ckpt = load_checkpoint(folder, front_end=front_end, advice="train without resuming, or in another output folder")
    state = ckpt.get("objective_state", {})
    return ckpt if state.get("passed") or ckpt["global_step"] >= budget else None


def fit_asbm(
    forward: ForwardNets,
    score_net: nn.Module,
    batch_fn: Callable,
    fit_cfg,
    schedule: Stage1Schedule,
    stage1_steps: int,
    stage1_lr: float,
    check_x: torch.Tensor,
    am_sim_steps: int = 19,
    cm_sim_steps: int = 99,
    buffer_size: int = 20000,
    sim_scheme: str = "euler",
    sim_grid: str = "uniform",
    check_batch: Optional[int] = None,
    out: Optional[Union[str, Path]] = None,
    resume: bool = False,
    meta: Optional[dict] = None,
    front_end: Optional[str] = None,
    every: Sequence = (),
) -> ASBMFit:
    """ASBM's two stages, each a :func:`~vsmd_ts.training.fit` of the shared path.

    Stage 1 trains ``forward`` (control and corrector, one AdamW at the
    constant ``stage1_lr``) by :class:`Stage1Objective` for at most
    ``stage1_steps`` steps, ending at the first passed prior check
    (:class:`~vsmd_ts.training.callbacks.PriorCheck` on ``check_x``
    ``(M, *data_shape)``); it writes ``OUT/stage1/last.ckpt`` (``asbm_stage``
    1 in its metadata, the buffer and the checks in its objective state).
    Stage 2 trains ``score_net`` by :class:`Stage2Objective` on the frozen EMA
    control for ``fit_cfg.steps`` steps and writes ``OUT/last.ckpt``
    (``asbm_stage`` 2, the stage-1 record under ``asbm_stage1``). With
    ``resume`` a run continues stage 1 unless it had ended, then stage 2.

    Parameters
    ----------
    forward, score_net
        Stage-1 networks with the base SDE, and the backward noise predictor
        ``(N, K, *data_shape) -> (N, *data_shape)``, with their initial weights.
    batch_fn
        ``batch_fn(step, rank, world) -> x0`` ``(B, *data_shape)`` of both stages.
    fit_cfg
        :class:`~vsmd_ts.training.FitConfig` of stage 2; stage 1 takes it with
        ``stage1_steps``, ``stage1_lr`` and no learning-rate schedule.
    schedule
        :class:`Stage1Schedule` (CM and AM stage lengths, buffer refreshes).
    am_sim_steps, cm_sim_steps, buffer_size, sim_scheme, sim_grid
        Steps of the AM (also stage 2 and the prior check) and CM simulations,
        replay-buffer capacity, integrator and time grid of the simulations
        (:class:`~vsmd_ts.diffusion.ASBM`; ASBM's: Euler-Maruyama, uniform).
    check_batch
        Data points the prior check simulates at once (default: all).
    out, meta, front_end
        Output folder (``None``: write nothing), plain values stored in the
        checkpoints, and the front end whose checkpoints a resume accepts.
    every
        ``(n, fn)`` pairs of stage 2 (:func:`~vsmd_ts.training.fit`).
    """
    from .callbacks import PriorCheck
    from .checkpoint import load_checkpoint, load_weights, state_dicts
    from .run import fit

    out = Path(out) if out is not None else None
    out1 = out / "stage1" if out is not None else None
    meta = dict(meta or {})
    history1: List[dict] = []
    if resume and out is not None and (out / "last.ckpt").is_file():
        # stage 2 under way: its checkpoint holds the frozen control (restored by the fit) and the stage-1 record
        record = dict(load_checkpoint(out, front_end=front_end)["vsmd"]["asbm_stage1"])
    elif (finished := _stage1_finished(out1, resume, stage1_steps, front_end)) is not None:
        load_weights(forward, state_dicts(finished)[0], out1)
        state = finished.get("objective_state", {})
        record = {"steps": finished["global_step"], "passed": bool(state.get("passed")), "checks": state.get("checks", [])}
    else:
        asbm = ASBM(forward.sde, forward.control, forward.corrector, am_steps=am_sim_steps, cm_steps=cm_sim_steps,
                    buffer_size=buffer_size, sim_scheme=sim_scheme, sim_grid=sim_grid)
        objective = Stage1Objective(asbm, forward, schedule)
        cfg1 = replace(fit_cfg, steps=stage1_steps, lr=stage1_lr, lr_schedule="constant", lr_warmup=0)
        check = PriorCheck(objective, check_x, seed=fit_cfg.seed, batch_size=check_batch)
        res1 = fit(forward, batch_fn, cfg1, out=out1, resume=resume, meta={**meta, "asbm_stage": 1},
                   objective=objective, callbacks=[check])
        forward.load_state_dict(res1.ema_model.state_dict())  # stage 2 simulates with the EMA control
        record = {"steps": res1.step, "passed": objective.passed, "checks": objective.checks}
        history1 = [{"stage": 1, **{k: v for k, v in r.items() if v != ""}} for r in res1.history]

    model = BridgeScoreModel(forward.sde, score_net, forward.control)  # the stage-1 control (EMA weights), frozen
    res = fit(model, batch_fn, fit_cfg, out=out, resume=resume, meta={**meta, "asbm_stage": 2, "asbm_stage1": record},
              objective=Stage2Objective(model, am_sim_steps, sim_scheme, sim_grid), every=every)
    return ASBMFit(stage1=record, history1=history1, result=res, model=model)
