"""Missing values as batched torch code: :mod:`panda_fm.forecasters.gaps`'s rule on the context's device.

Shape letters: B batch, T time, C channels, N time indices, L delays.
"""

from __future__ import annotations

import torch

from panda_fm.forecasters.gaps import MAX_FILL, interpolate

__all__ = ["fill_gaps", "pair_mask", "start_index"]


def fill_gaps(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`panda_fm.forecasters.gaps.fill_gaps` for a batch on ``x``'s device.

    Args:
        x: ``(B, T, C)`` with NaN for missing values; a channel without observations is filled with 0.

    Returns:
        ``(filled, trusted)``, both ``(B, T, C)``: the interpolation of the numpy function, and True where ``x`` is observed or lies in an interior run of at most
        :data:`MAX_FILL` missing steps.
    """
    observed = ~torch.isnan(x)
    T = x.shape[1]
    steps = torch.arange(T, device=x.device).view(1, -1, 1).expand_as(x)  # (B, T, C)
    prev = torch.where(observed, steps, -1).cummax(dim=1).values  # last observation at or before t, -1: none
    nxt = torch.where(observed, steps, T).flip(1).cummin(dim=1).values.flip(1)  # first at or after t, T: none
    before = torch.where(prev > 0, prev.gather(1, (prev - 1).clamp_min(0)), -1)  # the observation before prev
    after = torch.where(nxt < T - 1, nxt.gather(1, (nxt + 1).clamp_max(T - 1)), T)  # the one after nxt
    values = torch.nan_to_num(x)
    filled = interpolate(
        lambda i: values.gather(1, i),
        lambda i: i.to(x.dtype),
        torch.where,
        steps,
        before,
        prev,
        nxt,
        after,
        T,
    )
    filled = torch.where(observed, x, filled)
    short = (prev >= 0) & (nxt < T) & (nxt - prev - 1 <= MAX_FILL)
    return filled, observed | short


def pair_mask(trusted: torch.Tensor, t: torch.Tensor, delays: int, stride: int) -> torch.Tensor:
    """Which times ``t`` have a delay vector and a successor ``t + 1`` that are data in every channel.

    Args:
        trusted: ``(B, T, C)`` bool.
        t: ``(N,)`` int64 times, each ``>= (delays - 1) * stride`` and ``< T - 1``.
        delays: ``L``.
        stride: steps between the delay vector's entries.

    Returns:
        ``(B, N)`` bool.
    """
    known = trusted.all(dim=2)  # (B, T)
    idx = t[:, None] - torch.arange(delays, device=t.device) * stride  # (N, L)
    return known[:, t + 1] & known[:, idx].all(dim=2)


def start_index(trusted: torch.Tensor, delays: int, stride: int) -> int:
    """:meth:`panda_fm.forecasters.base.IteratedDelayForecaster.start_index`: the last time at which every
    series' delay vector of ``trusted`` ``(B, T, C)`` is data, where a batch's rollout starts.

    Reads one integer back from the device.
    """
    T = trusted.shape[1]
    span = (delays - 1) * stride + 1
    t = torch.arange(span - 1, T, device=trusted.device)  # (S,)
    known = trusted.all(dim=2)  # (B, T)
    full = known[:, t[:, None] - torch.arange(delays, device=t.device) * stride].all(dim=2)  # (B, S)
    last = torch.where(full, torch.arange(len(t), device=t.device), 0).amax(dim=1)  # (B,)
    return int(t[last.amin()])
