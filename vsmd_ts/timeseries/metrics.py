"""Forecast evaluation in the standard multivariate protocol.

CRPS and CRPS-Sum are GluonTS's numbers over the 19 quantile levels
0.05 ... 0.95: CRPS = ``mean_wQuantileLoss`` of GluonTS's
``MultivariateEvaluator`` (per series), CRPS-Sum = ``mean_wQuantileLoss`` of
GluonTS's ``Evaluator`` on the sum over series (the ``m_sum_mean_wQuantileLoss``
the ``MultivariateEvaluator`` reports when no target value is missing). Energy
score, interval coverage (per series and of the summed series), the
probability integral transform (PIT), reliability curves and the exact sample
CRPS-Sum (``properscoring.crps_ensemble`` on the summed series; the 19-quantile
version leaves out the tails and reads a few per cent higher) are computed from
the samples. ``ProbTS-CRPS`` and ``ProbTS-NMAE`` are the per-window normalised
scores of the ProbTS / CSDI papers (see :func:`probts_scores`), so numbers
published with them can be set beside ours.

Missing values: an unobserved (NaN or infinite) target value is left out of
every metric. Per-series metrics drop the entry; the summed series adds up,
at each step, the target and the samples over the same observed series (see
:func:`_summed`), and a step where no series is observed is left out.
:func:`evaluate_forecasts` leaves out, with a warning, a window with nothing
observed, and refuses forecasts with non-finite samples.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "PIT_BINS",
    "QUANTILES",
    "agg_sum",
    "coverage",
    "crps_sum_exact",
    "energy_score",
    "evaluate_forecasts",
    "pit_histogram",
    "pit_values",
    "probts_scores",
    "reliability",
]

QUANTILES = tuple((np.arange(20) / 20.0)[1:])
PIT_BINS = 10


def agg_sum(x, axis=None):
    """``np.sum`` with an explicit ``axis``: the sum aggregate for GluonTS's ``MultivariateEvaluator``.

    A bare ``np.sum`` triggers a pandas FutureWarning there. The evaluator's
    sum skips a NaN target but keeps its samples, so :func:`evaluate_forecasts`
    scores :func:`_summed`'s masked sums instead; the two agree when nothing
    is missing.
    """
    return np.sum(x, axis=axis)


def energy_score(samples: np.ndarray, target: np.ndarray) -> float:
    """Energy score ``E|X - y| - E|X - X'| / 2`` of one window, over the flattened ``(H, D)`` path.

    ``samples``: ``(S, H, D)``; ``target``: ``(H, D)``. Unobserved (NaN)
    target entries are dropped from the path; with nothing observed the score
    is NaN (not the 0 of an empty path).
    """
    obs = np.isfinite(target).ravel()
    if not obs.any():
        return float("nan")
    X = samples.reshape(samples.shape[0], -1)[:, obs].astype(np.float64)
    y = target.ravel()[obs].astype(np.float64)
    first = np.linalg.norm(X - y, axis=1).mean()
    sq = (X * X).sum(1)
    pair = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0))
    return float(first - 0.5 * pair.mean())


def coverage(samples: np.ndarray, target: np.ndarray, level: float) -> float:
    """Fraction of observed target values inside the central ``level`` interval of the samples.

    ``samples``: ``(S, ...)``; ``target``: ``(...)``; NaN targets are dropped.
    """
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
    obs = np.isfinite(target)
    return float(((target >= lo) & (target <= hi))[obs].mean())


def pit_values(samples: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Probability integral transform of each observed target entry under its samples.

    ``samples``: ``(S, ...)``; ``target``: ``(...)``. The PIT of ``y`` is the
    share of samples below it, ties counted half (mid-rank), so it lies in
    ``[0, 1]``; a calibrated forecast gives uniform PIT values. Returns the
    flat array of PITs of the finite target entries.
    """
    below = (samples < target).mean(axis=0)
    ties = (samples == target).mean(axis=0)
    return (below + 0.5 * ties)[np.isfinite(target)]


def pit_histogram(pit: np.ndarray, bins: int = PIT_BINS) -> np.ndarray:
    """Counts of PIT values in ``bins`` equal bins of ``[0, 1]`` (the last bin closed)."""
    counts, _ = np.histogram(pit, bins=bins, range=(0.0, 1.0))
    return counts


