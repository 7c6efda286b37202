import numpy as np
import pandas as pd
import pytest
from gluonts.dataset.common import ListDataset
from gluonts.evaluation import make_evaluation_predictions

from vsmd_ts.timeseries.baselines import (
    RandomWalkPredictor,
    SeasonalNaivePredictor,
    gaussian_steps,
    increment_covariance,
)


def _grouped(target, freq="D", windows=1, H=5):
    start = pd.Period("2020-01-01", freq=freq)
    T = target.shape[1]
    return ListDataset(
        [{"start": start, "target": target[:, : T - (windows - 1 - k) * H]} for k in range(windows)],
        freq=freq,
        one_dim_target=False,
    )


def test_increment_covariance_hand_computed():
    # increments +1, -1, +1, -1 (mean 0): variance 4 / 3 with ddof 1; the second series moves twice as much
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.0])
    target = np.stack([x, 2 * x])
    C = increment_covariance(target, lag=1, window=4)
    np.testing.assert_allclose(C, np.array([[1, 2], [2, 4]]) * 4 / 3)
    # only the last `window` increments count: the last two are (+1, -1) -> variance 2
    np.testing.assert_allclose(increment_covariance(target[:1], 1, 2), [[2.0]])
    # NaN-touching increments are dropped
    target_nan = target.copy()
    target_nan[0, 0] = np.nan
    np.testing.assert_allclose(increment_covariance(target_nan, 1, 10)[0, 0], np.var([-1, 1, -1], ddof=1))


def test_gaussian_steps_handles_singular_covariance():
    rng = np.random.default_rng(0)
    C = np.array([[1.0, 1.0], [1.0, 1.0]])  # rank one: both coordinates equal
    z = gaussian_steps(C, (20000,), rng)
    np.testing.assert_allclose(z[:, 0], z[:, 1], atol=1e-9)
    assert abs(z[:, 0].var() - 1.0) < 0.05


def test_random_walk_moments_match_the_walk():
    rng = np.random.default_rng(1)
    D, T, H = 3, 400, 6
    L = np.array([[1.0, 0, 0], [0.5, 1.0, 0], [0.0, -0.3, 0.5]]) * 0.1
    target = 10 + np.cumsum(rng.standard_normal((T, D)) @ L.T, axis=0).T
    ds = _grouped(target, H=H)
    pred = RandomWalkPredictor(prediction_length=H, window=200, num_samples=20000, seed=3)
    (f,) = list(pred.predict(ds))
    assert f.samples.shape == (20000, H, D)
    assert f.start_date == pd.Period("2020-01-01", freq="D") + T
    C = increment_covariance(target, 1, 200)
    for h in (0, H - 1):
        assert np.all(np.abs(f.samples[:, h].mean(0) - target[:, -1]) < 4 * np.sqrt(C.diagonal() * (h + 1) / 20000))
        np.testing.assert_allclose(np.cov(f.samples[:, h].T), (h + 1) * C, rtol=0.05, atol=0.05 * C.max())
    # the same predictor draws the same paths again (seeded per call)
    (g,) = list(pred.predict(ds))
    np.testing.assert_array_equal(f.samples, g.samples)


