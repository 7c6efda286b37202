"""Covariates with GluonTS DeepAR's names: known and past dynamic reals, static reals and categories."""

import warnings

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from gluonts.dataset.common import ListDataset
from gluonts.model.predictor import Predictor

from test_timeseries import START, _fixed_batch_loss, signal, tiny

from vsmd_ts import VSMDEstimator
from vsmd_ts.timeseries.metrics import crps_sum_exact

D, H, T = 3, 6, 120
ALL = dict(num_feat_dynamic_real=2, num_past_feat_dynamic_real=1, num_feat_static_real=1, num_feat_static_cat=2,
           cardinality=[3, 4])


def covariates(T=T, seed=1):
    rng = np.random.default_rng(seed)
    return dict(feat_dynamic_real=rng.standard_normal((2, T + H)).astype(np.float32),
                past_feat_dynamic_real=rng.standard_normal((1, T + H)).astype(np.float32),
                feat_static_real=[0.5], feat_static_cat=[2, 1])


def entries(ends, cov=None, target=None, **extra):
    """One entry per end: the target up to ``end``, known covariates up to ``end + H``, past ones up to ``end``."""
    target = signal(T=T + H) if target is None else target
    out = []
    for end in ends:
        entry = {"start": START, "target": target[:, :end], **extra}
        for key, value in (cov or {}).items():
            entry[key] = {"feat_dynamic_real": lambda v: v[:, :end + H],
                          "past_feat_dynamic_real": lambda v: v[:, :end]}.get(key, lambda v: v)(value)
        out.append(entry)
    return out


def data(ends, cov=None, **extra):
    return ListDataset(entries(ends, cov, **extra), freq="h", one_dim_target=False)


# ------------------------------------------------------------------- a covariate the forecast needs
def test_a_known_future_covariate_makes_the_forecast_far_better():
    """y_t = c + a x_t + small noise with x_t a random +-1 step signal: only a model that reads x_t can know
    the horizon. Tiny models trained briefly; the one reading x scores about 5x lower (seeds 0-2)."""
    Hs, Ts, W = 4, 500, 12
    rng = np.random.default_rng(0)
    x = rng.choice([-1.0, 1.0], size=(1, Ts)).astype(np.float32)
    y = np.stack([10 + 3 * x[0], 5 + 2 * x[0]]) + 0.1 * rng.standard_normal((2, Ts))
    train_end = Ts - W * Hs
    ends = [train_end + k * Hs for k in range(W)]

    def dataset(ends, cov):
        known = [{"feat_dynamic_real": x[:, :end + Hs]} if cov else {} for end in ends]
        return ListDataset([{"start": START, "target": y[:, :end], **k} for end, k in zip(ends, known)], freq="h",
                           one_dim_target=False)

    scores = {}
    for cov in (True, False):
        est = VSMDEstimator(
            freq="h", prediction_length=Hs, target_dim=2, context_length=16, lags_seq=[1], hidden_size=16,
            num_layers=1, denoiser_hidden=32, batch_size=32, num_batches_per_epoch=40,
            sampler_steps=10, num_parallel_samples=50, ensemble_size=1, naive_share=0.0, target="level",
            lr=3e-3, seed=0, progress=False, num_feat_dynamic_real=int(cov),
            trainer_kwargs=dict(max_epochs=5, enable_progress_bar=False, precision="32-true"))
        est.model_kwargs["denoiser_blocks"] = 1  # the network layer's option: a one-block denoiser, fast
        predictor = est.train(dataset([train_end], cov))
        torch.manual_seed(0)
        forecasts = list(predictor.predict(dataset(ends, cov)))
        scores[cov] = crps_sum_exact([f.samples for f in forecasts], [y[:, end:end + Hs].T for end in ends])
    assert scores[True] < scores[False] / 2, scores


# ------------------------------------------------------------------- every kind, end to end
@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    est = tiny(**ALL, target="delta", trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False))
    cov = covariates()
    return est, est.train(data([T - H], cov)), cov


def test_every_covariate_kind_trains_and_forecasts(trained):
    est, predictor, cov = trained
    assert predictor.input_names[-3:] == ["past_feat_dynamic_real", "feat_static_real", "feat_static_cat"]
    model = predictor.prediction_net.model
    # lags, time features + 2 known covariates, 1 past covariate + its indicator, scale features, 1 + 2 + 2 static
    F = len(est.time_features) + 1 + 2
    assert model.rnn.input_size == D * 3 + F + 2 + 2 * D + 1 + 2 + 2
    assert [e.embedding_dim for e in model.embeddings] == [2, 2]  # min(50, (c + 1) // 2)
    (forecast,) = list(predictor.predict(data([T], cov)))
    assert forecast.samples.shape == (5, H, D) and np.isfinite(forecast.samples).all()


