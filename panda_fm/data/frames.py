"""pandas in and out, without depending on pandas: a Series or DataFrame is recognised by its type's module,
and pandas is imported only to build a forecast for an input that was already pandas.

A DataFrame is one series whose columns are channels; a Series is one series with one channel. A forecast
comes back as the same kind of object, with the same column names (or Series name) and an index that
continues the input's:

- a ``RangeIndex`` continues with its step;
- a ``DatetimeIndex`` or ``TimedeltaIndex`` continues with its ``freq``, or the frequency pandas infers, or
  else its median step; a ``PeriodIndex`` with its ``freq``; a numeric index with its median step. An index
  whose steps differ by more than 1% (rows skipped, irregular sampling) gives a warning, because the model
  reads rows as equally spaced: resample onto a regular grid first, with NaN for the missing times;
- an index that is not strictly increasing is an error (the model reads rows in order);
- any other index (strings, a MultiIndex) is replaced by the positions after the context, ``T, T+1, ...``.

Shape letters: T time, C channels, H horizon.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FrameTemplate", "is_pandas", "pandas_values"]

IRREGULAR_TOLERANCE = 0.01  # steps further than this fraction from the median step make an index irregular


def is_pandas(x: Any) -> bool:
    """Whether ``x`` is a pandas Series or DataFrame (checked without importing pandas)."""
    return (
        type(x).__module__.startswith("pandas") and getattr(x, "ndim", None) in (1, 2) and hasattr(x, "index")
    )


def pandas_values(x: Any, name: str) -> np.ndarray:
    """A Series' or DataFrame's values as ``(T,)`` or ``(T, C)`` float64, NaN for missing (``None``, ``pd.NA``).

    A column of dtype ``object`` whose cells are all numbers or missing (as pandas leaves a column built from
    mixed Python values, or one whose text was removed) is read as numbers.

    Raises:
        ValueError: a column that is not numbers (text, dates, booleans, categories), named with its first
            value that is not a number, and the fix.
    """
    columns = [(x.name, x)] if x.ndim == 1 else list(x.items())
    bad = []  # (column, what it holds, whether its first non-number is numeric text)
    for column, values in columns:
        if getattr(values.dtype, "kind", "O") in "fiu":
            continue
        if values.dtype != np.dtype(object):
            bad.append((column, str(values.dtype), False))
        elif (found := _first_non_number(values))[0] is not None:
            bad.append((column, f"object, e.g. {found[0]!r}", found[1]))
    if bad:
        listed = ", ".join(f"{column!r} ({what})" for column, what, _ in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        what = "has dtype" if x.ndim == 1 else "has non-numeric column(s)"
        hint = (
            "; numeric text converts with pd.to_numeric(..., errors='coerce')"
            if any(t for *_, t in bad)
            else ""
        )
        raise ValueError(
            f"{name} {what} {listed}{more}; pass real numbers (float or int, NaN for missing): drop such "
            f"columns, or make a time column the index (df.set_index('time')){hint}"
        )
    if any(values.dtype == np.dtype(object) for _, values in columns):
        x = x.astype(object).where(x.notna(), np.nan).astype(np.float64)
    return x.to_numpy(dtype=np.float64, na_value=np.nan)


def _first_non_number(values: Any) -> tuple[Any, bool]:
    """An ``object`` Series' first cell that is neither a real number (not a bool) nor missing (None if none),
    and whether it is text that reads as a number."""
    for value in values[values.notna()]:
        number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        if not number:
            return value, isinstance(value, str) and _reads_as_number(value)
    return None, False


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def pandas_dtype(x: Any) -> np.dtype:
    """The dtype a forecast of ``x`` takes: its widest float column's (float64 for a column of Python numbers,
    dtype ``object``), float32 when it has only integers."""
    dtypes = [x.dtype] if x.ndim == 1 else list(x.dtypes)
    floats = [np.dtype(getattr(d, "numpy_dtype", d)) for d in dtypes if getattr(d, "kind", "O") == "f"]
    floats += [np.dtype(np.float64)] * any(d == np.dtype(object) for d in dtypes)
    return np.result_type(*floats) if floats else np.dtype(np.float32)


class FrameTemplate:
    """What a forecast of one pandas input needs to come back as pandas: its column names (or Series name)
    and the continuation of its index. Checks the index when made (so errors come before any work).

    Args:
        x: the Series or DataFrame (its values are not kept).
        name: how errors and warnings call it, e.g. ``"context"``.

    Raises:
        ValueError: a datetime or numeric index that is not strictly increasing, naming the fix.
    """

    def __init__(self, x: Any, name: str):
        self.is_series = x.ndim == 1
        self.series_name = x.name if self.is_series else None
        self.columns = None if self.is_series else x.columns
        self.dtype = pandas_dtype(x)
        self._next_index = _index_continuation(x.index, name)

    def wrap(self, values: np.ndarray) -> Any:
        """The forecast ``(H, C)`` as a Series (``C == 1``) or DataFrame like the input, index continued."""
        import pandas as pd

        values = np.asarray(values).astype(self.dtype, copy=False)
        index = self._next_index(len(values))
        if self.is_series:
            return pd.Series(values[:, 0], index=index, name=self.series_name)
        return pd.DataFrame(values, index=index, columns=self.columns)

    def wrap_levels(self, values: np.ndarray, labels: list[Any]) -> Any:
        """``(H, C, Q)`` values as a DataFrame with the continued index and a column per channel and label: a
        MultiIndex ``(channel, label)`` for a DataFrame input, the labels alone for a Series input."""
        import pandas as pd

        H, C, Q = values.shape
        values = np.asarray(values).astype(self.dtype, copy=False)
        index = self._next_index(H)
        if self.is_series:
            return pd.DataFrame(values[:, 0], index=index, columns=pd.Index(labels))
        columns = pd.MultiIndex.from_product([self.columns, labels])
        return pd.DataFrame(values.reshape(H, C * Q), index=index, columns=columns)  # (H, C*Q), channel-major

    def wrap_channels(self, values: np.ndarray) -> Any:
        """``(C,)`` values as a Series indexed by the columns (for a Series input: an int)."""
        import pandas as pd

        if self.is_series:
            return int(values[0])
        return pd.Series(np.asarray(values), index=self.columns)


def _index_continuation(index: Any, name: str) -> Callable[[int], Any]:
    """A function of ``H`` giving the ``H`` index labels after ``index``; see the module docstring."""
    import pandas as pd

    n = len(index)
    if isinstance(index, pd.RangeIndex):
        step, start = index.step, index.start + n * index.step
        return lambda h: pd.RangeIndex(start, start + h * step, step, name=index.name)
    timelike = isinstance(index, (pd.DatetimeIndex, pd.TimedeltaIndex, pd.PeriodIndex))
    numeric = not timelike and index.nlevels == 1 and getattr(index.dtype, "kind", "O") in "fiu"
    if not (timelike or numeric) or n < 2:
        return lambda h: pd.RangeIndex(n, n + h)
    if not (index.is_monotonic_increasing and index.is_unique):
        raise ValueError(
            f"{name}'s index is not strictly increasing; the model reads rows in order: sort it "
            "(df.sort_index()) and drop or average repeated times (df.groupby(level=0).mean())"
        )
    if isinstance(index, pd.PeriodIndex):
        return lambda h: pd.period_range(start=index[-1] + 1, periods=h, freq=index.freq, name=index.name)
    freq = getattr(index, "freq", None)
    if freq is None and timelike and n >= 3:
        try:
            freq = pd.infer_freq(index)
        except (TypeError, ValueError):
            freq = None
    last = index[-1]
    if freq is not None:
        make = pd.date_range if isinstance(index, pd.DatetimeIndex) else pd.timedelta_range
        return lambda h: make(start=last, periods=h + 1, freq=freq, name=index.name)[1:]
    diffs = index[1:] - index[:-1]
    if timelike:
        step = diffs.median()
        irregular = bool((abs(diffs - step) > abs(step) * IRREGULAR_TOLERANCE).any())
        spread = f"from {diffs.min()} to {diffs.max()}"
        hint = f"e.g. df.resample({str(pd.tseries.frequencies.to_offset(step).freqstr)!r}).mean()"
    else:
        d = np.asarray(diffs, dtype=np.float64)
        step = np.median(d)
        irregular = bool((np.abs(d - step) > abs(step) * IRREGULAR_TOLERANCE).any())
        spread = f"from {d.min():g} to {d.max():g}"
        hint = "e.g. df.reindex(regular_grid)"
        if index.dtype.kind in "iu" and not irregular:
            step = int(round(step))
    if irregular:
        warnings.warn(
            f"{name}'s index is not evenly spaced (steps {spread}); the model reads rows as equally spaced, "
            f"so the forecast's index continues with the median step {step}. Put the series on a regular "
            f"grid first, with NaN where there is no value ({hint}): the model masks NaN",
            UserWarning,
            stacklevel=_caller_outside_package(),
        )
    if timelike:
        return lambda h: pd.Index(last + pd.TimedeltaIndex(step * np.arange(1, h + 1)), name=index.name)
    return lambda h: pd.Index(last + step * np.arange(1, h + 1), name=index.name)


def _caller_outside_package() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside panda_fm."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level
