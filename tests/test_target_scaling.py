"""The model's target transform (increments or levels) and its unit-free scaling."""

import numpy as np
import pytest
import torch

from vsmd_ts.diffusion.samplers import SamplerOutput
from vsmd_ts.timeseries.module import WHITEN_SHRINKAGE, VSMDModel, fill_forward, robust_scale, whitening_factor

D, H, C, P_LAGS = 3, 5, 12, [1, 2, 4]


def model(**kw):
    args = dict(target_dim=D, prediction_length=H, context_length=C, lags_seq=P_LAGS, num_time_features=2,
                hidden_size=8, num_layers=1, denoiser_hidden=16, denoiser_blocks=1, sampler_steps=2,
                num_parallel_samples=4)
    args.update(kw)
    torch.manual_seed(0)
    return VSMDModel(**args).eval()


def inputs(m, seed=0, level=5.0):
    g = torch.Generator().manual_seed(seed)
    P = m._past_length
    walk = level + torch.randn(1, P, D, generator=g, dtype=torch.float64).cumsum(1) * 0.1
    return dict(
        past_target=walk.float(),
        past_observed_values=torch.ones(1, P, D),
        past_time_feat=torch.randn(1, P, 2, generator=g),
        future_time_feat=torch.randn(1, H, 2, generator=g),
    )


def sample(m, batch, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        return m(**batch).double()


def test_fill_forward_carries_last_observation_and_back_fills_the_start():
    y = torch.tensor([[[0.0], [2.0], [0.0], [0.0], [5.0], [0.0]]])
    obs = torch.tensor([[[0.0], [1.0], [0.0], [0.0], [1.0], [0.0]]])
    assert fill_forward(y, obs).flatten().tolist() == [2.0, 2.0, 2.0, 2.0, 5.0, 5.0]
    full = torch.randn(2, 6, 3)
    assert torch.equal(fill_forward(full, torch.ones_like(full)), full)


def test_robust_scale_matches_numpy_and_floors_relative_to_magnitude():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1, 50, 2))
    obs = np.ones_like(x)
    obs[0, :10, 0] = 0
    mag = torch.ones(1, 1, 2)
    loc, scale = robust_scale(torch.tensor(x), torch.tensor(obs), mag, centre=True)
    assert np.allclose(loc[0, 0, 0], x[0, 10:, 0].mean()) and np.allclose(scale[0, 0, 0], x[0, 10:, 0].std())
    const = torch.zeros(1, 20, 2)
    _, scale = robust_scale(const, torch.ones_like(const), torch.tensor([[[1e-9, 0.0]]]), centre=True)
    assert torch.allclose(scale, torch.tensor([[[1e-13, 1.0]]]))  # relative floor, then 1 for all-zero series


@pytest.mark.parametrize("target, scaling", [("delta", "std"), ("level", "std"), ("delta", "whiten"),
                                             ("seasonal", "std")])
@pytest.mark.parametrize("factor", [1e-12, 1e-4, 1e4, 1e12])
def test_forecasts_are_equivariant_to_the_data_units(target, scaling, factor):
    m = model(target=target, scaling=scaling, season_length=2)
    batch = inputs(m)
    base = sample(m, batch)
    scaled = dict(batch, past_target=batch["past_target"] * factor)
    out = sample(m, scaled)
    assert torch.isfinite(out).all()
    assert torch.allclose(out / factor, base, rtol=1e-4, atol=1e-5 * base.abs().max().item())


def test_delta_forecasts_start_from_the_last_observed_value(monkeypatch):
    # a sampler that draws zero increments isolates the anchoring from what an untrained network samples
    def zero_increments(score_fn, sde, a, ts, cond=None):
        return SamplerOutput(torch.zeros_like(a), 0)

    monkeypatch.setattr(VSMDModel, "sampler", property(lambda self: zero_increments))
    m = model(target="delta")
    batch = inputs(m, level=1000.0)
    batch["past_observed_values"][0, -3:] = 0  # the last three steps are missing
    batch["past_target"][0, -3:] = 0
    out = sample(m, batch)
    last = batch["past_target"][0, -4].double()
    # every step continues from the last observation, not from the zero-filled tail or a mean
    assert torch.allclose(out[0], last.expand_as(out[0]), rtol=0, atol=1e-3)


