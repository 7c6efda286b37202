"""Forecast a wide CSV from the command line: train, forecast (with a fan chart) and evaluate.

    python -m vsmd_ts.timeseries train --csv data.csv --freq h --prediction-length 24 --out model/
    python -m vsmd_ts.timeseries forecast --model model/ --csv data.csv --out forecast.csv --plot fan.png
    python -m vsmd_ts.timeseries evaluate --model model/ --csv data.csv --windows 10

The CSV has a time column (``date`` when present, else the first column) and
one numeric column per series; empty cells are missing values. ``train``
fits on every row but the last ``--holdout`` windows and saves the predictor
and the CSV's layout under ``--out``. ``forecast`` writes the mean and the
quantiles of the next ``prediction_length`` steps after the CSV's last row, one
row per step and series. ``evaluate`` forecasts the last ``--windows``
horizons of the CSV from what precedes each and prints the metrics of
:func:`vsmd_ts.timeseries.metrics.evaluate_forecasts` (train with the same
``--holdout`` so that the model has not seen them). Bad input ends with a
one-line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

LAYOUT = "csv-layout.json"
QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vsmd_ts.timeseries", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def csv_args(q):
        q.add_argument("--csv", required=True, help="wide CSV: a time column and one column per series")
        q.add_argument("--time-column", help="name of the time column (default: 'date' if present, else the first)")

    t = sub.add_parser("train", help="train on a CSV and save the predictor")
    csv_args(t)
    t.add_argument("--columns", nargs="+", help="series to model (default: every column but the time column)")
    t.add_argument("--freq", help="pandas frequency of the rows, e.g. h, 15min, D, B (default: inferred)")
    t.add_argument("--prediction-length", type=int, required=True, help="forecast horizon in steps")
    t.add_argument("--holdout", type=int, default=0, metavar="WINDOWS",
                   help="leave the last WINDOWS horizons out of training (for evaluate)")
    t.add_argument("--epochs", type=int, help="training epochs (default: the estimator's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="other VSMDEstimator arguments, e.g. --set ensemble_size=1 hidden_size=32")
    t.add_argument("--out", required=True, help="folder for the predictor")

    f = sub.add_parser("forecast", help="forecast the steps after the CSV's last row")
    csv_args(f)
    f.add_argument("--model", required=True, help="folder written by train")
    f.add_argument("--out", required=True, help="output CSV: time, series, mean and quantile columns")
    f.add_argument("--num-samples", type=int, default=100)
    f.add_argument("--quantiles", nargs="+", type=float, default=list(QUANTILES))
    f.add_argument("--plot", help="also draw a fan chart to this PNG")
    f.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("evaluate", help="score forecasts of the CSV's last horizons")
    csv_args(e)
    e.add_argument("--model", required=True, help="folder written by train")
    e.add_argument("--windows", type=int, default=1, help="number of last horizons to forecast and score")
    e.add_argument("--num-samples", type=int, default=100)
    e.add_argument("--out", help="also write the metrics to this JSON file")
    e.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _read(args, layout: Optional[dict] = None):
    from .data import read_wide_csv

    columns = layout["columns"] if layout else getattr(args, "columns", None)
    freq = layout["freq"] if layout else getattr(args, "freq", None)
    time_column = args.time_column or (layout or {}).get("time_column")
    return read_wide_csv(args.csv, time_column=time_column, columns=columns, freq=freq)


def _dataset(values: np.ndarray, start, freq: str, ends: List[int]):
    from gluonts.dataset.common import ListDataset

    return ListDataset([{"start": start, "target": values[:, :end]} for end in ends], freq=freq, one_dim_target=False)


def _load(model: str):
    from .predictor import VSMDPredictor

    folder = Path(model)
    layout_file = folder / LAYOUT
    if not layout_file.is_file():
        raise FileNotFoundError(f"{layout_file}: missing; {folder} is not a folder written by "
                                "'python -m vsmd_ts.timeseries train'")
    layout = json.loads(layout_file.read_text())
    return VSMDPredictor.deserialize(folder), layout


def train(args) -> int:
    from . import VSMDEstimator

    values, start, freq, names = _read(args)
    H = args.prediction_length
    if H < 1 or args.holdout < 0:
        raise ValueError(f"--prediction-length must be positive and --holdout >= 0, got {H} and {args.holdout}")
    end = values.shape[1] - args.holdout * H
    kwargs = dict(kv.partition("=")[::2] for kv in args.set)
    kwargs = {k: _value(v) for k, v in kwargs.items()}
    if args.epochs:
        kwargs["trainer_kwargs"] = {**kwargs.get("trainer_kwargs", {}), "max_epochs": args.epochs}
    estimator = VSMDEstimator(freq=freq, prediction_length=H, target_dim=len(names), seed=args.seed, **kwargs)
    predictor = estimator.train(_dataset(values, start, freq, [end]))
    out = Path(args.out)
    predictor.serialize(out)
    layout = {"columns": names, "freq": freq, "time_column": args.time_column, "prediction_length": H,
              "trained_rows": end, "target": estimator.resolved_kwargs()[0]["target"]}
    (out / LAYOUT).write_text(json.dumps(layout, indent=1))
    print(f"trained on rows [0, {end}) of {args.csv} ({len(names)} series, freq {freq}, modelled as "
          f"{layout['target']}); predictor saved to {out}")
    return 0


def forecast(args) -> int:
    import pandas as pd
    import torch

    predictor, layout = _load(args.model)
    values, start, freq, names = _read(args, layout)
    if not all(0 < q < 1 for q in args.quantiles):
        raise ValueError(f"--quantiles must lie in (0, 1), got {args.quantiles}")
    torch.manual_seed(args.seed)
    (fc,) = list(predictor.predict(_dataset(values, start, freq, [values.shape[1]]), num_samples=args.num_samples))
    S, H, D = fc.samples.shape
    times = pd.period_range(fc.start_date, periods=H, freq=freq).to_timestamp()
    qs = np.quantile(fc.samples, args.quantiles, axis=0)  # (Q, H, D)
    frame = pd.DataFrame({
        "time": np.repeat(times, D), "series": np.tile(names, H), "mean": fc.samples.mean(0).ravel(),
        **{f"q{q:g}": qs[i].ravel() for i, q in enumerate(args.quantiles)},
    })
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"forecast of {H} steps x {D} series from {times[0]} written to {args.out}")
    if args.plot:
        from .plots import plot_fan_chart

        index = pd.period_range(start, periods=values.shape[1] + H, freq=freq)
        # the chart's truth frame: the history, then the unknown horizon as missing values
        target = pd.DataFrame(np.concatenate([values.T, np.full((H, D), np.nan)]), index=index)
        plot_fan_chart(fc, target, args.plot, dims=range(min(D, 8)), names=names,
                       title=f"{Path(args.csv).name}: forecast from {times[0]}")
        print(f"fan chart written to {args.plot}")
    return 0


def evaluate(args) -> int:
    import torch
    from gluonts.evaluation import make_evaluation_predictions

    from .metrics import evaluate_forecasts

    predictor, layout = _load(args.model)
    values, start, freq, names = _read(args, layout)
    H, T = layout["prediction_length"], values.shape[1]
    if args.windows < 1 or T - args.windows * H < 1:
        raise ValueError(f"--windows must be between 1 and {(T - 1) // H} for {T} rows and horizon {H}")
    if T - args.windows * H < layout["trained_rows"]:
        print(f"warning: the model was trained on rows [0, {layout['trained_rows']}), which overlap the evaluated "
              f"windows; train with --holdout {args.windows} for an honest score", file=sys.stderr)
    torch.manual_seed(args.seed)
    ends = [T - k * H for k in range(args.windows - 1, -1, -1)]
    forecasts, tss = make_evaluation_predictions(_dataset(values, start, freq, ends), predictor, args.num_samples)
    metrics = evaluate_forecasts(list(forecasts), list(tss))
    keys = ["CRPS-Sum", "CRPS", "ProbTS-CRPS", "ProbTS-NMAE", "ND-Sum", "NRMSE-Sum", "energy_score", "coverage_50",
            "coverage_90"]
    for key in keys:
        print(f"{key:>13}: {metrics[key]:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=1))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from .data import DatasetNotFoundError
    from .predictor import PredictorFileError

    try:
        return {"train": train, "forecast": forecast, "evaluate": evaluate}[args.command](args)
    except (ValueError, FileNotFoundError, DatasetNotFoundError, PredictorFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
