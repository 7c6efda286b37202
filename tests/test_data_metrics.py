import io
import json
import tarfile

import numpy as np
import pandas as pd
import properscoring
import pytest
from gluonts.model.forecast import SampleForecast

from vsmd_ts.timeseries.data import DatasetNotFoundError, holdout_windows, load_benchmark, synthetic_like
from vsmd_ts.timeseries.metrics import coverage, energy_score, evaluate_forecasts


def write_fake_archive(root, D=8, T=100, H=30, windows=5, seed=0):
    """A miniature exchange_rate_nips archive in GluonTS's layout (window-major test lines)."""
    rng = np.random.default_rng(seed)
    X = 1 + 0.01 * rng.standard_normal((T + H * windows, D)).cumsum(0)
    start = "1990-01-01 00:00:00"
    train = "\n".join(json.dumps({"start": start, "target": X[:T, i].tolist()}) for i in range(D))
    test = "\n".join(
        json.dumps({"start": start, "target": X[: T + H * (k + 1), i].tolist()}) for k in range(windows) for i in range(D)
    )
    folder = root / "exchange_rate_nips"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "exchange_rate_nips.tar.gz", "w:gz") as tar:
        for name, text in [("train/train.json", train), ("test/test.json", test), ("metadata/metadata.json", '{"freq": "B"}')]:
            data = text.encode()
            info = tarfile.TarInfo(f"exchange_rate_nips/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return X


def test_load_local_archive_in_the_standard_protocol(tmp_path):
    X = write_fake_archive(tmp_path)
    data = load_benchmark("exchange_rate_nips", str(tmp_path), download=False)
    (train,) = list(data.train)
    test = list(data.test)
    assert train["target"].shape == (8, 100)
    assert [e["target"].shape for e in test] == [(8, 130), (8, 160), (8, 190), (8, 220), (8, 250)]
    np.testing.assert_allclose(test[-1]["target"], X.T, rtol=1e-6)
    assert data.freq == "B" and data.prediction_length == 30 and data.num_test_dates == 5


def test_missing_and_unknown_datasets_give_clear_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="solar_nips.tar.gz"):
        load_benchmark("solar_nips", str(tmp_path), download=False)
    with pytest.raises(ValueError, match="unknown dataset 'traffic'"):
        load_benchmark("traffic", str(tmp_path))


def test_holdout_windows_stay_inside_the_training_range(tmp_path):
    write_fake_archive(tmp_path)
    data = load_benchmark("exchange_rate_nips", str(tmp_path), download=False)
    fit, val = holdout_windows(data.train, 30, 2, data.freq)
    (fit_entry,) = list(fit)
    assert fit_entry["target"].shape == (8, 40)
    assert [e["target"].shape[1] for e in val] == [70, 100]  # ends where training ends
    np.testing.assert_array_equal(list(val)[-1]["target"], list(data.train)[0]["target"])
    with pytest.raises(ValueError, match="too short"):
        holdout_windows(data.train, 30, 4, data.freq)
    # an earlier end: a backtest fold that uses nothing after step 80
    fit, val = holdout_windows(data.train, 30, 1, data.freq, end=80)
    assert list(fit)[0]["target"].shape == (8, 50) and [e["target"].shape[1] for e in val] == [80]
    np.testing.assert_array_equal(list(val)[0]["target"], list(data.train)[0]["target"][:, :80])
    with pytest.raises(ValueError, match="end must be"):
        holdout_windows(data.train, 30, 1, data.freq, end=101)


def test_synthetic_like_has_the_real_shape():
    data = synthetic_like("solar_nips", train_length=200)
    (train,) = list(data.train)
    assert train["target"].shape == (137, 200) and len(list(data.test)) == 7
    assert np.isfinite(train["target"]).all() and (train["target"] >= 0).all()


def _window(S=200, H=4, D=3, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    index = pd.period_range("2020-01-01", periods=20, freq="D")
    truth = pd.DataFrame(5 + rng.standard_normal((20, D)), index=index)
    samples = (5 + shift + rng.standard_normal((S, H, D))).astype(np.float32)
    return SampleForecast(samples, start_date=index[-H]), truth


def test_crps_matches_properscoring():
    """GluonTS's quantile-loss CRPS agrees with the exact sample CRPS (properscoring) on one window."""
    f, ts = _window(S=2000)
    metrics = evaluate_forecasts([f], [ts])
    y = ts.to_numpy()[-4:]
    exact = properscoring.crps_ensemble(y, np.moveaxis(f.samples, 0, -1)).sum() / np.abs(y).sum()
    assert metrics["CRPS"] == pytest.approx(exact, rel=0.08)
    ys, ss = y.sum(1), f.samples.sum(2)
    exact_sum = properscoring.crps_ensemble(ys, ss.T).sum() / np.abs(ys).sum()
    assert metrics["CRPS-Sum"] == pytest.approx(exact_sum, rel=0.08)


def test_energy_score_and_coverage_properties():
    f, ts = _window()
    y = ts.to_numpy()[-4:]
    good = energy_score(f.samples, y)
    shifted = energy_score(f.samples + 3.0, y)
    assert 0 < good < shifted
    assert coverage(f.samples, y, 0.9) > coverage(f.samples + 3.0, y, 0.9)
    # a well-specified forecast covers about the nominal share on a large window
    rng = np.random.default_rng(1)
    big_y = rng.standard_normal((50, 40))
    assert coverage(rng.standard_normal((4000, 50, 40)), big_y, 0.5) == pytest.approx(0.5, abs=0.06)
