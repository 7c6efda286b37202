import json

import numpy as np
import pandas as pd
import properscoring
import pytest
from gluonts.model.forecast import SampleForecast

from vsmd_ts.timeseries.metrics import (
    QUANTILES,
    crps_sum_exact,
    evaluate_forecasts,
    pit_histogram,
    pit_values,
    reliability,
)


def _windows(n=4, S=300, H=5, D=3, seed=0, scale=1.0, shift=0.0):
    """Windows whose truth is drawn from the forecast distribution N(5, 1) (scaled/shifted forecasts: miscalibrated)."""
    rng = np.random.default_rng(seed)
    forecasts, tss = [], []
    for k in range(n):
        index = pd.period_range("2020-01-01", periods=12 + k, freq="D")
        truth = pd.DataFrame(5 + rng.standard_normal((len(index), D)), index=index)
        samples = 5 + shift + scale * rng.standard_normal((S, H, D))
        forecasts.append(SampleForecast(samples.astype(np.float32), start_date=index[-H]))
        tss.append(truth)
    return forecasts, tss


def test_crps_sum_exact_hand_computed():
    # summed samples {0, 2}, summed truth 1: CRPS = E|X - y| - E|X - X'| / 2 = 1 - (0 + 2 + 2 + 0) / 4 / 2 = 0.5
    samples = np.array([[[0.0, 0.0]], [[1.5, 0.5]]])  # (S=2, H=1, D=2)
    y = np.array([[0.25, 0.75]])
    assert crps_sum_exact([samples], [y]) == pytest.approx(0.5)
    # two windows pool numerators and denominators: second window CRPS 0 (point mass at the truth), |y_sum| 3
    samples2 = np.full((2, 1, 2), 1.5)
    assert crps_sum_exact([samples, samples2], [y, np.array([[1.5, 1.5]])]) == pytest.approx(0.5 / 4)


def test_crps_sum_exact_matches_properscoring_and_the_quantile_version():
    forecasts, tss = _windows(S=1000)
    metrics = evaluate_forecasts(forecasts, tss)
    num = den = 0.0
    for f, ts in zip(forecasts, tss):
        ys = ts.to_numpy()[-5:].sum(1)
        num += properscoring.crps_ensemble(ys, f.samples.sum(2).T.astype(np.float64)).sum()
        den += np.abs(ys).sum()
    assert metrics["CRPS-Sum-exact"] == pytest.approx(num / den, rel=1e-6)
    # the 19-quantile score leaves out the tails but approximates the same integral
    assert metrics["CRPS-Sum"] == pytest.approx(metrics["CRPS-Sum-exact"], rel=0.1)


def test_pit_values_hand_computed():
    samples = np.array([1.0, 2.0, 3.0, 4.0])[:, None]
    y = np.array([2.5, 2.0, 0.0, 5.0])
    np.testing.assert_allclose(pit_values(np.repeat(samples, 4, 1), y), [0.5, 0.375, 0.0, 1.0])
    # NaN targets are dropped; the histogram closes its last bin, so a PIT of 1 is counted
    assert pit_values(np.repeat(samples, 2, 1), np.array([np.nan, 2.5])).tolist() == [0.5]
    np.testing.assert_array_equal(pit_histogram(np.array([0.0, 0.05, 0.5, 1.0]), bins=4), [2, 0, 1, 1])


def test_calibrated_forecasts_are_uniform_and_on_the_diagonal():
    forecasts, tss = _windows(n=20, S=400, H=10, D=10, seed=1)
    m = evaluate_forecasts(forecasts, tss)
    counts = np.array(m["pit_counts"])
    assert counts.sum() == 20 * 10 * 10
    # binomial(2000, 0.1) per bin: mean 200, sd 13.4
    assert np.all(np.abs(counts - 200) < 5 * 13.4)
    assert np.max(np.abs(np.array(m["reliability"]) - np.array(QUANTILES))) < 0.05
    assert m["coverage_90"] == pytest.approx(0.9, abs=0.03)
    # the summed truth is a sum of independent N(5, 1): the summed forecast is calibrated too
    assert sum(m["pit_counts_sum"]) == 200
    assert m["coverage_90_sum"] == pytest.approx(0.9, abs=0.07)


def test_summed_coverage_sees_what_per_series_coverage_misses():
    # per series the forecast is calibrated, but the series move together in the samples and not in the truth:
    # the summed forecast is far too wide (variance D^2 instead of D) and covers nearly everything
    rng = np.random.default_rng(2)
    D, H, S = 8, 10, 500
    forecasts, tss = [], []
    for k in range(10):
        index = pd.period_range("2020-01-01", periods=H, freq="D")
        tss.append(pd.DataFrame(rng.standard_normal((H, D)), index=index))
        common = rng.standard_normal((S, H, 1))
        forecasts.append(SampleForecast(np.repeat(common, D, 2).astype(np.float32), start_date=index[0]))
    m = evaluate_forecasts(forecasts, tss)
    assert m["coverage_90"] == pytest.approx(0.9, abs=0.05)
    assert m["coverage_50_sum"] > 0.85 and m["coverage_90_sum"] > 0.99
    counts = np.array(m["pit_counts_sum"])
    assert counts[4:6].sum() > counts[[0, 9]].sum()  # a hump in the middle: over-dispersed


def test_reliability_of_biased_forecasts_is_off_the_diagonal():
    rng = np.random.default_rng(3)
    samples = rng.standard_normal((1000, 5000))
    y = rng.standard_normal(5000)
    levels = (0.1, 0.5, 0.9)
    np.testing.assert_allclose(reliability(samples, y, levels), levels, atol=0.03)
    # forecasts shifted up by one sd: the truth falls below the 50% quantile about Phi(1) = 84% of the time
    np.testing.assert_allclose(reliability(samples + 1.0, y, levels)[1], 0.841, atol=0.03)


def test_evaluate_forecasts_is_json_serialisable():
    forecasts, tss = _windows(n=2, S=50)
    m = evaluate_forecasts(forecasts, tss)
    back = json.loads(json.dumps(m))
    assert len(back["pit_counts"]) == 10 and len(back["reliability_sum"]) == len(QUANTILES)
    assert 0 <= back["coverage_50_sum"] <= back["coverage_90_sum"] <= 1


def test_calibration_plots_are_written(tmp_path):
    from vsmd_ts.timeseries.plots import plot_pit_histogram, plot_reliability

    good = evaluate_forecasts(*_windows(n=2, S=50))
    wide = evaluate_forecasts(*_windows(n=2, S=50, scale=3.0))
    for fn in (plot_pit_histogram, plot_reliability):
        for metrics in (good, {"calibrated": good, "too wide": wide}):
            path = fn(metrics, tmp_path / f"{fn.__name__}_{len(metrics)}.png", title="test")
            assert path.stat().st_size > 5000
