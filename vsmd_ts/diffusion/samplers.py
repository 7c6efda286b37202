"""Samplers for the reverse-time dynamics of any :class:`LinearSDE`.

Every sampler has the same signature::

    sampler(score_fn, sde, a, ts, cond=None, generator=None, callback=None, progress=False)
        -> SamplerOutput(state, nfe)

``score_fn(a, t, cond)`` returns the score of the last channel, shape
``(N, *data_shape)`` (see :class:`vsmd_ts.diffusion.nets.ScoreModel`), ``a`` is
the prior draw ``(N, K, *data_shape)`` at ``ts[0]``, and ``ts`` a decreasing
grid of times ending at ``sde.eps`` (:func:`time_grid`). ``callback(i, t, a,
score)`` is called at every grid point before the step, e.g. to record
trajectories. ``nfe`` counts score evaluations per sample: read it from the
output rather than guessing it from the sampler's name.

Deterministic samplers of the probability-flow ODE: ``heun`` (2 calls per
step), ``exp_heun`` (2, stationary linear part exact) and the exponential
multistep family ``exp_pc3`` / ``exp_ab3`` / ``exp_ab2`` (1 call per step;
time-dependent linear part exact, see :func:`exp_multistep`). Stochastic
(reverse SDE): ``euler_maruyama``, ``splitting`` and ``sde_pc2`` (the
exponential multistep predictor-corrector on the reverse SDE, its linear part
and noise exact), 1 call per step.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from tqdm.auto import tqdm

from .expint import multistep_plan
from .linalg import apply_block, cholesky_block, expm_block, lyapunov_integral, transpose_block
from .sde import LinearSDE

__all__ = [
    "SAMPLERS",
    "SamplerOutput",
    "euler_maruyama",
    "exp_ab2",
    "exp_ab3",
    "exp_heun",
    "exp_multistep",
    "exp_pc3",
    "get_sampler",
    "heun",
    "pf_drift",
    "sde_pc2",
    "splitting",
    "time_grid",
]


class SamplerOutput(NamedTuple):
    state: torch.Tensor  # (N, K, *data_shape) at ts[-1] (at t = 0 for the exp_multistep family)
    nfe: int  # score evaluations per sample

    @property
    def x(self) -> torch.Tensor:
        """The data channel, ``(N, *data_shape)``."""
        return self.state[:, 0]


def time_grid(sde: LinearSDE, steps: int, rho: float = 1.0, device=None, spacing: str = "power") -> torch.Tensor:
    """Decreasing grid ``T = t_0 > ... > t_steps = eps``.

    ``spacing="power"``: ``t_i = eps + (T - eps) (1 - i / steps)^rho``;
    ``rho = 1`` is the uniform grid of the paper, ``rho > 1`` puts more steps
    near the data (``rho = 1.5`` is the recommended grid for
    :func:`exp_pc3`, see ``benchmarks/results_samplers.md``).
    ``spacing="log"``: uniform in ``log t`` (``rho`` is ignored).
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    u = torch.linspace(0, 1, int(steps) + 1, dtype=torch.float64, device=device)
    if spacing == "log":
        return (sde.T * (sde.eps / sde.T) ** u).to(torch.float32)
    if spacing != "power":
        raise ValueError(f"spacing must be 'power' or 'log', got {spacing!r}")
    return (sde.eps + (sde.T - sde.eps) * (1 - u) ** rho).to(torch.float32)


