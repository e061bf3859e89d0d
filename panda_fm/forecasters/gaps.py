"""Missing values in a context: which entries a forecaster may treat as data, and what stands in the gaps.

Every classical forecaster (and the model's in-context experts, through their tensor twin
:mod:`panda_fm.forecasters.tensor.gaps`) follows the same rule:

- **Short holes are filled and trusted**: a run of at most :data:`MAX_FILL` missing steps between two
  observations is interpolated (a cubic through two observations on each side) and then used as data
  (scattered dropouts barely move a smooth trajectory, and treating them as gaps would empty every delay
  embedding).
- **Longer gaps are filled but never fitted**: their interpolation only keeps filters and arrays finite; no
  training pair, library state or backtest step that touches them is used.
- **Missing steps at the end** are forecast, not filled: the rollout starts from the last fully known delay
  state and runs through the missing steps, taking every observation it passes as it is (see
  :meth:`panda_fm.forecasters.base.IteratedDelayForecaster._rollout`).
- Steps before the first observation of a channel take its first observed value (untrusted).

Shape letters: B batch, T time, C channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MAX_FILL", "fill_gaps", "interpolate", "nan_moments"]

#: The longest run of missing steps (between two observations) that is interpolated and trusted as data.
MAX_FILL = 3


def fill_gaps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate over missing values and mark which entries may be used as data.

    Missing steps are interpolated by :func:`interpolate`.

    Args:
        x: ``(B, T, C)`` with NaN for missing values; a channel without observations is filled with 0.

    Returns:
        ``(filled, trusted)``, both ``(B, T, C)``: ``filled`` is finite and ``trusted`` is True where ``x``
        is observed or lies in an interior run of at most :data:`MAX_FILL` missing steps.
    """
    observed = ~np.isnan(x)
    T = x.shape[1]
    steps = np.broadcast_to(np.arange(T)[None, :, None], x.shape)
    prev = np.maximum.accumulate(np.where(observed, steps, -1), axis=1)  # last observation at or before t
    nxt = np.minimum.accumulate(np.where(observed, steps, T)[:, ::-1], axis=1)[:, ::-1]  # first at or after
    before = np.take_along_axis(prev, np.maximum(prev - 1, 0), axis=1)  # the observation before prev
    before = np.where(prev > 0, before, -1)
    after = np.take_along_axis(nxt, np.minimum(nxt + 1, T - 1), axis=1)  # the observation after nxt
    after = np.where(nxt < T - 1, after, T)
    values = np.nan_to_num(x)
    filled = interpolate(
        lambda i: np.take_along_axis(values, i, axis=1),
        lambda i: i * 1.0,
        np.where,
        steps,
        before,
        prev,
        nxt,
        after,
        T,
    )
    filled = np.where(observed, x, filled)
    short = (prev >= 0) & (nxt < T) & (nxt - prev - 1 <= MAX_FILL)
    return filled, observed | short


def interpolate(
    value_at: Callable[[Any], Any],
    as_float: Callable[[Any], Any],
    where: Callable[..., Any],
    t: Any,
    p0: Any,
    p1: Any,
    n1: Any,
    n2: Any,
    T: int,
) -> Any:
    """Values at the times ``t`` of the cubic through the observations at ``p0 < p1 <= t <= n1 < n2``.

    Written once for numpy and torch (``t`` and the indices are ``(B, T, C)`` integer arrays or tensors of
    the same kind). The cubic, bounded by the four observations, fills holes of at most :data:`MAX_FILL` steps; longer gaps (never used as data)
    and holes without a second observation on a side get the line through ``p1`` and ``n1``; times before the
    first and after the last observation the nearest one.

    Args:
        value_at: ``(B, T, C)`` indices along time -> the context's values there.
        as_float: indices -> positions in the values' dtype.
        where: ``np.where`` or ``torch.where``.
        t: ``(B, T, C)`` the times to fill.
        p0, p1: the two observations at or before each time (-1: none).
        n1, n2: the two observations at or after each time (``T``: none).
        T: steps in the context.

    Returns:
        ``(B, T, C)`` values (at observed times: the observation).
    """
    inner = (p1 >= 0) & (n1 < T) & (n1 > p1)  # a missing time between two observations
    cubic = inner & (p0 >= 0) & (n2 < T) & (n1 - p1 - 1 <= MAX_FILL)  # a short hole, two observations aside
    # indices clipped into range; entries where they were out of range are not selected below
    y0, y1, v1, v2 = (value_at(i.clip(0, T - 1)) for i in (p0, p1, n1, n2))
    s, a, b, c, d = (as_float(i) for i in (t, p0, p1, n1, n2))
    line = y1 + (s - b) / where(inner, c - b, 1.0) * (v1 - y1)

    def basis(u: Any, o1: Any, o2: Any, o3: Any) -> Any:  # Lagrange basis polynomial of node u
        return (s - o1) * (s - o2) * (s - o3) / where(cubic, (u - o1) * (u - o2) * (u - o3), 1.0)

    curve = y0 * basis(a, b, c, d) + y1 * basis(b, a, c, d) + v1 * basis(c, a, b, d) + v2 * basis(d, a, b, c)
    # never beyond the four observations (a cubic can overshoot them near an extremum)
    top, bottom = y0, y0
    for y in (y1, v1, v2):
        top, bottom = where(y > top, y, top), where(y < bottom, y, bottom)
    curve = where(curve > top, top, where(curve < bottom, bottom, curve))
    return where(cubic, curve, where(inner, line, where(p1 >= 0, y1, v1)))


def nan_moments(x: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over time of the observed entries.

    Args:
        x: ``(B, T, C)``, finite.
        observed: ``(B, T, C)`` bool, at least one True per channel.

    Returns:
        ``(mean, std)``, each ``(B, 1, C)``; std 1 where a channel's observations are all equal.
    """
    w = observed.astype(np.float64)
    count = w.sum(axis=1, keepdims=True)
    mu = (x * w).sum(axis=1, keepdims=True) / count
    sd = np.sqrt((((x - mu) * w) ** 2).sum(axis=1, keepdims=True) / count)
    return mu, np.where(sd > 0, sd, 1.0)