def reliability(samples: np.ndarray, target: np.ndarray, levels: Sequence[float] = QUANTILES) -> np.ndarray:
    """Observed frequency of ``target <= `` the samples' ``level`` quantile, for each level.

    ``samples``: ``(S, ...)``; ``target``: ``(...)``; NaN targets are dropped.
    A calibrated forecast gives ``frequency == level`` (the diagonal of a
    reliability diagram). Returns shape ``(len(levels),)``.
    """
    q = np.quantile(samples, levels, axis=0)  # (L, ...)
    obs = np.isfinite(target)
    return np.array([(target <= q_l)[obs].mean() for q_l in q])


def _summed(samples, target: np.ndarray):
    """Sums over the last (series) axis of the observed entries only, for targets and samples alike.

    Parameters
    ----------
    samples : np.ndarray or None
        ``(S, ..., D)`` sample paths (``None``: sum the target only).
    target : np.ndarray
        ``(..., D)``; NaN (or infinite) where unobserved.

    Returns
    -------
    s : np.ndarray or None
        ``(S, ...)``, in the samples' dtype: at each step the sum of the
        samples of the series whose target is observed there.
    ys : np.ndarray
        ``(...)``: the sum of the observed target values; NaN at a step where
        no series is observed, so every metric (all drop NaN targets) leaves
        that step out. Without missing values, ``s`` and ``ys`` are plain
        sums over the last axis.
    """
    obs = np.isfinite(target)
    s = None if samples is None else np.where(obs, samples, 0).sum(-1)
    ys = np.where(obs, target, 0).sum(-1)
    return s, np.where(obs.any(-1), ys, np.nan)