def _forecast(predictor, dataset, seed=0):
    torch.manual_seed(seed)
    return np.stack([f.samples for f in predictor.predict(dataset)])


def test_forecasts_read_the_covariates_but_never_future_past_covariates(trained):
    _, predictor, cov = trained
    base = _forecast(predictor, data([T], cov))
    assert np.array_equal(base, _forecast(predictor, data([T], cov)))  # same seed, same forecast
    # the past covariates after the forecast start are never read: longer arrays are cut to the target's length
    (entry,) = entries([T], cov)
    entry["past_feat_dynamic_real"] = np.concatenate([entry["past_feat_dynamic_real"], 9 * np.ones((1, H))], axis=1)
    assert np.array_equal(base, _forecast(predictor, ListDataset([entry], freq="h", one_dim_target=False)))
    # each kind of covariate changes the forecast
    for key in ("feat_dynamic_real", "past_feat_dynamic_real", "feat_static_real"):
        other = dict(cov, **{key: np.asarray(cov[key]) + 1.0})
        assert not np.array_equal(base, _forecast(predictor, data([T], other))), key
    assert not np.array_equal(base, _forecast(predictor, data([T], dict(cov, feat_static_cat=[0, 3]))))


def test_serialize_round_trip_keeps_the_covariates(tmp_path, trained):
    _, predictor, cov = trained
    predictor.serialize(tmp_path / "p")
    loaded = Predictor.deserialize(tmp_path / "p")
    assert loaded.input_names == predictor.input_names
    assert loaded.prediction_net.model.num_feat_static_cat == 2
    assert np.array_equal(_forecast(predictor, data([T, T - 3], cov)), _forecast(loaded, data([T, T - 3], cov)))
    with pytest.raises(ValueError, match="'feat_dynamic_real' has 122 steps, too short to cover"):
        list(loaded.predict(data([T - 2], dict(cov, feat_dynamic_real=cov["feat_dynamic_real"][:, :T - 2 + 4]))))


# ------------------------------------------------------------------- clear errors
@pytest.mark.parametrize("key, value, message", [
    ("feat_dynamic_real", None, "entry #0: no 'feat_dynamic_real' field, but the estimator was built with "
                                "num_feat_dynamic_real=2"),
    ("feat_dynamic_real", np.zeros((3, T)), "'feat_dynamic_real' has shape (3, 120), but the estimator was built "
                                            "with num_feat_dynamic_real=2"),
    ("feat_dynamic_real", np.zeros((2, T - H - 1)), "'feat_dynamic_real' has 113 steps, too short to cover the "
                                                    "target's 114 steps"),
    ("past_feat_dynamic_real", None, "no 'past_feat_dynamic_real' field"),
    ("past_feat_dynamic_real", np.zeros(T), "'past_feat_dynamic_real' has shape (120,)"),
    ("feat_static_real", [1.0, 2.0], "'feat_static_real' has shape (2,), but the estimator was built with "
                                     "num_feat_static_real=1: expected (1,)"),
    ("feat_static_real", [np.nan], "'feat_static_real' is [nan]; its values must be finite"),
    ("feat_static_cat", None, "no 'feat_static_cat' field"),
    ("feat_static_cat", [2, 4], "'feat_static_cat' feature 1 is 4, outside [0, cardinality[1] = 4)"),
    ("feat_static_cat", [0.5, 1], "categories must be integers"),
])
def test_bad_covariates_in_training_data_name_the_field_and_entry(key, value, message):
    est = tiny(**ALL)
    (entry,) = entries([T - H], covariates())
    if value is None:
        del entry[key]
    else:
        entry[key] = value
    with pytest.raises(ValueError) as err:
        est.train([entry])
    assert message in str(err.value), str(err.value)


