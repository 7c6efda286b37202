"""Adjoint Schroedinger Bridge Matching (ASBM; Shin et al. 2026) on the package's linear base SDEs.

Time runs from the data (``t = 0``) to the prior (``t = T``, 1 in the paper).
The base (reference) SDE is any :class:`~vsmd_ts.diffusion.sde.LinearSDE`,
``da = f dt + g e_K dw`` with ``f = beta F a`` and ``g^2 = beta q``; the
prior is ``nu ~ exp(-E)``, known through ``grad E`` only (default
``E(a) = |a|^2 / 2``, i.e. ``N(0, I)`` on every channel).

**Stage 1** (ASBS run from the data to the energy prior) learns a forward
control ``u(a, t)`` on the last channel of the controlled SDE::

    da = [beta F a + g^2 e_K u(a, t)] dt + g e_K dw,      a_0 = (x_0[, v_0 ~ N(0, 1)]),

by alternating

* **adjoint matching** (ASBS eq. 14, reciprocal form): with endpoints
  ``(a_0, a_1)`` simulated under the frozen control, ``a_t`` from the base
  bridge and the terminal adjoint ``a~_1 = clip(grad E(a_1)) + h(a_1)``,
  ``|u(a_t, t) + (Phi(1, t)^T a~_1)_K|^2`` (unit weight: the drift carries
  ``g^2 u``, so ``u* = -E[a~_t,K | a_t]``, the same minimiser as ASBS's
  ``sigma v`` parametrisation);
* **corrector matching** (ASBS eq. 15): ``|h(a_1) - grad_{a_1} log p(a_1 | a_0)|^2``
  on all K channels, ``h`` evaluated at ``t = T``.

**Stage 2** (bridge matching, DSBM's backward loss) fits a noise predictor
on base-bridge samples between simulated endpoints with the target
``eps* = L_KK(t) e_K^T Sigma(t, 0)^{-1} (a_t - Phi(t, 0) a_0)``: minus ``L_KK``
times the last channel of the base conditional score. Its minimiser gives
``-eps/L_KK = grad log phi_hat_t``, the SB's backward drift correction, so
the reverse SDE ``da = [f - g^2 s] dt + g dw_bar`` of the package's samplers
samples the SB with this ``s``. For a plain transition draw ``a_t = Phi a_0 + L eps``
the target is ``eps_K`` exactly: :class:`~vsmd_ts.diffusion.losses.DSMLoss`
is the independent-coupling special case.

Momentum SDEs: ``v_0 ~ N(0, 1)`` is drawn and conditioned on (the coupling
is over full states); the control and the noise act on ``v`` only and the
adjoint carries ``grad_x`` into ``v`` through ``F^T``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Optional

import torch
from torch import nn

from .bridge import bridge_sample, conditional_score, propagate_adjoint
from .linalg import apply_block
from .losses import sample_times
from .nets import ScoreModel
from .samplers import SamplerOutput, _on_last, get_sampler, time_grid
from .sde import LinearSDE

__all__ = [
    "ASBM",
    "ReplayBuffer",
    "SIM_GRIDS",
    "SIM_SCHEMES",
    "adjoint_matching_loss",
    "bridge_matching_loss",
    "bridge_noise_target",
    "check_simulation",
    "corrector_matching_loss",
    "prior_check",
    "simulate_controlled",
    "simulation_grid",
    "source_state",
    "standard_normal_energy_grad",
    "terminal_adjoint",
]

# reverse-SDE samplers only: the SB's probability-flow ODE needs the forward control as well
REVERSE_SDE_SAMPLERS = ("euler_maruyama", "em", "splitting", "sde_pc2")


def standard_normal_energy_grad(a: torch.Tensor) -> torch.Tensor:
    """``grad E`` for ``E(a) = |a|^2 / 2``: the prior ``N(0, I)`` on every channel."""
    return a


def source_state(sde: LinearSDE, x0: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Start state ``a_0`` ``(N, K, *data_shape)``: the data, and ``v_0 ~ N(0, 1)`` drawn for momentum SDEs."""
    sde._check_data(x0)
    if sde.num_channels == 1:
        return x0.unsqueeze(1)
    v0 = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return torch.stack([x0, v0], dim=1)


SIM_SCHEMES = ("euler", "heun")
SIM_GRIDS = ("uniform", "quadratic")


