"""Training and validation windows cut from in-memory series (a user's recordings, for fine-tuning).

The counterpart of :mod:`panda_fm.data.windows` for data that is not a generated dataset: a list of
recordings ``(T_i, C)`` with NaN marking missing values. A window is named by ``(recording, t)``, where
``t`` is the first target step: its target is ``[t, t + H)`` and its context the up to ``L`` steps before
``t``; a context shorter than ``L`` (near a recording's start) is left-padded with NaN, which the model
reads as missing.

A window is usable when every channel of its context has at least ``min_observed`` observed steps (one
patch, as the pipeline requires for a forecast) and its target has at least one observed value. NaNs inside
usable windows are masked (in the context) or left out of the loss (in the target), never filled.

Shape letters: B batch, T time, C channels, L context length, H horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from panda_fm.data.windows import WindowSpec


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

    Args:
        series: recordings ``(T_i, C)`` float32, all with the same ``C``.
        targets: per recording, the allowed first target steps (see :func:`usable_targets`).
        spec: window shape; ``spec.num_channels`` caps the channels per window (a random subset, in random
            order, when a recording has more).
    """

    def __init__(self, series: Sequence[np.ndarray], targets: Sequence[np.ndarray], spec: WindowSpec):
        if len(series) != len(targets):
            raise ValueError(f"{len(series)} recordings but {len(targets)} target lists")
        self.series = [np.asarray(s, dtype=np.float32) for s in series]
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
