"""The peer scripts forecast exactly the benchmark's windows (benchmarks/peers).

``timegrad.py`` runs in an environment that cannot import vsmd_ts, so it rebuilds the windows
itself; its window helpers only need numpy and pandas, so they are checked here against
``load_benchmark``, and ``score_arrays.py`` refuses arrays whose window ends differ.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from test_csv_data import write_csv
from test_data_metrics import write_fake_archive

from vsmd_ts.timeseries.data import holdout_windows, load_benchmark

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers"


@pytest.fixture(scope="module")
def peers():
    sys.path.insert(0, str(PEERS))
    import score_arrays
    import timegrad

    return timegrad, score_arrays


@pytest.fixture
def etth1_dir(tmp_path):
    (tmp_path / "ett").mkdir()
    write_csv(tmp_path / "ett" / "ETTh1.csv", T=14500, D=7)
    return tmp_path


def test_timegrad_builds_etth1_as_load_benchmark_does(peers, etth1_dir):
    timegrad, _ = peers
    data = load_benchmark("etth1", str(etth1_dir))
    values, start, names = timegrad.read_etth1(etth1_dir)
    assert names == data.series_names and values.dtype == np.float32
    (train,) = list(data.train)
    np.testing.assert_array_equal(values[:, :timegrad.ETTH1["train_end"]], train["target"])
    assert str(train["start"]) == str(start)[:16]  # Period prints without the seconds
    assert timegrad.PAPER_ETTH1["prediction_length"] == data.prediction_length
    for split, windows in (("test", data.test), ("validation", data.validation)):
        ends = timegrad.etth1_window_ends(split)
        assert len(ends) == 120 and ends == [np.asarray(e["target"]).shape[1] for e in windows]
        for end, entry in zip(ends[::40], list(windows)[::40]):
            np.testing.assert_array_equal(values[:, :end], entry["target"])


def test_timegrad_exchange_validation_is_holdout_windows(peers, tmp_path):
    timegrad, _ = peers
    write_fake_archive(tmp_path / "data", T=1000)
    data = load_benchmark("exchange_rate_nips", str(tmp_path / "data"), download=False)
    fit, val = holdout_windows(data.train, 30, 25, data.freq)
    cut, ends = timegrad.holdout_ends(1000, 30, 25)
    assert cut == np.asarray(list(fit)[0]["target"]).shape[1]
    assert ends == [np.asarray(e["target"]).shape[1] for e in val]


def _write_arrays(path, truth, meta, seed=0):
    rng = np.random.default_rng(seed)
    samples = truth[:, None] + 0.01 * rng.standard_normal((truth.shape[0], 20) + truth.shape[1:])
    np.savez(path, samples=samples, truth=truth, meta=json.dumps(meta))
    return samples


META = {"model": "TimeGrad", "seed": 1, "config": {}, "trainer": {"epochs": 1}, "versions": {}, "num_parameters": 1,
        "nfe_per_step": 100, "train_time_s": 1.0, "train_cpu_s": 1.0, "sample_time_s": 1.0, "sample_cpu_s": 1.0}


def test_score_arrays_checks_etth1_window_ends(peers, etth1_dir, tmp_path):
    timegrad, score_arrays = peers
    data = load_benchmark("etth1", str(etth1_dir))
    values, _, _ = timegrad.read_etth1(etth1_dir)
    ends = timegrad.etth1_window_ends("validation")[-3:]
    truth = np.stack([values[:, end - 24:end].T for end in ends])  # (3, 24, 7)
    meta = {**META, "dataset": "etth1", "split": "validation", "window_ends": ends, "max_windows": 3}
    samples = _write_arrays(tmp_path / "ok.npz", truth, meta)
    record, forecasts, _ = score_arrays.score_file(tmp_path / "ok.npz", data)
    assert (record["dataset"], record["split"], record["quick"]) == ("etth1", "validation", True)
    assert record["name"] == "etth1_validation_timegrad_seed1_quick" and record["evaluations"][0]["windows"] == 3
    np.testing.assert_array_equal(forecasts[-1].samples, samples[-1].astype(np.float32))
    # the same truth claimed for other window ends is refused
    _write_arrays(tmp_path / "ends.npz", truth, {**meta, "window_ends": [e - 24 for e in ends]})
    with pytest.raises(ValueError, match="window ends"):
        score_arrays.score_file(tmp_path / "ends.npz", data)
    # test-split arrays scored as validation windows: the truth differs
    test_ends = timegrad.etth1_window_ends("test")[-3:]
    _write_arrays(tmp_path / "split.npz", np.stack([values[:, e - 24:e].T for e in test_ends]), meta)
    with pytest.raises(ValueError, match="windows differ"):
        score_arrays.score_file(tmp_path / "split.npz", data)
