import json

import numpy as np
import pandas as pd
import pytest
import torch
from gluonts.dataset.common import ListDataset

from vsmd_ts import VSMDEstimator
from vsmd_ts.diffusion import ATraining
from vsmd_ts.timeseries import default_lags, normalize_freq

D, H, T = 3, 6, 160
START = pd.Period("2021-01-01 00:00", freq="h")


def signal(T=T, D=D, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return np.stack([(i + 1) * np.sin(2 * np.pi * t / 24 + i) + 3 * i + 0.1 * rng.standard_normal(T) for i in range(D)])


def dataset(target, freq="h"):
    return ListDataset([{"start": START, "target": target}], freq=freq, one_dim_target=False)


TINY_A_TRAINING = dict(trajectory_steps=3, num_trajectories=8)


def tiny(**kw):
    """A tiny estimator; ``A_training`` (a dict) adds to its few short A trajectories."""
    args = dict(
        freq="h", prediction_length=H, target_dim=D, context_length=12, lags_seq=[1, 2, 24],
        hidden_size=8, num_layers=1, denoiser_hidden=16, batch_size=4,
        num_batches_per_epoch=3, sampler_steps=2, num_parallel_samples=5,
        seed=0, progress=False, trainer_kwargs=dict(max_epochs=2, enable_progress_bar=False),
    )
    args.update(kw, A_training={**TINY_A_TRAINING, **kw.get("A_training", {})})
    return one_block(VSMDEstimator(**args))


def one_block(estimator):
    """``estimator`` with a one-block denoiser (the estimator's is 3 blocks): the network layer's own option,
    set where the estimator keeps the network's arguments, so that the tests stay fast."""
    estimator.model_kwargs["denoiser_blocks"] = 1
    return estimator


@pytest.mark.parametrize("sde", ["vsuld", "vscld", "cld", "vsdm", "vp"])
def test_forecast_shapes_for_every_sde(sde):
    predictor = tiny(sde=sde, trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False)).train(dataset(signal()[:, :-H]))
    forecasts = list(predictor.predict(dataset(signal())))
    assert len(forecasts) == 1
    samples = forecasts[0].samples
    assert samples.shape == (5, H, D)
    assert np.isfinite(samples).all()
    assert forecasts[0].start_date == START + T  # forecasts continue after the given series


@pytest.mark.parametrize("sampler", ["euler_maruyama", "splitting"])
def test_other_samplers(sampler):
    predictor = tiny(sampler=sampler, trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False)).train(dataset(signal()[:, :-H]))
    samples = next(iter(predictor.predict(dataset(signal())))).samples
    assert samples.shape == (5, H, D) and np.isfinite(samples).all()


def _fixed_batch_loss(estimator, module, data):
    transformed = estimator.create_transformation().apply(data, is_train=True)
    torch.manual_seed(123)
    batch = next(iter(estimator.create_training_data_loader(transformed, module)))
    torch.manual_seed(0)
    with torch.no_grad():
        module.eval()
        return module.model.loss(**{k: batch[k] for k in batch if k in (
            "past_target", "past_observed_values", "past_time_feat", "future_time_feat", "future_target",
            "future_observed_values")}).mean().item()


def test_training_reduces_the_loss():
    data = dataset(signal(T=400)[:, :-H])
    est = tiny(sde="vscld", hidden_size=16, denoiser_hidden=32, batch_size=16, num_batches_per_epoch=10,
               trainer_kwargs=dict(max_epochs=4, enable_progress_bar=False), lr=3e-3)
    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)
    before = _fixed_batch_loss(est, est.create_lightning_module(), data)
    trained = est.train_model(data).trained_net
    after = _fixed_batch_loss(est, trained, data)
    assert after < 0.8 * before, (before, after)


