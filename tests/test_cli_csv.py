"""The CSV command line, end to end on a small hourly CSV: train, forecast with a fan chart, evaluate, clear errors."""

import json

import numpy as np
import pandas as pd
import pytest

from vsmd_ts.timeseries.__main__ import main

TINY = ["--set", "hidden_size=8", "num_layers=1", "denoiser_hidden=16", "denoiser_blocks=1", "batch_size=4",
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


def test_train_forecast_plot_and_evaluate_a_csv(tmp_path, capsys):
    csv = tmp_path / "data.csv"
    write_csv(csv)
    model = tmp_path / "model"
    assert main(["train", "--csv", str(csv), "--freq", "h", "--prediction-length", "6", "--holdout", "2",
                 "--epochs", "1", "--out", str(model), *TINY]) == 0
    layout = json.loads((model / "csv-layout.json").read_text())
    assert layout["columns"] == ["load", "temp"] and layout["trained_rows"] == 228 and layout["target"] == "level"

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
