"""Input checks of the GluonTS front end: bad data fails early, with a message naming the series and time index."""

from __future__ import annotations

import datetime
import math
import warnings
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import pandas as pd
from gluonts.core.component import validated
from gluonts.dataset.field_names import FieldName
from gluonts.transform import MapTransformation

from vsmd_ts.diffusion import ATraining

__all__ = [
    "ATrainingOption",
    "CheckMultivariateTarget",
    "MIN_HISTORY",
    "COVARIATE_FIELDS",
    "MAX_ABS_VALUE",
    "MAX_JUMP_RATIO",
    "PositiveWholeNumber",
    "SDE_PARAMETERS",
    "SeedNumber",
    "WholeNumber",
    "check_num_samples",
    "check_options",
    "check_sde_kwargs",
    "check_training_data",
    "estimator_kwargs_from_text",
]


# the fewest time steps a series may have before its forecast (and before a training window's horizon): two levels
# give one increment, the least from which the scale of a series' increments (and the spread of its levels) can
# be taken; with fewer the scale falls back to its floor and forecasts lose their units
MIN_HISTORY = 2

# the largest magnitude of a value (target or real covariate) that the model takes: it reads values unscaled in
# float32 (increments, a series' mean |y| over a context, the scale features, the covariates into the RNN), so values
# must stay far below float32's 3.4e38; 1e30 leaves a factor 3e8 for sums over a context window
MAX_ABS_VALUE = 1e30
# the largest ratio of a training value to the largest magnitude of the context_length + prediction_length - 1 steps
# before it (1 where those are all zero or missing, as the model's scale): the network squares the scaled values,
# and float32 overflows beyond about 1.8e19 (a spike of 1e18 in data of magnitude 1 trained finite weights, one of
# 1e20 non-finite ones). The model's scale of a window holding the value in its horizon is at most twice that largest
# magnitude (its context lies within those steps), so a rejected value is at least 5e17 in the model's units
MAX_JUMP_RATIO = 1e18


class _BoundedInteger(int):
    """A ``@validated`` parameter type: an integer in ``[low, high]``.

    Unlike pydantic's ``int`` it rejects ``2.7`` instead of truncating it to 2,
    and booleans (``3.0`` and numpy integers are accepted).
    """

    low, high, what = 0, math.inf, "an integer"

    @classmethod
    def __get_validators__(cls):
        yield cls.validate

    @classmethod
    def validate(cls, value):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"expected {cls.what}, got {value!r}")
        if not float(value).is_integer() or not cls.low <= value <= cls.high:
            raise ValueError(f"expected {cls.what}, got {value!r}")
        return int(value)


class PositiveWholeNumber(_BoundedInteger):
    """A ``@validated`` parameter type: an integer >= 1 (``2.7`` and booleans are rejected)."""

    low, what = 1, "a positive integer"


class WholeNumber(_BoundedInteger):
    """A ``@validated`` parameter type: an integer >= 0 (``2.7``, ``-1`` and booleans are rejected)."""

    what = "a non-negative integer"


class SeedNumber(_BoundedInteger):
    """A ``@validated`` parameter type: a random seed, an integer in ``[0, 2**32 - 1]`` (what NumPy accepts).

    Rejects ``2.7`` (pydantic's ``int`` would truncate it) and out-of-range
    values at construction rather than when training starts.
    """

    high, what = 2**32 - 1, "an integer seed in [0, 2**32 - 1]"


class ATrainingOption(dict):
    """A ``@validated`` parameter type: the A training of Algorithm 1, given as a
    :class:`~vsmd_ts.diffusion.ATraining` or a dict of some of its fields.

    Validated by :meth:`ATraining.of <vsmd_ts.diffusion.ATraining.of>` (unknown
    fields and values out of range raise ``ValueError``) and kept as the plain dict
    of all its fields, so that GluonTS's ``serde`` writes and reads it as JSON.
    """

    @classmethod
    def __get_validators__(cls):
        yield cls.validate

    @classmethod
    def validate(cls, value):
        return ATraining.of(value).as_dict()


