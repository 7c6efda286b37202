"""Fan charts of multivariate forecasts (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

__all__ = ["plot_fan_chart"]


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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
