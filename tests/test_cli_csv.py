"""The CSV command line, end to end on a small hourly CSV: train, forecast with a fan chart, evaluate, clear errors."""

import json

import numpy as np
import pandas as pd
import pytest

from vsmd_ts.timeseries.__main__ import main

TINY = ["--set", "hidden_size=8", "num_layers=1", "denoiser_hidden=16", "batch_size=4",
        "num_batches_per_epoch=2", "sampler_steps=2", "ensemble_size=1", "context_length=12", "lags_seq=[1,24]",
        "progress=false", "trainer_kwargs={\"enable_progress_bar\":false}"]


def write_csv(path, T=240, rows=None):
    t = np.arange(T)
    frame = pd.DataFrame({
        "date": pd.date_range("2021-03-01", periods=T, freq="h").strftime("%Y-%m-%d %H:%M"),
        "load": 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.1 * np.random.default_rng(0).standard_normal(T),
        "temp": 20 + np.cos(2 * np.pi * t / 24),
    })
    if rows is not None:
        frame = frame.iloc[rows]
    frame.to_csv(path, index=False)
    return frame


def test_set_strings_become_estimator_arguments():
    from vsmd_ts.timeseries.checks import estimator_kwargs_from_text

    assert estimator_kwargs_from_text(["beta=8", "damping_ratio=1", "A_training.lr=0.01", "hidden_size=32",
                                       "sampler=heun", "lags_seq=[1,24]"]) == {
        "sde_kwargs": {"beta": 8, "damping_ratio": 1}, "A_training": {"lr": 0.01}, "hidden_size": 32,
        "sampler": "heun", "lags_seq": [1, 24]}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        estimator_kwargs_from_text(["beta"])


def test_train_forecast_plot_and_evaluate_a_csv(tmp_path, capsys):
    csv = tmp_path / "data.csv"
    write_csv(csv)
    model = tmp_path / "model"
    assert main(["train", "--csv", str(csv), "--freq", "h", "--prediction-length", "6", "--holdout", "2",
                 "--epochs", "1", "--out", str(model), *TINY, "beta=8"]) == 0
    from gluonts.model.predictor import Predictor

    assert Predictor.deserialize(model).prediction_net.model.sde.beta_value == 8.0  # --set routes SDE parameters
    layout = json.loads((model / "csv-layout.json").read_text())
    assert layout["columns"] == ["load", "temp"] and layout["trained_rows"] == 228 and layout["target"] == "seasonal"

    out, fan = tmp_path / "forecast.csv", tmp_path / "fan.png"
    assert main(["forecast", "--model", str(model), "--csv", str(csv), "--out", str(out), "--plot", str(fan),
                 "--num-samples", "20"]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["time", "series", "mean", "q0.05", "q0.1", "q0.25", "q0.5", "q0.75", "q0.9", "q0.95"]
    assert len(frame) == 6 * 2 and frame["time"].iloc[0] == "2021-03-11 00:00:00"
    assert list(frame["series"][:2]) == ["load", "temp"]
    q = frame[[c for c in frame.columns if c.startswith("q")]].to_numpy()
    assert np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()  # quantiles in order
    assert fan.stat().st_size > 10_000

    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(model), "--csv", str(csv), "--windows", "2", "--num-samples", "20",
                 "--out", str(metrics)]) == 0
    printed = capsys.readouterr()
    assert "CRPS-Sum" in printed.out and "warning" not in printed.err  # the held-out windows were not trained on
    scores = json.loads(metrics.read_text())
    assert np.isfinite(scores["CRPS-Sum"]) and scores["CRPS-Sum"] > 0 and 0 <= scores["coverage_90"] <= 1