# the forward SDE's parameters that VSMDEstimator's sde_kwargs may set
SDE_PARAMETERS = ("beta", "damping_ratio", "gamma", "A_max")

# numeric options that the annotations of VSMDEstimator do not bound: (low, high, low included, high included)
_OPTION_RANGES = {
    "dropout_rate": (0.0, 1.0, True, False),
    "weight_decay": (0.0, math.inf, True, False),
    "lr": (0.0, math.inf, False, False),
    "naive_share": (0.0, 1.0, True, True),
    **{name: (0.0, math.inf, False, False) for name in SDE_PARAMETERS},
}


def check_options(**options) -> None:
    """``ValueError`` naming the option unless each value is a finite number in its range (``None`` passes).

    Known options: see ``_OPTION_RANGES`` (``dropout_rate`` in ``[0, 1)``,
    ``weight_decay >= 0``, ``naive_share`` in ``[0, 1]``, the others > 0).
    """
    for name, value in options.items():
        if value is not None:
            _check_number(name, name, value)


def _check_number(label: str, name: str, value: Any) -> None:
    low, high, low_in, high_in = _OPTION_RANGES[name]
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    ok = ok and math.isfinite(value) and (low <= value if low_in else low < value)
    ok = ok and (value <= high if high_in else value < high)
    if not ok:
        interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ValueError(f"{label} must be a finite number in {interval}, got {value!r}")


def estimator_kwargs_from_text(items: Iterable[str]) -> Dict[str, Any]:
    """``VSMDEstimator`` arguments from command-line ``KEY=VALUE`` strings (values read as JSON where they parse,
    else kept as text): the SDE's parameters (:data:`SDE_PARAMETERS`) go into ``sde_kwargs``,
    ``A_training.FIELD`` into ``A_training``, any other key is an estimator argument.
    ``ValueError`` for an item without ``=``."""
    import json

    kwargs: Dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if key in SDE_PARAMETERS:
            kwargs["sde_kwargs"] = {**kwargs.get("sde_kwargs", {}), key: value}
        elif key.startswith("A_training."):
            kwargs["A_training"] = {**kwargs.get("A_training", {}), key.partition(".")[2]: value}
        else:
            kwargs[key] = value
    return kwargs


