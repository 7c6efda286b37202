"""Benchmark datasets in the standard multivariate protocol (TimeGrad / GluonTS ``*_nips`` sets).

``load_benchmark(name, data_dir)`` reads a dataset from a local folder when it
is there and otherwise through ``gluonts.dataset.repository.get_dataset``
(which downloads when online). ``exchange_rate_nips`` ships inside the package
(``_data/``, see its README for provenance and licence) and is used whenever
no ``data_dir`` is given, so it needs neither a data folder nor internet. All
paths return the same grouped datasets: one ``(D, T)`` training series and
``num_test_dates`` rolling test windows. A damaged local file raises
:class:`DatasetCorruptError` naming the file.

Wide CSV files (a time column and one numeric column per series, as the ETT
files) are read by path with :func:`read_wide_csv` and split into train,
validation and test windows with :func:`load_csv_dataset`; ``etth1`` is such a
benchmark, read from ``<data_dir>/ett/ETTh1.csv`` with the standard borders
(train ``[0, 8640)``, validation ``[8640, 11520)``, test ``[11520, 14400)``)
and a forecast window every 24 steps.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from gluonts.dataset.common import ListDataset
from gluonts.dataset.multivariate_grouper import MultivariateGrouper

__all__ = [
    "BENCHMARKS",
    "BenchmarkData",
    "CSV_BENCHMARKS",
    "CsvSplit",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "EMBEDDED",
    "holdout_windows",
    "load_benchmark",
    "load_csv_dataset",
    "read_wide_csv",
    "synthetic_like",
]


@dataclass(frozen=True)
class BenchmarkSpec:
    freq: str
    prediction_length: int
    num_test_dates: int
    target_dim: int
    train_length: int  # for synthetic_like


BENCHMARKS: Dict[str, BenchmarkSpec] = {
    "exchange_rate_nips": BenchmarkSpec("B", 30, 5, 8, 6071),
    "electricity_nips": BenchmarkSpec("h", 24, 7, 370, 5833),
    "solar_nips": BenchmarkSpec("h", 24, 7, 137, 7009),
    "etth1": BenchmarkSpec("h", 24, 120, 7, 8640),
}


@dataclass(frozen=True)
class CsvSplit:
    """Where a CSV benchmark lives under ``data_dir`` and its borders (row counts).

    Rows ``[0, train_end)`` train; validation windows end every ``stride``
    rows in ``(train_end, val_end]``, test windows in ``(val_end, test_end]``;
    each forecasts its last ``prediction_length`` rows from everything before.
    """

    file: str
    train_end: int
    val_end: int
    test_end: int
    stride: int


# ETT-small's standard borders (12 / 4 / 4 months of 30 days; ProbTS, LTSF); the files are CC BY-ND and read by path
CSV_BENCHMARKS: Dict[str, CsvSplit] = {"etth1": CsvSplit("ett/ETTh1.csv", 8640, 11520, 14400, 24)}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is neither in the local folder nor downloadable."""


class DatasetCorruptError(DatasetNotFoundError, ValueError):
    """A local dataset file exists but cannot be read (truncated, not gzip, bad JSON...).

    A subclass of :class:`DatasetNotFoundError`, so code that reports a
    missing dataset reports this one too; the message names the file.
    """


# datasets shipped inside the package (provenance and licence in _data/README.md)
EMBEDDED: Dict[str, Path] = {"exchange_rate_nips": Path(__file__).resolve().parent / "_data" / "exchange_rate_nips.tar.gz"}


@dataclass
class BenchmarkData:
    """A benchmark in the grouped multivariate form.

    ``train``: one entry with target ``(D, T)``; ``test``: ``num_test_dates``
    entries, window ``k`` ending ``(k + 1) * prediction_length`` steps after
    the training range (the last ``prediction_length`` steps are forecast).
    """

    name: str
    train: ListDataset
    test: ListDataset
    freq: str
    prediction_length: int
    target_dim: int
    num_test_dates: int
    source: str
    #: validation windows after the training range (CSV benchmarks); ``None``: carve them with :func:`holdout_windows`
    validation: Optional[ListDataset] = None
    #: series names (CSV benchmarks), in the order of the target's rows
    series_names: Optional[List[str]] = None


