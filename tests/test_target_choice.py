"""target="auto": increments for near-random walks, levels for data whose last season forecasts better."""

import numpy as np
import pandas as pd
import pytest
from gluonts.dataset.common import ListDataset

from vsmd_ts import VSMDEstimator
from vsmd_ts.timeseries.features import choose_target, season_length


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


def test_choose_target_separates_walks_from_cycles():
    assert choose_target([walk()], 24, 24) == "delta"
    assert choose_target([cycle()], 24, 24) == "level"
    assert choose_target([cycle()], 24, 1) == "delta"  # no season: increments
    # units do not matter, and several entries pool their errors
    assert choose_target([1e-6 * cycle(), 1e6 * cycle(seed=1)], 24, 24) == "level"
    # a walk with a small cycle on top is still a walk at this horizon
    assert choose_target([walk() + 0.01 * cycle()], 24, 24) == "delta"


def test_choose_target_ignores_missing_values_and_short_histories():
    y = cycle()
    y[1, 100:300] = np.nan
    assert choose_target([y], 24, 24) == "level"
    assert choose_target([cycle(T=30)], 24, 24) == "delta"  # no window with a season of history before it


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


@pytest.mark.parametrize("make, target", [(cycle, "level"), (walk, "delta")])
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
