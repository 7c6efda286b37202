"""Frequency handling: normalised frequency strings, time features and small default lag sets."""

from __future__ import annotations

import re
import warnings
from typing import List

from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

__all__ = ["default_lags", "is_sub_daily", "normalize_freq", "time_features_for"]

# pandas >= 2.2 deprecates these upper-case aliases (FutureWarning); use the new spelling.
_ALIASES = {"H": "h", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns", "BH": "bh"}
_FREQ = re.compile(r"^(\d*)([A-Za-z]+)(-\w+)?$")


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


def default_lags(freq: str) -> List[int]:
    """A handful of frequency-aware lags (1-based), e.g. ``[1, 2, 3, 24, 168]`` for hourly data.

    Far shorter than GluonTS's 40-lag default, whose RNN input (target_dim x
    lags) dominates memory on wide datasets.
    """
    offset = _offset(freq)
    n = max(int(getattr(offset, "n", 1)), 1)
    seasonal = {
        offsets.Second: [60],
        offsets.Minute: [60, 1440],
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