def _grouped(series: List[dict], freq: str, target_dim: int, num_test_dates: Optional[int] = None) -> ListDataset:
    with warnings.catch_warnings():
        # pandas deprecates Periods with business-day freq; GluonTS still uses them for 'B'
        warnings.filterwarnings("ignore", ".*(BDay|PeriodDtype\\[B\\]).*", FutureWarning)
        uni = ListDataset(series, freq=freq)
        grouper = MultivariateGrouper(max_target_dim=target_dim, num_test_dates=num_test_dates)
        return ListDataset(list(grouper(uni)), freq=freq, one_dim_target=False)


def _read_json_lines(stream: Iterable[bytes], where: str) -> List[dict]:
    out = []
    for number, line in enumerate(stream, 1):
        line = line.strip()
        if line:
            try:
                entry = json.loads(line)
                out.append({"start": entry["start"], "target": entry["target"]})
            except (ValueError, KeyError, TypeError) as err:
                raise DatasetCorruptError(
                    f"{where}, line {number}: not a GluonTS JSON entry with 'start' and 'target' "
                    f"({type(err).__name__}: {err})"
                ) from None
    return out


def _read_local(path: Path, reader) -> Tuple[List[dict], List[dict]]:
    """Run ``reader(path)``, turning low-level read errors into one that names the file."""
    try:
        return reader(path)
    except DatasetCorruptError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, UnicodeDecodeError) as err:
        what = {_from_archive: "a gzip-compressed tar archive", _from_folder: "JSON lines"}.get(reader, "gzip CSV")
        raise DatasetCorruptError(
            f"{path}: cannot read it as {what}; the file is truncated or damaged "
            f"({type(err).__name__}: {err}). Replace it with a fresh copy."
        ) from None


