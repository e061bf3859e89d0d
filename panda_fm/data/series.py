"""Training and validation windows cut from in-memory series (a user's recordings, for fine-tuning).

The counterpart of :mod:`panda_fm.data.windows` for data that is not a generated dataset: a list of
recordings ``(T_i, C)`` with NaN marking missing values. A window is named by ``(recording, t)``, where
``t`` is the first target step: its target is ``[t, t + H)`` and its context the up to ``L`` steps before
``t``; a context shorter than ``L`` (near a recording's start) is left-padded with NaN, which the model
reads as missing.

A window is usable when every channel of its context has at least ``min_observed`` observed steps (one
patch, as the pipeline requires for a forecast) and its target has at least one observed value. NaNs inside
usable windows are masked (in the context) or left out of the loss (in the target), never filled.

:func:`load_series` validates a user's input into recordings and :func:`split_series` cuts each into a
training part and a validation tail (errors name the fix).

Shape letters: B batch, T time, C channels, L context length, H horizon.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from panda_fm.data.frames import is_pandas
from panda_fm.data.validation import GlitchWarning, as_series, as_series_list, glitch_note
from panda_fm.data.windows import WindowSpec
from panda_fm.scaling import standardise_series

logger = logging.getLogger(__name__)

SeriesInput = np.ndarray | torch.Tensor | str | os.PathLike | Sequence[Any]


def usable_targets(
    series: np.ndarray, lo: int, hi: int, spec: WindowSpec, min_context: int, min_observed: int
) -> np.ndarray:
    """First target steps ``t`` in ``[lo, hi]`` whose window is usable.

    Args:
        series: ``(T, C)`` one recording, NaN for missing.
        lo: smallest allowed ``t``.
        hi: largest allowed ``t`` (the target ``[t, t + H)`` must fit: ``hi <= T - H``).
        spec: the window shape.
        min_context: fewest context steps (``t >= min_context``).
        min_observed: fewest observed context steps each channel needs.

    Returns:
        ``(n,)`` int64, ascending.
    """
    T, C = series.shape
    L, H = spec.context_length, spec.prediction_length
    lo, hi = max(lo, min_context), min(hi, T - H)
    if hi < lo:
        return np.zeros(0, dtype=np.int64)
    t = np.arange(lo, hi + 1)
    observed = np.isfinite(series)  # (T, C)
    cum = np.concatenate([np.zeros((1, C), np.int64), np.cumsum(observed, axis=0)])  # (T + 1, C)
    in_context = cum[t] - cum[np.maximum(t - L, 0)]  # (n, C) observed context steps per channel
    in_target = (cum[t + H] - cum[t]).sum(axis=1)  # (n,)
    ok = (in_context >= min_observed).all(axis=1) & (in_target > 0)
    return t[ok].astype(np.int64)


class SeriesWindowSampler:
    """Draws windows from fixed target positions of in-memory recordings.

    Duck-compatible with :class:`panda_fm.data.windows.WindowSampler` where
    :class:`panda_fm.training.datamodule.WindowStream` needs it (``sample_batch``, ``max_modulus``).

    The recordings are kept standardised (:func:`panda_fm.scaling.standardise_series`: in float64, one map for
    their channels and one of its own for a channel in much smaller units, then as float32): every window is
    standardised again by the loss, so this changes nothing but what float32 and the model's variance floor
    would do to a recording in small units or on a large offset (the pipeline standardises its contexts the
    same way).

    Args:
        series: recordings ``(T_i, C)``, all with the same ``C``.
        targets: per recording, the allowed first target steps (see :func:`usable_targets`).
        spec: window shape; ``spec.num_channels`` caps the channels per window (a random subset, in random
            order, when a recording has more).
    """

    def __init__(self, series: Sequence[np.ndarray], targets: Sequence[np.ndarray], spec: WindowSpec):
        if len(series) != len(targets):
            raise ValueError(f"{len(series)} recordings but {len(targets)} target lists")
        self.series = [standardise_series(s)[0].astype(np.float32) for s in series]
        self.spec = spec
        self.recording = np.concatenate(
            [np.full(len(t), i, dtype=np.int64) for i, t in enumerate(targets)] or [np.zeros(0, np.int64)]
        )
        self.start = np.concatenate([np.asarray(t, np.int64) for t in targets] or [np.zeros(0, np.int64)])
        if len(self.start) == 0:
            raise ValueError("no usable window in the series")

    def __len__(self) -> int:
        """Number of distinct windows (recording, first target step)."""
        return len(self.start)

    def max_modulus(self) -> int:
        """The most disjoint residue classes of windows a stream can draw from."""
        return len(self.start)

    def windows(self, index: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """The windows with flat indices ``index``.

        Args:
            index: ``(B,)`` indices into the sampler's windows.
            rng: draws the channel subsets when a recording has more than ``spec.num_channels``
                channels; None keeps the first ones.

        Returns:
            ``context (B, L, C')`` (NaN-padded on the left), ``target (B, H, C')`` float32 and
            ``key (B, 3)`` int64 ``(recording, 0, first target step)``.
        """
        L, H = self.spec.context_length, self.spec.prediction_length
        C = min(self.spec.num_channels, self.series[0].shape[1])
        B = len(index)
        context = np.full((B, L, C), np.nan, dtype=np.float32)
        target = np.empty((B, H, C), dtype=np.float32)
        keys = np.zeros((B, 3), dtype=np.int64)
        for b, i in enumerate(index):
            r, t = int(self.recording[i]), int(self.start[i])
            s = self.series[r]
            if C < s.shape[1]:
                cols = rng.choice(s.shape[1], size=C, replace=False) if rng is not None else np.arange(C)
            else:
                cols = np.arange(C)
            past = s[max(t - L, 0) : t][:, cols]  # (<= L, C)
            context[b, L - len(past) :] = past
            target[b] = s[t : t + H][:, cols]
            keys[b] = (r, 0, t)
        return {
            "context": torch.from_numpy(context),
            "target": torch.from_numpy(target),
            "key": torch.from_numpy(keys),
        }

    def sample_batch(
        self, rng: np.random.Generator, batch_size: int, residue: int = 0, modulus: int = 1
    ) -> dict[str, torch.Tensor]:
        """``batch_size`` windows drawn uniformly (with replacement) from those with
        ``index % modulus == residue``; fields as in :meth:`windows`."""
        count = (len(self.start) - residue + modulus - 1) // modulus
        if count < 1:
            raise RuntimeError(f"no window with index % {modulus} == {residue}")
        index = residue + modulus * rng.integers(count, size=batch_size)
        return self.windows(index, rng)

    def evenly_spaced(self, count: int) -> dict[str, torch.Tensor]:
        """Up to ``count`` windows spread evenly over all windows (deterministic; for validation)."""
        n = len(self.start)
        index = np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))
        return self.windows(index)


def load_series(series: SeriesInput) -> list[np.ndarray]:
    """Recordings ``(T_i, C)`` float64 from an array, a pandas object, a list, or a ``.csv``/``.npy`` path.

    One recording: a 1-D array, a list of numbers or a pandas Series (one channel); a 2-D array, a list of
    rows or a DataFrame. Several: a 3-D array ``(K, T, C)``, or a list of recordings, which may mix arrays and
    paths. Lists are read as the pipeline reads them (:mod:`panda_fm.data.validation`).

    Raises:
        ValueError: non-numeric data, wrong rank, infinite values, empty recordings, all-NaN channels,
            ambiguous lists, or recordings that disagree in channel count.
    """
    from panda_fm.data.io import read_series

    def is_path(x: Any) -> bool:
        return isinstance(x, (str, os.PathLike))

    if is_path(series):
        out = [as_series(read_series(series)[0], str(series))]
        names = [str(series)]
    elif isinstance(series, Sequence) and any(is_path(s) for s in series):
        names = [str(s) if is_path(s) else f"recording {i}" for i, s in enumerate(series)]
        items = [read_series(s)[0] if is_path(s) else s for s in series]
        out = [as_series(item, name) for name, item in zip(names, items, strict=True)]
    elif isinstance(series, (np.ndarray, torch.Tensor, Sequence)) or is_pandas(series):
        out, form = as_series_list(series, "the series", item="recording")
        names = [f"recording {i}" for i in range(len(out))] if form.batched else ["the series"]
    else:
        raise ValueError(
            "series must be a numpy array (T, C), a list of them, or a .csv/.npy path (or a pandas "
            f"DataFrame), got {type(series).__name__}"
        )
    for name, arr in zip(names, out, strict=True):
        empty = np.flatnonzero(np.isnan(arr).all(axis=0))
        if len(empty):
            raise ValueError(f"{name} has all-NaN channel(s) {empty.tolist()}; drop those columns")
        glitch = glitch_note(name, arr)  # fine-tuning would fit a glitch as if it were data
        if glitch:
            warnings.warn(glitch, GlitchWarning, stacklevel=2)
    channels = [a.shape[1] for a in out]
    if len(set(channels)) > 1:
        detail = ", ".join(f"{n}: {c}" for n, c in zip(names, channels, strict=True))
        raise ValueError(
            f"the recordings disagree in channel count ({detail}); fine-tune on recordings of the same "
            "channels in the same order (fine-tune separately per channel set)"
        )
    return out


def longest_nan_run(x: np.ndarray) -> int:
    """Longest run of consecutive time steps with a NaN in some channel of ``x`` ``(T, C)``."""
    missing = np.isnan(x).any(axis=1).astype(np.int8)
    if not missing.any():
        return 0
    edges = np.diff(np.concatenate([[0], missing, [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())


@dataclass
class SeriesSplit:
    """Training and validation windows of a set of recordings."""

    train: SeriesWindowSampler
    val: SeriesWindowSampler | None
    min_context: int
    description: str  # for the model card


def split_series(
    series: list[np.ndarray],
    context_length: int,
    prediction_length: int,
    patch_length: int,
    *,
    min_context: int | None = None,
    num_channels: int | None = None,
    val_fraction: float = 0.2,
    max_missing_fraction: float = 0.5,
) -> SeriesSplit:
    """Cut each recording into a training part and a validation tail, and find the usable windows.

    Args:
        series: recordings ``(T_i, C)`` (from :func:`load_series`).
        context_length: the model's context ``L``.
        prediction_length: the model's horizon ``H``.
        patch_length: the model's patch length; each channel of a context needs this many observed steps.
        min_context: fewest context steps of a window; None: ``L // 4`` (at least one patch).
        num_channels: channels per window; None: all.
        val_fraction: the fraction of each recording's end held out (at least ``H`` steps); 0: none.
        max_missing_fraction: a recording with more NaN than this is an error.

    Raises:
        ValueError: a recording too short or too sparse, naming the fix.
    """
    Lc, H, P = context_length, prediction_length, patch_length
    min_ctx = min_context if min_context is not None else max(Lc // 4, P)
    if not P <= min_ctx <= Lc:
        raise ValueError(
            f"min_context ({min_ctx}) must lie between the patch length ({P}) and the model's context ({Lc})"
        )
    spec = WindowSpec(Lc, H, num_channels or series[0].shape[1])
    train_t, val_t = [], []
    for i, s in enumerate(series):
        T = len(s)
        name = f"recording {i}" if len(series) > 1 else "the series"
        missing = float(np.isnan(s).mean())
        if missing > max_missing_fraction:
            raise ValueError(
                f"{name} is {missing:.0%} missing (NaN), more than max_missing_fraction="
                f"{max_missing_fraction:g}; fill the gaps, cut the recording to its observed part, "
                "or raise max_missing_fraction"
            )
        if missing > 0:
            logger.warning(
                "%s: %d of %d values are NaN (longest run %d steps); they are masked as missing, not filled",
                name,
                int(np.isnan(s).sum()),
                s.size,
                longest_nan_run(s),
            )
        n_val = max(H, math.ceil(val_fraction * T)) if val_fraction > 0 else 0
        need = min_ctx + H + n_val
        if T < need:
            val_note = (
                f" + {n_val} held out for validation (val_fraction={val_fraction:g}, at least one horizon)"
                if n_val
                else ""
            )
            raise ValueError(
                f"{name} has {T} steps; fine-tuning needs at least {need}: a context of min_context={min_ctx} "
                f"+ the model's horizon {H}{val_note}. Pass a longer recording (time along axis 0), lower "
                f"min_context (>= {P})" + (", or set val_fraction=0" if n_val else "")
            )
        cut = T - n_val  # first step of the validation tail
        train_t.append(usable_targets(s, 0, cut - H, spec, min_ctx, P))
        val_t.append(usable_targets(s, cut, T - H, spec, min_ctx, P) if n_val else np.zeros(0, np.int64))
        if len(train_t[-1]) == 0:
            raise ValueError(
                f"{name} has no usable training window: every window of its first {cut} steps lacks "
                f"{P} observed context steps in some channel or any observed target; fill the gaps"
            )
        if n_val and len(val_t[-1]) == 0:
            raise ValueError(
                f"{name} has no usable validation window in its last {n_val} steps (too many NaN); "
                "fill the gaps or set val_fraction=0"
            )
    train = SeriesWindowSampler(series, train_t, spec)
    val = SeriesWindowSampler(series, val_t, spec) if val_fraction > 0 else None
    C = series[0].shape[1]
    lengths = [len(s) for s in series]
    nan_total = int(sum(np.isnan(s).sum() for s in series))
    shape = f"({lengths[0]}, {C})" if len(series) == 1 else f"lengths {lengths} x {C} channels"
    description = (
        f"{len(series)} recording(s) of {C} channel(s), {shape}, {sum(lengths):,} steps in all; "
        f"{nan_total:,} missing values masked. "
        + (
            f"The last {val_fraction:.0%} of each recording was held out for validation."
            if val is not None
            else "No validation split."
        )
    )
    return SeriesSplit(train, val, min_ctx, description)
