"""Fan charts and calibration plots of multivariate forecasts (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

__all__ = ["plot_fan_chart", "plot_forecast", "plot_pit_histogram", "plot_reliability"]

# quantile levels of the fan: the 90 % band, the 50 % band and the median
_FAN_LEVELS = [0.05, 0.25, 0.5, 0.75, 0.95]


def _draw_fan(ax, x, q: np.ndarray, x_past=None, y_past=None, past_label: str = "truth", split=None) -> None:
    """Draw one series' fan on ``ax``: the median and the 50 % / 90 % bands of ``q`` (quantiles at ``_FAN_LEVELS``,
    shape ``(5, H)``) at ``x``, the observed ``y_past`` at ``x_past`` (black) and a dotted line at ``split``."""
    if y_past is not None:
        ax.plot(x_past, y_past, color="black", lw=1, label=past_label)
    ax.fill_between(x, q[0], q[4], color="tab:blue", alpha=0.2, label="90% interval")
    ax.fill_between(x, q[1], q[3], color="tab:blue", alpha=0.4, label="50% interval")
    ax.plot(x, q[2], color="tab:blue", lw=1.5, label="median")
    if split is not None:
        ax.axvline(split, color="grey", ls=":", lw=1)


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
    q = np.quantile(forecast.samples, _FAN_LEVELS, axis=0)
    fig, axes = plt.subplots(len(dims), 1, figsize=(8, 2.2 * len(dims)), sharex=True, squeeze=False)
    for ax, d in zip(axes[:, 0], dims):
        _draw_fan(ax, t_fut, q[:, :, d], t_hist, y[T - H + t_hist, d], split=-0.5)
        ax.set_ylabel(names[d] if names is not None else f"series {d}")
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=4)
    axes[-1, 0].set_xlabel(f"steps relative to the forecast start ({forecast.start_date})")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_forecast(forecast, history=None, dims: Optional[Sequence[int]] = None,
                  names: Optional[Sequence[str]] = None, ax=None, history_length: Optional[int] = None):
    """Fan chart of a multivariate ``SampleForecast``: one panel per series, at the forecast's dates.

    GluonTS's ``forecast.plot()`` draws univariate forecasts only;
    ``forecast.copy_dim(i).plot()`` draws series ``i`` alone, without
    history. This draws the median and the 50 % / 90 % bands of each chosen
    series (as :func:`plot_fan_chart` does) and, when given, the observed
    series before (and over) the horizon. Returns the matplotlib figure
    (shown or saved by the caller; the backend is left as it is).

    Parameters
    ----------
    forecast
        A ``SampleForecast`` with samples ``(S, H, D)`` (``(S, H)``: one series).
    history
        The observed series: a ``pandas.DataFrame`` ``(T, D)`` indexed by
        periods or timestamps (as ``make_evaluation_predictions`` yields; it
        may cover the horizon, which then shows the truth), or an array ``(D,
        T)`` (an entry's target) that ends just before the forecast starts.
    dims
        Series to draw (default: the first four).
    names
        Series names, indexed by series number (default ``series i``).
    ax
        An axes, or one per series drawn, to draw into (default: a new figure).
    history_length
        Steps of ``history`` shown before the forecast start (default ``3 H``).
    """
    import matplotlib.pyplot as plt

    samples = np.asarray(forecast.samples)
    samples = samples[..., None] if samples.ndim == 2 else samples
    S, H, D = samples.shape
    dims = list(range(min(D, 4)) if dims is None else dims)
    bad = [d for d in dims if not 0 <= d < D]
    if bad or not dims:
        raise ValueError(f"dims must name series in [0, {D}), got {list(dims)}")
    start = forecast.start_date
    x = forecast.index.to_timestamp()
    split = (start - 1).to_timestamp() + (x[0] - (start - 1).to_timestamp()) / 2
    x_past = y_past = None
    if history is not None:
        x_past, y_past = _history(history, start, 3 * H if history_length is None else history_length, D)
    if ax is None:
        fig, axes = plt.subplots(len(dims), 1, figsize=(8, 2.2 * len(dims)), sharex=True, squeeze=False)
        axes = list(axes[:, 0])
    else:
        axes = list(np.atleast_1d(ax))
        if len(axes) != len(dims):
            raise ValueError(f"ax: got {len(axes)} axes for {len(dims)} series")
        fig = axes[0].figure
    q = np.quantile(samples, _FAN_LEVELS, axis=0)
    for a, d in zip(axes, dims):
        _draw_fan(a, x, q[:, :, d], x_past, None if y_past is None else y_past[:, d], "observed", split)
        a.set_ylabel(names[d] if names is not None else f"series {d}")
    axes[0].legend(loc="upper left", fontsize=8, ncol=4)
    item = getattr(forecast, "item_id", None)
    axes[0].set_title(f"forecast{'' if item is None else f' of {item}'} from {start}", fontsize=9)
    if ax is None:
        fig.tight_layout()
    return fig


def _history(history, start: pd.Period, length: int, D: int) -> tuple:
    """Timestamps ``(T',)`` and values ``(T', D)`` of ``history`` from ``length`` steps before ``start`` on."""
    if isinstance(history, (pd.DataFrame, pd.Series)):
        frame = history.to_frame() if isinstance(history, pd.Series) else history
        index = frame.index
        if isinstance(index, pd.DatetimeIndex):
            index = index.to_period(start.freq)
        if not isinstance(index, pd.PeriodIndex):
            raise ValueError("history: a DataFrame must be indexed by periods or timestamps")
        keep = np.asarray(index >= start - length)
        values, index = frame.to_numpy(dtype=float)[keep], index[keep]
    else:
        values = np.asarray(history, dtype=float)
        values = values[None] if values.ndim == 1 else values
        if values.ndim != 2 or values.shape[0] != D:
            raise ValueError(f"history: an array must have shape ({D}, T), got {values.shape}")
        values = values[:, -length:].T if length > 0 else values[:, :0].T
        index = pd.period_range(end=start - 1, periods=len(values), freq=start.freq)
    if values.shape[1] != D:
        raise ValueError(f"history: {values.shape[1]} series for a forecast of {D}")
    return index.to_timestamp(), values


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