def check_sde_kwargs(sde_kwargs: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """The given SDE parameters as floats; ``ValueError`` for a key not in :data:`SDE_PARAMETERS` or a value
    that is not a positive finite number (``None`` gives ``{}``)."""
    given = dict(sde_kwargs or {})
    unknown = sorted(str(key) for key in given if key not in SDE_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown sde_kwargs key(s) {', '.join(map(repr, unknown))}; known: {', '.join(SDE_PARAMETERS)}")
    for key, value in given.items():
        _check_number(f"sde_kwargs[{key!r}]", key, value)
    return {key: float(value) for key, value in given.items()}


def check_num_samples(num_samples: Any) -> Optional[int]:
    """``num_samples`` of ``predict``: ``None`` (the model's ``num_parallel_samples``) or a positive integer."""
    if num_samples is None:
        return None
    try:
        return PositiveWholeNumber.validate(num_samples)
    except (TypeError, ValueError):
        raise ValueError(
            f"num_samples must be a positive integer (or None for the model's num_parallel_samples), "
            f"got {num_samples!r}"
        ) from None


def _when(start: Any, index: int) -> str:
    """``"time index 17 (2021-01-01 17:00)"``, the timestamp only when the start is a period."""
    if isinstance(start, pd.Period):
        return f"time index {index} ({start + index})"
    return f"time index {index}"


class CheckMultivariateTarget(MapTransformation):
    """Reject entries that the model cannot use, with a message saying why.

    Checks the target's shape ``(target_dim, T)`` and length, turns the
    ``start`` of a plain-dict entry (a date string or ``Timestamp``) into a
    ``pandas.Period`` in ``freq``, checks that the entry's frequency is the
    estimator's, that no value is infinite or beyond :data:`MAX_ABS_VALUE`
    in magnitude (the model's float32 arithmetic would overflow), and at
    prediction time that every series has an observed (non-NaN) value in
    the context window. NaNs are otherwise fine: the observed-value mask
    removes them from the loss and the scaler. Gives the entry ``item_id``
    and ``info`` fields (``None`` when it has none), which forecasts carry.

    Parameters
    ----------
    target_dim
        Expected number of series (rows of the target).
    min_length
        Minimum number of time steps before a forecast (the estimator passes
        :data:`MIN_HISTORY`; shorter contexts are left-padded as unobserved).
    min_train_extra
        Extra steps required for training data (``prediction_length``).
    freq
        The estimator's frequency; entries whose ``start`` is a
        ``pandas.Period`` of another frequency are rejected. ``None`` skips
        the check.
    context_length
        The window whose last steps must hold an observed value of every
        series at prediction (default ``min_length``).
    num_feat_dynamic_real, num_past_feat_dynamic_real, num_feat_static_real, num_feat_static_cat, cardinality
        Declared covariates (see :class:`~vsmd_ts.timeseries.VSMDEstimator`).
        Each declared field must be present with that many rows and finite
        values: ``feat_dynamic_real`` ``(F, L)`` with ``L >= T`` in training
        and ``L >= T + prediction_length`` at prediction, cut to those steps;
        ``past_feat_dynamic_real`` ``(F, L)`` with ``L >= T``, cut to ``T``;
        ``feat_static_real`` ``(F,)``; ``feat_static_cat`` ``(F,)`` of integers
        in ``[0, cardinality[i])``. Covariate fields that are not declared
        are removed, with a warning naming them the first time each is met.
    prediction_length
        Steps a ``feat_dynamic_real`` must extend past the target at
        prediction (default: ``min_train_extra``).
    """

    @validated()
    def __init__(self, target_dim: int, min_length: int, min_train_extra: int = 0, freq: Optional[str] = None,
                 context_length: Optional[int] = None,
                 num_feat_dynamic_real: int = 0, num_past_feat_dynamic_real: int = 0, num_feat_static_real: int = 0,
                 num_feat_static_cat: int = 0, cardinality: Optional[List[int]] = None,
                 prediction_length: Optional[int] = None) -> None:
        self.target_dim = target_dim
        self.min_length = min_length
        self.min_train_extra = min_train_extra
        self.freq = freq
        self.context_length = context_length or min_length
        self.num_covariates = {
            FieldName.FEAT_DYNAMIC_REAL: num_feat_dynamic_real,
            FieldName.PAST_FEAT_DYNAMIC_REAL: num_past_feat_dynamic_real,
            FieldName.FEAT_STATIC_REAL: num_feat_static_real,
            FieldName.FEAT_STATIC_CAT: num_feat_static_cat,
        }
        self.cardinality = list(cardinality or [])
        self.prediction_length = min_train_extra if prediction_length is None else prediction_length
        self._ignored: set = set()  # undeclared covariate fields already warned about

    def map_transform(self, data: Dict[str, Any], is_train: bool) -> Dict[str, Any]:
        item = data.get(FieldName.ITEM_ID, "(no item_id)")
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            target = np.asarray(data[FieldName.TARGET], dtype=np.float32)
        self._check_shape(target, item, is_train)
        data[FieldName.START] = self._as_period(data.get(FieldName.START), item)
        self._check_freq(data.get(FieldName.START), item)
        self._check_range(target, data.get(FieldName.START), item, is_train)
        self._check_covariates(data, target.shape[1], item, is_train)
        if not is_train:
            context = target[:, -self.context_length :]
            empty = np.flatnonzero(np.isnan(context).all(axis=1))
            if empty.size:
                raise ValueError(
                    f"entry {item}: series {empty.tolist()} have no observed (non-NaN) value in the last "
                    f"context_length = {self.context_length} steps, so there is no level to forecast from"
                )
        # forecasts carry the entry's item_id and info (GluonTS's FieldName.INFO); None where absent, so that a
        # batch mixing entries with and without them stacks (GluonTS's batchify takes the first entry's keys)
        data.setdefault(FieldName.ITEM_ID, None)
        data.setdefault(FieldName.INFO, None)
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
        extra = self.min_train_extra if is_train else 0
        need = self.min_length + extra
        if target.shape[1] < need:
            what = f"{self.min_length} steps of history"
            what += f" + prediction_length = {extra}" if extra else ""
            raise ValueError(
                f"entry {item}: series of length {target.shape[1]} is shorter than the minimum of {need} ({what}); "
                f"{'training' if is_train else 'a forecast'} needs longer series"
            )

    def _as_period(self, start: Any, item) -> Any:
        """A ``start`` of a plain-dict entry (date string, ``Timestamp``, ``datetime``) as a ``Period`` in ``freq``.

        GluonTS's ``ListDataset`` does this conversion; plain lists of dicts skip it.
        """
        if isinstance(start, pd.Period) or self.freq is None:
            return start
        if start is None:
            raise ValueError(
                f"entry {item}: no 'start' field; give every entry a start date (a pandas Period or Timestamp, "
                "or a date string such as '2020-01-01')"
            )
        when = None
        if isinstance(start, (str, datetime.date, np.datetime64)):  # pd.Timestamp is a datetime.date
            try:
                when = pd.Timestamp(start)
            except (TypeError, ValueError, OverflowError):
                pass
        if when is None or when is pd.NaT:
            raise ValueError(
                f"entry {item}: start {start!r} is not a date; give a pandas Period or Timestamp, or a date "
                "string such as '2020-01-01'"
            )
        if when.tz is not None:
            when = when.tz_localize(None)  # periods have no time zone: keep the local wall time
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # business-day periods
            return pd.Period(when, freq=self.freq)

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
    def _check_range(target: np.ndarray, start: Any, item, is_train: bool) -> None:
        bad = np.abs(target) > MAX_ABS_VALUE  # NaN compares False: missing values are fine
        if not bad.any():
            return
        series, index = np.argwhere(bad)[0]
        value, where = target[series, index], f"entry {item}: series {series}, {_when(start, int(index))}"
        if np.isinf(value):
            raise ValueError(
                f"{where} is {value} ({int(bad.sum())} infinite or out-of-range value(s) in all; values beyond "
                "float32's range are infinite to the model); replace them by NaN (treated as missing) or by "
                "finite values"
            )
        raise ValueError(
            f"{where} is {value:.3g}, out of range for float32 {'training' if is_train else 'forecasting'}: the "
            f"model takes magnitudes up to {MAX_ABS_VALUE:g} (its float32 increments and sums over a window would "
            f"overflow) ({int(bad.sum())} out-of-range value(s) in all); rescale the data (e.g. divide each series "
            "by its typical magnitude) or replace such values by NaN (treated as missing)"
        )

    def _check_outliers(self, target: np.ndarray, start: Any, item) -> None:
        """``ValueError`` for a training value more than :data:`MAX_JUMP_RATIO` times the largest magnitude of
        the steps before it that can share a training window with it (scaled, it would overflow float32)."""
        a = np.abs(target.astype(np.float64))
        a[np.isnan(a)] = 0.0  # missing values add nothing to the model's scale
        # the window's largest magnitude is 0 (the model's scale 1) or at least the series' smallest non-zero one:
        # no value passes the ratio unless it passes this bound
        smallest = np.where(a > 0, a, np.inf).min(axis=1, keepdims=True)
        if not (a[:, MIN_HISTORY:] > MAX_JUMP_RATIO * np.minimum(smallest, 1.0)).any():
            return
        window = max(1, self.context_length + self.min_train_extra - 1)
        before = _trailing_max(np.pad(a[:, :-1], ((0, 0), (1, 0))), window)  # max of a[t - window : t]
        ratio = a / np.where(before > 0, before, 1.0)
        ratio[:, :MIN_HISTORY] = 0.0  # never in a training window's horizon
        bad = ratio > MAX_JUMP_RATIO
        if not bad.any():
            return
        series, index = np.argwhere(bad)[0]
        prior, steps = before[series, index], (f"the {window} steps before it (context_length + prediction_length "
                                                "- 1: those that can share a training window with it)")
        what = (f"{ratio[series, index]:.2g} times the largest magnitude ({prior:.3g}) of {steps}" if prior > 0 else
                f"and {steps} are zero or missing, so the model scales it by 1")
        raise ValueError(
            f"entry {item}: series {series}, {_when(start, int(index))} is {target[series, index]:.3g}, {what}: "
            "scaled as the model scales its windows, it would overflow float32 training, which squares scaled "
            f"values (limit about 1.8e19) ({int(bad.sum())} value(s) in all more than {MAX_JUMP_RATIO:g} times the "
            "magnitude before them); replace such an outlier by NaN (treated as missing) or rescale the series"
        )

    def _check_covariates(self, data: Dict[str, Any], length: int, item, is_train: bool) -> None:
        """Check the declared covariate fields, cut the dynamic ones to the steps the model reads, drop the others."""
        start = data.get(FieldName.START)
        for field, count in self.num_covariates.items():
            if not count:
                continue
            if field not in data or data[field] is None:
                raise ValueError(
                    f"entry {item}: no {field!r} field, but the estimator was built with "
                    f"{COVARIATE_FIELDS[field]}={count}; give every entry a {field!r} of shape "
                    f"{self._shape_text(field, count)}, or build the estimator without it"
                )
            categorical = field == FieldName.FEAT_STATIC_CAT
            values = self._numbers(data[field], field, item, np.int64 if categorical else np.float32)
            dynamic = field in (FieldName.FEAT_DYNAMIC_REAL, FieldName.PAST_FEAT_DYNAMIC_REAL)
            if values.ndim != (2 if dynamic else 1) or values.shape[0] != count:
                raise ValueError(
                    f"entry {item}: {field!r} has shape {values.shape}, but the estimator was built with "
                    f"{COVARIATE_FIELDS[field]}={count}: expected {self._shape_text(field, count)}"
                )
            if dynamic:
                known_ahead = field == FieldName.FEAT_DYNAMIC_REAL and not is_train
                need = length + (self.prediction_length if known_ahead else 0)
                if values.shape[1] < need:
                    cover = (f"the target's {length} steps and the {self.prediction_length} steps to forecast "
                             f"(T + prediction_length = {need})" if known_ahead else f"the target's {length} steps")
                    raise ValueError(f"entry {item}: {field!r} has {values.shape[1]} steps, too short to cover {cover}")
                values = values[:, :need]
                bad = ~np.isfinite(values)
                if bad.any():
                    row, index = np.argwhere(bad)[0]
                    raise ValueError(
                        f"entry {item}: {field!r} row {row}, {_when(start, int(index))} is {values[row, index]} "
                        f"({int(bad.sum())} non-finite value(s) in all over the {need} steps the model reads); "
                        "covariates have no missing values: fill them"
                    )
                big = np.abs(values) > MAX_ABS_VALUE
                if big.any():
                    row, index = np.argwhere(big)[0]
                    raise ValueError(
                        f"entry {item}: {field!r} row {row}, {_when(start, int(index))} is {values[row, index]:.3g}, "
                        f"out of range for the model's float32 arithmetic (magnitudes up to {MAX_ABS_VALUE:g}; "
                        f"{int(big.sum())} such value(s) in all); covariates enter the network unscaled: "
                        "standardise them"
                    )
            elif field == FieldName.FEAT_STATIC_REAL and not (np.abs(values) <= MAX_ABS_VALUE).all():
                raise ValueError(f"entry {item}: {field!r} is {values.tolist()}; its values must be finite, of "
                                 f"magnitude at most {MAX_ABS_VALUE:g} (covariates enter the network unscaled: "
                                 "standardise them)")
            elif categorical:
                for i, (value, card) in enumerate(zip(values.tolist(), self.cardinality)):
                    if not 0 <= value < card:
                        raise ValueError(
                            f"entry {item}: {field!r} feature {i} is {value}, outside [0, cardinality[{i}] = {card}): "
                            "categories are integers counted from 0"
                        )
            data[field] = values
        ignored = sorted(f for f in COVARIATE_FIELDS if f in data and not self.num_covariates.get(f))
        # MultivariateGrouper writes feat_static_cat = [0] into every grouped entry: a placeholder, not a covariate
        cat = data.get(FieldName.FEAT_STATIC_CAT)
        placeholder = cat is not None and np.array_equal(np.ravel(cat), [0])
        for field in ignored:
            del data[field]
        new = [f for f in ignored if f not in self._ignored and not (f == FieldName.FEAT_STATIC_CAT and placeholder)]
        if new:
            self._ignored.update(new)
            declared = {f: n for f, n in COVARIATE_FIELDS.items() if n}
            how = "; ".join(f"declare {f!r} with {declared[f]}=<rows>" if f in declared else f"{f!r} is not supported"
                            for f in new)
            warnings.warn(f"entry {item}: covariate field(s) {', '.join(map(repr, new))} are ignored ({how})",
                          UserWarning, stacklevel=2)

    def _shape_text(self, field: str, count: int) -> str:
        return {
            FieldName.FEAT_DYNAMIC_REAL: f"({count}, T + prediction_length) at prediction and ({count}, T) in training",
            FieldName.PAST_FEAT_DYNAMIC_REAL: f"({count}, T)",
        }.get(field, f"({count},)")

    @staticmethod
    def _numbers(value: Any, field: str, item, dtype) -> np.ndarray:
        try:
            with np.errstate(over="ignore"):
                values = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"entry {item}: {field!r} is not an array of numbers") from None
        if dtype is np.int64:
            if not (np.isfinite(values) & (values == np.round(values))).all():
                raise ValueError(f"entry {item}: {field!r} is {values.tolist()}; categories must be integers")
            return values.astype(np.int64)
        with np.errstate(over="ignore"):
            return values.astype(dtype)


# covariate fields of GluonTS data entries: the VSMDEstimator option that declares each (None: not supported)
COVARIATE_FIELDS = {
    FieldName.FEAT_DYNAMIC_REAL: "num_feat_dynamic_real",
    FieldName.PAST_FEAT_DYNAMIC_REAL: "num_past_feat_dynamic_real",
    FieldName.FEAT_STATIC_REAL: "num_feat_static_real",
    FieldName.FEAT_STATIC_CAT: "num_feat_static_cat",
    FieldName.FEAT_DYNAMIC_CAT: None,
    FieldName.PAST_FEAT_DYNAMIC_CAT: None,
    FieldName.FEAT_DYNAMIC_REAL_LEGACY: None,
}


def _trailing_max(x: np.ndarray, k: int) -> np.ndarray:
    """``max(x[:, t - k + 1 : t + 1])`` (zeros before the start) for every ``t``, in ``O(log k)`` passes."""

    def shifted(m: np.ndarray, s: int) -> np.ndarray:
        out = np.zeros_like(m)
        if s < m.shape[1]:
            out[:, s:] = m[:, : m.shape[1] - s]
        return out

    m, p = x, 1
    while 2 * p <= k:  # m[:, t] = max(x[:, t - p + 1 : t + 1])
        m, p = np.maximum(m, shifted(m, p)), 2 * p
    return np.maximum(m, shifted(m, k - p))


def check_training_data(data: Iterable, check: CheckMultivariateTarget) -> None:
    """Check the whole training (or validation) set once, before any training starts.

    Raises ``ValueError`` for an empty dataset, for entries that ``check``
    rejects, for a value more than :data:`MAX_JUMP_RATIO` times the largest
    magnitude of the steps before it that can share a training window with
    it (scaled, it would overflow float32) and when no value at all is
    observed; warns for series that are entirely NaN (they add nothing to
    the loss).
    """
    num_entries, num_observed = 0, 0
    for position, entry in enumerate(data):
        entry = {FieldName.ITEM_ID: f"#{position}", **entry}  # name entries without an item_id by position
        check.map_transform(entry, is_train=True)
        with np.errstate(over="ignore"):
            target = np.asarray(entry[FieldName.TARGET], dtype=np.float32)
        check._check_outliers(target, entry.get(FieldName.START), entry[FieldName.ITEM_ID])
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
