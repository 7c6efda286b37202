"""Benchmark datasets in the standard multivariate protocol (TimeGrad / GluonTS ``*_nips`` sets).

``load_benchmark(name, data_dir)`` reads a dataset from a local folder when it
is there and otherwise through ``gluonts.dataset.repository.get_dataset``
(which downloads when online). ``exchange_rate_nips`` ships inside the package
(``_data/``, see its README for provenance and licence) and is used whenever
no ``data_dir`` is given, so it needs neither a data folder nor internet. All
paths return the same grouped datasets: one ``(D, T)`` training series and
``num_test_dates`` rolling test windows. A damaged local file raises
:class:`DatasetCorruptError` naming the file.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import pandas as pd
from gluonts.dataset.common import ListDataset
from gluonts.dataset.multivariate_grouper import MultivariateGrouper

__all__ = [
    "BENCHMARKS",
    "BenchmarkData",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "EMBEDDED",
    "holdout_windows",
    "load_benchmark",
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
}


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
        ``"exchange_rate_nips"``, ``"electricity_nips"`` or ``"solar_nips"``.
    data_dir
        Folder holding ``<name>/<name>.tar.gz`` (the archive GluonTS
        downloads), an extracted ``<name>/train`` + ``<name>/test`` folder, or,
        for exchange rates, ``exchange_rate_nips/exchange_rate.txt.gz``.
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
