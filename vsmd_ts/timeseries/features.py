"""Frequency handling: normalised frequency strings, time features and small default lag sets."""

from __future__ import annotations

import re
import warnings
from typing import Iterable, List

import numpy as np
import pandas as pd

from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

__all__ = ["choose_season", "covered_time_features", "default_lags", "is_sub_daily", "normalize_freq",
           "season_candidates", "season_length", "time_features_for"]

# pandas >= 2.2 deprecates these upper-case aliases (FutureWarning); use the new spelling.
_ALIASES = {"H": "h", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns", "BH": "bh"}
_FREQ = re.compile(r"^(\d*)([A-Za-z]+)(-\w+)?$")
# the cycle of each GluonTS time feature, in days; a feature not listed is always kept
_FEATURE_PERIOD_DAYS = {"second_of_minute": 1 / 1440, "minute_of_hour": 1 / 24, "hour_of_day": 1.0, "day_of_week": 7.0,
                        "day_of_month": 30.44, "day_of_year": 365.25, "week_of_year": 365.25,
                        "month_of_year": 365.25}
# a time feature is read only where the training data show its cycle this many times
MIN_FEATURE_CYCLES = 2


def _offset(freq: str):
    """``to_offset(freq)`` without pandas' FutureWarning for deprecated aliases."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return to_offset(freq)


def normalize_freq(freq: str) -> str:
    """Validate a pandas frequency string and spell it the way pandas 2.2+ wants.

    Raises ``ValueError`` for strings pandas or GluonTS cannot use.
    """
    match = _FREQ.match(str(freq).strip())
    if not match:
        raise ValueError(f"unsupported frequency {freq!r}: expected a pandas frequency string such as 'h', '15min', 'D', 'B', 'W', 'M'")
    mult, base, suffix = match.groups()
    norm = mult + _ALIASES.get(base, base) + (suffix or "")
    try:
        _offset(norm)
    except ValueError:
        raise ValueError(f"unsupported frequency {freq!r}: pandas does not know it") from None
    time_features_for(norm)
    return norm


def is_sub_daily(freq: str) -> bool:
    """Whether steps of ``freq`` are shorter than a day (``'h'``, ``'15min'``...; not ``'D'``, ``'B'``, ``'W'``)."""
    offset = _offset(freq)
    return isinstance(offset, offsets.Tick) and offset.nanos < offsets.Day().nanos


def time_features_for(freq: str) -> list:
    """GluonTS time features for ``freq``; ``ValueError`` if GluonTS has none."""
    from gluonts.time_feature import time_features_from_frequency_str

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return time_features_from_frequency_str(freq)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"unsupported frequency {freq!r}: GluonTS has no time features for it "
            "(supported: seconds, minutes, hours, days, business days, weeks, months, quarters, years)"
        ) from None


def covered_time_features(freq: str, steps: int, min_cycles: float = MIN_FEATURE_CYCLES) -> list:
    """The time features of ``freq`` (:func:`time_features_for`) whose cycle ``steps`` steps span at least
    ``min_cycles`` times.

    A feature whose cycle the training data show once or not at all (the day
    of the year in less than two years of data, the day of the month in less
    than two months) marks each training step with a value of its own: the
    network can learn the training period's trend from it and carry it,
    unseen, into the forecast. E.g. 50 days of half-hourly data keep the
    minute of the hour, the hour of the day and the day of the week; 360
    days of hourly data all but the day of the year.
    """
    span_days = (pd.Timestamp("2000-01-03") + int(steps) * _offset(freq) - pd.Timestamp("2000-01-03")) / pd.Timedelta(days=1)
    return [feature for feature in time_features_for(freq)
            if span_days >= min_cycles * _FEATURE_PERIOD_DAYS.get(getattr(feature, "__name__", ""), 0.0)]


def default_lags(freq: str) -> List[int]:
    """A handful of frequency-aware lags (1-based), e.g. ``[1, 2, 3, 24, 168]`` for hourly data: for sub-daily
    data a day and a week back, so that either season can be read (see :func:`season_candidates`).

    Far shorter than GluonTS's 40-lag default, whose RNN input (target_dim x
    lags) dominates memory on wide datasets.
    """
    offset = _offset(freq)
    n = max(int(getattr(offset, "n", 1)), 1)
    seasonal = {
        offsets.Second: [60],
        offsets.Minute: [60, 1440, 10080],
        offsets.Hour: [24, 168],
        offsets.Day: [7, 14],
        offsets.BusinessDay: [4, 5, 10],
        offsets.Week: [4],
        offsets.MonthEnd: [12],
        offsets.MonthBegin: [12],
        offsets.QuarterEnd: [4],
        offsets.QuarterBegin: [4],
    }
    extra: List[int] = []
    for kind, periods in seasonal.items():
        if isinstance(offset, kind):
            extra = [p // n for p in periods if p % n == 0]
            break
    return sorted({1, 2, 3, *[lag for lag in extra if lag >= 1]})


def season_length(freq: str) -> int:
    """Steps in the data's main cycle: a day for sub-daily data (24 for ``'h'``), a week for daily (7) and business-daily
    (5) data, a year for weekly, monthly and quarterly data; 1 where none fits a whole number of steps."""
    offset = _offset(freq)
    if isinstance(offset, offsets.Tick) and not isinstance(offset, offsets.Day):
        per_day, rest = divmod(offsets.Day().nanos, offset.nanos)
        return int(per_day) if per_day > 1 and rest == 0 else 1
    n = max(int(getattr(offset, "n", 1)), 1)
    period = {offsets.Day: 7, offsets.BusinessDay: 5, offsets.Week: 52, offsets.MonthEnd: 12, offsets.MonthBegin: 12,
              offsets.QuarterEnd: 4, offsets.QuarterBegin: 4}
    for kind, steps in period.items():
        if isinstance(offset, kind):
            return steps // n if steps % n == 0 and steps // n > 1 else 1
    return 1


def season_candidates(freq: str) -> List[int]:
    """The seasons ``target="auto"`` weighs: a day and a week for sub-daily data (``[24, 168]`` for ``'h'``,
    ``[48, 336]`` for ``'30min'``), else :func:`season_length` (``[7]`` for daily data); ``[]`` without a cycle."""
    s = season_length(freq)
    if s <= 1:
        return []
    return [s, 7 * s] if is_sub_daily(freq) else [s]


def choose_season(targets: Iterable[np.ndarray], prediction_length: int, seasons: Iterable[int],
                  num_windows: int = 20) -> int:
    """The season whose naive forecast did best on the training data's last windows; 1 stands for the last value.

    Like the differencing test of an automatic ARIMA: a series that a random
    walk forecasts better than its last season (exchange rates) is modelled
    by its increments, one whose last season is the better forecast (a daily
    load cycle, or a weekly one where weekends differ) by its levels, and
    that season is the one its seasonal naive repeats. For each entry
    ``(D, T)``, over its last ``num_windows`` windows of ``prediction_length``
    steps (the same windows for every candidate: each with at least the
    longest season of history before it), the absolute errors of each naive
    forecast are summed per series, divided by the series' mean absolute
    one-step increment (so that every series counts alike whatever its
    units) and summed over series and windows; missing values are left out.
    Include 1 in ``seasons`` to weigh the last value. A season longer than
    every entry's history is not weighed; with none left, the shortest wins.
    """
    H = int(prediction_length)
    entries = [np.atleast_2d(np.asarray(target, dtype=np.float64)) for target in targets]
    seasons = sorted({int(s) for s in seasons if int(s) >= 1})
    if not seasons:
        raise ValueError("choose_season needs at least one season")
    longest = max((y.shape[1] for y in entries), default=0)
    usable = [s for s in seasons if s <= longest - H] or seasons[:1]
    if len(usable) == 1:
        return usable[0]
    first = max(usable)  # every candidate is scored on windows starting at or after this step
    errors = np.zeros(len(usable))
    h = np.arange(1, H + 1)
    for y in entries:
        T = y.shape[1]
        steps = np.abs(np.diff(y, axis=1))
        unit = np.nanmean(steps, axis=1, keepdims=True) if np.isfinite(steps).any() else np.ones((y.shape[0], 1))
        unit = np.where(np.isfinite(unit) & (unit > 0), unit, 1.0)
        for k in range(num_windows):
            start = T - (k + 1) * H  # the window forecasts y[start : start + H] from y[:start]
            if start < first:
                break
            future = y[:, start : start + H]
            for i, s in enumerate(usable):
                naive = y[:, start + h - 1 - s * np.ceil(h / s).astype(int)]
                errors[i] += np.nansum(np.abs(future - naive) / unit)
    return usable[int(np.argmin(errors))] if errors.any() else usable[0]