def test_variational_score_is_learned_during_training():
    """The alternation schedule reaches its A phases: A moves for vsuld, stays 0 for cld."""
    est = tiny(num_batches_per_epoch=10, trainer_kwargs=dict(max_epochs=5, enable_progress_bar=False),
               A_training=dict(lr=1e-2))
    module = est.train_model(dataset(signal())).trained_net
    A = module.model.sde.A_v.detach()
    assert (A.abs() > 1e-3).all() and (A.abs() < 0.4).all()
    status = module.A_status  # the end-of-training diagnostic
    assert torch.equal(status["A_v"], A) and status["last_change"] >= 0 and status["gap"] >= 0
    assert status["converged"] == (max(status["last_change"], status["gap"]) <= 0.01)
    est = tiny(sde="cld", num_batches_per_epoch=10, trainer_kwargs=dict(max_epochs=5, enable_progress_bar=False))
    module = est.train_model(dataset(signal())).trained_net
    assert (module.model.sde.A_v == 0).all() and module.A_status is None


def test_nan_targets_train_without_nan_loss():
    target = signal()
    target[1, 20:60] = np.nan
    target[0, ::7] = np.nan
    est = tiny()
    out = est.train_model(dataset(target[:, :-H]))
    assert np.isfinite(out.trainer.callback_metrics["train_loss"].item())
    assert all(torch.isfinite(p).all() for p in out.trained_net.parameters())
    samples = next(iter(out.predictor.predict(dataset(target)))).samples
    assert np.isfinite(samples).all()


SDE_KWARGS = {"beta": 6.0, "damping_ratio": 0.5, "gamma": 1.5, "A_max": 0.3}
A_TRAINING = {"lr": 1e-2, "warmup": 0.1, "cooldown": 0.3, "cycle": 0.2, "forward_fraction": 0.25,
              "trajectory_steps": 4, "num_trajectories": 6}


@pytest.mark.parametrize("options", [{}, {"naive_share": 0.4}, {"sde_kwargs": SDE_KWARGS},
                                     {"A_training": A_TRAINING}])
def test_serialize_round_trip_gives_identical_forecasts(tmp_path, options):
    from gluonts.model.predictor import Predictor

    predictor = tiny(**options).train(dataset(signal()[:, :-H]))
    predictor.serialize(tmp_path)
    loaded = Predictor.deserialize(tmp_path)
    assert loaded == predictor
    torch.manual_seed(7)
    a = next(iter(predictor.predict(dataset(signal())))).samples
    torch.manual_seed(7)
    b = next(iter(loaded.predict(dataset(signal())))).samples
    np.testing.assert_array_equal(a, b)
    # A (the variational score) is part of the saved state
    torch.testing.assert_close(loaded.prediction_net.model.sde.A_v, predictor.prediction_net.model.sde.A_v)
    # so are the SDE's parameters and the A training
    sde, given = loaded.prediction_net.model.sde, options.get("sde_kwargs", {})
    assert (sde.beta_value, sde.damping_ratio, sde.gamma, sde.A.A_max) == (
        given.get("beta", 10.0), given.get("damping_ratio", 0.7), given.get("gamma", 2.0), given.get("A_max", 0.4))
    assert loaded.prediction_net.A_training == ATraining(**{**TINY_A_TRAINING, **options.get("A_training", {})})


def test_the_estimator_has_at_most_thirty_arguments_as_deepar():
    import inspect

    assert len(inspect.signature(VSMDEstimator.__init__).parameters) - 1 <= 30


@pytest.mark.parametrize("A_training", [None, A_TRAINING, ATraining(**A_TRAINING)])
def test_estimator_serde_round_trip_keeps_sde_kwargs_and_A_training(A_training):
    """GluonTS serialises an estimator by its arguments: A_training is kept as the dict of all its fields."""
    from gluonts.core import serde

    est = VSMDEstimator(freq="h", prediction_length=H, target_dim=D, sde="vscld", sde_kwargs={"beta": 7, "A_max": 0.2},
                        A_training=A_training, ensemble_size=2)
    expected = ATraining.of(A_training)
    assert est.A_training == expected and est.module_kwargs["A_training"] == expected.as_dict()
    encoded = serde.encode(est)
    assert encoded["kwargs"]["A_training"] == (None if A_training is None else expected.as_dict())
    loaded = serde.decode(json.loads(serde.dump_json(est)))
    assert isinstance(loaded, VSMDEstimator) and loaded.__init_args__ == est.__init_args__
    assert loaded.model_kwargs == est.model_kwargs and loaded.module_kwargs == est.module_kwargs
    assert (est.model_kwargs["beta"], est.model_kwargs["damping_ratio"], est.model_kwargs["A_max"]) == (7.0, 1.0, 0.2)
    assert loaded.create_lightning_module().A_training == expected


