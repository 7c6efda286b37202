"""PNG figures of the toy experiments (matplotlib, Agg backend).

* :func:`plot_samples`: generated points next to the true ones, same axes;
* :func:`plot_trajectories`: probability-flow paths of a few particles in the
  plane and each coordinate against time (straightness per axis).

Axes are not forced to an equal aspect: a stretched dataset would otherwise be
a thin strip. Tick labels show the actual scale of each axis.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .metrics import histogram_box  # noqa: E402

__all__ = ["plot_sample_grid", "plot_samples", "plot_trajectories"]

PathLike = Union[str, os.PathLike]


def _np(x):
    return torch.as_tensor(x).detach().cpu().double().numpy()


def _limits(true):
    lo, hi = histogram_box(true)
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def _scatter(ax, x, color, title, xlim, ylim, max_points):
    x = _np(x)[:max_points]
    ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.4, color=color, linewidths=0, rasterized=True)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def plot_samples(
    generated: torch.Tensor,
    true: torch.Tensor,
    path: PathLike,
    title: Optional[str] = None,
    max_points: int = 5000,
) -> None:
    """Save truth (left) and generated samples (right), both ``(N, 2)``, on the truth's box."""
    xlim, ylim = _limits(true)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.4), sharex=True, sharey=True)
    _scatter(axes[0], true, "0.35", "truth", xlim, ylim, max_points)
    _scatter(axes[1], generated, "tab:blue", "generated", xlim, ylim, max_points)
    axes[0].set_xlabel("x_1", fontsize=8)
    axes[1].set_xlabel("x_1", fontsize=8)
    axes[0].set_ylabel("x_2", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sample_grid(
    panels: Sequence[tuple],
    true: torch.Tensor,
    path: PathLike,
    ncols: int = 4,
    max_points: int = 3000,
    title: Optional[str] = None,
    dpi: int = 100,
) -> None:
    """Save several sample sets side by side; ``panels`` is ``[(label, points (N, 2)), ...]``.

    The truth comes first; all panels share the truth's box.
    """
    panels = [("truth", true)] + list(panels)
    nrows = -(-len(panels) // ncols)
    xlim, ylim = _limits(true)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.3 * nrows), sharex=True, sharey=True, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < len(panels):
            label, pts = panels[k]
            _scatter(ax, pts, "0.35" if k == 0 else "tab:blue", label, xlim, ylim, max_points)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_trajectories(
    traj: torch.Tensor,
    ts: torch.Tensor,
    path: PathLike,
    num: int = 8,
    true: Optional[torch.Tensor] = None,
    title: Optional[str] = None,
) -> None:
    """Save the paths of ``num`` particles.

    Parameters
    ----------
    traj
        Data part of the states ``(steps + 1, N, 2)`` at the times ``ts``
        (from :func:`vsmd_ts.toys.generate` with ``record=True``).
    ts
        Grid times ``(steps + 1,)`` from ``T`` down to ``eps``.
    path
        PNG file.
    num
        Number of particles drawn.
    true
        Optional true samples ``(M, 2)`` drawn faintly in the plane panel.
    """
    traj, ts = _np(traj), _np(ts)
    if traj.ndim != 3 or traj.shape[0] != ts.shape[0] or traj.shape[2] != 2:
        raise ValueError(f"traj must be (steps + 1, N, 2) matching ts, got {traj.shape} and {ts.shape}")
    num = min(int(num), traj.shape[1])
    colors = plt.cm.viridis([i / max(num - 1, 1) for i in range(num)])
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.3))
    ax = axes[0]
    if true is not None:
        tr = _np(true)[:3000]
        ax.scatter(tr[:, 0], tr[:, 1], s=1, alpha=0.2, color="0.6", linewidths=0, rasterized=True)
    for k in range(num):
        ax.plot(traj[:, k, 0], traj[:, k, 1], lw=0.8, color=colors[k])
        ax.plot(traj[-1, k, 0], traj[-1, k, 1], "o", ms=3, color=colors[k])
        ax.plot(traj[0, k, 0], traj[0, k, 1], "x", ms=3, color=colors[k])
    ax.set_title("paths in the plane (x: prior, o: sample)", fontsize=9)
    for j in range(2):
        ax = axes[j + 1]
        for k in range(num):
            ax.plot(ts, traj[:, k, j], lw=0.8, color=colors[k])
        ax.invert_xaxis()  # generation runs from T down to eps
        ax.set_xlabel("t", fontsize=8)
        ax.set_title(f"x_{j + 1}(t)", fontsize=9)
    for ax in axes:
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
