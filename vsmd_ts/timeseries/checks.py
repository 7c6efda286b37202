"""Input checks of the GluonTS front end: bad data fails early, with a message naming the series and time index."""

from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, Optional

import numpy as np
import pandas as pd
from gluonts.core.component import validated
from gluonts.dataset.field_names import FieldName
from gluonts.transform import MapTransformation

__all__ = ["CheckMultivariateTarget", "PositiveWholeNumber", "check_training_data"]


class PositiveWholeNumber(int):
    """A ``@validated`` parameter type: an integer >= 1.

    Unlike pydantic's ``int`` it rejects ``2.7`` instead of truncating it to 2
    (``3.0`` and numpy integers are accepted).
    """

    @classmethod
    def __get_validators__(cls):
        yield cls.validate

    @classmethod
    def validate(cls, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"expected a positive integer, got {value!r}")
        if not float(value).is_integer() or value < 1:
            raise ValueError(f"expected a positive integer, got {value!r}")
        return int(value)


def _when(start: Any, index: int) -> str:
    """``"time index 17 (2021-01-01 17:00)"``, the timestamp only when the start is a period."""
    if isinstance(start, pd.Period):
        return f"time index {index} ({start + index})"
    return f"time index {index}"


class CheckMultivariateTarget(MapTransformation):
    """Reject entries that the model cannot use, with a message saying why.

    Checks the target's shape ``(target_dim, T)`` and length, that the
    entry's frequency is the estimator's, that no value is infinite (or too
    large for float32), and at prediction time that every series has an
    observed (non-NaN) value in the context window. NaNs are otherwise fine:
    the observed-value mask removes them from the loss and the scaler.

    Parameters
    ----------
    target_dim
        Expected number of series (rows of the target).
    min_length
        Minimum number of time steps: ``context_length``, the window that
        prediction reads.
    min_train_extra
        Extra steps required for training data (``prediction_length``).
    freq
        The estimator's frequency; entries whose ``start`` is a
        ``pandas.Period`` of another frequency are rejected. ``None`` skips
        the check.
    """

    @validated()
    def __init__(self, target_dim: int, min_length: int, min_train_extra: int = 0, freq: Optional[str] = None) -> None:
        self.target_dim = target_dim
        self.min_length = min_length
        self.min_train_extra = min_train_extra
        self.freq = freq

    def map_transform(self, data: Dict[str, Any], is_train: bool) -> Dict[str, Any]:
        item = data.get(FieldName.ITEM_ID, "(no item_id)")
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            target = np.asarray(data[FieldName.TARGET], dtype=np.float32)
        self._check_shape(target, item, is_train)
        self._check_freq(data.get(FieldName.START), item)
        self._check_finite(target, data.get(FieldName.START), item)
        if not is_train:
            context = target[:, -self.min_length :]
            empty = np.flatnonzero(np.isnan(context).all(axis=1))
            if empty.size:
                raise ValueError(
                    f"entry {item}: series {empty.tolist()} have no observed (non-NaN) value in the last "
                    f"context_length = {self.min_length} steps, so there is no level to forecast from"
                )
        return data

    def _check_shape(self, target: np.ndarray, item, is_train: bool) -> None:
        if target.ndim == 1:
            raise ValueError(
                f"entry {item}: got a univariate target of shape {target.shape}, but VSMDEstimator forecasts "
                "multivariate series with targets of shape (target_dim, T). Group univariate series with "
                "gluonts.dataset.multivariate_grouper.MultivariateGrouper, or build the dataset with "
                "ListDataset(..., one_dim_target=False)."
            )
        if target.ndim != 2:
            raise ValueError(f"entry {item}: target must have shape (target_dim, T), got {target.shape}")
        if target.shape[0] != self.target_dim:
            raise ValueError(
                f"entry {item}: target has {target.shape[0]} series but the model was built with "
                f"target_dim={self.target_dim}; train and predict on data with the same number of series"
            )
        need = self.min_length + (self.min_train_extra if is_train else 0)
        if target.shape[1] < need:
            what = "context_length + prediction_length" if is_train and self.min_train_extra else "context_length"
            raise ValueError(
                f"entry {item}: series of length {target.shape[1]} is shorter than {what} = {need}; "
                "use a shorter context_length or longer series"
            )

    def _check_freq(self, start: Any, item) -> None:
        if self.freq is None or not isinstance(start, pd.Period):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            same = start.freq == pd.tseries.frequencies.to_offset(self.freq)
        if not same:
            raise ValueError(
                f"entry {item}: the data's frequency is {start.freqstr!r} but the estimator was built with "
                f"freq={self.freq!r}; build the estimator with the data's frequency"
            )

    @staticmethod
    def _check_finite(target: np.ndarray, start: Any, item) -> None:
        bad = np.isinf(target)
        if bad.any():
            series, index = np.argwhere(bad)[0]
            raise ValueError(
                f"entry {item}: series {series}, {_when(start, int(index))} is {target[series, index]} "
                f"({int(bad.sum())} infinite value(s) in all, or values beyond float32's range); "
                "replace them by NaN (treated as missing) or by finite values"
            )


def check_training_data(data: Iterable, check: CheckMultivariateTarget) -> None:
    """Check the whole training (or validation) set once, before any training starts.

    Raises ``ValueError`` for an empty dataset, for entries that ``check``
    rejects and when no value at all is observed; warns for series that are
    entirely NaN (they add nothing to the loss).
    """
    num_entries, num_observed = 0, 0
    for position, entry in enumerate(data):
        entry = {FieldName.ITEM_ID: f"#{position}", **entry}  # name entries without an item_id by position
        check.map_transform(entry, is_train=True)
        with np.errstate(over="ignore"):
            target = np.asarray(entry[FieldName.TARGET], dtype=np.float32)
        observed = (~np.isnan(target)).sum(axis=1)
        num_entries += 1
        num_observed += int(observed.sum())
        empty = np.flatnonzero(observed == 0)
        if empty.size:
            warnings.warn(
                f"entry {entry[FieldName.ITEM_ID]}: series {empty.tolist()} are entirely NaN; "
                "they are masked out of the loss and their forecasts will have no level to start from",
                UserWarning,
                stacklevel=3,
            )
    if num_entries == 0:
        raise ValueError("the dataset is empty: there is nothing to train on")
    if num_observed == 0:
        raise ValueError("every value of the dataset is NaN: there is nothing to train on")