def _from_archive(path: Path) -> Tuple[List[dict], List[dict]]:
    """Train/test JSON lines from a GluonTS archive ``<name>.tar.gz`` (read in memory)."""
    parts: Dict[str, List[dict]] = {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            split = Path(member.name).parent.name
            if member.isfile() and split in parts and member.name.endswith(".json"):
                parts[split].extend(_read_json_lines(tar.extractfile(member), f"{path} member {member.name}"))
    return parts["train"], parts["test"]


def _from_folder(path: Path) -> Tuple[List[dict], List[dict]]:
    """Train/test JSON lines from an extracted GluonTS folder with ``train/`` and ``test/``."""
    parts = []
    for split in ("train", "test"):
        entries: List[dict] = []
        for f in sorted((path / split).glob("*.json*")):
            opener = gzip.open if f.suffix == ".gz" else open
            with opener(f, "rb") as fh:
                entries.extend(_read_json_lines(fh, str(f)))
        parts.append(entries)
    return parts[0], parts[1]


def _from_lstnet_exchange(path: Path, spec: BenchmarkSpec = BENCHMARKS["exchange_rate_nips"]) -> Tuple[List[dict], List[dict]]:
    """Rebuild exchange_rate_nips from the raw LSTNet file (identical split, see data README)."""
    with gzip.open(path, "rt") as fh:
        X = np.loadtxt(fh, delimiter=",", ndmin=2)
    if X.shape[0] < spec.train_length + spec.prediction_length * spec.num_test_dates:
        raise ValueError(f"only {X.shape[0]} rows")
    T, H = spec.train_length, spec.prediction_length
    start = "1990-01-01 00:00:00"
    train = [{"start": start, "target": X[:T, i].tolist()} for i in range(X.shape[1])]
    test = [
        {"start": start, "target": X[: T + H * (k + 1), i].tolist()}
        for k in range(spec.num_test_dates)
        for i in range(X.shape[1])
    ]
    return train, test


def _local_candidates(name: str, data_dir: Path):
    folder = data_dir / name
    yield folder / f"{name}.tar.gz", _from_archive
    yield data_dir / f"{name}.tar.gz", _from_archive
    yield folder, _from_folder
    if name == "exchange_rate_nips":
        yield folder / "exchange_rate.txt.gz", _from_lstnet_exchange


def load_benchmark(name: str, data_dir: Optional[str] = None, download: bool = True) -> BenchmarkData:
    """Load a benchmark dataset, grouped for multivariate forecasting.

    Parameters
    ----------
    name
        ``"exchange_rate_nips"``, ``"electricity_nips"``, ``"solar_nips"`` or ``"etth1"``.
    data_dir
        Folder holding ``<name>/<name>.tar.gz`` (the archive GluonTS
        downloads), an extracted ``<name>/train`` + ``<name>/test`` folder, or,
        for exchange rates, ``exchange_rate_nips/exchange_rate.txt.gz``;
        for ``etth1``, ``ett/ETTh1.csv`` (read by path only, see :data:`CSV_BENCHMARKS`).
        ``None``: the copy embedded in the package (``exchange_rate_nips``),
        else the download.
    download
        Fall back to ``gluonts.dataset.repository.get_dataset`` (needs internet).

    Raises
    ------
    ValueError
        Unknown dataset name.
    DatasetNotFoundError
        Not found locally and not downloadable; the message says where to put it.
    DatasetCorruptError
        A local file is truncated or damaged; the message names it.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    if name in CSV_BENCHMARKS:
        split = CSV_BENCHMARKS[name]
        if data_dir is None:
            raise DatasetNotFoundError(
                f"dataset {name!r} is read by path and never downloaded: pass data_dir, the folder holding "
                f"{split.file}")
        data = load_csv_dataset(Path(data_dir).expanduser() / split.file, spec.prediction_length, freq=spec.freq,
                                borders=(split.train_end, split.val_end, split.test_end), stride=split.stride)
        data.name = name
        return data
    if data_dir is None and name in EMBEDDED:
        path = EMBEDDED[name]
        return _assemble(name, spec, *_read_local(path, _from_archive), f"{path} (embedded)")
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        for path, reader in _local_candidates(name, root):
            folder_ok = reader is _from_folder and (path / "train").is_dir() and (path / "test").is_dir()
            if folder_ok or (reader is not _from_folder and path.is_file()):
                return _assemble(name, spec, *_read_local(path, reader), str(path))
    if download:
        try:
            from gluonts.dataset.repository import get_dataset

            ds = get_dataset(name)
            train = [{"start": e["start"], "target": e["target"]} for e in ds.train]
            test = [{"start": e["start"], "target": e["target"]} for e in ds.test]
            return _assemble(name, spec, train, test, "gluonts.dataset.repository")
        except Exception as err:  # URLError, HTTPError, extraction errors, ...
            reason = f"download through gluonts failed ({type(err).__name__}: {err})"
    else:
        reason = "download disabled"
    where = f"{Path(data_dir) / name}/" if data_dir else "<data-dir>/" + name + "/"
    raise DatasetNotFoundError(
        f"dataset {name!r} is not available: not found under --data-dir "
        f"({data_dir!r}) and {reason}. Put the GluonTS archive at {where}{name}.tar.gz "
        f"(or its extracted train/ and test/ folders under {where}), or run once with internet access."
    )


def _assemble(name: str, spec: BenchmarkSpec, train: List[dict], test: List[dict], source: str) -> BenchmarkData:
    if not train or not test:
        raise DatasetNotFoundError(f"{source}: found no train/test series for {name!r}")
    D = len(train)
    if len(test) != D * spec.num_test_dates:
        raise ValueError(f"{source}: expected {D} x {spec.num_test_dates} test series, found {len(test)}")
    return BenchmarkData(
        name=name,
        train=_grouped(train, spec.freq, D),
        test=_grouped(test, spec.freq, D, spec.num_test_dates),
        freq=spec.freq,
        prediction_length=spec.prediction_length,
        target_dim=D,
        num_test_dates=spec.num_test_dates,
        source=source,
    )


def holdout_windows(train: ListDataset, prediction_length: int, num_windows: int, freq: str,
                    end: Optional[int] = None) -> Tuple[ListDataset, ListDataset]:
    """Carve a validation split from the end of the training range (or of its first ``end`` steps).

    Returns ``(fit, validation)``: ``fit`` ends ``num_windows *
    prediction_length`` steps before ``end`` (default: the end of
    ``train``); ``validation`` holds ``num_windows`` rolling windows (like
    the test set) whose forecast horizons tile the steps up to ``end``.
    Nothing after ``end`` is used, so several ``end`` give backtest folds
    in different periods. The test windows are never touched.
    """
    (entry,) = list(train)
    target = np.asarray(entry["target"])
    if end is not None:
        if not 0 < end <= target.shape[1]:
            raise ValueError(f"end must be in [1, {target.shape[1]}] (the training range), got {end}")
        target = target[:, :end]
    T = target.shape[1]
    cut = T - num_windows * prediction_length
    if cut <= 0:
        raise ValueError(f"training range of {T} steps is too short for {num_windows} windows of {prediction_length}")
    start = entry["start"]
    fit = ListDataset([{"start": start, "target": target[:, :cut]}], freq=freq, one_dim_target=False)
    val = ListDataset(
        [{"start": start, "target": target[:, : cut + (k + 1) * prediction_length]} for k in range(num_windows)],
        freq=freq,
        one_dim_target=False,
    )
    return fit, val


# cells read as missing values (NaN) rather than rejected as non-numbers
_MISSING = ("", "NA", "NaN", "nan")


def read_wide_csv(path, time_column: Optional[str] = None, columns: Optional[Sequence[str]] = None,
                  freq: Optional[str] = None) -> Tuple[np.ndarray, pd.Period, str, List[str]]:
    """Read a wide CSV: one time column and one numeric column per series.

    Parameters
    ----------
    path
        The CSV file (``date,HUFL,HULL,...`` for the ETT files).
    time_column
        Name of the time column (default: ``"date"`` when present, else the first column).
    columns
        Series to read, in this order (default: every other column).
    freq
        Pandas frequency of the rows (default: inferred from the timestamps).

    Returns
    -------
    values, start, freq, names
        ``values`` of shape ``(D, T)`` (float32; empty cells are NaN, which the
        estimator treats as unobserved), the first row's period, the frequency
        string and the series names.

    Raises
    ------
    DatasetNotFoundError
        The file does not exist.
    ValueError
        A named column is missing, a cell is not a number, the timestamps do
        not parse, repeat, go backwards or are not evenly spaced at ``freq``;
        the message names the column, the row and the value.
    """
    from .features import normalize_freq

    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetCorruptError(f"{path}: cannot read it as CSV ({type(err).__name__}: {err})") from None
    if frame.shape[1] < 2:
        raise ValueError(f"{path}: needs a time column and at least one series column, found columns {list(frame.columns)}")
    time_column = time_column or ("date" if "date" in frame.columns else frame.columns[0])
    if time_column not in frame.columns:
        raise ValueError(f"{path}: no time column {time_column!r}; columns are {list(frame.columns)}")
    names = list(columns) if columns is not None else [c for c in frame.columns if c != time_column]
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(map(repr, missing))}; columns are {list(frame.columns)}")
    if not names:
        raise ValueError(f"{path}: no series column besides the time column {time_column!r}")
    times = pd.to_datetime(frame[time_column], errors="coerce")
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise ValueError(f"{path}: line {row + 2}: time {frame[time_column].iloc[row]!r} in column "
                         f"{time_column!r} is not a date")
    if len(times) < 2:
        raise ValueError(f"{path}: needs at least two rows, found {len(times)}")
    if freq is None:
        freq = pd.infer_freq(times)
        if freq is None:
            gaps = times.diff().iloc[1:]
            freq = pd.tseries.frequencies.to_offset(gaps.mode().iloc[0]).freqstr
    freq = normalize_freq(freq)
    expected = pd.date_range(times.iloc[0], periods=len(times), freq=freq)
    off = np.flatnonzero(expected.to_numpy() != times.to_numpy())
    if off.size:
        row = int(off[0])
        raise ValueError(f"{path}: timestamps are not evenly spaced at frequency {freq!r}: line {row + 2} "
                         f"is {times.iloc[row]}, expected {expected[row]} (a missing, repeated or out-of-order "
                         f"row; fill gaps with empty cells, which count as missing values)")
    values = np.empty((len(names), len(frame)), dtype=np.float32)
    for d, name in enumerate(names):
        text = frame[name].str.strip()
        numbers = pd.to_numeric(text, errors="coerce")  # missing-value spellings and bad cells become NaN
        bad = numbers.isna() & ~text.isin(_MISSING)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path}: column {name!r}, line {row + 2}: {frame[name].iloc[row]!r} "
                             f"is not a number")
        values[d] = numbers.to_numpy(dtype=np.float64)
    return values, pd.Period(times.iloc[0], freq=freq), freq, names


def load_csv_dataset(path, prediction_length: int, freq: Optional[str] = None,
                     borders: Optional[Tuple[int, int, int]] = None, stride: Optional[int] = None,
                     time_column: Optional[str] = None, columns: Optional[Sequence[str]] = None) -> BenchmarkData:
    """A wide CSV (see :func:`read_wide_csv`) as train, validation and test windows.

    Parameters
    ----------
    path, time_column, columns, freq
        As for :func:`read_wide_csv`.
    prediction_length
        Forecast horizon ``H`` of every window.
    borders
        ``(train_end, val_end, test_end)`` in rows: training on rows
        ``[0, train_end)``, validation windows ending in ``(train_end,
        val_end]``, test windows in ``(val_end, test_end]`` (default: 60 / 20 /
        20 % of the rows, ETT's 12 / 4 / 4 months).
    stride
        Rows between the ends of consecutive windows (default ``H``: the
        horizons tile each range).

    Returns
    -------
    BenchmarkData
        ``train``: one entry ``(D, train_end)``; ``validation`` and ``test``:
        one entry per window with the whole history up to the window's end.
    """
    values, start, freq, names = read_wide_csv(path, time_column, columns, freq)
    T = values.shape[1]
    if borders is None:
        borders = (int(0.6 * T), int(0.8 * T), T)
    train_end, val_end, test_end = (int(b) for b in borders)
    stride = int(stride or prediction_length)
    if not 0 < train_end < val_end < test_end <= T:
        raise ValueError(f"{path}: borders must satisfy 0 < train_end < val_end < test_end <= {T} rows, got {borders}")
    if stride < 1 or prediction_length < 1:
        raise ValueError(f"prediction_length and stride must be positive, got {prediction_length} and {stride}")
    if val_end - train_end < prediction_length or test_end - val_end < prediction_length:
        raise ValueError(f"{path}: validation and test ranges ({val_end - train_end} and {test_end - val_end} rows) "
                         f"must each hold at least one window of {prediction_length}")

    def windows(lo: int, hi: int) -> ListDataset:
        ends = range(lo + prediction_length, hi + 1, stride)
        return ListDataset([{"start": start, "target": values[:, :end]} for end in ends], freq=freq,
                           one_dim_target=False)

    test = windows(val_end, test_end)
    return BenchmarkData(
        name=Path(path).stem, train=ListDataset([{"start": start, "target": values[:, :train_end]}], freq=freq,
                                                one_dim_target=False),
        test=test, freq=freq, prediction_length=prediction_length, target_dim=values.shape[0],
        num_test_dates=len(test), source=str(path), validation=windows(train_end, val_end), series_names=names,
    )


def synthetic_like(name: str, seed: int = 0, train_length: Optional[int] = None) -> BenchmarkData:
    """Random data of a benchmark's real shape (daily/weekly seasonal, positive).

    Only for measuring training and sampling speed and memory where the real
    data is absent; never an accuracy benchmark.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    rng = np.random.default_rng(seed)
    T = train_length or spec.train_length
    total = T + spec.prediction_length * spec.num_test_dates
    t = np.arange(total)
    D = spec.target_dim
    level = rng.lognormal(3, 1, size=(D, 1))
    season = 1 + 0.5 * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6.3, (D, 1))) + 0.2 * np.sin(2 * np.pi * t / 168)
    values = np.maximum(level * season * (1 + 0.1 * rng.standard_normal((D, total))), 0).astype(np.float32)
    start = pd.Period("2014-01-01 00:00", freq=spec.freq)
    train = ListDataset([{"start": start, "target": values[:, :T]}], freq=spec.freq, one_dim_target=False)
    test = ListDataset(
        [{"start": start, "target": values[:, : T + spec.prediction_length * (k + 1)]} for k in range(spec.num_test_dates)],
        freq=spec.freq,
        one_dim_target=False,
    )
    return BenchmarkData(name, train, test, spec.freq, spec.prediction_length, D, spec.num_test_dates, "synthetic")