def _batch_time(t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return t.to(a.device).expand(a.shape[0])


def _on_last(sde: LinearSDE, value: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Embed a last-channel quantity ``(N, *data_shape)`` into the state shape."""
    out = torch.zeros_like(a)
    out[:, -1] = value
    return out


def pf_drift(sde: LinearSDE, a: torch.Tensor, t: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Forward-time velocity of the probability-flow ODE, ``f(a, t) - g^2/2 s``."""
    g2 = sde.per_sample(sde.beta(t) * sde.noise_var, a[:, -1])
    return sde.drift(a, t) - _on_last(sde, 0.5 * g2 * score, a)


def _reverse_drift(sde: LinearSDE, a, t, score):
    """Drift of the reverse SDE in reverse time ``tau = T - t``: ``-f + g^2 s``."""
    g2 = sde.per_sample(sde.beta(t) * sde.noise_var, a[:, -1])
    return -sde.drift(a, t) + _on_last(sde, g2 * score, a)


def _steps(ts, progress, desc):
    return tqdm(range(len(ts) - 1), desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def heun(
    score_fn: Callable,
    sde: LinearSDE,
    a: torch.Tensor,
    ts: torch.Tensor,
    cond=None,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
    progress: bool = False,
) -> SamplerOutput:
    """Heun's 2nd-order method on the probability-flow ODE (the paper's sampler)."""
    nfe = 0
    for i in _steps(ts, progress, "heun"):
        t, t_next = ts[i], ts[i + 1]
        s = score_fn(a, _batch_time(t, a), cond)
        if callback is not None:
            callback(i, t, a, s)
        d = pf_drift(sde, a, t, s)
        h = t_next - t
        a_euler = a + h * d
        s_next = score_fn(a_euler, _batch_time(t_next, a), cond)
        a = a + 0.5 * h * (d + pf_drift(sde, a_euler, t_next, s_next))
        nfe += 2
    return SamplerOutput(a, nfe)


@torch.no_grad()
def euler_maruyama(
    score_fn: Callable,
    sde: LinearSDE,
    a: torch.Tensor,
    ts: torch.Tensor,
    cond=None,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
    progress: bool = False,
) -> SamplerOutput:
    """Euler-Maruyama on the reverse SDE (eq. 12); no noise on the last step."""
    nfe = 0
    n = len(ts) - 1
    for i in _steps(ts, progress, "euler-maruyama"):
        t, t_next = ts[i], ts[i + 1]
        s = score_fn(a, _batch_time(t, a), cond)
        nfe += 1
        if callback is not None:
            callback(i, t, a, s)
        dtau = t - t_next
        a = a + dtau * _reverse_drift(sde, a, t, s)
        if i < n - 1:
            g = sde.diffusion(t).to(a.dtype).to(a.device)
            noise = torch.randn(a[:, -1].shape, generator=generator, device=a.device, dtype=a.dtype)
            a = a + _on_last(sde, g * dtau.sqrt() * noise, a)
    return SamplerOutput(a, nfe)


def _stationary_parts(sde: LinearSDE):
    """``(F, Sigma_inf, last row of Sigma_inf^{-1})``, float64 blocks, computed once per sampling run."""
    F = sde.drift_matrix().to(torch.float64)
    Sinf = sde.stationary_cov().to(F.device)
    return F, Sinf, torch.linalg.inv(Sinf)


def _stationary_precision_last(Sinf_inv: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``(Sigma_inf^{-1} a)`` on the last channel, i.e. minus the stationary score there."""
    row = Sinf_inv[..., -1, :].to(a.device, a.dtype)
    return sum(row[..., j] * a[:, j] for j in range(a.shape[1]))


def _reverse_ou_step(sde: LinearSDE, a: torch.Tensor, Fr, Sinf, t_from, t_to, generator):
    """Exact step of the linear part of the reverse SDE, from ``t_from`` down to ``t_to``.

    The reverse SDE is split as ``-f + g^2 s_inf`` plus ``g^2 (s - s_inf)`` with
    the stationary score ``s_inf = -Sigma_inf^{-1} a``. The first part is the
    linear SDE with drift block ``F_r = Sigma_inf F^T Sigma_inf^{-1}`` that
    keeps ``N(0, Sigma_inf)`` invariant; its Gaussian transition is exact.
    """
    Q = sde.noise_block(Fr.device)
    b = torch.as_tensor(sde.beta_int(torch.as_tensor(t_from, dtype=torch.float64)) - sde.beta_int(torch.as_tensor(t_to, dtype=torch.float64)))
    Phi = expm_block(Fr * b)
    L = cholesky_block(lyapunov_integral(Fr, Q, b, Sinf))
    noise = torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype)
    return apply_block(Phi.to(a.device), a) + apply_block(L.to(a.device), noise)


@torch.no_grad()
def splitting(
    score_fn: Callable,
    sde: LinearSDE,
    a: torch.Tensor,
    ts: torch.Tensor,
    cond=None,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
    progress: bool = False,
) -> SamplerOutput:
    """Symmetric splitting of the reverse SDE (SSCS-like, one score call per step).

    Exact half step of the linear Gaussian part, a full Euler kick with the
    residual score ``g^2 (s - s_inf)`` at the midpoint, and another exact half
    step. The linear part uses the learned ``A`` through ``F``.
    """
    nfe = 0
    F, Sinf, Sinf_inv = _stationary_parts(sde)
    Fr = Sinf @ transpose_block(F) @ Sinf_inv
    for i in _steps(ts, progress, "splitting"):
        t, t_next = ts[i], ts[i + 1]
        t_mid = 0.5 * (t + t_next)
        if callback is not None:
            callback(i, t, a, None)
        a = _reverse_ou_step(sde, a, Fr, Sinf, t, t_mid, generator)
        s = score_fn(a, _batch_time(t_mid, a), cond)
        nfe += 1
        g2 = sde.beta(t_mid).to(a.device, a.dtype) * sde.noise_var
        residual = s + _stationary_precision_last(Sinf_inv, a)
        a = a + _on_last(sde, (t - t_next) * g2 * residual, a)
        a = _reverse_ou_step(sde, a, Fr, Sinf, t_mid, t_next, generator)
    return SamplerOutput(a, nfe)


def _phi_blocks(L: torch.Tensor, h: torch.Tensor):
    """``e^{hL}``, ``h phi_1(hL)`` and ``h phi_2(hL)`` for K x K blocks ``L`` (float64).

    From one exponential of the augmented block matrix
    ``[[hL, hI, 0], [0, 0, I], [0, 0, 0]]`` (Van Loan / Higham's trick);
    blocks are per coordinate, so this costs nothing per sample.
    """
    K = L.shape[-1]
    eye = torch.eye(K, dtype=L.dtype, device=L.device).expand_as(L)
    zero = torch.zeros_like(L)
    M = torch.cat(
        [
            torch.cat([h * L, h * eye, zero], -1),
            torch.cat([zero, zero, eye], -1),
            torch.cat([zero, zero, zero], -1),
        ],
        -2,
    )
    E = torch.linalg.matrix_exp(M)
    return E[..., :K, :K], E[..., :K, K : 2 * K], E[..., :K, 2 * K :]


@torch.no_grad()
def exp_heun(
    score_fn: Callable,
    sde: LinearSDE,
    a: torch.Tensor,
    ts: torch.Tensor,
    cond=None,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
    progress: bool = False,
) -> SamplerOutput:
    """Exponential Heun (ETD2RK) on the probability-flow ODE.

    In integrated time ``B = int beta`` the PF-ODE is
    ``da/dB = L a + N(a)`` with the constant linear part
    ``L = F + Q Sigma_inf^{-1} / 2`` (the PF-ODE of the stationary Gaussian;
    for the momentum SDEs a pure rotation) and the residual
    ``N = -Q (s - s_inf) / 2``. The linear part is integrated exactly, the
    residual by a Heun-type correction, so few steps suffice when the data
    are close to the stationary law. Two score calls per step.
    """
    F, _, Sinf_inv = _stationary_parts(sde)
    L = F + 0.5 * sde.noise_block(F.device) @ Sinf_inv

    def residual(state, score):
        # N on the last channel: -q/2 (s - s_inf)
        return _on_last(sde, -0.5 * sde.noise_var * (score + _stationary_precision_last(Sinf_inv, state)), state)

    nfe = 0
    B = sde.beta_int(ts.to(torch.float64))
    for i in _steps(ts, progress, "exp-heun"):
        t, t_next = ts[i], ts[i + 1]
        h = (B[i + 1] - B[i]).to(F.device)
        E, P1, P2 = (x.to(a.device) for x in _phi_blocks(L, h))
        s = score_fn(a, _batch_time(t, a), cond)
        if callback is not None:
            callback(i, t, a, s)
        N0 = residual(a, s)
        a_pred = apply_block(E, a) + apply_block(P1, N0)
        N1 = residual(a_pred, score_fn(a_pred, _batch_time(t_next, a), cond))
        a = a_pred + apply_block(P2, N1 - N0)
        nfe += 2
    return SamplerOutput(a, nfe)


@torch.no_grad()
def exp_multistep(
    score_fn: Callable,
    sde: LinearSDE,
    a: torch.Tensor,
    ts: torch.Tensor,
    cond=None,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
    progress: bool = False,
    order: int = 3,
    corrector: bool = True,
    stochastic: bool = False,
) -> SamplerOutput:
    """Exponential multistep predictor(-corrector) on the PF-ODE or the reverse SDE, one score call per step.

    The PF-ODE is split as in :func:`vsmd_ts.diffusion.expint.reference_pf`: its linear part, the
    exact PF-ODE of standardised Gaussian data, is integrated exactly
    (including its time dependence and the momentum rotation), and the
    reference-denoised value ``z`` is interpolated by a polynomial in
    ``log(t + eps)`` through the last ``order`` score calls (exponential
    Adams-Bashforth, as in DPM-Solver++(2M)/gDDIM). With ``corrector`` each
    step is redone once the next score is known, through ``order + 1``
    points (Adams-Moulton, as in UniPC): no extra score call. The last step
    continues from ``eps`` to ``t = 0`` with the extrapolated ``z`` (no
    score call at ``eps``), which removes the O(eps) bias of stopping at eps.
    Where ``c`` is near a zero (under-damped SDEs near ``T``) ``z`` is taken
    from the previous call instead of dividing by it. ``stochastic``: the same
    on the reverse SDE, whose linear part and noise are integrated exactly
    (exact Gaussian steps for reference data; the corrector keeps each step's
    noise, as in SA-Solver).
    """
    n = len(ts) - 1
    t64 = ts.detach().to("cpu", torch.float64)  # block algebra on the CPU: tiny, and float64 works everywhere
    plan = multistep_plan(sde, t64, order, corrector, a.device, a.dtype, stochastic)
    zs, z = [], None
    for i in _steps(ts, progress, "exp-multistep"):
        s = score_fn(a, _batch_time(ts[i], a), cond)
        if callback is not None:
            callback(i, ts[i], a, s)
        z_new = (s + sum(plan["e"][i, k] * a[:, k] for k in range(a.shape[1]))) * plan["cinv"][i]
        z = z_new if plan["ok"][i] else torch.where(plan["mask"][i], z_new, torch.zeros_like(z_new) if z is None else z)
        zs = [z.unsqueeze(1)] + zs[:order]
        if corrector and i > 0:
            a = a + sum(w * zk for w, zk in zip(plan["corr"][i - 1], zs))
        a = apply_block(plan["Psi"][i], a) + sum(w * zk for w, zk in zip(plan["pred"][i], zs))
        if stochastic:
            a = a + apply_block(plan["noise"][i], torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype))
    return SamplerOutput(a, n)


def _multistep(name: str, order: int, corrector: bool, doc: str, stochastic: bool = False) -> Callable:
    def sampler(score_fn, sde, a, ts, cond=None, generator=None, callback=None, progress=False) -> SamplerOutput:
        return exp_multistep(score_fn, sde, a, ts, cond, generator, callback, progress, order=order, corrector=corrector,
                             stochastic=stochastic)

    sampler.__name__ = sampler.__qualname__ = name
    sampler.__doc__ = (f":func:`exp_multistep` of order {order}{' with' if corrector else ' without'} corrector"
                       f"{' on the reverse SDE' if stochastic else ''}: {doc}.")
    return sampler


exp_pc3 = _multistep("exp_pc3", 3, True, "the recommended sampler")
exp_ab3 = _multistep("exp_ab3", 3, False, "exponential Adams-Bashforth 3")
exp_ab2 = _multistep("exp_ab2", 2, False, "exponential Adams-Bashforth 2, like DPM-Solver++(2M)")
sde_pc2 = _multistep("sde_pc2", 2, True, "the accurate reverse-SDE sampler (order 3 is unstable at few steps "
                     "with noise)", stochastic=True)

SAMPLERS = {"heun": heun, "exp_heun": exp_heun, "euler_maruyama": euler_maruyama, "em": euler_maruyama, "splitting": splitting,
            "exp_pc3": exp_pc3, "exp_ab2": exp_ab2, "exp_ab3": exp_ab3, "sde_pc2": sde_pc2}


def get_sampler(name: str) -> Callable:
    """Look a sampler up by name: ``heun``, ``exp_heun``, ``exp_pc3``, ``exp_ab2``, ``exp_ab3``,
    ``euler_maruyama`` (``em``), ``splitting`` or ``sde_pc2``."""
    try:
        return SAMPLERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}") from None
