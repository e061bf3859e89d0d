"""Checks every user series passes, whether it is forecast (the pipeline) or trained on (fine-tuning), and
how an input is read as one series or a batch of them.

How inputs are read (:func:`as_series_list`):

- a 1-D array or tensor, a list of numbers, or a pandas Series: one series with one channel;
- a 2-D array or tensor, or a pandas DataFrame (its columns are the channels): one series ``(T, C)``;
- a 3-D array or tensor ``(B, T, C)``: a batch of B series;
- a list of 2-D series (arrays, tensors, DataFrames, nested lists) or of pandas Series: a batch, of any
  lengths;
- a list of 1-D sequences: rows of one series when they all have the same length, shorter than
  :data:`MIN_STEPS` (``[[x, y, z], [x, y, z], ...]``); a batch of one-channel series when their lengths
  differ; otherwise (equal lengths of :data:`MIN_STEPS` or more) ambiguous, an error that says how to pass
  either reading.

Time is axis 0 of every series: a series with more than :data:`MAX_CHANNELS_PER_STEP` times as many channels
as time steps is refused with the advice to transpose it.

Shape letters: B batch, T time, C channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from panda_fm.data.frames import FrameTemplate, is_pandas, pandas_dtype, pandas_values

__all__ = [
    "MAX_ABS_VALUE",
    "MAX_CHANNELS_PER_STEP",
    "MIN_STEPS",
    "GlitchWarning",
    "InputForm",
    "as_series",
    "as_series_list",
    "glitch_note",
]

MAX_ABS_VALUE = 1e15  # larger values are refused: more likely a unit or sentinel error than data
MAX_CHANNELS_PER_STEP = 4  # more channels than this many times the time steps: time is surely on axis 1
MIN_STEPS = 16  # one patch: the fewest observed steps a channel needs; shorter 1-D items of a list are rows


def as_series(x: Any, name: str) -> np.ndarray:
    """One series as a ``(T, C)`` float64 array, NaN marking missing values.

    float64, not the model's float32: the callers standardise a series before they round it to float32, so a
    small variation on a large offset keeps its digits.

    Args:
        x: ``(T,)`` (one channel) or ``(T, C)``: a numpy array, a torch tensor, a nested list of real numbers,
            a pandas Series (one channel) or DataFrame (a column per channel).
        name: how error messages call the series, e.g. ``"context"`` or ``"recording 2"``.

    Raises:
        ValueError: non-numeric values, a rank other than 1 or 2, no time steps or channels, more than
            :data:`MAX_CHANNELS_PER_STEP` times as many channels as time steps (time along axis 1),
            infinite values, or values beyond +-:data:`MAX_ABS_VALUE`.
    """
    if is_pandas(x):
        x = pandas_values(x, name)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} has dtype {x.dtype}; pass real numbers (float or int), NaN for missing")
        x = x.numpy() if x.dtype != torch.bfloat16 else x.float().numpy()
    try:
        arr = np.asarray(x)
    except ValueError:  # numpy refuses ragged nested lists
        raise ValueError(
            f"{name} is a nested list whose rows differ in length; give every row a number per channel "
            "(NaN where a value is missing)"
        ) from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} has dtype {arr.dtype}; pass real numbers (float or int), NaN for missing")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (T,) or (T, C) with time along axis 0, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); it needs time steps and channels")
    T, C = arr.shape
    if C > MAX_CHANNELS_PER_STEP * T:
        raise ValueError(
            f"{name} has {T} step{'s' if T != 1 else ''} of {C} channels (shape {arr.shape}): a series needs "
            "time along axis 0 and channels along axis 1. If yours has time along axis 1, pass the transpose "
            f"(x.T; a batch (B, C, T): x.transpose(0, 2, 1)). A series may have at most {MAX_CHANNELS_PER_STEP} "
            "times as many channels as steps"
        )
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains infinite values; replace them with NaN to mark them missing")
    magnitude = np.abs(np.nan_to_num(arr.astype(np.float64, copy=False))).max()  # in float64: no overflow
    if magnitude > MAX_ABS_VALUE:
        raise ValueError(
            f"{name} has values beyond +-{MAX_ABS_VALUE:g}; rescale it (each window is standardised, so the "
            "units do not matter, and forecasts come back in the input's units)"
        )
    return np.ascontiguousarray(arr, dtype=np.float64)


@dataclass(frozen=True)
class InputForm:
    """How a user's input was laid out, so that results can come back in the same form.

    Attributes:
        batched: a batch (a ``(B, T, C)`` array or a list of series): results are ``(B, H, C)``, or a list of
            pandas objects.
        univariate: one series given as ``(T,)`` (a 1-D array, a list of numbers, a pandas Series): results
            are ``(H,)``, or a Series.
        torch: the input (its first series, for a list) was a torch tensor: results are tensors.
        dtype: the results' dtype: the input's when floating, float32 for integers (a numpy or torch dtype).
        frames: one template per series when every series was a pandas object, else None.
    """

    batched: bool
    univariate: bool
    torch: bool
    dtype: Any
    frames: tuple[FrameTemplate, ...] | None = None

    def wrap(self, forecast: np.ndarray | torch.Tensor) -> Any:
        """``(B, H, C)`` forecasts (B = 1 for one series) in this form, in the input's dtype.

        Args:
            forecast: a numpy array or a CPU tensor.

        Returns:
            ``(B, H, C)``, ``(H, C)`` or ``(H,)`` of the input's type and dtype, or pandas objects.
        """
        if self.frames is not None:
            values = np.asarray(forecast)
            out = [frame.wrap(v) for frame, v in zip(self.frames, values, strict=True)]
            return out if self.batched else out[0]
        if not self.batched:
            forecast = forecast[0, :, 0] if self.univariate else forecast[0]
        if self.torch:
            return torch.as_tensor(forecast).to(self.dtype)
        return np.asarray(forecast).astype(self.dtype, copy=False)

    def wrap_levels(self, values: np.ndarray, labels: list[Any]) -> Any:
        """``(B, H, C, Q)`` values with a trailing axis (quantile levels, samples) in this form, in the input's
        dtype.

        Returns:
            ``(B, H, C, Q)``, ``(H, C, Q)`` or ``(H, Q)`` of the input's type and dtype; for pandas a DataFrame
            per series with a column per channel and label (a MultiIndex ``(channel, label)``; for a Series, a
            column per label).
        """
        if self.frames is not None:
            out = [frame.wrap_levels(v, labels) for frame, v in zip(self.frames, values, strict=True)]
            return out if self.batched else out[0]
        if not self.batched:
            values = values[0, :, 0] if self.univariate else values[0]
        if self.torch:
            return torch.as_tensor(values).to(self.dtype)
        return np.asarray(values).astype(self.dtype, copy=False)

    def wrap_channels(self, values: np.ndarray) -> Any:
        """``(B, C)`` integers (one per series and channel) in this form: ``(B, C)``, ``(C,)`` or an int; for
        pandas a Series indexed by the columns (a list of them for a list)."""
        if self.frames is not None:
            out = [frame.wrap_channels(v) for frame, v in zip(self.frames, values, strict=True)]
            return out if self.batched else out[0]
        if not self.batched:
            values = values[0]
            if self.univariate:
                return int(values[0])
        return torch.as_tensor(values) if self.torch else np.asarray(values)


def as_series_list(
    x: Any, name: str = "context", item: str | None = None
) -> tuple[list[np.ndarray], InputForm]:
    """Read an input as one series or a batch of series (see the module docstring), each checked.

    Args:
        x: an array, tensor, pandas object, or a list or tuple of them (or of numbers, or of rows).
        name: how error messages call the input, and its series when it is one.
        item: how error messages call the series of a batch, numbered (e.g. ``"recording"``: ``"recording 2"``);
            None: ``"series i"`` for a ``(B, T, C)`` array, ``name[i]`` for a list.

    Returns:
        The series, ``(T_i, C_i)`` float64 each (channel counts are not compared here), and the input's form.

    Raises:
        ValueError: an empty input, an ambiguous or mixed list (naming how to pass it), a rank other than 1-3,
            or any problem :func:`as_series` finds.
    """
    if isinstance(x, (list, tuple)):
        return _read_list(x, name, item)
    if is_pandas(x):
        frames = (FrameTemplate(x, name),)
        return [as_series(x, name)], InputForm(False, x.ndim == 1, False, frames[0].dtype, frames)
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else np.shape(x)
    form = InputForm(len(shape) == 3, len(shape) == 1, isinstance(x, torch.Tensor), _out_dtype(x))
    if len(shape) == 3:
        if shape[0] == 0:
            raise ValueError(f"{name} has batch size 0; pass at least one series")
        return [as_series(s, f"{item or 'series'} {i}") for i, s in enumerate(x)], form
    if len(shape) in (1, 2):
        return [as_series(x, name)], form
    raise ValueError(f"{name} must be (T,), (T, C) or (B, T, C), got rank {len(shape)} shape {shape}")


def _read_list(
    x: list[Any] | tuple[Any, ...], name: str, item: str | None
) -> tuple[list[np.ndarray], InputForm]:
    """A list: one series of numbers or of rows, or a batch of series (see the module docstring)."""
    if not x:
        raise ValueError(f"{name} is an empty list; pass at least one (T, C) series")
    how = (
        "pass one series as np.asarray(rows) (time along axis 0), a batch of equal-length series as "
        "np.stack(series) (B, T, C), or a batch of any lengths as a list of (T_i, C) arrays"
    )
    ranks = [_rank(s) for s in x]
    if len(set(ranks)) > 1:
        raise ValueError(f"{name} mixes items of rank {sorted(set(ranks))} (numbers, rows, series); {how}")
    rank, first = ranks[0], x[0]
    if rank == 0:  # numbers: one series with one channel
        return [as_series(np.asarray(x), name)], InputForm(False, True, False, _out_dtype(np.asarray(x)))
    if rank > 2:
        raise ValueError(f"{name} is a list of rank-{rank} items; a list holds (T, C) series: {how}")
    if rank == 1 and not any(is_pandas(s) for s in x):
        lengths = sorted({len(s) for s in x})
        if len(lengths) == 1 and lengths[0] < MIN_STEPS:  # rows [x, y, z] of one series
            rows = np.stack([_to_numpy(s) for s in x])
            as_torch = isinstance(first, torch.Tensor)
            form = InputForm(False, False, as_torch, _out_dtype(first if as_torch else rows))
            return [as_series(rows, name)], form
        if len(lengths) == 1 and len(x) > 1:
            m, n = len(x), lengths[0]
            raise ValueError(
                f"{name} is a list of {m} sequences of {n} numbers each: the rows of one series, its channels, "
                f"or {m} one-channel series? Pass np.asarray({name}) for one series of {m} steps x {n} channels, "
                f"np.asarray({name}).T for one series of {n} steps x {m} channels, or "
                f"np.asarray({name})[:, :, None] for a batch of {m} one-channel series (B, T, 1)"
            )
        if lengths[-1] < MIN_STEPS:
            raise ValueError(
                f"{name} is a list of rows of different lengths {lengths}; give every row a number per channel "
                "(NaN where a value is missing)"
            )
    names = [f"{item} {i}" if item else f"{name}[{i}]" for i in range(len(x))]
    series = [as_series(s, n) for s, n in zip(x, names, strict=True)]
    frames = None
    if all(is_pandas(s) for s in x):
        frames = tuple(FrameTemplate(s, n) for s, n in zip(x, names, strict=True))
    dtype = frames[0].dtype if frames else _out_dtype(first)
    return series, InputForm(True, False, isinstance(first, torch.Tensor), dtype, frames)


def _rank(x: Any) -> int:
    """Number of axes of an array, tensor, pandas object or nested list (its first elements'), 0 for a number."""
    if isinstance(x, (np.ndarray, torch.Tensor)) or is_pandas(x):
        return x.ndim
    if isinstance(x, (list, tuple)):
        return 1 + (_rank(x[0]) if len(x) else 0)
    return np.ndim(x)


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _out_dtype(x: Any) -> Any:
    """Floating inputs keep their precision; integer inputs get float32."""
    if isinstance(x, torch.Tensor):
        return x.dtype if x.is_floating_point() else torch.float32
    if is_pandas(x):
        return pandas_dtype(x)
    arr = np.asarray(x)
    return arr.dtype if arr.dtype.kind == "f" else np.float32


class GlitchWarning(UserWarning):
    """A series holds a few values far from both their neighbours (recording glitches, or a system sampled too
    coarsely to follow): a glitch pulls a forecast off, and fine-tuning would fit it as data; set it to NaN to
    have it treated as missing."""


#: A value further than this many context stds from the mean of its two neighbours, which are closer to each other
#: than half that distance, stands out as a likely glitch ...
GLITCH_STDS = 8.0
#: ... when its channel has at most this many such values (more are the signal's own spikes).
MAX_GLITCHES = 3


def glitch_note(name: str, x: np.ndarray, offset: int = 0) -> str:
    """The likely glitches of one series ``x`` ``(T, C)`` (NaN missing; steps counted from the series' start,
    ``offset`` being the steps before ``x``), named with the fix; "" when there are none."""
    departure = np.abs(x[1:-1] - (x[:-2] + x[2:]) / 2)  # (T - 2, C): from the mean of the two neighbours
    with np.errstate(invalid="ignore"):  # NaN compares False: a value next to a gap is not judged
        hit = (departure > GLITCH_STDS * np.nanstd(x, axis=0)) & (np.abs(x[2:] - x[:-2]) < departure / 2)
    found = []
    for c in range(x.shape[1]):
        steps = np.flatnonzero(hit[:, c]) + 1 + offset
        if 1 <= len(steps) <= MAX_GLITCHES:
            found.append(f"channel {c} at step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}")
    if not found:
        return ""
    return (
        f"{name} has values far from both neighbours ({'; '.join(found)}): recording glitches, or a system "
        "sampled too coarsely to follow. A glitch pulls the forecast off; set it to NaN to have it treated as "
        "missing"
    )
