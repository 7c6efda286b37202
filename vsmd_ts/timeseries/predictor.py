"""The predictor ``VSMDEstimator.train`` returns: GluonTS's ``PyTorchPredictor`` with files that fail clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from gluonts.dataset.common import Dataset
from gluonts.model.forecast import Forecast
from gluonts.model.predictor import RepresentablePredictor
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.torch.util import resolve_device

__all__ = ["PredictorFileError", "VSMDPredictor"]

_FILES = ("gluonts-config.json", "predictor.json", "prediction-net-state.pt")


class PredictorFileError(ValueError):
    """A serialised predictor's file is missing, truncated or not what it should be."""


class VSMDPredictor(PyTorchPredictor):
    """A :class:`~gluonts.torch.model.predictor.PyTorchPredictor` that never returns NaN forecasts silently
    and whose files fail with clear messages.

    ``predict`` raises ``FloatingPointError`` (naming the entry) rather than
    yield a forecast with non-finite samples.
    ``serialize(path)`` creates ``path`` (and its parents) when missing.
    ``deserialize(path)`` (also reached through
    ``gluonts.model.predictor.Predictor.deserialize``) raises
    :class:`PredictorFileError`, naming the file and what is wrong with it,
    for a missing, empty, truncated or foreign file instead of a bare
    ``EOFError``, ``JSONDecodeError`` or ``UnpicklingError``.
    """

    def predict(self, dataset: Dataset, num_samples: Optional[int] = None) -> Iterator[Forecast]:
        """GluonTS's ``predict``; raises ``FloatingPointError`` instead of yielding a forecast with NaN/inf samples."""
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
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        super().serialize(path)

    @classmethod
    def deserialize(cls, path: Path, device: Optional[Union[str, torch.device]] = None) -> "VSMDPredictor":
        path = Path(path)
        if not path.is_dir():
            raise PredictorFileError(f"{path}: no such directory (expected a folder written by predictor.serialize)")
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


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise PredictorFileError(f"{path}: file missing from the serialised predictor")
    if path.stat().st_size == 0:
        raise PredictorFileError(f"{path}: file is empty (an interrupted save?); serialise the predictor again")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PredictorFileError(f"{path}: not valid JSON, truncated or damaged ({err})") from None


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # EOFError, UnpicklingError, KeyError, BadZipFile...: all mean an unreadable file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PredictorFileError(
            f"{path}: not a readable torch state dict of plain tensors (truncated, damaged or foreign file: "
            f"{type(err).__name__}: {first})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PredictorFileError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return state