@pytest.mark.parametrize("target, season", [("level", 1), ("delta", 1), ("seasonal", 2), ("seasonal", 4),
                                            ("seasonal", 7)])
def test_decoding_the_true_differences_gives_back_the_future(target, season):
    m = model(target=target, season_length=season)
    P = m._past_length
    g = torch.Generator().manual_seed(3)
    y = 50 + torch.randn(2, P + H, D, generator=g, dtype=torch.float64).cumsum(1)
    values, mask, levels, _ = m._modelled(y, torch.ones_like(y))
    assert torch.equal(mask[:, : m.lag], torch.zeros_like(mask[:, : m.lag]))  # no level m.lag steps before
    if m.lag:
        assert torch.allclose(values[:, m.lag :], y[:, m.lag :] - y[:, : -m.lag])
    one, zero = torch.ones(2, 1, D, dtype=y.dtype), torch.zeros(2, 1, D, dtype=y.dtype)
    out = m._decode(values[:, None, P:], zero, one, None, levels[:, :P])
    assert torch.allclose(out[:, 0], y[:, P:], rtol=0, atol=1e-9)


def test_seasonal_forecasts_with_zero_differences_repeat_the_last_season(monkeypatch):
    def zero_differences(score_fn, sde, a, ts, cond=None):
        return SamplerOutput(torch.zeros_like(a), 0)

    monkeypatch.setattr(VSMDModel, "sampler", property(lambda self: zero_differences))
    m = model(target="seasonal", season_length=2)
    batch = inputs(m, level=1000.0)
    out = sample(m, batch)
    last_season = batch["past_target"][0, -2:].double()
    expected = last_season.repeat(3, 1)[:H]  # H = 5 steps: the season of 2 repeated
    assert torch.allclose(out[0], expected.expand_as(out[0]), rtol=0, atol=1e-3)


def test_a_seasonal_difference_longer_than_the_past_window_is_rejected():
    with pytest.raises(ValueError, match="season_length=17 below the past window of 16"):
        model(target="seasonal", season_length=17)


def test_non_finite_context_values_are_treated_as_missing():
    m = model()
    batch = inputs(m)
    batch["past_target"][0, 3, 1] = float("inf")
    batch["past_target"][0, 7, 2] = float("nan")
    out = sample(m, batch)
    assert torch.isfinite(out).all() and out.shape == (1, 4, H, D)


def test_unknown_target_or_scaling_is_rejected():
    with pytest.raises(ValueError, match="target"):
        model(target="log")
    with pytest.raises(ValueError, match="scaling"):
        model(scaling="minmax")


def test_scale_window_takes_the_scale_over_the_last_steps_only():
    m = model(scale_window=4, scaling="std")
    batch = inputs(m)
    P = m._past_length
    values, mask, levels, obs = m._modelled(batch["past_target"], batch["past_observed_values"])
    _, scale, _, _ = m._scale(values, mask, levels, obs)
    increments = np.diff(batch["past_target"][0].double().numpy(), axis=0)[-4:]  # the last 4 increments
    assert np.allclose(scale[0, 0].double().numpy(), np.sqrt((increments**2).mean(0)), rtol=1e-5)
    _, full, _, _ = model(scaling="std")._scale(values, mask, levels, obs)  # default: the whole context
    increments = np.diff(batch["past_target"][0].double().numpy(), axis=0)[-C:]
    assert np.allclose(full[0, 0].double().numpy(), np.sqrt((increments**2).mean(0)), rtol=1e-5)
    assert P > C and not torch.allclose(scale, full)
    with pytest.raises(ValueError, match="scale_window"):
        model(scale_window=C + 1)


