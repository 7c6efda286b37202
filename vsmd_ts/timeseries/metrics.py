"""Forecast evaluation in the standard multivariate protocol.

CRPS and CRPS-Sum are GluonTS's ``MultivariateEvaluator`` numbers over the 19
quantile levels 0.05 ... 0.95: CRPS = ``mean_wQuantileLoss`` (per series),
CRPS-Sum = ``m_sum_mean_wQuantileLoss`` (on the sum over series). Energy score
and interval coverage are computed from the samples.
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd

__all__ = ["QUANTILES", "agg_sum", "coverage", "energy_score", "evaluate_forecasts"]

QUANTILES = tuple((np.arange(20) / 20.0)[1:])


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


def evaluate_forecasts(forecasts: Sequence, tss: Sequence[pd.DataFrame]) -> Dict[str, float]:
    """Standard metrics for lists of ``SampleForecast`` and target frames.

    Returns a dict with ``CRPS``, ``CRPS-Sum``, ``ND-Sum``, ``NRMSE-Sum``,
    ``energy_score``, ``coverage_50`` and ``coverage_90`` (means over windows
    where applicable), plus every aggregate GluonTS computes under ``gluonts/``.
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
    for f, ts in zip(forecasts, tss):
        H = f.samples.shape[1]
        y = ts.to_numpy()[-H:]
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
    }
    out.update({f"gluonts/{k}": float(v) for k, v in agg.items() if np.isscalar(v)})
    return out
