"""ASBM's two stages on the shared Lightning path (:func:`vsmd_ts.training.fit`).

The core (:class:`vsmd_ts.diffusion.ASBM`) holds the losses, the replay
buffer, the controlled simulation and the prior check; this module turns
them into objectives of :func:`~vsmd_ts.training.fit`, so each stage is one
Lightning fit with the usual EMA, checkpoints, resume and metrics:

* **stage 1**: :class:`ForwardNets` (base SDE, forward control ``u``,
  corrector ``h``) trained by :class:`Stage1Objective`, corrector matching
  and adjoint matching in alternating stages (CM first) on a replay buffer
  refreshed with couplings simulated by the **EMA** networks (ASBM's
  ``--simulate-ema``). :class:`~vsmd_ts.training.callbacks.PriorCheck` runs
  the prior check of the EMA control after every AM stage and ends the fit
  at the first pass;
* **stage 2**: :class:`BridgeScoreModel` (a :class:`~vsmd_ts.diffusion.ScoreModel`
  carrying the frozen stage-1 control) trained by :class:`Stage2Objective`,
  bridge matching on fresh couplings of the frozen control every step.

Sampling: the backward network alone on the reverse SDE (a
:class:`BridgeScoreModel` is a ``ScoreModel``), or the SB's probability-flow
ODE with both networks through :class:`BridgeFlowScore`.

The front end supplies the SDE, the networks and a batch function. One
process only: the prior check's stop decision is not shared between ranks.
Torch only (no Lightning import), so checkpoints load without Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import nn

from vsmd_ts.diffusion import ASBM, ScoreModel, adjoint_matching_loss, bridge_matching_loss, corrector_matching_loss

__all__ = ["BridgeFlowScore", "BridgeScoreModel", "ForwardNets", "Stage1Objective", "Stage1Schedule", "Stage2Objective"]


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
    is pushed through the simulating networks (``asbm``'s, the EMA copies
    once :meth:`simulate_with` bound them) into the buffer; the loss is the
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
        """Simulate couplings (and run the prior check) with ``nets`` (e.g. the EMA copies)."""
        self.asbm.control, self.asbm.corrector = nets.control, nets.corrector

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

    def __init__(self, model: BridgeScoreModel, am_steps: int = 19):
        self.asbm = ASBM(model.sde, model.control, None, model.net, am_steps=am_steps)

    def __call__(self, step: int, total_steps: int, x0: torch.Tensor, cond=None, mask=None, generator=None):
        a0, a1, _ = self.asbm.couplings(x0, cond, True, generator=generator)
        return bridge_matching_loss(self.asbm.sde, self.asbm.score_net, a0, a1, cond, generator=generator).mean(), "bridge"
