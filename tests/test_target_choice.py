"""target="auto" (increments for near-random walks, seasonal differences for data whose last season forecasts
better) and the other choices made on the training data: the season, the time features."""

import numpy as np
import pandas as pd
import pytest
from gluonts.dataset.common import ListDataset

from vsmd_ts import VSMDEstimator
from vsmd_ts.timeseries.features import (choose_season, covered_time_features, default_lags, season_candidates,
                                         season_length)


@pytest.mark.parametrize("freq, steps", [("h", 24), ("15min", 96), ("30min", 48), ("2h", 12), ("7h", 1), ("D", 7),
                                         ("B", 5), ("W", 52), ("M", 12), ("Q", 4), ("2D", 1)])
def test_season_length_is_the_data_s_main_cycle(freq, steps):
    assert season_length(freq) == steps


def walk(T=600, D=3, seed=0):
    return np.random.default_rng(seed).standard_normal((D, T)).cumsum(1) + 100


def cycle(T=600, D=3, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return np.stack([5 * np.sin(2 * np.pi * t / 24 + i) + noise * rng.standard_normal(T) for i in range(D)]) + 50


def weekly(T=24 * 7 * 8, D=2, seed=0, noise=0.3):
    """A daily cycle whose weekends (days 5 and 6 of each week) sit 8 units lower."""
    t = np.arange(T)
    weekend = ((t // 24) % 7 >= 5).astype(float)
    return cycle(T, D, seed, noise) - 8 * weekend


def test_choose_season_separates_walks_from_cycles():
    assert choose_season([walk()], 24, [1, 24]) == 1
    assert choose_season([cycle()], 24, [1, 24]) == 24
    assert choose_season([cycle()], 24, [1]) == 1  # no season: increments
    # units do not matter, and several entries pool their errors
    assert choose_season([1e-6 * cycle(), 1e6 * cycle(seed=1)], 24, [1, 24]) == 24
    # a walk with a small cycle on top is still a walk at this horizon
    assert choose_season([walk() + 0.01 * cycle()], 24, [1, 24]) == 1


def test_choose_season_prefers_the_week_where_weekends_differ():
    assert choose_season([weekly()], 24, [1, 24, 168]) == 168
    assert choose_season([cycle(T=24 * 7 * 8)], 24, [1, 24, 168]) == 24  # nothing weekly: the day is as good, and
    # a week of seasonal noise more than the day's
    assert choose_season([weekly(T=24 * 5)], 24, [1, 24, 168]) == 24  # too short for a week: not weighed
    with pytest.raises(ValueError, match="at least one season"):
        choose_season([cycle()], 24, [])


def test_choose_season_ignores_missing_values_and_short_histories():
    y = cycle()
    y[1, 100:300] = np.nan
    assert choose_season([y], 24, [1, 24]) == 24
    assert choose_season([cycle(T=30)], 24, [1, 24]) == 1  # no window with a season of history before it


@pytest.mark.parametrize("freq, seasons, lags", [("h", [24, 168], [1, 2, 3, 24, 168]),
                                                 ("30min", [48, 336], [1, 2, 3, 48, 336]),
                                                 ("D", [7], [1, 2, 3, 7, 14]), ("7h", [], [1, 2, 3, 24])])
def test_sub_daily_data_weigh_a_day_and_a_week_and_lag_both(freq, seasons, lags):
    assert season_candidates(freq) == seasons
    assert default_lags(freq) == lags


def tiny(**kw):
    args = dict(freq="h", prediction_length=6, target_dim=3, context_length=12, lags_seq=[1, 24], hidden_size=8,
                num_layers=1, denoiser_hidden=16, batch_size=4, num_batches_per_epoch=2,
                sampler_steps=2, num_parallel_samples=4, ensemble_size=1, seed=0, progress=False,
                trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False))
    args.update(kw)
    estimator = VSMDEstimator(**args)
    estimator.model_kwargs["denoiser_blocks"] = 1  # the network layer's option: a one-block denoiser, fast tests
    return estimator


def data(target, freq="h"):
    return ListDataset([{"start": pd.Period("2021-01-01", freq=freq), "target": target}], freq=freq,
                       one_dim_target=False)


@pytest.mark.parametrize("make, target", [(cycle, "seasonal"), (walk, "delta")])
def test_auto_target_is_chosen_on_the_training_data_and_kept_by_the_predictor(make, target, tmp_path):
    from gluonts.model.predictor import Predictor

    est = tiny()
    assert est.model_kwargs["target"] == "auto"
    predictor = est.train(data(make(T=200)))
    assert est.data_target == target and predictor.prediction_net.model.target == target
    predictor.serialize(tmp_path)
    assert Predictor.deserialize(tmp_path).prediction_net.model.target == target
    # an explicit target is never overridden
    assert tiny(target="delta").train(data(cycle(T=200))).prediction_net.model.target == "delta"


def test_the_naive_repeats_the_chosen_season(tmp_path):
    from gluonts.model.predictor import Predictor

    est = tiny(lags_seq=[1, 24, 168])
    predictor = est.train(data(weekly(D=3)))
    assert (est.data_target, est.data_season) == ("seasonal", 168)
    assert predictor.prediction_net.model.season_length == 168
    predictor.serialize(tmp_path)
    assert Predictor.deserialize(tmp_path).prediction_net.model.season_length == 168
    # a season that does not fit in the model's past window (context 12 + lag 24) is not weighed
    est = tiny()
    est.train(data(weekly(D=3)))
    assert (est.data_target, est.data_season) == ("seasonal", 24)


def test_seasonal_differences_take_the_chosen_season_and_keep_it_in_the_predictor(tmp_path):
    from gluonts.model.predictor import Predictor

    est = tiny(target="seasonal", lags_seq=[1, 24, 168], num_parallel_samples=8)
    train = data(weekly(D=3))
    predictor = est.train(train)
    model = predictor.prediction_net.model
    assert (est.data_season, model.target, model.season_length, model.lag) == (168, "seasonal", 168, 168)
    predictor.serialize(tmp_path)
    loaded = Predictor.deserialize(tmp_path)
    assert (loaded.prediction_net.model.target, loaded.prediction_net.model.lag) == ("seasonal", 168)
    forecast = next(iter(loaded.predict(train)))
    assert forecast.samples.shape == (8, 6, 3) and np.isfinite(forecast.samples).all()


@pytest.mark.parametrize("freq, steps, kept", [
    ("30min", 2419, ["minute_of_hour", "hour_of_day", "day_of_week"]),  # 50 days: no day of month or year
    ("h", 8640, ["hour_of_day", "day_of_week", "day_of_month"]),  # 360 days: all but the day of the year
    ("h", 2 * 8784, ["hour_of_day", "day_of_week", "day_of_month", "day_of_year"]),
    ("B", 6071, ["day_of_week", "day_of_month", "day_of_year"]),
    ("h", 47, []),  # less than two days: not even the hour of the day
])
def test_time_features_are_kept_only_where_the_data_show_their_cycle_twice(freq, steps, kept):
    assert [f.__name__ for f in covered_time_features(freq, steps)] == kept


def test_the_network_reads_the_time_features_its_training_data_cover(tmp_path):
    from gluonts.model.predictor import Predictor

    est = tiny()
    assert len(est.time_features) == 4  # before training: every feature of the frequency
    predictor = est.train(data(cycle(T=24 * 10)))  # ten days: the hour of the day only
    assert [f.__name__ for f in est.time_features] == ["hour_of_day"]
    assert predictor.prediction_net.model.num_time_features == 2  # with the age
    predictor.serialize(tmp_path)
    loaded = Predictor.deserialize(tmp_path)
    assert np.isfinite(next(iter(loaded.predict(data(cycle(T=24 * 10))))).samples).all()
    # continuing the training on longer data keeps the network's inputs
    longer = tiny().train_from(loaded, data(cycle(T=24 * 40)))
    assert longer.prediction_net.model.num_time_features == 2
