"""Naive multivariate forecasters that need no training: the floor every trained model must clear.

Both take the grouped datasets of :mod:`vsmd_ts.timeseries.data` (one entry per
window, target ``(D, T)``) and return ``SampleForecast`` objects with samples
``(num_samples, H, D)``, so ``make_evaluation_predictions`` and
:func:`vsmd_ts.timeseries.metrics.evaluate_forecasts` treat them like any
trained predictor.

* :class:`RandomWalkPredictor`: the last observed value plus the cumulative sum
  of i.i.d. ``N(0, C)`` steps, ``C`` the sample covariance of the last
  ``window`` one-step increments.
* :class:`SeasonalNaivePredictor`: the value one season back plus Gaussian
  noise with the covariance of the last ``window`` seasonal differences (the
  variance grows with the number of seasons ahead).
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
from gluonts.core.component import validated
from gluonts.dataset.common import Dataset
from gluonts.model.forecast import SampleForecast
from gluonts.model.predictor import RepresentablePredictor

__all__ = ["RandomWalkPredictor", "SeasonalNaivePredictor", "gaussian_steps", "increment_covariance"]


def increment_covariance(target: np.ndarray, lag: int, window: int) -> np.ndarray:
    """Sample covariance of the last ``window`` lag-``lag`` differences of ``target``.

    Parameters
    ----------
    target
        History, shape ``(D, T)``. Differences touching a NaN are dropped.
    lag
        1 for one-step increments, the season length for seasonal differences.
    window
        How many of the most recent differences to use.

    Returns
    -------
    np.ndarray
        Covariance ``(D, D)`` (zeros when fewer than two differences exist).
    """
    diffs = target[:, lag:] - target[:, :-lag]
    diffs = diffs[:, -window:]
    diffs = diffs[:, np.isfinite(diffs).all(axis=0)]
    D = target.shape[0]
    if diffs.shape[1] < 2:
        return np.zeros((D, D))
    return np.atleast_2d(np.cov(diffs))


def gaussian_steps(cov: np.ndarray, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Draws of ``N(0, cov)``, shape ``shape + (D,)``.

    Uses a symmetric square root from ``eigh`` (clipped at zero), so a singular
    covariance (fewer increments than series) is fine.
    """
    evals, evecs = np.linalg.eigh(cov)
    root = evecs * np.sqrt(np.clip(evals, 0.0, None))
    z = rng.standard_normal(shape + (cov.shape[0],))
    return z @ root.T


def _last_finite(target: np.ndarray) -> np.ndarray:
    """Last observed value of each series, shape ``(D,)`` (forward fill over trailing NaNs)."""
    out = np.full(target.shape[0], np.nan)
    for d, row in enumerate(target):
        finite = np.flatnonzero(np.isfinite(row))
        out[d] = row[finite[-1]] if finite.size else 0.0
    return out


class _NaivePredictor(RepresentablePredictor):
    """Shared loop: one ``SampleForecast`` per dataset entry, paths from ``_paths``."""

    def __init__(self, prediction_length: int, window: int, num_samples: int, seed: int) -> None:
        super().__init__(prediction_length=prediction_length)
        if window < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        self.window = window
        self.num_samples = num_samples
        self.seed = seed

    def predict(self, dataset: Dataset, num_samples: Optional[int] = None, **kwargs) -> Iterator[SampleForecast]:
        # a fresh generator per call: the same call gives the same paths
        rng = np.random.default_rng(self.seed)
        S = num_samples or self.num_samples
        for entry in dataset:
            target = np.atleast_2d(np.asarray(entry["target"], dtype=np.float64))
            samples = self._paths(target, S, rng)
            yield SampleForecast(
                samples.astype(np.float32), start_date=entry["start"] + target.shape[1], item_id=entry.get("item_id")
            )

    def _paths(self, target: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class RandomWalkPredictor(_NaivePredictor):
    """Gaussian random walk from the last observed value.

    Parameters
    ----------
    prediction_length
        Horizon ``H``.
    window
        Number of most recent one-step increments whose covariance ``C`` drives
        the walk (choose it on validation windows).
    num_samples
        Default number of paths (``predict(..., num_samples=...)`` overrides).
    seed
        Seed of the path draws.
    """

    @validated()
    def __init__(self, prediction_length: int, window: int = 100, num_samples: int = 100, seed: int = 0) -> None:
        super().__init__(prediction_length, window, num_samples, seed)

    def _paths(self, target, num_samples, rng):
        C = increment_covariance(target, 1, self.window)
        steps = gaussian_steps(C, (num_samples, self.prediction_length), rng)
        return _last_finite(target) + np.cumsum(steps, axis=1)


class SeasonalNaivePredictor(_NaivePredictor):
    """Value one season back plus Gaussian noise of the seasonal differences.

    The step ``h`` steps ahead (1-based) repeats the last observed season and
    adds noise ``N(0, k C_s)`` with ``k = ceil(h / season_length)`` seasons
    ahead, ``C_s`` the covariance of the last ``window`` lag-``season_length``
    differences.

    Parameters
    ----------
    prediction_length
        Horizon ``H``.
    season_length
        Period in steps (24 for hourly data with a daily cycle).
    window, num_samples, seed
        As for :class:`RandomWalkPredictor`.
    """

    @validated()
    def __init__(
        self, prediction_length: int, season_length: int = 24, window: int = 168, num_samples: int = 100, seed: int = 0
    ) -> None:
        super().__init__(prediction_length, window, num_samples, seed)
        self.season_length = season_length

    def _paths(self, target, num_samples, rng):
        s, H = self.season_length, self.prediction_length
        if target.shape[1] < s + 1:
            raise ValueError(f"need more than one season ({s} steps) of history, got {target.shape[1]}")
        h = np.arange(1, H + 1)
        seasons_ahead = np.ceil(h / s)
        base = target[:, target.shape[1] - s + (h - 1) % s].T  # (H, D)
        base = np.where(np.isfinite(base), base, _last_finite(target))
        C = increment_covariance(target, s, self.window)
        noise = gaussian_steps(C, (num_samples, H), rng) * np.sqrt(seasons_ahead)[:, None]
        return base + noise