@pytest.mark.parametrize("edit, args, message", [
    (None, ["--columns", "load", "wind"], "no column 'wind'"),
    ("abc", [], "column 'load', line 5: 'abc' is not a number"),
    ("gap", [], "not evenly spaced"),
])
def test_bad_csv_input_is_one_clear_line(tmp_path, capsys, edit, args, message):
    csv = tmp_path / "data.csv"
    frame = write_csv(csv, rows=np.r_[0:10, 11:240] if edit == "gap" else None)
    if edit == "abc":
        frame["load"] = frame["load"].astype(object)
        frame.loc[3, "load"] = "abc"
        frame.to_csv(csv, index=False)
    code = main(["train", "--csv", str(csv), "--prediction-length", "6", "--out", str(tmp_path / "m"), *args, *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


def test_forecast_needs_a_model_folder(tmp_path, capsys):
    csv = tmp_path / "data.csv"
    write_csv(csv)
    assert main(["forecast", "--model", str(tmp_path / "nothing"), "--csv", str(csv), "--out", "x.csv"]) == 2
    assert "not a folder written by" in capsys.readouterr().err


def write_covariate_csv(path, T=240, future=6):
    """load = 10 + 3 x + noise and temp, x a random +-1 signal known ahead; 'lagged' a past-only covariate. The
    last ``future`` rows have empty load and temp cells and x filled (the horizon to forecast)."""
    rng = np.random.default_rng(0)
    x = rng.choice([-1.0, 1.0], size=T + future)
    frame = pd.DataFrame({
        "date": pd.date_range("2021-03-01", periods=T + future, freq="h").strftime("%Y-%m-%d %H:%M"),
        "load": 10 + 3 * x + 0.1 * rng.standard_normal(T + future),
        "x": 100 + 5 * x,  # far from standardised: the command line standardises it
        "temp": 20 + np.cos(2 * np.pi * np.arange(T + future) / 24),
        "lagged": np.r_[0.0, x[:-1]],
    })
    frame = frame.astype({"load": object, "temp": object, "lagged": object})
    frame.loc[T:, ["load", "temp", "lagged"]] = ""
    frame.to_csv(path, index=False)
    return frame


def test_covariate_columns_end_to_end(tmp_path, capsys):
    csv, model = tmp_path / "data.csv", tmp_path / "model"
    write_covariate_csv(csv)
    assert main(["train", "--csv", str(csv), "--freq", "h", "--prediction-length", "6", "--holdout", "2",
                 "--epochs", "1", "--dynamic-real", "x", "--past-dynamic-real", "lagged", "--out", str(model),
                 *TINY, "naive_share=0"]) == 0
    layout = json.loads((model / "csv-layout.json").read_text())
    assert layout["columns"] == ["load", "temp"] and layout["dynamic_real"] == ["x"]
    assert layout["past_dynamic_real"] == ["lagged"]
    assert layout["trained_rows"] == 240 - 12  # the 6 future rows are not training rows
    mean, std = layout["covariate_scaling"]["x"]
    assert 95 < mean < 105 and 4.5 < std < 5.5
    assert "trained on rows [0, 228)" in capsys.readouterr().out

    out = tmp_path / "forecast.csv"
    assert main(["forecast", "--model", str(model), "--csv", str(csv), "--out", str(out), "--num-samples", "10"]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 6 * 2 and list(frame["series"].unique()) == ["load", "temp"]
    assert frame["time"].iloc[0] == "2021-03-11 00:00:00"  # the first future row, after the last load value
    assert np.isfinite(frame["mean"]).all()
    # the same horizon with other future values of x gives another forecast
    other = pd.read_csv(csv)
    other.loc[240:, "x"] = 200
    other.to_csv(tmp_path / "other.csv", index=False)
    assert main(["forecast", "--model", str(model), "--csv", str(tmp_path / "other.csv"), "--out",
                 str(tmp_path / "other_fc.csv"), "--num-samples", "10"]) == 0
    assert not np.allclose(pd.read_csv(tmp_path / "other_fc.csv")["mean"], frame["mean"])

    assert main(["evaluate", "--model", str(model), "--csv", str(csv), "--windows", "2", "--num-samples", "10"]) == 0
    printed = capsys.readouterr()
    assert "CRPS-Sum" in printed.out and "warning" not in printed.err


def test_covariate_columns_give_clear_errors(tmp_path, capsys):
    csv, model = tmp_path / "data.csv", tmp_path / "model"
    frame = write_covariate_csv(csv)
    assert main(["train", "--csv", str(csv), "--prediction-length", "6", "--out", str(tmp_path / "m"),
                 "--dynamic-real", "wind", *TINY]) == 2
    assert "no column 'wind'" in capsys.readouterr().err
    assert main(["train", "--csv", str(csv), "--prediction-length", "6", "--out", str(tmp_path / "m"),
                 "--columns", "load", "x", "--dynamic-real", "x", *TINY]) == 2
    assert "column 'x' is named twice" in capsys.readouterr().err
    gap = frame.astype({"x": object})
    gap.loc[10, "x"] = ""
    gap.to_csv(tmp_path / "gap.csv", index=False)
    assert main(["train", "--csv", str(tmp_path / "gap.csv"), "--prediction-length", "6", "--out", str(model),
                 "--dynamic-real", "x", *TINY]) == 2
    assert "covariate column 'x', line 12: empty" in capsys.readouterr().err

    assert main(["train", "--csv", str(csv), "--freq", "h", "--prediction-length", "6", "--epochs", "1",
                 "--dynamic-real", "x", "--out", str(model), *TINY]) == 0
    frame.iloc[:243].to_csv(tmp_path / "short.csv", index=False)  # 3 of the 6 future rows
    code = main(["forecast", "--model", str(model), "--csv", str(tmp_path / "short.csv"), "--out", "f.csv"])
    err = capsys.readouterr().err
    assert code == 2 and "only 3 row(s) follow line 241, the last with a target value: add 6 rows" in err, err