@pytest.mark.parametrize("kwargs, message", [
    (dict(sde_kwargs={"beta": 8, "prior": "fixed"}), "unknown sde_kwargs key\\(s\\) 'prior'; known: beta, damping_ratio"),
    (dict(sde_kwargs={"beta": 0}), "sde_kwargs\\['beta'\\] must be a finite number in \\(0, inf\\)"),
    (dict(sde_kwargs={"gamma": float("nan")}), "gamma"),
    (dict(sde_kwargs={"A_max": "big"}), "A_max"),
    (dict(sde="vscld", sde_kwargs={"damping_ratio": 0.7}), "damping_ratio must be 1.0"),
    (dict(sde="vsdm", sde_kwargs={"damping_ratio": 0.7}), "damping_ratio does not apply"),
    (dict(A_training={"A_lr": 0.1}), "unknown A_training field\\(s\\) 'A_lr'"),
    (dict(A_training={"lr": -1.0}), "ATraining.lr must be positive"),
    (dict(A_training={"warmup": 0.8, "cooldown": 0.4}), "warmup"),
    (dict(A_training={"trajectory_steps": 0}), "trajectory_steps"),
    (dict(A_training=0.01), "dict of its fields"),
])
def test_sde_kwargs_and_A_training_are_validated_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VSMDEstimator(freq="h", prediction_length=H, target_dim=D, **kwargs)


def test_no_files_left_in_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny(trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False)).train(dataset(signal()[:, :-H]))
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_raise_clear_errors():
    predictor = tiny(trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False)).train(dataset(signal()[:, :-H]))
    with pytest.raises(ValueError, match="target_dim=3"):
        list(predictor.predict(dataset(signal(D=4))))
    with pytest.raises(ValueError, match="series of length 1 is shorter than the minimum of 2"):
        list(predictor.predict(dataset(signal()[:, :1])))
    with pytest.raises(ValueError, match="series of length 7 is shorter than the minimum of 8 \\(2 steps of history "
                                         "\\+ prediction_length = 6\\)"):
        tiny().train(dataset(signal()[:, :7]))
    univariate = ListDataset([{"start": START, "target": signal()[0]}], freq="h")
    with pytest.raises(ValueError, match="MultivariateGrouper"):
        tiny().train(univariate)
    with pytest.raises(ValueError, match="target_dim=3"):
        tiny().train(dataset(signal(D=2)))
    with pytest.raises(ValueError, match="unsupported frequency"):
        tiny(freq="fortnightly")
    with pytest.raises(ValueError, match="unsupported frequency"):
        tiny(freq="7X")
    with pytest.raises(ValueError, match="unknown sde"):
        tiny(sde="ddpm")
    with pytest.raises(ValueError, match="damping_ratio"):
        tiny(sde="vsuld", sde_kwargs={"damping_ratio": 1.5})


def test_frequency_helpers():
    assert normalize_freq("H") == "h" and normalize_freq("15T") == "15min" and normalize_freq("B") == "B"
    assert default_lags("h") == [1, 2, 3, 24, 168]
    assert default_lags("2h") == [1, 2, 3, 12, 84]
    assert default_lags("B") == [1, 2, 3, 4, 5, 10]
    assert default_lags("D") == [1, 2, 3, 7, 14]
    est = VSMDEstimator(freq="H", prediction_length=24, target_dim=2)
    assert est.context_length == 72 and est.freq == "h" and max(est.lags_seq) == 168


def _prediction_inputs(estimator, module, data):
    from vsmd_ts.timeseries.estimator import PREDICTION_INPUT_NAMES

    transform = estimator.create_transformation() + estimator._create_instance_splitter(module, "test")
    entry = next(iter(transform.apply(data, is_train=False)))
    return {k: torch.as_tensor(np.asarray(entry[k]), dtype=torch.float32)[None] for k in PREDICTION_INPUT_NAMES}