def check_simulation(scheme: str, grid: str, names=("scheme", "grid")) -> None:
    """``ValueError`` unless ``scheme`` is in :data:`SIM_SCHEMES` and ``grid`` in :data:`SIM_GRIDS`; ``names``: the
    options as the caller calls them, for the message."""
    for name, value, allowed in zip(names, (scheme, grid), (SIM_SCHEMES, SIM_GRIDS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def simulation_grid(sde: LinearSDE, steps: int, grid: str = "uniform", device=None) -> torch.Tensor:
    """Times ``0 = t_0 < ... < t_steps = T`` (float64) of the forward simulation.

    ``"uniform"``: ASBM's ``linspace(0, T)``. ``"quadratic"``:
    ``t_i = T (1 - (1 - i / steps)^2)``, steps shrinking linearly towards
    ``T``, where a control that pulls wide data into the prior is strongest
    (its gain ``g^2 |du/da|`` grows like ``1 / (T - t)`` for a sharp terminal cost).
    """
    if grid not in SIM_GRIDS:
        raise ValueError(f"grid must be one of {', '.join(SIM_GRIDS)}, got {grid!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = torch.linspace(0.0, 1.0, int(steps) + 1, dtype=torch.float64, device=device)
    return sde.T * (u if grid == "uniform" else 1 - (1 - u) ** 2)


def simulate_controlled(
    sde: LinearSDE,
    control: Optional[Callable],
    a0: torch.Tensor,
    steps: int = 20,
    cond=None,
    generator: Optional[torch.Generator] = None,
    scheme: str = "euler",
    grid: str = "uniform",
):
    """Simulate the controlled forward SDE from ``a_0`` at ``t = 0`` to ``T``.

    ``da = [beta F a + g^2 e_K u(a, t, cond)] dt + g e_K dw``, noise on every step.

    Parameters
    ----------
    control
        ``u(a, t, cond) -> (N, *data_shape)``; ``None`` simulates the base SDE.
    a0
        Start states ``(N, K, *data_shape)``.
    steps
        Number of steps (ASBM's ``forward_nfe`` grid has ``steps + 1`` points).
    scheme
        ``"euler"``: Euler-Maruyama (ASBM's). ``"heun"``: stochastic Heun for
        additive noise (the drift averaged over an Euler predictor with the
        same noise increment, the noise variance ``h (g^2(t) + g^2(t + h)) / 2``),
        two control calls per step. Its weak error is ``O(h^2)`` where
        Euler-Maruyama's is ``O(h)``, which matters once the control is stiff:
        a control with gain ``k`` inflates Euler-Maruyama's stationary
        variance by ``1 / (1 - k h / 2)``.
    grid
        :func:`simulation_grid`: ``"uniform"`` or ``"quadratic"`` (finer near ``T``).

    Returns
    -------
    ``(a_1, nfe)``: end states ``(N, K, *data_shape)`` and the control calls per path.
    """
    check_simulation(scheme, grid)
    ts = simulation_grid(sde, steps, grid).tolist()
    a, nfe = a0, 0

    def g2_at(t: float):
        tt = torch.full((a.shape[0],), t, device=a.device, dtype=a.dtype)
        return tt, sde.per_sample(sde.beta(tt) * sde.noise_var, a[:, -1])

    def velocity(state: torch.Tensor, tt: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        drift = sde.drift(state, tt)
        if control is not None:
            drift = drift + _on_last(sde, g2 * control(state, tt, cond), state)
            nfe += 1
        return drift

    for t0, t1 in zip(ts[:-1], ts[1:]):
        h = t1 - t0
        tt0, g2_0 = g2_at(t0)
        v0 = velocity(a, tt0, g2_0)
        noise = torch.randn(a[:, -1].shape, generator=generator, device=a.device, dtype=a.dtype)
        if scheme == "euler":
            a = a + h * v0 + _on_last(sde, (g2_0 * h).sqrt() * noise, a)
            continue
        tt1, g2_1 = g2_at(t1)
        dw = _on_last(sde, (0.5 * (g2_0 + g2_1) * h).sqrt() * noise, a)
        pred = a + h * v0 + dw
        a = a + 0.5 * h * (v0 + velocity(pred, tt1, g2_1)) + dw
    return a, nfe


def terminal_adjoint(
    a1: torch.Tensor,
    energy_grad: Callable = standard_normal_energy_grad,
    corrector: Optional[Callable] = None,
    cond=None,
    max_norm: Optional[float] = 100.0,
    T: float = 1.0,
) -> torch.Tensor:
    """``a~_1 = clip(grad E(a_1)) + h(a_1)``: the gradient of ASBS's corrected terminal cost.

    ``grad E`` is clipped to norm ``max_norm`` per sample (ASBM clips over
    the last axis, an implementation accident; ``None``: no clipping).
    ``corrector`` ``h(a, t, cond) -> (N, K, *data_shape)`` is evaluated at ``t = T``;
    ``None`` is ``h = 0``. Shape ``(N, K, *data_shape)``.
    """
    grad = energy_grad(a1)
    if max_norm is not None:
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        grad = grad * (max_norm / norm).clamp(max=1.0).reshape((-1,) + (1,) * (grad.dim() - 1))
    if corrector is not None:
        grad = grad + corrector(a1, torch.full((a1.shape[0],), T, device=a1.device, dtype=a1.dtype), cond)
    return grad


def adjoint_matching_loss(
    sde: LinearSDE,
    control: Callable,
    a0: torch.Tensor,
    a1: torch.Tensor,
    adj1: torch.Tensor,
    cond=None,
    t: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Reciprocal adjoint-matching loss (ASBS eq. 14), per element ``(N, *data_shape)``.

    ``|u(a_t, t) + (Phi(T, t)^T a~_1)_K|^2`` with ``a_t`` from the base bridge
    between ``a0`` and ``a1`` (``(N, K, *data_shape)``, simulated under the
    frozen control) and the terminal adjoint ``adj1`` (:func:`terminal_adjoint`).
    ``t`` ``(N,)``: uniform in ``[eps, T]`` (stratified) when omitted.
    """
    if t is None:
        t = sample_times(sde, a0.shape[0], a0.device, generator)
    a_t = bridge_sample(sde, a0, a1, t, generator)
    target = -propagate_adjoint(sde, adj1, t)[:, -1]
    return (control(a_t, t, cond) - target) ** 2


def corrector_matching_loss(sde: LinearSDE, corrector: Callable, a0: torch.Tensor, a1: torch.Tensor, cond=None) -> torch.Tensor:
    """Corrector-matching loss (ASBS eq. 15), per element ``(N, K, *data_shape)``.

    ``|h(a_1, T) - grad_{a_1} log p(a_1 | a_0)|^2`` with ``grad_{a_1} log p(a_1 | a_0)
    = -Sigma(T, 0)^{-1} (a_1 - Phi(T, 0) a_0)`` of the base, on all channels.
    """
    T = torch.full((a1.shape[0],), sde.T, device=a1.device, dtype=a1.dtype)
    target = conditional_score(sde, a0, a1, T)
    return (corrector(a1, T, cond) - target) ** 2


def bridge_noise_target(sde: LinearSDE, a0: torch.Tensor, a_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Stage-2 target ``eps* = -L_KK(t) (grad_{a_t} log p(a_t | a_0))_K``, ``(N, *data_shape)``.

    ``L_KK`` is :meth:`LinearSDE.noise_scale`, the scale the score model
    divides by, so ``s = -net / L_KK`` regresses onto the base conditional
    score. For ``a_t = Phi(t, 0) a_0 + L eps`` it equals ``eps_K`` (the last
    row of ``L^{-T}`` is ``e_K^T / L_KK``) when the SDE conditions on the
    full ``a_0`` (VP/VSDM, momentum with ``initial_velocity="sample"``).
    """
    score = conditional_score(sde, a0, a_t.double(), t)[:, -1]
    return (-sde.noise_scale(t).to(score.device, torch.float64) * score).to(a_t.dtype)


def bridge_matching_loss(
    sde: LinearSDE,
    net: Callable,
    a0: torch.Tensor,
    a1: torch.Tensor,
    cond=None,
    t: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    a_t: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Backward bridge-matching loss of ASBM's stage 2, per element ``(N, *data_shape)``.

    ``|net(a_t, t, cond) - eps*|^2`` (:func:`bridge_noise_target`) with
    ``a_t`` drawn from the base bridge between the coupled endpoints ``a0``,
    ``a1`` ``(N, K, *data_shape)`` unless given; ``t`` uniform in ``[eps, T]``
    (stratified) when omitted. DSM weighting, as ASBM's ``ScoreMatcher``.
    """
    if t is None:
        t = sample_times(sde, a0.shape[0], a0.device, generator)
    if a_t is None:
        a_t = bridge_sample(sde, a0, a1, t, generator)
    return (net(a_t, t, cond) - bridge_noise_target(sde, a0, a_t, t)) ** 2


@contextmanager
def _eval_mode(*nets):
    """Run ``nets`` (modules or plain callables) in eval mode, then restore their modes.

    Simulated couplings are draws of the frozen SDE: dropout must not perturb them.
    """
    modules = [n for n in nets if isinstance(n, nn.Module)]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


class ReplayBuffer:
    """FIFO of the most recent ``capacity`` couplings, one tensor per field (``a0``, ``a1``, ``adj1``, ``cond``).

    Every field has the batch on its first axis; :meth:`sample` draws rows
    uniformly with replacement.
    """

    def __init__(self, capacity: int = 20000):
        if int(capacity) < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.data: Dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return 0 if not self.data else next(iter(self.data.values())).shape[0]

    def clear(self) -> None:
        self.data = {}

    def add(self, **fields: torch.Tensor) -> None:
        fields = {k: v.detach() for k, v in fields.items() if v is not None}
        if self.data and set(fields) != set(self.data):
            raise ValueError(f"buffer holds fields {sorted(self.data)}, got {sorted(fields)}")
        sizes = {v.shape[0] for v in fields.values()}
        if len(sizes) != 1:
            raise ValueError(f"fields must share their first dimension, got sizes {sorted(sizes)}")
        for k, v in fields.items():
            self.data[k] = v if k not in self.data else torch.cat([self.data[k], v])[-self.capacity :]
        if len(self) > self.capacity:
            self.data = {k: v[-self.capacity :] for k, v in self.data.items()}

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        if not self.data:
            raise RuntimeError("the buffer is empty: add couplings first")
        idx = torch.randint(len(self), (int(n),), generator=generator)
        return {k: v[idx.to(v.device)] for k, v in self.data.items()}


@torch.no_grad()
def prior_check(a1: torch.Tensor, prior_samples: Optional[torch.Tensor] = None, tol: float = 0.08) -> Dict[str, float]:
    """Compare stage-1 endpoints ``a1`` ``(N, K, *data_shape)`` with the prior (ASBM's model selection).

    ``prior_samples`` (same shape; ``N(0, I)`` draws when omitted) give the
    reference top eigenvalue at the same sample size. Returns the largest
    absolute error of the mean and of the covariance against the prior's,
    the top eigenvalues, the relative errors of mean and variance of
    ``|a_1|^2`` and ``passed``: top eigenvalue not above the prior's and both
    relative errors below ``tol`` (ASBM's rule, threshold 0.08).
    """
    X = a1.flatten(1).double()
    Y = torch.randn_like(X) if prior_samples is None else prior_samples.flatten(1).double()
    cx, cy = torch.cov(X.T).reshape(X.shape[1], X.shape[1]), torch.cov(Y.T).reshape(Y.shape[1], Y.shape[1])
    sx, sy = (X * X).sum(1), (Y * Y).sum(1)
    out = {
        "mean_err": float((X.mean(0) - Y.mean(0)).abs().max()),
        "cov_err": float((cx - cy).abs().max()),
        "top_eig": float(torch.linalg.eigvalsh(cx)[-1]),
        "prior_top_eig": float(torch.linalg.eigvalsh(cy)[-1]),
        "sq_norm_mean_rel_err": float((sx.mean() - sy.mean()).abs() / sy.mean()),
        "sq_norm_var_rel_err": float((sx.var() - sy.var()).abs() / sy.var()),
    }
    out["passed"] = bool(
        out["top_eig"] <= out["prior_top_eig"] and out["sq_norm_mean_rel_err"] < tol and out["sq_norm_var_rel_err"] < tol
    )
    return out


class ASBM:
    """ASBM's two stages on a linear base SDE, in plain torch.

    Stage 1 alternates stages ``"cm"`` and ``"am"`` (CM first, as ASBM's
    ``--init-stage bridge``): :meth:`start_stage` clears the buffer,
    :meth:`refresh` adds couplings simulated with the frozen networks and
    :meth:`stage1_step` takes one optimiser step on the stage's loss. The
    first CM stage, before any AM stage, simulates the uncontrolled base
    (exactly, by its transition); AM stages use ``h = 0`` until a CM stage
    has trained the corrector. Stage 2 (:meth:`stage2_step`) trains the
    backward noise predictor on fresh couplings of the frozen control.

    Parameters
    ----------
    sde
        Base SDE (e.g. ``make_sde("vp", shape, beta=4.0)``, ASBM's non-memoryless base).
    control
        ``u(a, t, cond) -> (N, *data_shape)``, the forward control on the last channel.
    corrector
        ``h(a, t, cond) -> (N, K, *data_shape)``, evaluated at ``t = T``.
    score_net
        Backward noise predictor ``net(a, t, cond) -> (N, *data_shape)``; the
        score is ``-net / L_KK`` (:class:`~vsmd_ts.diffusion.nets.ScoreModel`).
    energy_grad
        ``grad E`` of the prior's energy; default ``N(0, I)``.
    max_energy_grad_norm
        Per-sample clip of ``grad E`` (ASBM: 100); ``None`` disables it.
    am_steps, cm_steps
        Steps of the forward simulations for AM and CM buffers (ASBM's
        CIFAR-10 grids: 20 and 100 points) and for stage 2 and the prior check (``am_steps``).
    buffer_size
        Capacity of the replay buffer (ASBM: 20,000).
    sim_scheme, sim_grid
        Integrator and time grid of every forward simulation
        (:func:`simulate_controlled`; ASBM: ``"euler"`` on the ``"uniform"`` grid).
    """

    def __init__(
        self,
        sde: LinearSDE,
        control: nn.Module,
        corrector: nn.Module,
        score_net: Optional[nn.Module] = None,
        energy_grad: Callable = standard_normal_energy_grad,
        max_energy_grad_norm: Optional[float] = 100.0,
        am_steps: int = 19,
        cm_steps: int = 99,
        buffer_size: int = 20000,
        sim_scheme: str = "euler",
        sim_grid: str = "uniform",
    ):
        check_simulation(sim_scheme, sim_grid, ("sim_scheme", "sim_grid"))
        self.sde, self.control, self.corrector, self.score_net = sde, control, corrector, score_net
        self.sim_scheme, self.sim_grid = sim_scheme, sim_grid
        self.energy_grad, self.max_energy_grad_norm = energy_grad, max_energy_grad_norm
        self.am_steps, self.cm_steps = int(am_steps), int(cm_steps)
        self.buffer = ReplayBuffer(buffer_size)
        self.stage: Optional[str] = None
        self.control_trained = False
        self.corrector_trained = False

    # ------------------------------------------------------------- couplings
    @torch.no_grad()
    def couplings(self, x0: torch.Tensor, cond=None, controlled: bool = True, steps: Optional[int] = None,
                  generator: Optional[torch.Generator] = None):
        """Endpoints ``(a_0, a_1)`` ``(N, K, *data_shape)`` from data ``x0`` ``(N, *data_shape)``.

        ``controlled=False`` draws ``a_1`` from the exact base transition.
        Returns ``(a0, a1, nfe)`` with ``nfe`` control calls per path.
        """
        a0 = source_state(self.sde, x0, generator)
        if not controlled:
            tr = self.sde.transition(self.sde.T, s=0.0)
            noise = torch.randn(a0.shape, generator=generator, device=a0.device, dtype=a0.dtype)
            a1 = apply_block(tr.mean_coef.to(a0.device), a0.double()) + apply_block(tr.chol.to(a0.device), noise.double())
            return a0, a1.to(a0.dtype), 0
        with _eval_mode(self.control):
            a1, nfe = simulate_controlled(self.sde, self.control, a0, steps or self.am_steps, cond, generator,
                                          self.sim_scheme, self.sim_grid)
        return a0, a1, nfe

    # --------------------------------------------------------------- stage 1
    def start_stage(self, stage: str) -> None:
        """Switch to ``"am"`` or ``"cm"``; the buffer is cleared (as ASBM does at every switch)."""
        if stage not in ("am", "cm"):
            raise ValueError(f"stage must be 'am' or 'cm', got {stage!r}")
        self.stage = stage
        self.buffer.clear()

    @torch.no_grad()
    def refresh(self, x0: torch.Tensor, cond=None, generator: Optional[torch.Generator] = None) -> int:
        """Simulate couplings from ``x0`` with the frozen networks and add them to the buffer.

        AM stores ``(a0, a1, adj1)`` with ``adj1`` from :func:`terminal_adjoint`;
        CM stores ``(a0, a1)``. Returns the control calls per path.
        """
        if self.stage is None:
            raise RuntimeError("call start_stage('cm') or start_stage('am') first")
        if self.stage == "am":
            a0, a1, nfe = self.couplings(x0, cond, True, self.am_steps, generator)
            with _eval_mode(self.corrector):
                adj1 = terminal_adjoint(a1, self.energy_grad, self.corrector if self.corrector_trained else None, cond,
                                        self.max_energy_grad_norm, self.sde.T)
            self.buffer.add(a0=a0, a1=a1, adj1=adj1, cond=cond if torch.is_tensor(cond) else None)
        else:
            a0, a1, nfe = self.couplings(x0, cond, self.control_trained, self.cm_steps, generator)
            self.buffer.add(a0=a0, a1=a1, cond=cond if torch.is_tensor(cond) else None)
        return nfe

    def stage1_step(self, optimizer: torch.optim.Optimizer, batch_size: int = 128,
                    generator: Optional[torch.Generator] = None, max_grad_norm: Optional[float] = None) -> float:
        """One optimiser step of the current stage's loss (AM on ``control``, CM on ``corrector``) on a buffer batch."""
        batch = self.buffer.sample(batch_size, generator)
        cond = batch.get("cond")
        if self.stage == "am":
            net = self.control
            loss = adjoint_matching_loss(self.sde, net, batch["a0"], batch["a1"], batch["adj1"], cond, generator=generator)
            self.control_trained = True
        else:
            net = self.corrector
            loss = corrector_matching_loss(self.sde, net, batch["a0"], batch["a1"], cond)
            self.corrector_trained = True
        loss = loss.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
        optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def check_prior(self, x0: torch.Tensor, cond=None, steps: Optional[int] = None, prior_samples=None,
                    generator: Optional[torch.Generator] = None, tol: float = 0.08,
                    batch_size: Optional[int] = None) -> Dict[str, float]:
        """:func:`prior_check` of the controlled endpoints simulated from ``x0`` ``(M, *data_shape)``.

        ``batch_size``: data points simulated at once (default: all ``M``;
        images need chunks, ASBM checks up to 51 200 of them).
        """
        size = x0.shape[0] if batch_size is None else int(batch_size)
        chunks = []
        for i in range(0, x0.shape[0], size):
            c = cond[i : i + size] if torch.is_tensor(cond) else cond
            chunks.append(self.couplings(x0[i : i + size], c, True, steps, generator)[1])
        return prior_check(torch.cat(chunks), prior_samples, tol)

    # --------------------------------------------------------------- stage 2
    def stage2_step(self, x0: torch.Tensor, optimizer: torch.optim.Optimizer, cond=None,
                    generator: Optional[torch.Generator] = None, steps: Optional[int] = None) -> float:
        """One step of bridge matching for ``score_net`` on fresh couplings of the frozen control."""
        if self.score_net is None:
            raise RuntimeError("ASBM was built without a score_net")
        a0, a1, _ = self.couplings(x0, cond, True, steps, generator)
        loss = bridge_matching_loss(self.sde, self.score_net, a0, a1, cond, generator=generator).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    # -------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, num: Optional[int] = None, steps: int = 100, sampler: str = "euler_maruyama", a1=None, cond=None,
               generator: Optional[torch.Generator] = None, device=None) -> SamplerOutput:
        """Reverse SDE from the prior with the backward network only (``nfe`` = its calls per sample).

        ``a1``: prior draws ``(N, K, *data_shape)``; ``N(0, I)`` draws of
        ``num`` states when omitted (the default energy's prior).
        """
        if sampler.lower() not in REVERSE_SDE_SAMPLERS:
            raise ValueError(f"ASBM samples the reverse SDE; choose one of {', '.join(REVERSE_SDE_SAMPLERS)}")
        if a1 is None:
            shape = (int(num), self.sde.num_channels) + self.sde.data_shape
            a1 = torch.randn(shape, generator=generator, device=device)
        ts = time_grid(self.sde, steps, device=a1.device)
        return get_sampler(sampler)(ScoreModel(self.sde, self.score_net), self.sde, a1, ts, cond, generator)
