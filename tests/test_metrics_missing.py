"""Missing target values, windows with nothing observed and bad input in ``evaluate_forecasts``."""

import numpy as np
import pandas as pd
import pytest
from gluonts.evaluation import MultivariateEvaluator
from gluonts.model.forecast import SampleForecast
from test_data_metrics import _window

from vsmd_ts.timeseries.metrics import QUANTILES, agg_sum, energy_score, evaluate_forecasts

nan = np.nan


def _hand_window(target, samples, item_id=None):
    """A window whose last ``H`` rows are ``target`` (``(H, D)``), after 4 observed past rows, and its forecast."""
    target, samples = np.asarray(target, float), np.asarray(samples, np.float32)
    H, D = target.shape
    index = pd.period_range("2020-01-01", periods=4 + H, freq="D")
    past = 1.0 + np.arange(4 * D).reshape(4, D)
    truth = pd.DataFrame(np.concatenate([past, target]), index=index)
    return SampleForecast(samples, start_date=index[-H], item_id=item_id), truth


def _hand_case():
    """Two windows, H = 2, D = 2, S = 3; window 0 misses one value, window 1 a whole step.

    Summed over the observed series only, the three scored steps are
    (target 1, samples {0.5, 1.5, 1.0}), (5, {3, 6, 4}) and (5, {4, 6, 5.5}).
    """
    w0 = _hand_window([[1.0, nan], [2.0, 3.0]],
                      [[[0.5, 10.0], [1.0, 2.0]], [[1.5, 20.0], [2.5, 3.5]], [[1.0, 30.0], [1.5, 2.5]]])
    w1 = _hand_window([[nan, nan], [4.0, 1.0]],
                      [[[7.0, 8.0], [3.0, 1.0]], [[9.0, 7.0], [4.0, 2.0]], [[8.0, 9.0], [5.0, 0.5]]])
    return [w0[0], w1[0]], [w0[1], w1[1]]


def test_summed_scores_mask_the_same_series_in_targets_and_samples():
    forecasts, tss = _hand_case()
    m = evaluate_forecasts(forecasts, tss)
    # 19-quantile CRPS-Sum, GluonTS's quantiles of S = 3 samples (the sorted sample at round(2 a)): the minimum
    # for a <= 0.25, the median for 0.3 <= a <= 0.7, the maximum for a >= 0.75. Quantile loss 2 |(q - y)(1{y <= q} - a)|
    # summed over the three steps: 7 a (minima 0.5, 3, 4), 1 + a (medians 1, 4, 5.5), 5 (1 - a) (maxima 1.5, 6, 6);
    # over the levels 5.25 + 13.5 + 3.75 = 22.5, divided by sum |y| = 11 and by the 19 levels
    assert m["CRPS-Sum"] == pytest.approx(22.5 / 11 / 19, rel=1e-12)
    # the same with the quantiles taken by numpy from the masked sums
    steps = [(1.0, [0.5, 1.5, 1.0]), (5.0, [3.0, 6.0, 4.0]), (5.0, [4.0, 6.0, 5.5])]
    loss = 0.0
    for a in QUANTILES:
        for y, s in steps:
            q = np.sort(s)[int(np.round(2 * a))]
            loss += 2 * abs((q - y) * ((y <= q) - a))
    assert m["CRPS-Sum"] == pytest.approx(loss / 11 / 19, rel=1e-12)
    # ND-Sum: |y - median| = 0, 1, 0.5; NRMSE-Sum: window MSEs of the mean (0, 2/3)^2 -> 2/9 and (1/6)^2, averaged,
    # over the mean of the windows' mean |y| (3 and 5); GluonTS takes the mean of the float32 samples in float32
    assert m["ND-Sum"] == pytest.approx(1.5 / 11, rel=1e-12)
    assert m["NRMSE-Sum"] == pytest.approx(np.sqrt((2 / 9 + 1 / 36) / 2) / 4, rel=1e-6)
    # exact sample CRPS E|X - y| - E|X - X'| / 2 per step: 1/3 - 2/9, 4/3 - 2/3, 5/6 - 4/9, summed: 7/6
    assert m["CRPS-Sum-exact"] == pytest.approx(7 / 6 / 11, rel=1e-9)
    # the summed PIT sees the three observed steps
    assert sum(m["pit_counts_sum"]) == 3


