"""Metrics of the 2-D toy experiments.

* :func:`pmf_rmse`: RMSE between the 2-D histograms (probability mass
  functions) of generated and true samples (VSDM's ``data_to_pmf`` /
  ``root_mean_squared_error``).
* :func:`marginal_pmf_rmse`: the same per axis with 1-D histograms, to tell
  which axis a model gets wrong.
* :func:`straightness`: per-coordinate straightness of probability-flow ODE
  paths (rectified flow / VSDM / VSMD), from a stored trajectory.
"""

from __future__ import annotations

from typing import Tuple

import torch

__all__ = [
    "histogram_box",
    "iqr_ratio",
    "marginal_pmf_rmse",
    "outside_fraction",
    "pmf",
    "pmf_rmse",
    "std_ratio",
    "straightness",
]


def _check_points(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N > 0, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x.detach().to(torch.float64).cpu()


def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    return bins


def histogram_box(true: torch.Tensor, margin: float = 0.025) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-axis box ``(lo, hi)`` of the true samples, each ``(d,)``.

    ``lo = min - margin |min|`` and ``hi = max + margin |max|``: VSDM's
    ``min * 1.025``, ``max * 1.025`` for centred data, but always widening
    (VSDM's rule shrinks the box when ``min > 0``).
    """
    true = _check_points(true, "true")
    lo, hi = true.min(0).values, true.max(0).values
    lo, hi = lo - margin * lo.abs(), hi + margin * hi.abs()
    hi = torch.where(hi > lo, hi, lo + 1.0)  # degenerate axis: any positive width
    return lo, hi


def pmf(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """Histogram of ``x`` ``(N, d)`` on the box ``[lo, hi]``, normalised to sum 1.

    Points outside the box are clipped into its border cells. Returns a tensor
    of shape ``(bins,) * d`` (float64).
    """
    x = _check_points(x, "x")
    bins = _check_bins(bins)
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    idx = ((x - lo) / (hi - lo) * bins).floor().long().clamp_(0, bins - 1)  # clip into the box
    flat = torch.zeros(1, dtype=torch.long)
    for j in range(x.shape[1]):
        flat = flat * bins + idx[:, j]
    counts = torch.bincount(flat, minlength=bins ** x.shape[1]).to(torch.float64)
    return (counts / counts.sum()).reshape((bins,) * x.shape[1])


def pmf_rmse(generated: torch.Tensor, true: torch.Tensor, bins: int = 100, margin: float = 0.025) -> float:
    """RMSE between the ``bins^d`` cell probabilities of generated and true samples.

    The box is that of the true samples per axis (:func:`histogram_box`);
    generated points outside it are clipped into the border cells. Zero for
    identical samples. Its noise floor depends on the sample sizes (about
    ``sqrt(mean p (1/N_gen + 1/N_true) / cells)``), so compare models at the
    same sizes.

    Parameters
    ----------
    generated
        Generated points ``(N, d)``.
    true
        True points ``(M, d)``.
    bins
        Cells per axis (100 as in the paper).
    margin
        Relative widening of the box.
    """
    generated = _check_points(generated, "generated")
    true = _check_points(true, "true")
    if generated.shape[1] != true.shape[1]:
        raise ValueError(f"generated has {generated.shape[1]} dimensions, true has {true.shape[1]}")
    lo, hi = histogram_box(true, margin)
    diff = pmf(generated, lo, hi, bins) - pmf(true, lo, hi, bins)
    return float(diff.pow(2).mean().sqrt())


def marginal_pmf_rmse(generated: torch.Tensor, true: torch.Tensor, bins: int = 100, margin: float = 0.025) -> torch.Tensor:
    """:func:`pmf_rmse` of each axis' 1-D marginal, shape ``(d,)``."""
    generated = _check_points(generated, "generated")
    true = _check_points(true, "true")
    if generated.shape[1] != true.shape[1]:
        raise ValueError(f"generated has {generated.shape[1]} dimensions, true has {true.shape[1]}")
    return torch.tensor([pmf_rmse(generated[:, j : j + 1], true[:, j : j + 1], bins, margin) for j in range(true.shape[1])])


def std_ratio(generated: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-axis ratio of standard deviations generated / true, ``(d,)``; 1 is right."""
    generated = _check_points(generated, "generated")
    true = _check_points(true, "true")
    return generated.std(0) / true.std(0)


def iqr_ratio(generated: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-axis ratio of interquartile ranges generated / true, ``(d,)``.

    A scale ratio that a few diverging samples cannot dominate (unlike
    :func:`std_ratio`): below 1 the generated axis is too narrow.
    """
    generated = _check_points(generated, "generated")
    true = _check_points(true, "true")
    q = torch.tensor([0.25, 0.75], dtype=torch.float64)
    g, t = torch.quantile(generated, q, dim=0), torch.quantile(true, q, dim=0)
    return (g[1] - g[0]) / (t[1] - t[0])


def outside_fraction(generated: torch.Tensor, true: torch.Tensor, margin: float = 0.025) -> float:
    """Fraction of generated points outside the true samples' box (:func:`histogram_box`)."""
    generated = _check_points(generated, "generated")
    lo, hi = histogram_box(true, margin)
    return float(((generated < lo) | (generated > hi)).any(1).double().mean())


def straightness(traj: torch.Tensor, ts: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """Per-coordinate straightness of stored ODE paths, shape ``(d,)``.

    ``S_j = int E[(c_j - dx_j/dt)^2] dt`` with the chord slope
    ``c = (x(t_0) - x(t_n)) / (t_0 - t_n)``: 0 for straight paths run at
    constant speed. The path's own velocity over each step is the finite
    difference ``(x_i - x_{i+1}) / (t_i - t_{i+1})`` (for a Heun trajectory
    this is the averaged slope the integrator used), and the integral is the
    sum over steps weighted by ``|t_i - t_{i+1}|``.

    Parameters
    ----------
    traj
        Data part of the states ``(n + 1, N, d)`` at the grid times.
    ts
        Grid ``(n + 1,)``, strictly monotone (samplers run from ``T`` down
        to ``eps``).
    reduce
        ``"mean"`` over particles (the definition), ``"median"`` (robust to
        a few diverging paths) or ``"none"`` (per particle, ``(N, d)``).
    """
    if reduce not in ("mean", "median", "none"):
        raise ValueError(f"reduce must be 'mean', 'median' or 'none', got {reduce!r}")
    traj = torch.as_tensor(traj).detach().to(torch.float64).cpu()
    ts = torch.as_tensor(ts).detach().to(torch.float64).cpu()
    if traj.dim() != 3 or traj.shape[0] < 2:
        raise ValueError(f"traj must have shape (n + 1, N, d) with n >= 1, got {tuple(traj.shape)}")
    if ts.shape != (traj.shape[0],):
        raise ValueError(f"ts must have shape ({traj.shape[0]},), got {tuple(ts.shape)}")
    dt = ts[:-1] - ts[1:]
    if not ((dt > 0).all() or (dt < 0).all()):
        raise ValueError("ts must be strictly monotone")
    chord = (traj[0] - traj[-1]) / (ts[0] - ts[-1])  # (N, d)
    velocity = (traj[:-1] - traj[1:]) / dt[:, None, None]  # (n, N, d)
    per_path = (dt.abs()[:, None, None] * (velocity - chord).pow(2)).sum(0)  # (N, d)
    if reduce == "none":
        return per_path
    return per_path.mean(0) if reduce == "mean" else per_path.median(0).values
