"""The predictor ``VSMDEstimator.train`` returns: GluonTS's ``PyTorchPredictor`` with files that fail clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from gluonts.dataset.common import Dataset
from gluonts.model.forecast import Forecast
from gluonts.model.predictor import Predictor, RepresentablePredictor
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.torch.util import resolve_device

from vsmd_ts.training.checkpoint import CheckpointError, read_torch_file

from .checks import check_num_samples
from .lightning_module import describe_weights, non_finite_weights

__all__ = ["PredictorFileError", "PredictorFileNotFoundError", "VSMDPredictor"]

_FILES = ("gluonts-config.json", "predictor.json", "prediction-net-state.pt")
_SAVED_BY = "predictor.serialize(folder) writes " + ", ".join(_FILES)
_AGAIN = "serialise the predictor again"


class PredictorFileError(CheckpointError):
    """A serialised predictor's file is missing, truncated or not what it should be (a ``ValueError``)."""


class PredictorFileNotFoundError(PredictorFileError, FileNotFoundError):
    """A serialised predictor's folder or one of its files does not exist (also a ``FileNotFoundError``)."""


class VSMDPredictor(PyTorchPredictor):
    """A :class:`~gluonts.torch.model.predictor.PyTorchPredictor` that never returns NaN forecasts silently
    and whose files fail with clear messages.

    ``predict`` raises ``FloatingPointError`` (naming the entry) rather than
    yield a forecast with non-finite samples.
    ``serialize(path)`` creates ``path`` (and its parents) when missing and
    raises ``FloatingPointError``, writing nothing, for non-finite weights.
    ``deserialize(path)`` (also reached through
    ``gluonts.model.predictor.Predictor.deserialize``) raises
    :class:`PredictorFileError`, naming the file and what is wrong with it,
    for a missing, empty, truncated or foreign file instead of a bare
    ``EOFError``, ``JSONDecodeError`` or ``UnpicklingError``
    (:class:`PredictorFileNotFoundError`, also a ``FileNotFoundError``, for a
    missing folder or file). Importing this module makes GluonTS's
    ``Predictor.deserialize`` name ``gluonts-config.json`` for a folder
    without it, rather than ``type.txt``, a file of GluonTS's old format.
    """

    def predict(self, dataset: Dataset, num_samples: Optional[int] = None) -> Iterator[Forecast]:
        """GluonTS's ``predict``; raises ``FloatingPointError`` instead of yielding a forecast with NaN/inf samples.

        ``num_samples`` (default: the model's ``num_parallel_samples``) must be a positive integer:
        ``ValueError`` at the call otherwise.
        """
        return self._finite_forecasts(dataset, check_num_samples(num_samples))

    def _finite_forecasts(self, dataset: Dataset, num_samples: Optional[int]) -> Iterator[Forecast]:
        for forecast in super().predict(dataset, num_samples=num_samples):
            samples = getattr(forecast, "samples", None)
            if samples is not None and not np.isfinite(samples).all():
                raise FloatingPointError(
                    f"forecast for entry {forecast.item_id!r} starting {forecast.start_date} has "
                    f"{int((~np.isfinite(samples)).sum())} non-finite samples of {samples.size}; the input's "
                    "magnitudes or the model's weights are out of range"
                )
            yield forecast

    def serialize(self, path: Path) -> None:
        """GluonTS's ``serialize``, creating ``path`` when missing; ``FloatingPointError`` (and nothing written)
        when the network's weights are not all finite, as such a predictor forecasts only NaN."""
        path = Path(path)
        bad = non_finite_weights(self.prediction_net.state_dict().items())
        if bad:
            raise FloatingPointError(
                f"not serialising the predictor to {path}: its network has {describe_weights(bad)}, so every "
                "forecast would be NaN; retrain it (a diverged training; see TrainingDivergedError)"
            )
        path.mkdir(parents=True, exist_ok=True)
        super().serialize(path)

    @classmethod
    def deserialize(cls, path: Path, device: Optional[Union[str, torch.device]] = None) -> "VSMDPredictor":
        path = Path(path)
        _check_folder(path)
        for name in _FILES:
            _check_file(path / name)
        _read_json(path / "gluonts-config.json")
        _read_json(path / "predictor.json")
        predictor = RepresentablePredictor.deserialize(path)  # builds the network from predictor.json
        if not isinstance(predictor, cls):
            raise PredictorFileError(f"{path / 'predictor.json'}: describes a {type(predictor).__name__}, not a {cls.__name__}")
        if device is not None:
            predictor.to(resolve_device(device))
        state_path = path / "prediction-net-state.pt"
        try:
            predictor.prediction_net.load_state_dict(_load_state(state_path))
        except RuntimeError as err:
            raise PredictorFileError(
                f"{state_path}: the weights do not fit the network described in predictor.json "
                f"({str(err).splitlines()[0]})"
            ) from None
        return predictor


def _check_folder(path: Path) -> None:
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise PredictorFileNotFoundError(f"{path}: {what}; pass the folder of a saved VSMD predictor ({_SAVED_BY})")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise PredictorFileNotFoundError(
            f"{path}: file missing, so {path.parent} is not a saved VSMD predictor ({_SAVED_BY}); "
            f"pass the folder that serialize wrote, or {_AGAIN}"
        )
    if path.stat().st_size == 0:
        raise PredictorFileError(f"{path}: file is empty (an interrupted save?); {_AGAIN}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PredictorFileError(f"{path}: not valid JSON, truncated or damaged ({err}); {_AGAIN}") from None


def _load_state(path: Path) -> dict:
    try:
        state = read_torch_file(path, what="a readable torch state dict of plain tensors", advice=_AGAIN)
    except CheckpointError as err:
        raise PredictorFileError(str(err)) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PredictorFileError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors; {_AGAIN}")
    return state


def _deserialize_any(cls, path: Path, **kwargs) -> Predictor:
    """GluonTS's ``Predictor.deserialize``, with :class:`PredictorFileError` for a folder without a readable config.

    GluonTS falls back to ``type.txt`` (a file of its old format) when
    ``gluonts-config.json`` is missing, and so names a file the folder never
    had; an empty or damaged config gives a bare ``JSONDecodeError``.
    """
    if cls is Predictor:
        path = Path(path)
        _check_folder(path)
        if not (path / "type.txt").exists():  # GluonTS's old format has type.txt instead of the config
            _check_file(path / "gluonts-config.json")
            config = _read_json(path / "gluonts-config.json")
            if not isinstance(config, dict) or not isinstance(config.get("type"), str):
                raise PredictorFileError(f"{path / 'gluonts-config.json'}: has no predictor 'type'; {_AGAIN}")
    return _gluonts_deserialize(cls, path, **kwargs)


_gluonts_deserialize = getattr(Predictor.deserialize.__func__, "__wrapped__", Predictor.deserialize.__func__)
_deserialize_any.__wrapped__ = _gluonts_deserialize  # importing this module twice wraps GluonTS's method once
Predictor.deserialize = classmethod(_deserialize_any)
