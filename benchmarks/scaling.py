"""Cost against the number of series (issue 13): transition, training step, sampling.

Two parts, both written to ``--out`` (JSON) and printed as markdown tables:

``transition``
    Our fused float64 transition (``MomentumSDE.transition_entries``; the
    assembled ``transition`` blocks; the previous generic block algebra) against
    the authors' matrix-fraction route *without* their 1001-point quadrature:
    one float32 4 x 4 ``torch.linalg.matrix_exp`` per draw and coordinate,
    ``Sigma = C (e^M)^T`` and a float32 ``torch.linalg.cholesky`` (method.md
    1.3). Same batch, same process, interleaved repeats, medians.
``shapes``
    Synthetic data of the shapes of exchange, solar, electricity, traffic and
    wiki (``target_dim`` 8 ... 2000, their frequencies and horizons): seconds
    per training step (forward + backward + optimiser, ``batch_size`` windows
    of ``context + prediction`` steps), peak RSS growth, and sampling seconds
    per forecast window (``num_samples`` paths, default NFE). A log-log fit
    of cost against ``target_dim`` gives the slope.

The machine these numbers were taken on is shared; every timing is a median
of repeats measured under contention. Compare ratios within one run.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/scaling.py transition --threads 1
    OMP_NUM_THREADS=1 python benchmarks/scaling.py shapes --threads 1 --shapes exchange,solar,electricity,traffic,wiki
    python benchmarks/scaling.py plot --out benchmarks/scaling_results.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vsmd_ts.diffusion import MomentumSDE  # noqa: E402
from vsmd_ts.diffusion.linalg import cholesky_block, congruence, expm_block, lyapunov_integral  # noqa: E402


def matrix_exp_baseline(sde: MomentumSDE, t: torch.Tensor):
    """The authors' route without quadrature: float32 4 x 4 matrix exponentials.

    ``M = F B`` per draw and coordinate, ``exp([[M, gamma B e_vv], [0, -M^T]])``;
    its upper-left block is ``e^M`` and ``Sigma = C (e^M)^T`` with ``C`` the
    upper-right block (``Sigma_0 = 0``), then a float32 Cholesky.
    Returns ``(e^M, Sigma, L)`` of shape ``(N, D, 2, 2)``.
    """
    F = sde.drift_matrix().to(torch.float32)  # (D, 2, 2)
    B = sde.beta_int(t).to(torch.float32).reshape(-1, 1, 1, 1)
    N, D = t.shape[0], F.shape[0]
    big = torch.zeros(N, D, 4, 4)
    M = F * B
    big[..., :2, :2] = M
    big[..., 1, 3] = (sde.gamma * B).reshape(N, 1)
    big[..., 2:, 2:] = -M.transpose(-1, -2)
    E = torch.linalg.matrix_exp(big)
    Phi = E[..., :2, :2]
    Sigma = E[..., :2, 2:] @ Phi.transpose(-1, -2)
    L = torch.linalg.cholesky(Sigma)
    return Phi, Sigma, L


def generic_blocks(sde: MomentumSDE, t: torch.Tensor):
    """The previous transition: generic float64 block algebra (expm + Lyapunov series)."""
    B = sde._time_view(sde.beta_int(t.double()))
    F = sde.drift_matrix()
    Phi = expm_block(F * B)
    cov = lyapunov_integral(F, sde._noise_block("cpu"), B, sde.stationary_cov())
    S0 = sde._initial_cov("cpu")
    if bool((S0 != 0).any()):
        cov = cov + congruence(Phi, S0)
    return Phi, cov, cholesky_block(cov)


def _median_times(fns: dict, repeats: int) -> dict:
    """Interleaved repeats (fairer under changing load); median seconds per function."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_transition(N: int, D: int, repeats: int, initial_velocity: str, seed: int = 0) -> dict:
    """Seconds per transition of an ``N x D`` batch for each route; also the max error vs float64."""
    g = torch.Generator().manual_seed(seed)
    sde = MomentumSDE((D,), beta=10.0, damping_ratio=0.7, initial_velocity=initial_velocity)
    sde.A.set_(0.3 * (torch.rand(D, generator=g) - 0.5))
    t = sde.eps + (sde.T - sde.eps) * torch.rand(N, generator=g, dtype=torch.float64)
    t32 = t.float()
    with torch.no_grad():
        fns = {
            "fused_entries": lambda: sde.transition_entries(t),
            "fused_blocks": lambda: sde.transition(t),
            "generic_blocks": lambda: generic_blocks(sde, t),
            "matrix_exp_f32": lambda: matrix_exp_baseline(sde, t32),
        }
        for fn in fns.values():  # warm-up
            fn()
        med = _median_times(fns, repeats)
        ref = sde.transition(t)
        old = generic_blocks(sde, t)
        base = matrix_exp_baseline(sde, t32)
    out = {"N": N, "D": D, "initial_velocity": initial_velocity, "repeats": repeats, "seconds": med}
    out["speedup_vs_matrix_exp"] = {k: med["matrix_exp_f32"] / v for k, v in med.items()}
    out["max_rel_err_L_vv_vs_generic"] = float(((ref.chol[..., 1, 1] - old[2][..., 1, 1]).abs() / old[2][..., 1, 1]).max())
    if initial_velocity == "sample":  # the baseline conditions on v_0 (Sigma_0 = 0)
        out["max_rel_err_L_vv_matrix_exp_f32"] = float(
            ((base[2][..., 1, 1].double() - ref.chol[..., 1, 1]).abs() / ref.chol[..., 1, 1]).max()
        )
    return out