def crps_sum_exact(samples_list: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
    """Exact sample CRPS of the summed series over all windows, normalised by ``sum |y_sum|``.

    ``samples_list[k]``: ``(S, H, D)``; ``targets[k]``: ``(H, D)``. Uses
    ``properscoring.crps_ensemble`` (the energy form ``E|X - y| - E|X - X'| / 2``
    with the empirical distribution of the samples). Targets and samples are
    summed over the same observed series at each step (see :func:`_summed`);
    steps with no observed series are left out.
    """
    import properscoring

    num, den = 0.0, 0.0
    for samples, y in zip(samples_list, targets):
        s, ys = _summed(np.asarray(samples, np.float64), np.asarray(y, np.float64))
        obs = np.isfinite(ys)
        num += properscoring.crps_ensemble(ys[obs], s.T[obs]).sum()
        den += np.abs(ys[obs]).sum()
    return float(num / den)


def probts_scores(samples_list: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> Dict[str, float]:
    """ProbTS's CRPS and NMAE: per-window scores over every step and series, averaged over windows.

    For window ``k`` with observed targets ``y`` (all steps and series) and
    sample quantiles ``q_a`` at the 19 levels ``a`` = 0.05 ... 0.95,

    * ``ProbTS-CRPS`` = mean over ``a`` of ``2 sum |(y - q_a) (1{y <= q_a} - a)| / sum |y|``;
    * ``ProbTS-NMAE`` = ``sum |y - median| / sum |y|``;

    and each is the mean of the windows' values. Unlike GluonTS's ``CRPS``
    (normalised per series over all windows) each window weighs the same.
    ``samples_list[k]``: ``(S, H, D)``; ``targets[k]``: ``(H, D)``; NaN targets
    are left out of both sums.
    """
    levels = np.asarray(QUANTILES)
    crps, nmae = [], []
    for samples, y in zip(samples_list, targets):
        samples, y = np.asarray(samples, np.float64), np.asarray(y, np.float64)
        obs = np.isfinite(y)
        q = np.quantile(samples, levels, axis=0)[:, obs]  # (L, n)
        yo = y[obs]
        denom = np.abs(yo).sum()
        losses = 2 * np.abs((yo - q) * ((yo <= q) - levels[:, None])).sum(1)
        crps.append(losses.mean() / denom)
        nmae.append(np.abs(yo - np.median(samples, axis=0)[obs]).sum() / denom)
    return {"ProbTS-CRPS": float(np.mean(crps)), "ProbTS-NMAE": float(np.mean(nmae))}


def _calibration(samples_list, targets) -> Dict[str, object]:
    """Summed-series coverage, PIT histograms and reliability curves, pooled over windows.

    ``samples_list[k]``: ``(S, H, D)``; ``targets[k]``: ``(H, D)``. Per-series
    scores drop NaN targets; the summed series is :func:`_summed`'s.
    """
    pit, pit_sum, c50, c90 = [], [], [], []
    flat_s, flat_y, flat_ss, flat_ys = [], [], [], []
    for samples, y in zip(samples_list, targets):
        s, ys = _summed(samples, y)
        pit.append(pit_values(samples, y))
        pit_sum.append(pit_values(s, ys))
        c50.append(coverage(s, ys, 0.5))
        c90.append(coverage(s, ys, 0.9))
        # quantiles per (step, series) first, then pool: a reliability curve over all windows
        flat_s.append(samples.reshape(samples.shape[0], -1))
        flat_y.append(y.ravel())
        flat_ss.append(s)
        flat_ys.append(ys)
    return {
        "coverage_50_sum": float(np.mean(c50)),
        "coverage_90_sum": float(np.mean(c90)),
        "pit_counts": pit_histogram(np.concatenate(pit)).tolist(),
        "pit_counts_sum": pit_histogram(np.concatenate(pit_sum)).tolist(),
        "reliability_levels": [float(q) for q in QUANTILES],
        "reliability": reliability(np.concatenate(flat_s, 1), np.concatenate(flat_y)).tolist(),
        "reliability_sum": reliability(np.concatenate(flat_ss, 1), np.concatenate(flat_ys)).tolist(),
    }


def _describe(k: int, forecast) -> str:
    """``forecast k (item_id ..., start ...)``, naming what the forecast knows of itself."""
    item_id, start = getattr(forecast, "item_id", None), getattr(forecast, "start_date", None)
    parts = ([] if item_id is None else [f"item_id {item_id!r}"]) + ([] if start is None else [f"start {start}"])
    return f"forecast {k}" + (f" ({', '.join(parts)})" if parts else "")


def evaluate_forecasts(forecasts: Sequence, tss: Sequence[pd.DataFrame]) -> Dict[str, object]:
    """Standard metrics for lists of ``SampleForecast`` and target frames.

    Parameters
    ----------
    forecasts : sequence of SampleForecast
        One per window, samples ``(S, H, D)``; every sample must be finite.
    tss : sequence of pd.DataFrame
        The target frames, ``(T, D)`` each, whose last ``H`` rows are the
        window's target; NaN marks an unobserved value.

    Returns
    -------
    dict
        ``CRPS``, ``CRPS-Sum``, ``ND-Sum``, ``NRMSE-Sum``, ``energy_score``,
        ``coverage_50`` and ``coverage_90`` (means over windows where
        applicable), ``ProbTS-CRPS`` and ``ProbTS-NMAE`` (see
        :func:`probts_scores`), plus every aggregate GluonTS computes under
        ``gluonts/`` (the summed series' under ``gluonts/m_sum_``).
        Calibration of the summed series and exact scores:

        * ``CRPS-Sum-exact``: exact sample CRPS of the summed series (see
          :func:`crps_sum_exact`), next to the 19-quantile ``CRPS-Sum``;
        * ``coverage_50_sum``, ``coverage_90_sum``: central-interval coverage
          of the summed series (mean over windows);
        * ``pit_counts`` (all series pooled) and ``pit_counts_sum`` (summed
          series): PIT histograms, ``PIT_BINS`` counts each (lists of ints);
        * ``reliability`` and ``reliability_sum``: observed frequency below
          each quantile in ``reliability_levels`` (lists of floats).

        Unobserved target values are left out of every metric: the summed
        series (``CRPS-Sum``, ``ND-Sum``, ``NRMSE-Sum``, ``CRPS-Sum-exact`` and
        the ``_sum`` calibration entries) adds up targets and samples over the
        same observed series at each step (see :func:`_summed`). Without
        missing values the GluonTS numbers are those of
        ``MultivariateEvaluator(target_agg_funcs={"sum": ...})``.

    Raises
    ------
    ValueError
        No forecasts, a different number of forecasts and target frames,
        a forecast with a NaN or infinite sample (named by its index,
        ``item_id`` and start), or no observed target value in any window.

    Warns
    -----
    UserWarning
        For each window with no observed target value (named like a
        forecast); it is left out of every metric.
    """
    from gluonts.env import env
    from gluonts.evaluation import Evaluator, MultivariateEvaluator
    from gluonts.model.forecast import SampleForecast

    forecasts, tss = list(forecasts), list(tss)
    if len(forecasts) != len(tss):
        raise ValueError(f"{len(forecasts)} forecasts but {len(tss)} target frames: one target frame per forecast")
    if not forecasts:
        raise ValueError("no forecasts to evaluate")
    kept_f, kept_ts, samples_list, targets = [], [], [], []
    for k, (f, ts) in enumerate(zip(forecasts, tss)):
        if not np.isfinite(f.samples).all():
            raise ValueError(f"{_describe(k, f)} has non-finite samples (NaN or inf): "
                             f"{np.size(f.samples) - np.isfinite(f.samples).sum()} of {np.size(f.samples)} values")
        H = f.samples.shape[1]
        y = ts.to_numpy()[-H:].astype(np.float64).reshape(H, -1)
        if not np.isfinite(y).any():
            warnings.warn(f"{_describe(k, f)}: no observed target value in its {H} steps; "
                          "the window is left out of every metric", stacklevel=2)
            continue
        kept_f.append(f)
        kept_ts.append(ts)
        samples_list.append(np.asarray(f.samples, np.float64).reshape(f.samples.shape[0], H, -1))  # (S, H) -> (S, H, 1)
        targets.append(y)
    if not kept_f:
        raise ValueError(f"no observed target value in any of the {len(forecasts)} windows: nothing to evaluate")

    # the summed series, in the samples' own dtype: without missing values these are GluonTS's own sums
    sum_ts, sum_f = [], []
    for f, ts in zip(kept_f, kept_ts):
        s, _ = _summed(f.samples, ts.to_numpy()[-f.samples.shape[1]:])
        sum_ts.append(pd.Series(_summed(None, ts.to_numpy())[1], index=ts.index))
        sum_f.append(SampleForecast(s, start_date=f.start_date, item_id=f.item_id, info=f.info))
    evaluator = MultivariateEvaluator(quantiles=QUANTILES)
    sum_evaluator = Evaluator(quantiles=QUANTILES, num_workers=None)
    # use_tqdm=False: one "Running evaluation" bar per series and aggregate (9 for exchange) is noise
    with warnings.catch_warnings(), env._let(use_tqdm=False):
        warnings.simplefilter("ignore", FutureWarning)
        sum_agg, _ = sum_evaluator(iter(sum_ts), iter(sum_f), num_series=len(sum_f))
        # one series: its per-series scores are the summed series' (GluonTS's multivariate evaluator refuses it)
        one_series = all(np.shape(f.samples)[2:] in ((), (1,)) for f in kept_f)
        agg = dict(sum_agg) if one_series else evaluator(iter(kept_ts), iter(kept_f), num_series=len(kept_f))[0]
    agg.update({f"m_sum_{k}": v for k, v in sum_agg.items()})
    out = {
        "CRPS": float(agg["mean_wQuantileLoss"]),
        "CRPS-Sum": float(agg["m_sum_mean_wQuantileLoss"]),
        "ND-Sum": float(agg["m_sum_ND"]),
        "NRMSE-Sum": float(agg["m_sum_NRMSE"]),
        "energy_score": float(np.mean([energy_score(s, y) for s, y in zip(samples_list, targets)])),
        "coverage_50": float(np.mean([coverage(f.samples, y, 0.5) for f, y in zip(kept_f, targets)])),
        "coverage_90": float(np.mean([coverage(f.samples, y, 0.9) for f, y in zip(kept_f, targets)])),
        "CRPS-Sum-exact": crps_sum_exact(samples_list, targets),
        **probts_scores(samples_list, targets),
    }
    out.update(_calibration(samples_list, targets))
    out.update({f"gluonts/{k}": float(v) for k, v in agg.items() if np.isscalar(v)})
    return out
