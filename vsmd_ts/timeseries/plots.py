"""Fan charts and calibration plots of multivariate forecasts (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

__all__ = ["plot_fan_chart", "plot_pit_histogram", "plot_reliability"]


def plot_fan_chart(
    forecast,
    target: pd.DataFrame,
    path,
    dims: Sequence[int] = (0, 1, 2, 3),
    history: Optional[int] = None,
    names: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
) -> Path:
    """Median and 50% / 90% bands of ``forecast`` against the truth, one panel per series.

    Parameters
    ----------
    forecast
        A ``SampleForecast`` with samples ``(S, H, D)``.
    target
        Ground truth frame ``(T, D)`` (as yielded by ``make_evaluation_predictions``),
        covering at least the forecast horizon.
    path
        Output PNG.
    dims
        Series to draw.
    history
        Past steps to show before the horizon (default ``3 H``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    S, H, D = forecast.samples.shape
    dims = [d for d in dims if d < D]
    history = 3 * H if history is None else history
    y = target.to_numpy()
    T = y.shape[0]
    t_hist = np.arange(-min(history, T - H), H)
    t_fut = np.arange(H)
    q = np.quantile(forecast.samples, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
    fig, axes = plt.subplots(len(dims), 1, figsize=(8, 2.2 * len(dims)), sharex=True, squeeze=False)
    for ax, d in zip(axes[:, 0], dims):
        ax.plot(t_hist, y[T - H + t_hist, d], color="black", lw=1, label="truth")
        ax.fill_between(t_fut, q[0, :, d], q[4, :, d], color="tab:blue", alpha=0.2, label="90% interval")
        ax.fill_between(t_fut, q[1, :, d], q[3, :, d], color="tab:blue", alpha=0.4, label="50% interval")
        ax.plot(t_fut, q[2, :, d], color="tab:blue", lw=1.5, label="median")
        ax.axvline(-0.5, color="grey", ls=":", lw=1)
        ax.set_ylabel(names[d] if names is not None else f"series {d}")
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=4)
    axes[-1, 0].set_xlabel(f"steps relative to the forecast start ({forecast.start_date})")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _by_label(metrics: Union[dict, Mapping[str, dict]]) -> Mapping[str, dict]:
    """One ``evaluate_forecasts`` dict, or several keyed by model label."""
    return {"forecast": metrics} if "pit_counts" in metrics else metrics


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _finish(fig, axes, title: Optional[str], path) -> Path:
    """Legend in the first panel, optional title, save."""
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_pit_histogram(metrics: Union[dict, Mapping[str, dict]], path, title: Optional[str] = None) -> Path:
    """PIT histograms, all series pooled (left) and the summed series (right).

    Parameters
    ----------
    metrics
        The dict :func:`vsmd_ts.timeseries.metrics.evaluate_forecasts` returns
        (keys ``pit_counts``, ``pit_counts_sum``), or several keyed by label
        (drawn as side-by-side bars).
    path
        Output PNG.

    A calibrated forecast gives a flat histogram (dashed line); a hump means
    too wide, a U too narrow, a slope bias.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _by_label(metrics)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), squeeze=False)
    for ax, key, name in zip(axes[0], ("pit_counts", "pit_counts_sum"), ("all series", "summed series")):
        width = 1.0 / len(next(iter(runs.values()))[key]) / len(runs)
        for i, (label, m) in enumerate(runs.items()):
            counts = np.asarray(m[key], dtype=float)
            density = counts / counts.sum() * len(counts)  # 1 = uniform
            edges = np.arange(len(counts)) / len(counts)
            ax.bar(edges + i * width, density, width=width, align="edge", label=label, alpha=0.8)
        ax.axhline(1.0, color="black", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("PIT")
        ax.set_ylabel("density")
        ax.set_title(f"PIT histogram, {name}")
    return _finish(fig, axes, title, path)


def plot_reliability(metrics: Union[dict, Mapping[str, dict]], path, title: Optional[str] = None) -> Path:
    """Reliability diagram: observed frequency below each forecast quantile, per series (pooled) and summed.

    Parameters
    ----------
    metrics
        The dict :func:`vsmd_ts.timeseries.metrics.evaluate_forecasts` returns
        (keys ``reliability_levels``, ``reliability``, ``reliability_sum``), or
        several keyed by label.
    path
        Output PNG.

    A calibrated forecast lies on the diagonal; an S below then above it
    (flatter than the diagonal) means intervals too wide, the reverse too narrow.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _by_label(metrics)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), squeeze=False)
    for ax, key, name in zip(axes[0], ("reliability", "reliability_sum"), ("all series", "summed series")):
        for label, m in runs.items():
            ax.plot(m["reliability_levels"], m[key], marker="o", ms=3, label=label)
        ax.plot([0, 1], [0, 1], color="black", ls="--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("quantile level")
        ax.set_ylabel("observed frequency below")
        ax.set_title(f"reliability, {name}")
    return _finish(fig, axes, title, path)