def test_seasonal_naive_repeats_the_last_season():
    s, H, T = 4, 6, 40
    pattern = np.array([1.0, 3.0, 2.0, 5.0])
    target = np.stack([np.tile(pattern, T // s), 10 * np.tile(pattern, T // s)])
    (f,) = list(SeasonalNaivePredictor(H, season_length=s, window=20, num_samples=7).predict(_grouped(target, H=H)))
    expected = np.stack([np.resize(pattern, H), 10 * np.resize(pattern, H)]).T  # no seasonal change: no noise
    np.testing.assert_allclose(f.samples, np.broadcast_to(expected, (7, H, 2)), atol=1e-5)


def test_seasonal_naive_noise_grows_with_seasons_ahead():
    rng = np.random.default_rng(0)
    s, H, T = 3, 7, 300
    target = (np.tile([0.0, 1.0, 2.0], T // s) + 0.5 * rng.standard_normal(T))[None]
    (f,) = list(SeasonalNaivePredictor(H, season_length=s, window=250, num_samples=20000).predict(_grouped(target, H=H)))
    Cs = increment_covariance(target, s, 250)[0, 0]
    var = f.samples[:, :, 0].var(0)
    np.testing.assert_allclose(var, Cs * np.ceil(np.arange(1, H + 1) / s), rtol=0.06)
    with pytest.raises(ValueError, match="season"):
        list(SeasonalNaivePredictor(H, season_length=s, window=5).predict(_grouped(target[:, :3], H=H)))


def test_baselines_work_with_make_evaluation_predictions():
    rng = np.random.default_rng(2)
    target = 1 + 0.01 * rng.standard_normal((4, 130)).cumsum(1)
    ds = _grouped(target, windows=3, H=10)
    forecasts, tss = make_evaluation_predictions(ds, RandomWalkPredictor(10, window=50), num_samples=30)
    forecasts, tss = list(forecasts), list(tss)
    assert [f.samples.shape for f in forecasts] == [(30, 10, 4)] * 3
    # each forecast starts right after its window's history, which ends H steps before the entry's end
    for f, ts in zip(forecasts, tss):
        assert f.start_date == ts.index[-10]


@pytest.mark.timeout(900)  # two subprocess runs: ~30 s alone, minutes on a loaded shared machine
def test_benchmark_runner_scores_the_random_walk(tmp_path):
    import json
    import sys
    from pathlib import Path

    from test_data_metrics import write_fake_archive

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import crps_sum

    write_fake_archive(tmp_path / "data", T=200)
    for split, fixed in (("test", []), ("validation", ["window=30"])):
        out = tmp_path / split
        code = crps_sum.main(["--data-dir", str(tmp_path / "data"), "--sde", "rw", "--seeds", "0", "--split", split,
                              "--val-windows", "3", "--out", str(out), "--quick", "--set", "num_samples=20", *fixed])
        assert code == 0
        (run,) = list((out / "runs").glob("*.json"))
        record = json.loads(run.read_text())
        cfg = record["config"]
        if fixed:
            assert cfg["window"] == 30 and not cfg["window_val_crps_sum"]
        else:  # the window is the validation argmin among the candidates
            assert cfg["window"] == int(min(cfg["window_val_crps_sum"], key=cfg["window_val_crps_sum"].get))
        ev = record["evaluations"][0]
        assert ev["nfe_per_step"] == 0 and ev["windows"] == (5 if split == "test" else 3)
        assert 0 < ev["metrics"]["CRPS-Sum"] < 0.1
        assert "| rw | none | 0 | 0 |" in (out / "summary.md").read_text()


def test_peer_arrays_are_scored_on_the_same_windows(tmp_path):
    import json
    import sys
    from pathlib import Path

    from test_data_metrics import write_fake_archive

    from vsmd_ts.timeseries.data import load_benchmark

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "peers"))
    import score_arrays

    write_fake_archive(tmp_path / "data", T=100)
    data = load_benchmark("exchange_rate_nips", str(tmp_path / "data"), download=False)
    truth = np.stack([np.asarray(e["target"])[:, -30:].T for e in data.test])  # (5, 30, 8)
    rng = np.random.default_rng(0)
    samples = truth[:, None] + 0.01 * rng.standard_normal((5, 40, 30, 8))
    meta = {"model": "TimeGrad", "seed": 3, "config": {}, "trainer": {"epochs": 1}, "versions": {}, "num_parameters": 1,
            "nfe_per_step": 100, "train_time_s": 1.0, "train_cpu_s": 1.0, "sample_time_s": 1.0, "sample_cpu_s": 1.0}
    np.savez(tmp_path / "ok.npz", samples=samples, truth=truth, meta=json.dumps(meta))
    record, forecasts, _ = score_arrays.score_file(tmp_path / "ok.npz", data)
    assert record["sde"] == "timegrad" and record["seed"] == 3 and record["evaluations"][0]["nfe_per_step"] == 100
    np.testing.assert_array_equal(forecasts[2].samples, samples[2].astype(np.float32))
    assert 0.8 < record["evaluations"][0]["metrics"]["coverage_90"] <= 1.0  # centred on the truth
    # arrays made on other windows (one step off) are refused
    np.savez(tmp_path / "off.npz", samples=samples, truth=np.roll(truth, 1, axis=1), meta=json.dumps(meta))
    with pytest.raises(ValueError, match="windows differ"):
        score_arrays.score_file(tmp_path / "off.npz", data)
