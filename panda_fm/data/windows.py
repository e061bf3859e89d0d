"""Training and validation windows cut from the trajectories of a generated dataset.

A window is ``context_length + prediction_length`` consecutive steps of one initial condition of one
system, restricted to a random subset of its channels. Its key ``(system, ic, start)`` names where it came
from; ``start`` is the index of its first context step in the stored trajectory.

Windows can be drawn from one residue class of start positions (``start % modulus == residue``): streams
that use different residues never produce the same window, which is how DDP ranks are kept disjoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panda_fm.data.augment import (
    AugmentConfig,
    add_context_noise,
    augment_window,
    resample,
    resample_extent,
    shorten_contexts,
)
from panda_fm.systems.store import Dataset, open_dataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowSpec:
    """The shape of a window."""

    context_length: int  # steps the model reads
    prediction_length: int  # steps of target after the context
    num_channels: int = 3  # channels per window; systems (or batches) with fewer use all they have

    def __post_init__(self) -> None:
        for name in ("context_length", "prediction_length", "num_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def length(self) -> int:
        return self.context_length + self.prediction_length


def split_systems(ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split system ids into (train, held-out) with a seeded permutation.

    At least one system stays in training; with ``val_fraction > 0`` and two or more systems, at least one
    is held out. Both lists keep the input order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    n = len(ids)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    perm = np.random.default_rng([seed, 7]).permutation(n)
    held = set(perm[:n_val].tolist())
    train = [s for i, s in enumerate(ids) if i not in held]
    heldout = [s for i, s in enumerate(ids) if i in held]
    return train, heldout


class WindowSampler:
    """Draws windows (optionally augmented) from a fixed list of systems of a dataset.

    The dataset is opened lazily in each process, so a sampler pickles cheaply into dataloader workers.

    Args:
        root: dataset directory.
        ids: the systems to draw from.
        spec: window shape.
        augment: augmentation settings, or None for raw windows.
    """

    def __init__(
        self, root: str | Path, ids: Sequence[str], spec: WindowSpec, augment: AugmentConfig | None = None
    ):
        self.root = Path(root)
        self.spec = spec
        self.augment = augment
        self.history = augment.history_needed(spec.num_channels) if augment is not None else 0
        dataset = open_dataset(self.root)
        need = self.history + spec.length
        kept, shapes = [], []
        for sid in ids:
            K, T, D = dataset.record(sid)["shape"]
            if T < need:
                logger.warning(
                    "system %s has %d steps, fewer than a window needs (%d); skipped", sid, T, need
                )
                continue
            kept.append(sid)
            shapes.append((K, T, D))
        if ids and not kept:
            raise ValueError(
                f"no system of {self.root} is long enough: windows need {need} steps "
                f"(context {spec.context_length} + prediction {spec.prediction_length} + history {self.history}); "
                "use a dataset with longer trajectories or shorten model.context_length"
            )
        self.ids = kept
        self.shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 3)  # (S, 3): K, T, D
        self._dataset: Dataset | None = dataset

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dataset"] = None  # memory maps are reopened in the receiving process
        return state

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = open_dataset(self.root)
        return self._dataset

    def max_modulus(self) -> int:
        """The most disjoint residue classes every stream can draw from (start positions of the longest system)."""
        return int(self.shapes[:, 1].max()) - self.spec.length - self.history + 1

    def draw(
        self, rng: np.random.Generator, residue: int = 0, modulus: int = 1
    ) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One raw slice ``(history + length, D)`` and its key ``(system, ic, start)``.

        With ``augment.resample_rate`` the slice may be resampled from ``resample_extent`` stored steps, which
        ``start`` then names the first of (plus ``history``).
        """
        L = self.spec.length
        factor = self.augment.resample_factor(rng) if self.augment is not None else 1.0
        # coarser than the longest system allows: as coarse as it allows
        factor = min(factor, (int(self.shapes[:, 1].max()) - 4) / (self.history + L - 1))
        extent = resample_extent(self.history + L, factor)  # stored steps read
        for _ in range(1000):
            s = int(rng.integers(len(self.ids)))
            K, T, _ = self.shapes[s]
            last = T - extent + self.history  # last valid start
            first = self.history + ((residue - self.history) % modulus)  # first start in the residue class
            if first > last:
                continue  # this system has no start in the class (or is too short to resample); draw another
            start = first + modulus * int(rng.integers((last - first) // modulus + 1))
            k = int(rng.integers(K))
            traj = self.dataset.load(self.ids[s])
            raw = np.array(traj[k, start - self.history : start - self.history + extent], dtype=np.float32)
            return resample(raw, factor, self.history + L), (s, k, start)
        raise RuntimeError(f"no system has a window start with start % {modulus} == {residue}")

    def sample_batch(
        self, rng: np.random.Generator, batch_size: int, residue: int = 0, modulus: int = 1
    ) -> dict[str, torch.Tensor]:
        """A batch of windows sharing one channel count.

        The channel count is ``min(num_channels, fewest channels of a window in the batch)`` (fewer with
        ``augment.partial_rate``); each window keeps a random subset (in random order) of that many of its
        channels.

        Returns:
            ``context (B, context_length, C)`` (NaN before a shortened context's steps),
            ``target (B, prediction_length, C)`` float32 and
            ``key (B, 3)`` int64 (system index into ``ids``, initial condition, start).
        """
        L = self.spec.length
        windows, keys = [], []
        for _ in range(batch_size):
            raw, key = self.draw(rng, residue, modulus)
            if self.augment is not None:
                window, _ = augment_window(raw, L, self.spec.num_channels, self.augment, rng)
            else:
                window = raw[raw.shape[0] - L :]
            windows.append(window)
            keys.append(key)
        C = min(self.spec.num_channels, min(w.shape[1] for w in windows))
        if self.augment is not None and C > 1 and self.augment.partial_rate > 0:
            if rng.random() < self.augment.partial_rate:
                C = int(rng.integers(1, C))
        batch = np.empty((batch_size, L, C), dtype=np.float32)
        for i, w in enumerate(windows):
            batch[i] = w[:, rng.choice(w.shape[1], size=C, replace=False)]
        if self.augment is not None:
            add_context_noise(batch, self.spec.context_length, self.augment, rng)
            shorten_contexts(batch, self.spec.context_length, self.augment, rng)
        x = torch.from_numpy(batch)  # (B, L, C)
        return {
            "context": x[:, : self.spec.context_length].contiguous(),
            "target": x[:, self.spec.context_length :].contiguous(),
            "key": torch.tensor(keys, dtype=torch.int64).reshape(batch_size, 3),
        }


def fixed_windows(sampler: WindowSampler, count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` windows drawn once with a seeded generator (for validation): the same on every call."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return sampler.sample_batch(np.random.default_rng([seed, 1]), count)
