"""Series shorter than the model's window (issue 28, item 6): left-padded as unobserved, in training and at
prediction, down to MIN_HISTORY = 2 steps; GluonTS's generic estimator checks (other lengths at prediction,
validation data, a serialised round trip, item_id carried through)."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from gluonts.dataset.common import ListDataset
from gluonts.model.predictor import Predictor

from test_timeseries import START, D, H, signal, tiny
from vsmd_ts.timeseries.checks import MIN_HISTORY
from vsmd_ts.timeseries.estimator import ContextInstanceSampler
from vsmd_ts.timeseries.module import VSMDModel

C, LAGS = 12, [1, 2, 24]  # the model's window: C + max(LAGS) = 36 steps


def entries(lengths, level=10.0):
    return [{"start": START + 1000 * k, "target": level + k + signal(T=n, seed=k), "item_id": f"item{k}"}
            for k, n in enumerate(lengths)]


def listed(items):
    return ListDataset(items, freq="h", one_dim_target=False)


def test_the_splitter_left_pads_target_time_features_and_observed_mask_with_zeros():
    estimator = tiny(context_length=C, lags_seq=LAGS)
    module = estimator.create_lightning_module()
    splitter = estimator._create_instance_splitter(module, "test")
    y = 10 + signal(T=5)
    (entry,) = list((estimator.create_transformation() + splitter).apply(listed([{"start": START, "target": y}]),
                                                                        is_train=False))
    P = module.model._past_length
    assert P == 36
    assert entry["past_target"].shape == (P, D) and entry["past_observed_values"].shape == (P, D)
    np.testing.assert_array_equal(entry["past_target"][:-5], 0)
    np.testing.assert_array_equal(entry["past_observed_values"][:-5], 0)
    np.testing.assert_array_equal(entry["past_observed_values"][-5:], 1)
    np.testing.assert_allclose(entry["past_target"][-5:], y.T, rtol=1e-6)
    np.testing.assert_array_equal(entry["past_time_feat"][:-5], 0)  # the age feature too: 0 marks padding
    assert (entry["past_time_feat"][-5:, -1] > 0).all()
    assert entry["forecast_start"] == START + 5


def _padded(y, P):
    """A window of P steps ending with ``y`` (T, D), left-padded as the splitter pads: zeros, unobserved."""
    target, observed = torch.zeros(1, P, y.shape[1]), torch.zeros(1, P, y.shape[1])
    target[0, -len(y):], observed[0, -len(y):] = torch.tensor(y, dtype=torch.float32), 1
    return target, observed


@pytest.mark.parametrize("scaling", ["whiten", "std"])
def test_random_walk_of_a_padded_window_takes_its_scale_from_the_observed_steps_only(scaling):
    model = VSMDModel(target_dim=D, prediction_length=H, context_length=C, lags_seq=LAGS, num_time_features=1,
                      scaling=scaling, num_parallel_samples=20000)
    y = (10 + signal(T=5)).T  # (5, D): 4 increments, the scale window (12 steps) is mostly padding
    target, observed = _padded(y, model._past_length)
    paths = model.random_walk(target, observed)[0].double().numpy()  # (S, H, D)
    assert np.isfinite(paths).all()
    rms = np.sqrt((np.diff(y, axis=0) ** 2).mean(0))  # the padding and the jump onto the first value left out
    np.testing.assert_allclose((paths[:, 0] - y[-1]).std(0), rms, rtol=0.05)
    np.testing.assert_allclose(paths[:, 0].mean(0), y[-1], atol=0.05 * rms.max())


def test_seasonal_naive_of_a_padded_window_repeats_the_last_observed_season():
    s = 4
    model = VSMDModel(target_dim=2, prediction_length=H, context_length=8, lags_seq=[1, 4], num_time_features=1,
                      season_length=s, target="level", num_parallel_samples=4000)
    P = model._past_length
    rng = np.random.default_rng(0)
    y = 5 + np.tile(rng.normal(size=(s, 2)), (3, 1))[:7] + 0.01 * rng.normal(size=(7, 2))  # 7 steps > a season
    paths = model.seasonal_naive(*_padded(y, P))[0].double().numpy()
    assert np.isfinite(paths).all()
    np.testing.assert_allclose(paths.mean(0), y[len(y) - s + np.arange(H) % s], atol=0.02)
    # no more than a season of history: the last value (a season of one step), not the padding
    short = model.seasonal_naive(*_padded(y[:s], P))[0].double().numpy()
    assert np.isfinite(short).all()
    np.testing.assert_allclose(short.mean(0), np.broadcast_to(y[s - 1], (H, 2)), atol=0.05)
    # the two-step minimum: one increment, a finite walk
    two = model.seasonal_naive(*_padded(y[:MIN_HISTORY], P))[0].double().numpy()
    assert np.isfinite(two).all()


def test_the_training_sampler_gives_short_series_windows_and_long_ones_full_contexts():
    sampler = ContextInstanceSampler(num_instances=1.0, min_past=C, min_future=H)
    assert sampler._get_bounds(np.zeros((D, 100))) == (C, 100 - H)  # as ExpectedNumInstanceSampler
    assert sampler._get_bounds(np.zeros((D, 15))) == (MIN_HISTORY, 15 - H)
    assert sampler._get_bounds(np.zeros((D, C + H - 1))) == (MIN_HISTORY, C - 1)
    assert len(sampler(np.zeros((D, MIN_HISTORY + H - 1)))) == 0  # below the minimum: no window
    np.random.seed(0)
    drawn = np.concatenate([sampler(np.zeros((D, 15))) for _ in range(200)])
    assert drawn.min() == MIN_HISTORY and drawn.max() == 15 - H


@pytest.mark.parametrize("target", ["delta", "level", "seasonal"])
def test_series_shorter_than_the_window_train_and_forecast_near_their_level(target):
    # 15 steps: more than the context (12) but less than the window (12 + lag 24); with naive_share=1 every path is
    # the naive forecast, a Gaussian random walk (or seasonal naive), so the forecasts show what the scaling does
    data = entries([15, 15, 15])
    predictor = tiny(context_length=C, lags_seq=LAGS, target=target, naive_share=1.0).train(listed(data))
    assert predictor.prediction_net.model.target == target
    forecasts = list(predictor.predict(listed(data)))
    assert [f.item_id for f in forecasts] == ["item0", "item1", "item2"]
    for f, entry in zip(forecasts, data):
        y = entry["target"]
        assert f.samples.shape == (5, H, D) and np.isfinite(f.samples).all()
        assert f.start_date == entry["start"] + 15
        low, high = y.min(1), y.max(1)
        width = high - low
        median = np.median(f.samples, axis=0)  # (H, D)
        assert ((median > low - width) & (median < high + width)).all(), (median, low, high)


def test_series_below_the_minimum_raise_naming_the_entry_its_length_and_the_minimum():
    estimator = tiny(context_length=C, lags_seq=LAGS)
    too_short = MIN_HISTORY + H - 1
    with pytest.raises(ValueError, match=f"entry item1: series of length {too_short} is shorter than the minimum "
                                         f"of {MIN_HISTORY + H} \\({MIN_HISTORY} steps of history \\+ prediction_length"):
        estimator.train(listed(entries([40, too_short])))
    predictor = estimator.train(listed(entries([MIN_HISTORY + H])))  # the minimum trains
    forecasts = list(predictor.predict(listed(entries([MIN_HISTORY]))))  # and two steps forecast
    assert np.isfinite(forecasts[0].samples).all()
    with pytest.raises(ValueError, match=f"entry item0: series of length 1 is shorter than the minimum of "
                                         f"{MIN_HISTORY} \\({MIN_HISTORY} steps of history\\)"):
        list(predictor.predict(listed(entries([1]))))


def test_a_mix_of_long_and_short_series_trains_on_both():
    estimator = tiny(context_length=C, lags_seq=LAGS, ensemble_size=1, num_batches_per_epoch=20)
    data = listed(entries([160, 10]))
    module = estimator.create_lightning_module()
    transformed = estimator.create_transformation().apply(data, is_train=True)
    np.random.seed(0)
    batches = list(estimator.create_training_data_loader(transformed, module))
    history = np.concatenate([b["past_observed_values"][:, :, 0].sum(1).numpy() for b in batches])
    assert (history < C).any() and (history >= C).any()  # windows of the short series and full contexts
    predictor = estimator.train(data)
    for f in predictor.predict(data):
        assert np.isfinite(f.samples).all()


def test_gluonts_generic_estimator_checks():
    """What GluonTS's own estimator tests ask of every estimator: constant series of different lengths, validation
    data, a serialised round trip, forecasts for series longer and shorter than the training ones."""
    freq_start = pd.Period("2021-01-01 00:00", freq="h")
    train = [{"start": freq_start, "target": np.ones((D, 200), dtype=np.float32), "item_id": "a"},
             {"start": freq_start + 500, "target": 2 * np.ones((D, 100), dtype=np.float32), "item_id": "b"}]
    estimator = tiny(context_length=C, lags_seq=LAGS, ensemble_size=1)
    predictor = estimator.train(training_data=train, validation_data=train, shuffle_buffer_length=5)
    with tempfile.TemporaryDirectory() as folder:
        predictor.serialize(Path(folder))
        copy = Predictor.deserialize(Path(folder))
    assert copy == predictor
    test = [{"start": freq_start, "target": np.ones((D, 250), dtype=np.float32), "item_id": "longer"},
            {"start": freq_start + 500, "target": 2 * np.ones((D, 7), dtype=np.float32), "item_id": "shorter"},
            {"start": freq_start + 900, "target": 3 * np.ones((D, 100), dtype=np.float32)}]
    forecasts = list(copy.predict(test))
    assert [f.item_id for f in forecasts] == ["longer", "shorter", None]
    assert [f.start_date for f in forecasts] == [freq_start + 250, freq_start + 507, freq_start + 1000]
    for f, level in zip(forecasts, [1, 2, 3]):
        assert f.samples.shape == (5, H, D) and np.isfinite(f.samples).all()
        # a constant series: near its level (levels 1, 2, 3 lie 50 % or more apart; the tiny model is barely
        # trained, so its five paths stray by up to a tenth of the level)
        np.testing.assert_allclose(f.mean, level, rtol=0.25)
