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

Covariates: ``train --dynamic-real COL ...`` names columns known ahead (a
calendar, a weather forecast, a planned price) and ``--past-dynamic-real COL
...`` columns known only up to the forecast start; they are read, not
forecast (``VSMDEstimator``'s ``num_feat_dynamic_real`` and
``num_past_feat_dynamic_real``), standardised with their mean and standard
deviation over the training rows (saved with the model). For such a model the
rows after the last row with a target value are future rows: ``train`` and
``evaluate`` leave them out, and ``forecast`` forecasts the
``prediction_length`` rows after the last target value, so with
``--dynamic-real`` the CSV must end with ``prediction_length`` rows whose
target cells are empty and whose ``--dynamic-real`` cells hold the future
values (``--past-dynamic-real`` cells may be empty there). Covariate cells
the model reads must not be empty.
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


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vsmd_ts.timeseries", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def csv_args(q):
        q.add_argument("--csv", required=True, help="wide CSV: a time column and one column per series")
        q.add_argument("--time-column", help="name of the time column (default: 'date' if present, else the first)")

    t = sub.add_parser("train", help="train on a CSV and save the predictor")
    csv_args(t)
    t.add_argument("--columns", nargs="+",
                   help="series to model (default: every column but the time column and the covariates)")
    t.add_argument("--dynamic-real", nargs="+", default=[], metavar="COL",
                   help="covariate columns known ahead, read at every step and not forecast; forecast then needs "
                        "their values in prediction_length rows after the last target value (see above)")
    t.add_argument("--past-dynamic-real", nargs="+", default=[], metavar="COL",
                   help="covariate columns known up to the forecast start only, read over the history")
    t.add_argument("--freq", help="pandas frequency of the rows, e.g. h, 15min, D, B (default: inferred)")
    t.add_argument("--prediction-length", type=int, required=True, help="forecast horizon in steps")
    t.add_argument("--holdout", type=int, default=0, metavar="WINDOWS",
                   help="leave the last WINDOWS horizons out of training (for evaluate)")
    t.add_argument("--epochs", type=int, help="training epochs (default: the estimator's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="other VSMDEstimator arguments, e.g. --set ensemble_size=1 hidden_size=32 beta=8 (the SDE's "
                        "parameters go into sde_kwargs, A_training.FIELD into A_training)")
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
    """``values (D, T), start, freq, names, covariates``: ``covariates`` maps ``dynamic_real`` and
    ``past_dynamic_real`` to ``(F, T)`` arrays of the named columns, as in the CSV (empty cells NaN)."""
    from .data import read_wide_csv

    columns = layout["columns"] if layout else getattr(args, "columns", None)
    freq = layout["freq"] if layout else getattr(args, "freq", None)
    time_column = args.time_column or (layout or {}).get("time_column")
    kinds = {kind: list((layout or {}).get(kind, [])) if layout else list(getattr(args, kind, []))
             for kind in _COVARIATES}
    covariates = [c for kind in _COVARIATES for c in kinds[kind]]
    for name in set(covariates):
        if covariates.count(name) > 1 or (columns and name in columns):
            raise ValueError(f"column {name!r} is named twice among the series (--columns) and the covariates")
    values, start, freq, names = read_wide_csv(args.csv, time_column=time_column, freq=freq,
                                               columns=list(columns) + covariates if columns else None)
    missing = [c for c in covariates if c not in names]
    if missing:
        raise ValueError(f"{args.csv}: no column {', '.join(map(repr, missing))}; columns are {names}")
    rows = {name: i for i, name in enumerate(names)}
    series = [name for name in names if name not in covariates]
    if not series:
        raise ValueError(f"{args.csv}: no series column besides the time column and the covariates")
    found = {kind: values[[rows[c] for c in kinds[kind]]] for kind in _COVARIATES}
    return values[[rows[name] for name in series]], start, freq, series, found


_COVARIATES = {"dynamic_real": "feat_dynamic_real", "past_dynamic_real": "past_feat_dynamic_real"}


def _history_rows(values: np.ndarray, path) -> int:
    """Rows up to the last one with a target value; the rows after it are future rows."""
    seen = np.flatnonzero(np.isfinite(values).any(axis=0))
    if not seen.size:
        raise ValueError(f"{path}: no target value in any row")
    return int(seen[-1]) + 1


def _mean_std(column: np.ndarray) -> List[float]:
    """``[mean, standard deviation]`` of the filled cells (``[0, 1]`` for none, a deviation of 0 taken as 1)."""
    filled = column[np.isfinite(column)].astype(np.float64)
    if not filled.size:
        return [0.0, 1.0]
    std = float(filled.std())
    return [float(filled.mean()), std if std > 0 else 1.0]


def _standardised(covariates: dict, layout: dict, rows: dict, path) -> dict:
    """Each covariate column standardised with the training rows' mean and standard deviation (``layout``),
    after checking that none of its first ``rows[kind]`` cells is empty."""
    out = {}
    for kind, values in covariates.items():
        for name, column in zip(layout.get(kind, []), values):
            empty = np.flatnonzero(~np.isfinite(column[: rows[kind]]))
            if empty.size:
                raise ValueError(f"{path}: covariate column {name!r}, line {int(empty[0]) + 2}: empty; the model "
                                 f"reads it in the first {rows[kind]} rows")
        mean, std = np.array([layout["covariate_scaling"][name] for name in layout.get(kind, [])]).reshape(-1, 2).T
        out[kind] = ((values[:, : rows[kind]] - mean[:, None]) / std[:, None]).astype(np.float32)
    return out


def _has_covariates(layout: dict) -> bool:
    return any(layout.get(kind) for kind in _COVARIATES)


def _dataset(values: np.ndarray, start, freq: str, ends: List[int], covariates: Optional[dict] = None,
             horizon: int = 0):
    """One entry per end: the target's first ``end`` rows, the covariates known ahead up to ``end + horizon``."""
    from gluonts.dataset.common import ListDataset

    def entry(end):
        out = {"start": start, "target": values[:, :end]}
        for kind, field in _COVARIATES.items():
            if covariates is not None and covariates[kind].shape[0]:
                out[field] = covariates[kind][:, : end + (horizon if kind == "dynamic_real" else 0)]
        return out

    return ListDataset([entry(end) for end in ends], freq=freq, one_dim_target=False)


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
    from .checks import estimator_kwargs_from_text

    values, start, freq, names, covariates = _read(args)
    H = args.prediction_length
    if H < 1 or args.holdout < 0:
        raise ValueError(f"--prediction-length must be positive and --holdout >= 0, got {H} and {args.holdout}")
    declared = {kind: list(getattr(args, kind)) for kind in _COVARIATES if getattr(args, kind)}
    end = (_history_rows(values, args.csv) if declared else values.shape[1]) - args.holdout * H
    kwargs = estimator_kwargs_from_text(args.set)
    if args.epochs:
        kwargs["trainer_kwargs"] = {**kwargs.get("trainer_kwargs", {}), "max_epochs": args.epochs}
    if declared:
        kwargs.update(num_feat_dynamic_real=len(args.dynamic_real),
                      num_past_feat_dynamic_real=len(args.past_dynamic_real))
        declared["covariate_scaling"] = {name: _mean_std(column[: max(end, 0)]) for kind in declared
                                         for name, column in zip(declared[kind], covariates[kind])}
        covariates = _standardised(covariates, declared, {kind: max(end, 0) for kind in _COVARIATES}, args.csv)
    estimator = VSMDEstimator(freq=freq, prediction_length=H, target_dim=len(names), seed=args.seed, **kwargs)
    predictor = estimator.train(_dataset(values, start, freq, [end], covariates if declared else None))
    out = Path(args.out)
    predictor.serialize(out)
    layout = {"columns": names, "freq": freq, "time_column": args.time_column, "prediction_length": H,
              "trained_rows": end, "target": estimator.resolved_kwargs()[0]["target"], **declared}
    (out / LAYOUT).write_text(json.dumps(layout, indent=1))
    print(f"trained on rows [0, {end}) of {args.csv} ({len(names)} series, freq {freq}, modelled as "
          f"{layout['target']}); predictor saved to {out}")
    return 0


def forecast(args) -> int:
    import pandas as pd
    import torch

    predictor, layout = _load(args.model)
    values, start, freq, names, covariates = _read(args, layout)
    if not all(0 < q < 1 for q in args.quantiles):
        raise ValueError(f"--quantiles must lie in (0, 1), got {args.quantiles}")
    T = values.shape[1]
    if _has_covariates(layout):
        T, H, known = _history_rows(values, args.csv), layout["prediction_length"], layout.get("dynamic_real", [])
        if known and values.shape[1] < T + H:
            raise ValueError(
                f"{args.csv}: the model reads the covariates {known} over the {H} steps to forecast, but only "
                f"{values.shape[1] - T} row(s) follow line {T + 1}, the last with a target value: add {H} rows "
                f"with empty target cells and the future values of {', '.join(map(repr, known))}")
        covariates = _standardised(covariates, layout, {"dynamic_real": T + H, "past_dynamic_real": T}, args.csv)
        values = values[:, :T]
    torch.manual_seed(args.seed)
    data = _dataset(values, start, freq, [T], covariates if _has_covariates(layout) else None,
                    horizon=layout["prediction_length"])
    (fc,) = list(predictor.predict(data, num_samples=args.num_samples))
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
    values, start, freq, names, covariates = _read(args, layout)
    H, T = layout["prediction_length"], values.shape[1]
    if _has_covariates(layout):
        T = _history_rows(values, args.csv)
        covariates = _standardised(covariates, layout, {kind: T for kind in _COVARIATES}, args.csv)
        values = values[:, :T]
    if args.windows < 1 or T - args.windows * H < 1:
        raise ValueError(f"--windows must be between 1 and {(T - 1) // H} for {T} rows and horizon {H}")
    if T - args.windows * H < layout["trained_rows"]:
        print(f"warning: the model was trained on rows [0, {layout['trained_rows']}), which overlap the evaluated "
              f"windows; train with --holdout {args.windows} for an honest score", file=sys.stderr)
    torch.manual_seed(args.seed)
    ends = [T - k * H for k in range(args.windows - 1, -1, -1)]
    data = _dataset(values, start, freq, ends, covariates if _has_covariates(layout) else None)
    forecasts, tss = make_evaluation_predictions(data, predictor, args.num_samples)
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
