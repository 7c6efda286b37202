"""Forecast evaluation in the standard multivariate protocol.

CRPS and CRPS-Sum are GluonTS's ``MultivariateEvaluator`` numbers over the 19
quantile levels 0.05 ... 0.95: CRPS = ``mean_wQuantileLoss`` (per series),
CRPS-Sum = ``m_sum_mean_wQuantileLoss`` (on the sum over series). Energy score,
interval coverage (per series and of the summed series), the probability
integral transform (PIT), reliability curves and the exact sample CRPS-Sum
(``properscoring.crps_ensemble`` on the summed series; the 19-quantile version
leaves out the tails and reads a few per cent higher) are computed from the
samples. ``ProbTS-CRPS`` and ``ProbTS-NMAE`` are the per-window normalised
scores of the ProbTS / CSDI papers (see :func:`probts_scores`), so numbers
published with them can be set beside ours.
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
    """``np.sum`` with an explicit ``axis`` (a bare ``np.sum`` triggers a pandas FutureWarning)."""
    return np.sum(x, axis=axis)


def energy_score(samples: np.ndarray, target: np.ndarray) -> float:
    """Energy score ``E|X - y| - E|X - X'| / 2`` of one window, over the flattened ``(H, D)`` path.

    ``samples``: ``(S, H, D)``; ``target``: ``(H, D)``. Unobserved (NaN)
    target entries are dropped.
    """
    obs = np.isfinite(target).ravel()
    X = samples.reshape(samples.shape[0], -1)[:, obs].astype(np.float64)
    y = target.ravel()[obs].astype(np.float64)
    first = np.linalg.norm(X - y, axis=1).mean()
    sq = (X * X).sum(1)
    pair = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0))
    return float(first - 0.5 * pair.mean())


def coverage(samples: np.ndarray, target: np.ndarray, level: float) -> float:
    """Fraction of observed target values inside the central ``level`` interval of the samples."""
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


def _summed(samples: np.ndarray, target: np.ndarray):
    """Sum over the last (series) axis; a step with any unobserved series is unobserved."""
    return samples.sum(-1), target.sum(-1)


def crps_sum_exact(samples_list: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> float:
    """Exact sample CRPS of the summed series over all windows, normalised by ``sum |y_sum|``.

    ``samples_list[k]``: ``(S, H, D)``; ``targets[k]``: ``(H, D)``. Uses
    ``properscoring.crps_ensemble`` (the energy form ``E|X - y| - E|X - X'| / 2``
    with the empirical distribution of the samples).
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
    """Summed-series coverage, PIT histograms and reliability curves, pooled over windows."""
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


def evaluate_forecasts(forecasts: Sequence, tss: Sequence[pd.DataFrame]) -> Dict[str, object]:
    """Standard metrics for lists of ``SampleForecast`` and target frames.

    Returns a dict with ``CRPS``, ``CRPS-Sum``, ``ND-Sum``, ``NRMSE-Sum``,
    ``energy_score``, ``coverage_50`` and ``coverage_90`` (means over windows
    where applicable), ``ProbTS-CRPS`` and ``ProbTS-NMAE`` (see
    :func:`probts_scores`), plus every aggregate GluonTS computes under ``gluonts/``.
    Calibration of the summed series and exact scores:

    * ``CRPS-Sum-exact``: exact sample CRPS of the summed series (see
      :func:`crps_sum_exact`), next to the 19-quantile ``CRPS-Sum``;
    * ``coverage_50_sum``, ``coverage_90_sum``: central-interval coverage of
      the summed series (mean over windows);
    * ``pit_counts`` (all series pooled) and ``pit_counts_sum`` (summed
      series): PIT histograms, ``PIT_BINS`` counts each (lists of ints);
    * ``reliability`` and ``reliability_sum``: observed frequency below each
      quantile in ``reliability_levels`` (lists of floats).
    """
    from gluonts.env import env
    from gluonts.evaluation import MultivariateEvaluator

    forecasts, tss = list(forecasts), list(tss)
    evaluator = MultivariateEvaluator(quantiles=QUANTILES, target_agg_funcs={"sum": agg_sum})
    # use_tqdm=False: one "Running evaluation" bar per series and aggregate (9 for exchange) is noise
    with warnings.catch_warnings(), env._let(use_tqdm=False):
        warnings.simplefilter("ignore", FutureWarning)
        agg, _ = evaluator(iter(tss), iter(forecasts), num_series=len(forecasts))
    es: List[float] = []
    c50: List[float] = []
    c90: List[float] = []
    samples_list, targets = [], []
    for f, ts in zip(forecasts, tss):
        H = f.samples.shape[1]
        y = ts.to_numpy()[-H:].astype(np.float64).reshape(H, -1)
        samples = np.asarray(f.samples, np.float64).reshape(f.samples.shape[0], H, -1)  # (S, H) -> (S, H, 1)
        samples_list.append(samples)
        targets.append(y)
        es.append(energy_score(f.samples, y))
        c50.append(coverage(f.samples, y, 0.5))
        c90.append(coverage(f.samples, y, 0.9))
    out = {
        "CRPS": float(agg["mean_wQuantileLoss"]),
        "CRPS-Sum": float(agg["m_sum_mean_wQuantileLoss"]),
        "ND-Sum": float(agg["m_sum_ND"]),
        "NRMSE-Sum": float(agg["m_sum_NRMSE"]),
        "energy_score": float(np.mean(es)),
        "coverage_50": float(np.mean(c50)),
        "coverage_90": float(np.mean(c90)),
        "CRPS-Sum-exact": crps_sum_exact(samples_list, targets),
        **probts_scores(samples_list, targets),
    }
    out.update(_calibration(samples_list, targets))
    out.update({f"gluonts/{k}": float(v) for k, v in agg.items() if np.isscalar(v)})
    return out