def test_ensemble_members_train_apart_and_forecasts_mix_them(tmp_path):
    from gluonts.model.predictor import Predictor

    est = tiny(ensemble_size=2, naive_share=0.0, num_parallel_samples=5, num_batches_per_epoch=10,
               A_training=dict(lr=1e-2), trainer_kwargs=dict(max_epochs=5, enable_progress_bar=False))
    initial = est.create_lightning_module()
    assert len(initial.members) == 2
    w0 = [m.denoiser.state_dict() for m in initial.members]
    assert not torch.equal(next(iter(w0[0].values())), next(iter(w0[1].values())))  # initialised apart
    out = est.train_model(dataset(signal()[:, :-H]))
    module = out.trained_net
    for m in module.members:  # every member and its own A were trained
        assert (m.sde.A_v.abs() > 0).all()
    assert not torch.equal(module.members[0].sde.A_v, module.members[1].sde.A_v)

    # path j of the forecast is path j // K of member j mod K, drawn in member order
    inputs = _prediction_inputs(est, module, dataset(signal()))
    module.eval()
    with torch.no_grad():
        torch.manual_seed(3)
        mixed = module(**inputs)
        torch.manual_seed(3)
        first = module.members[0](**inputs, num_parallel_samples=3)
        second = module.members[1](**inputs, num_parallel_samples=2)
    assert mixed.shape == (1, 5, H, D) and torch.isfinite(mixed).all()
    torch.testing.assert_close(mixed[:, 0::2], first)
    torch.testing.assert_close(mixed[:, 1::2], second)
    with torch.no_grad():
        assert module(**inputs, num_parallel_samples=1).shape == (1, 1, H, D)  # fewer paths than members

    predictor = out.predictor
    predictor.serialize(tmp_path)
    loaded = Predictor.deserialize(tmp_path)
    assert len(loaded.prediction_net.members) == 2
    torch.manual_seed(7)
    a = next(iter(predictor.predict(dataset(signal())))).samples
    torch.manual_seed(7)
    b = next(iter(loaded.predict(dataset(signal())))).samples
    np.testing.assert_array_equal(a, b)


def test_set_sampler_reaches_every_member():
    module = tiny(ensemble_size=3).create_lightning_module()
    module.set_sampler("euler_maruyama", 7)
    assert {(m.sampler_name, m.sampler_steps, m.nfe_per_step) for m in module.members} == {("euler_maruyama", 7, 7)}
    module.set_sampler("heun", 5)  # two score calls per step, counted by the sampler itself
    assert {m.nfe_per_step for m in module.members} == {10}
    with pytest.raises(ValueError, match="ensemble_size"):
        tiny(ensemble_size=0)


def test_bf16_mixed_training_forecasts_in_float32(monkeypatch):
    """precision="auto" resolves to bf16-mixed where the CPU is fast at it; the model trains (score and A phases,
    whitening in float64) under bfloat16 autocast, keeps float32 weights and forecasts finite float32 samples."""
    from vsmd_ts.training import precision

    monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: 3.0)
    out = tiny(trainer_kwargs=dict(max_epochs=2, enable_progress_bar=False, accelerator="cpu")).train_model(
        dataset(signal()[:, :-H]))
    assert out.trainer.precision == "bf16-mixed"
    net = out.predictor.prediction_net
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert torch.isfinite(torch.cat([p.detach().flatten() for p in net.parameters()])).all()
    samples = next(iter(out.predictor.predict(dataset(signal())))).samples
    assert samples.dtype == np.float32 and samples.shape == (5, H, D) and np.isfinite(samples).all()
    monkeypatch.setattr(precision, "bf16_matmul_speedup", lambda: 1.0)
    assert tiny(trainer_kwargs=dict(max_epochs=1, enable_progress_bar=False, accelerator="cpu")).train_model(
        dataset(signal()[:, :-H])).trainer.precision == "32-true"