def test_whitening_factor_is_the_cholesky_of_the_shrunk_correlation():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.2, 0.9]])
    z = rng.normal(size=(1, 60, 3)) @ mix.T
    L = whitening_factor(torch.tensor(z), torch.ones(1, 60, 3))[0].numpy()
    second = z[0].T @ z[0] / 60  # uncentred, like the increments' scale
    d = np.sqrt(np.diag(second))
    corr = (1 - WHITEN_SHRINKAGE) * second / np.outer(d, d) + WHITEN_SHRINKAGE * np.eye(3)
    assert np.allclose(L @ L.T, corr) and np.allclose(np.triu(L, 1), 0)
    # an all-missing series is left alone: identity row and column
    obs = np.ones_like(z)
    obs[0, :, 1] = 0
    L = whitening_factor(torch.tensor(z), torch.tensor(obs))[0].numpy()
    assert np.allclose(L[1], [0, 1, 0]) and np.allclose(L[:, 1], [0, 1, 0])


def test_whitened_increments_round_trip_and_mask_what_they_mix():
    m = model(scaling="whiten")
    batch = inputs(m)
    future = batch["past_target"][:, -H:] + 0.3
    obs_future = torch.ones(1, H, D)
    obs_future[0, 2, 0] = 0  # series 0 missing at one future step
    x0, _, mask = m.training_inputs(**{k: batch[k] for k in ("past_target", "past_observed_values", "past_time_feat",
                                                              "future_time_feat")},
                                    future_target=future, future_observed_values=obs_future)
    x0, mask = x0.view(1, -1, D), mask.view(1, -1, D)
    # whitened coordinate i mixes series 0..i: a missing series 0 masks every coordinate at its step (and the
    # increment after it, which needs both ends)
    assert mask[0, -H + 2].sum() == 0 and mask[0, -H + 3].sum() == 0 and mask[0, -H + 4].sum() == D
    # undo the whitening and the scale: the increments of the data come back
    values, vmask, levels, obs = m._modelled(batch["past_target"], batch["past_observed_values"])
    loc, scale, L, _ = m._scale(values, vmask, levels, obs)
    back = (L[0].double() @ x0[0, :-H].double().T).T * scale[0].double()
    steps = np.diff(batch["past_target"][0].double().numpy(), axis=0)[-C:]
    assert np.allclose(back.numpy(), steps, rtol=1e-4, atol=1e-6)


def test_whiten_needs_increments():
    with pytest.raises(ValueError, match="whiten"):
        model(scaling="whiten", target="level")


def test_auto_scaling_whitens_few_series_and_scales_many():
    m = model()
    assert m.scaling == "whiten" and m.scale_window == min(20, C)
    assert model(target="level").scaling == "std"
    wide = model(target_dim=65)
    assert wide.scaling == "std" and wide.scale_window == C


def test_random_walk_paths_have_the_scale_windows_shrunk_covariance():
    """Steps ~ N(0, C), C the uncentred second moments of the last scale_window increments with the off-diagonal
    shrunk by WHITEN_SHRINKAGE (computed here from the data, not from the model's own helpers), independent over
    the horizon, starting from the last observed level."""
    m = model()
    batch = inputs(m, level=5.0)
    past = batch["past_target"][0].double().numpy()
    inc = np.diff(past, axis=0)[-m.scale_window:]
    M = inc.T @ inc / len(inc)
    cov = (1 - WHITEN_SHRINKAGE) * M + WHITEN_SHRINKAGE * np.diag(np.diag(M))
    torch.manual_seed(0)
    with torch.no_grad():
        paths = m.random_walk(**batch, num_parallel_samples=40000)[0].double().numpy()  # (S, H, D)
    assert paths.shape == (40000, H, D)
    steps = np.diff(np.concatenate([np.broadcast_to(past[-1], (40000, 1, D)), paths], axis=1), axis=1)
    sd = np.sqrt(np.diag(cov))
    for h in (0, H - 1):
        emp = steps[:, h].T @ steps[:, h] / len(steps)
        assert (np.abs(emp - cov) / np.outer(sd, sd) < 0.04).all(), (h, emp, cov)
        assert (np.abs(steps[:, h].mean(0)) / sd < 0.04).all()
    lag1 = (steps[:, 0] * steps[:, 1]).mean(0) / sd**2  # no dependence between steps
    assert (np.abs(lag1) < 0.04).all()
    with pytest.raises(ValueError, match="delta"):
        model(target="level").random_walk(**batch)