def test_nan_covariates_and_a_horizon_without_known_covariates_are_clear_errors(trained):
    _, predictor, cov = trained
    gap = cov["feat_dynamic_real"].copy()
    gap[1, 50] = np.nan
    with pytest.raises(ValueError, match=r"'feat_dynamic_real' row 1, time index 50 \(2021-01-03 02:00\) is nan"):
        list(predictor.predict(data([T], dict(cov, feat_dynamic_real=gap), item_id="site-7")))
    (entry,) = entries([T], cov, item_id="site-7")
    entry["feat_dynamic_real"] = entry["feat_dynamic_real"][:, :T]  # covers the history but not the horizon
    with pytest.raises(ValueError, match="entry site-7: 'feat_dynamic_real' has 120 steps, too short to cover the "
                                         r"target's 120 steps and the 6 steps to forecast "
                                         r"\(T \+ prediction_length = 126\)"):
        list(predictor.predict(ListDataset([entry], freq="h", one_dim_target=False)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_feat_static_cat=2), "num_feat_static_cat=2 needs cardinality, a list of 2 positive integers"),
    (dict(num_feat_static_cat=1, cardinality=[3, 4]), "needs cardinality, a list of 1"),
    (dict(cardinality=[3]), "give them with num_feat_static_cat > 0"),
    (dict(num_feat_static_real=-1), "non-negative integer"),
    (dict(num_feat_dynamic_real=1.5), "non-negative integer"),
])
def test_bad_covariate_options_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


# ------------------------------------------------------------------- no covariates: as before
def test_undeclared_covariates_are_dropped_with_one_warning_naming_them():
    cov = covariates()
    est = tiny(trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False))
    with pytest.warns(UserWarning) as record:
        predictor = est.train(data([T - H], cov, feat_dynamic_cat=np.zeros((1, T))))
    messages = [str(w.message) for w in record if "ignored" in str(w.message)]
    assert len(messages) == 1, messages
    for field in ("feat_dynamic_real", "past_feat_dynamic_real", "feat_static_real", "feat_static_cat",
                  "feat_dynamic_cat"):
        assert repr(field) in messages[0]
    assert "declare 'feat_dynamic_real' with num_feat_dynamic_real=<rows>" in messages[0]
    assert "'feat_dynamic_cat' is not supported" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the predictor's check warned once already, during training
        with_fields = _forecast(predictor, data([T], cov))
    assert np.array_equal(with_fields, _forecast(predictor, data([T])))


def test_without_covariates_the_model_is_unchanged():
    """Options, parameters and outputs without covariates are those of the model before covariate support:
    the fixed-batch loss below was computed before it existed."""
    est = tiny(target="delta")
    assert not est.covariates and "num_feat_static_cat" not in est.model_kwargs
    assert est.input_names() == ["past_target", "past_observed_values", "past_time_feat", "future_time_feat"]
    pl.seed_everything(0, verbose=False)
    module = est.create_lightning_module()
    model = module.model
    F = len(est.time_features) + 1
    assert model.rnn.input_size == D * 3 + F + 2 * D and not hasattr(model, "embeddings")
    assert sum(p.numel() for p in module.parameters()) == 17310
    assert _fixed_batch_loss(est, module, data([200 - H], target=signal(T=200))) == pytest.approx(1.0880754, rel=1e-5)
    # explicit zeros are the defaults
    explicit = tiny(target="delta", num_feat_dynamic_real=0, num_past_feat_dynamic_real=0, num_feat_static_real=0,
                    num_feat_static_cat=0, cardinality=None)
    assert explicit.model_kwargs == est.model_kwargs and explicit.input_names() == est.input_names()


def test_past_covariates_are_read_before_the_forecast_start_only(trained):
    """The RNN reads the past covariates and an indicator 1 over the past window, zeros and 0 over the horizon,
    in training as at prediction."""
    model = trained[1].prediction_net.model
    P, F = model._past_length, model.num_time_features
    past_tf, future_tf, x = torch.rand(2, P, F), torch.rand(2, H, F), torch.randn(2, P, 1)
    past, future = model._with_covariates(past_tf, future_tf, x)
    assert torch.equal(past, torch.cat([past_tf, x, torch.ones(2, P, 1)], -1))
    assert torch.equal(future, torch.cat([future_tf, torch.zeros(2, H, 2)], -1))
    with pytest.raises(ValueError, match="built with 1 past_feat_dynamic_real features but got no"):
        model._with_covariates(past_tf, future_tf, None)


def test_the_grouper_s_static_cat_placeholder_is_dropped_silently():
    from gluonts.dataset.common import ListDataset
    from gluonts.dataset.multivariate_grouper import MultivariateGrouper

    rng = np.random.default_rng(0)
    uni = ListDataset([{"start": "2021-01-01", "target": rng.normal(size=T)} for _ in range(D)], freq="h")
    grouped = list(MultivariateGrouper(max_target_dim=D)(uni))
    assert np.array_equal(grouped[0]["feat_static_cat"], [0])  # what GluonTS writes into every grouped entry
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny(trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False)).train(
            ListDataset(grouped, freq="h", one_dim_target=False))