def test_naive_share_pools_walk_paths_at_random_positions(monkeypatch):
    est = tiny(ensemble_size=2, naive_share=0.3, num_parallel_samples=10)
    module = est.create_lightning_module().eval()
    inputs = _prediction_inputs(est, module, dataset(signal()))
    calls = []

    def fake_member(*args, num_parallel_samples, **kwargs):  # a sentinel level no walk path reaches
        calls.append(num_parallel_samples)
        return torch.full((1, num_parallel_samples, H, D), 1e6)

    for m in module.members:
        monkeypatch.setattr(m, "forward", fake_member)
    positions = []
    for seed in range(4):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = module(**inputs)
        assert out.shape == (1, 10, H, D) and torch.isfinite(out).all()
        from_model = (out == 1e6).all(-1).all(-1)[0]
        assert from_model.sum() == 7  # round(0.3 x 10) walk paths, the rest from the two members (4 + 3)
        walk = out[0, ~from_model]
        assert (walk - inputs["past_target"][0, -1]).abs().max() < 100  # walks start at the last value
        positions.append(tuple(from_model.tolist()))
    assert calls == [4, 3] * 4 and len(set(positions)) > 1
    module.naive_share = 1.0  # all walk: the members are not called
    calls.clear()
    with torch.no_grad():
        assert torch.isfinite(module(**inputs)).all() and calls == []
    with pytest.raises(ValueError, match="naive_share"):
        tiny(naive_share=1.5).create_lightning_module()
    # levels pool the seasonal naive forecast: near the value a season (24 steps) back
    level = tiny(target="level", ensemble_size=1, naive_share=1.0, num_parallel_samples=10)
    module = level.create_lightning_module().eval()
    inputs = _prediction_inputs(level, module, dataset(signal()))
    with torch.no_grad():
        out = module(**inputs)
    season_back = inputs["past_target"][0, -24:-24 + H]
    assert (out[0] - season_back).abs().mean() < 0.5 < (out[0] - inputs["past_target"][0, -1]).abs().mean()


@pytest.mark.parametrize("freq, daily_or_coarser", [("B", True), ("D", True), ("W", True), ("M", True),
                                                     ("h", False), ("15min", False), ("12h", False)])
def test_naive_share_defaults_to_a_quarter_except_for_increments_of_sub_daily_data(freq, daily_or_coarser):
    from vsmd_ts.timeseries.module import NAIVE_SHARE

    assert NAIVE_SHARE == 0.25
    share = tiny(freq=freq, lags_seq=[1, 2]).create_lightning_module().naive_share
    assert share == (NAIVE_SHARE if daily_or_coarser else 0.0)  # a walk has no daily cycle
    assert tiny(freq=freq, lags_seq=[1, 2], target="level").create_lightning_module().naive_share == NAIVE_SHARE
    assert tiny(freq=freq, lags_seq=[1, 2], naive_share=0.4).create_lightning_module().naive_share == 0.4


def test_seasonal_naive_paths_recover_the_seasonal_differences_gaussian():
    from vsmd_ts.timeseries.module import VSMDModel

    s, H_, D_ = 4, 6, 2
    model = VSMDModel(target_dim=D_, prediction_length=H_, context_length=8, lags_seq=[1, 4], num_time_features=1,
                      season_length=s, target="level", num_parallel_samples=20000)
    P = model._past_length
    rng = np.random.default_rng(0)
    y = np.tile(rng.normal(size=(s, D_)), (P // s + 1, 1))[:P] + rng.normal(size=(P, D_)) @ np.array([[1.0, 0.0], [0.8, 0.5]])
    diffs = y[s:] - y[:-s]
    C = np.cov(diffs.T)
    torch.manual_seed(0)
    paths = model.seasonal_naive(torch.tensor(y[None], dtype=torch.float32), torch.ones(1, P, D_))[0].double().numpy()
    base = y[P - s + np.arange(H_) % s]
    np.testing.assert_allclose(paths.mean(0), base, atol=0.06)
    for h in range(H_):  # N(0, k C) with k = ceil((h + 1) / s) seasons ahead
        np.testing.assert_allclose(np.cov(paths[:, h].T), np.ceil((h + 1) / s) * C, rtol=0.06, atol=0.02)