def test_without_missing_values_the_scores_are_gluonts_multivariate_evaluators():
    windows = [_window(S=50, H=3, D=3, seed=seed) for seed in range(3)]
    forecasts, tss = [f for f, _ in windows], [ts for _, ts in windows]
    m = evaluate_forecasts(forecasts, tss)
    evaluator = MultivariateEvaluator(quantiles=QUANTILES, target_agg_funcs={"sum": agg_sum})
    agg, _ = evaluator(iter(tss), iter(forecasts), num_series=len(forecasts))
    assert m["CRPS-Sum"] == pytest.approx(agg["m_sum_mean_wQuantileLoss"], rel=1e-9, abs=0)
    assert m["ND-Sum"] == pytest.approx(agg["m_sum_ND"], rel=1e-9, abs=0)
    assert m["NRMSE-Sum"] == pytest.approx(agg["m_sum_NRMSE"], rel=1e-9, abs=0)
    assert m["CRPS"] == pytest.approx(agg["mean_wQuantileLoss"], rel=1e-9, abs=0)
    scalars = {f"gluonts/{k}": float(v) for k, v in agg.items() if np.isscalar(v)}
    assert scalars.keys() == {k for k in m if k.startswith("gluonts/")}
    for k, v in scalars.items():
        assert m[k] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), k


def _three_windows():
    """Three ``_window`` windows (H = 4, D = 3) whose forecasts are named 'a', 'b', 'c'."""
    windows = [_window(S=50, H=4, D=3, seed=seed) for seed in range(3)]
    forecasts = [SampleForecast(f.samples, start_date=f.start_date, item_id=name)
                 for (f, _), name in zip(windows, "abc")]
    return forecasts, [ts for _, ts in windows]


def test_a_window_with_nothing_observed_is_left_out_with_a_warning():
    forecasts, tss = _three_windows()
    kept = evaluate_forecasts([forecasts[0], forecasts[2]], [tss[0], tss[2]])
    tss[1].iloc[-4:] = nan  # the forecast's 4 steps
    with pytest.warns(UserWarning, match=r"forecast 1 \(item_id 'b', start 2020-01-17\): no observed target value"):
        m = evaluate_forecasts(forecasts, tss)
    assert m.keys() == kept.keys()
    for k in m:
        np.testing.assert_allclose(m[k], kept[k], rtol=1e-12, err_msg=k)
    assert np.isnan(energy_score(forecasts[1].samples, tss[1].to_numpy()[-4:]))  # not 0, a perfect score


def test_nothing_observed_in_any_window_raises():
    forecasts, tss = _three_windows()
    for ts in tss:
        ts.iloc[-4:] = nan
    with pytest.raises(ValueError, match="no observed target value in any of the 3 windows"):
        with pytest.warns(UserWarning, match="no observed target value in its 4 steps"):
            evaluate_forecasts(forecasts, tss)


@pytest.mark.parametrize("bad", [nan, np.inf, -np.inf])
def test_non_finite_samples_raise_naming_the_forecast(bad):
    forecasts, tss = _three_windows()
    forecasts[1].samples[7, 2, 0] = bad
    with pytest.raises(ValueError, match=r"forecast 1 \(item_id 'b', start 2020-01-17\) has non-finite samples"):
        evaluate_forecasts(forecasts, tss)


def test_empty_or_mismatched_input_raises():
    forecasts, tss = _three_windows()
    with pytest.raises(ValueError, match="no forecasts to evaluate"):
        evaluate_forecasts([], [])
    with pytest.raises(ValueError, match="3 forecasts but 2 target frames"):
        evaluate_forecasts(forecasts, tss[:2])
    with pytest.raises(ValueError, match="0 forecasts but 3 target frames"):
        evaluate_forecasts(iter([]), tss)


def test_one_series_is_scored_like_its_sum():
    from gluonts.evaluation import Evaluator

    rng = np.random.default_rng(3)
    index = pd.period_range("2021-01-01", periods=10, freq="h")
    forecasts, tss = [], []
    for k in range(2):
        y = rng.normal(10, 1, size=(10, 1))
        tss.append(pd.DataFrame(y, index=index))
        forecasts.append(SampleForecast(rng.normal(10, 1, size=(50, 4, 1)), start_date=index[6]))
    out = evaluate_forecasts(forecasts, tss)
    uni = [SampleForecast(f.samples[..., 0], start_date=f.start_date) for f in forecasts]
    agg, _ = Evaluator(quantiles=QUANTILES, num_workers=None)(iter([t[0] for t in tss]), iter(uni), num_series=2)
    assert out["CRPS"] == out["CRPS-Sum"] == pytest.approx(agg["mean_wQuantileLoss"], rel=1e-9)
