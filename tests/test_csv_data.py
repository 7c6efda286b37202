"""Wide-CSV datasets (ETT layout): reading, splitting, clear errors; ProbTS's per-window scores."""

import numpy as np
import pandas as pd
import pytest

from vsmd_ts.timeseries.data import DatasetNotFoundError, load_benchmark, load_csv_dataset, read_wide_csv
from vsmd_ts.timeseries.metrics import probts_scores


def write_csv(path, T=100, D=3, freq="h", seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(T, D)).round(3)
    frame = pd.DataFrame(values, columns=[f"s{i}" for i in range(D)])
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=T, freq=freq).strftime("%Y-%m-%d %H:%M:%S"))
    frame.to_csv(path, index=False)
    return values


def test_read_wide_csv_returns_series_rows_and_the_inferred_frequency(tmp_path):
    values = write_csv(tmp_path / "d.csv")
    X, start, freq, names = read_wide_csv(tmp_path / "d.csv")
    assert X.shape == (3, 100) and names == ["s0", "s1", "s2"] and freq == "h"
    assert start == pd.Period("2020-01-01 00:00", freq="h")
    np.testing.assert_allclose(X, values.T, rtol=1e-6)
    X, *_, names = read_wide_csv(tmp_path / "d.csv", columns=["s2", "s0"])
    np.testing.assert_allclose(X, values.T[[2, 0]], rtol=1e-6)


def test_csv_splits_follow_the_borders_and_the_stride(tmp_path):
    values = write_csv(tmp_path / "d.csv", T=100)
    data = load_csv_dataset(tmp_path / "d.csv", prediction_length=5, borders=(60, 80, 100), stride=5)
    (train,) = list(data.train)
    assert train["target"].shape == (3, 60)
    assert [e["target"].shape[1] for e in data.validation] == [65, 70, 75, 80]
    assert [e["target"].shape[1] for e in data.test] == [85, 90, 95, 100]
    assert data.num_test_dates == 4 and data.target_dim == 3 and data.series_names == ["s0", "s1", "s2"]
    np.testing.assert_allclose(list(data.test)[-1]["target"], values.T, rtol=1e-6)
    # default borders: 60 / 20 / 20 % of the rows, stride = horizon
    data = load_csv_dataset(tmp_path / "d.csv", prediction_length=10)
    assert [e["target"].shape[1] for e in data.test] == [90, 100]


def test_empty_cells_are_missing_values(tmp_path):
    path = tmp_path / "d.csv"
    write_csv(path)
    lines = path.read_text().splitlines()
    cells = lines[5].split(",")
    cells[2] = ""
    lines[5] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    X, *_ = read_wide_csv(path)
    assert np.isnan(X[1, 4]) and np.isfinite(np.delete(X.ravel(), 1 * 100 + 4)).all()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines.__setitem__(7, lines[7].replace(lines[7].split(",")[1], "abc", 1)), "column 's0', line 8: 'abc' is not a number"),
        (lambda lines: lines.pop(10), "not evenly spaced.*line 11 is"),
        (lambda lines: lines.__setitem__(3, "yesterday" + lines[3][19:]), "line 4: time 'yesterday'.*is not a date"),
    ],
)
def test_bad_csv_contents_name_the_row_and_column(tmp_path, edit, message):
    path = tmp_path / "d.csv"
    write_csv(path)
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_wide_csv(path)


def test_missing_file_column_and_bad_borders_give_clear_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nope.csv"):
        read_wide_csv(tmp_path / "nope.csv")
    write_csv(tmp_path / "d.csv")
    with pytest.raises(ValueError, match="no column 'HUFL'"):
        read_wide_csv(tmp_path / "d.csv", columns=["HUFL"])
    with pytest.raises(ValueError, match="no time column 'when'"):
        read_wide_csv(tmp_path / "d.csv", time_column="when")
    with pytest.raises(ValueError, match="borders must satisfy"):
        load_csv_dataset(tmp_path / "d.csv", 5, borders=(80, 60, 100))


def test_etth1_is_read_by_path_with_the_standard_borders(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="ETTh1.csv"):
        load_benchmark("etth1", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="data_dir"):
        load_benchmark("etth1")
    (tmp_path / "ett").mkdir()
    write_csv(tmp_path / "ett" / "ETTh1.csv", T=14500, D=7)
    data = load_benchmark("etth1", str(tmp_path))
    assert data.name == "etth1" and data.freq == "h" and data.prediction_length == 24
    assert list(data.train)[0]["target"].shape == (7, 8640)
    val_ends = [e["target"].shape[1] for e in data.validation]
    test_ends = [e["target"].shape[1] for e in data.test]
    assert len(val_ends) == 120 and val_ends[0] == 8664 and val_ends[-1] == 11520
    assert len(test_ends) == 120 and test_ends[0] == 11544 and test_ends[-1] == 14400
    assert data.num_test_dates == 120


def test_probts_scores_match_a_hand_computed_case():
    # one window, one step, two series; five samples each
    samples = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [4.0, 10.0], [5.0, 10.0]])[:, None, :]  # (5, 1, 2)
    y = np.array([[3.5, 8.0]])
    levels = np.arange(1, 20) / 20
    q1 = 1 + 4 * levels  # np.quantile of 1..5 with linear interpolation
    loss1 = 2 * np.abs((3.5 - q1) * ((3.5 <= q1) - levels))
    loss2 = 2 * np.abs((8.0 - 10.0) * (1 - levels))
    crps = ((loss1 + loss2) / 11.5).mean()
    out = probts_scores([samples], [y])
    assert out["ProbTS-CRPS"] == pytest.approx(crps)
    assert out["ProbTS-NMAE"] == pytest.approx((0.5 + 2.0) / 11.5)
    # windows weigh the same; an unobserved target leaves both sums
    y2 = np.array([[np.nan, 8.0]])
    out2 = probts_scores([samples, samples], [y, y2])
    crps2 = (loss2 / 8.0).mean()
    assert out2["ProbTS-CRPS"] == pytest.approx((crps + crps2) / 2)
    assert out2["ProbTS-NMAE"] == pytest.approx(((0.5 + 2.0) / 11.5 + 2.0 / 8.0) / 2)
