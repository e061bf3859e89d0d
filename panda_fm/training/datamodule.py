"""LightningDataModule: a stream of training windows and fixed validation windows.

The training stream is an :class:`~torch.utils.data.IterableDataset` of whole batches. Batch number ``g``
of rank ``r`` is a pure function of ``(seed, r, g)``: dataloader worker ``w`` of ``W`` produces the batches
``g = start + w, start + w + W, ...`` so the loader (which takes batches from its workers in turn) yields
``g = start, start + 1, ...`` whatever the number of workers. Ranks draw window starts from disjoint residue
classes (``start % world_size == rank``), so no two ranks ever produce the same window. Resuming sets
``start`` to the number of batches already consumed, which continues the stream exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from panda_fm.data.windows import WindowSampler, WindowSpec, fixed_windows, split_systems
from panda_fm.systems.store import open_dataset
from panda_fm.training.config import DataConfig

logger = logging.getLogger(__name__)

VAL_SETS = ("heldout", "test")  # validation sets, in dataloader order when both exist


class WindowStream(IterableDataset):
    """An endless, reproducible stream of training batches for one rank.

    Args:
        sampler: draws the windows.
        batch_size: windows per batch.
        seed: run seed.
        rank: this process's global rank.
        world_size: number of ranks.
        start: index of the first batch (batches already consumed, on resume).
    """

    def __init__(
        self,
        sampler: WindowSampler,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        if sampler.max_modulus() < world_size:
            raise ValueError(
                f"the longest system offers {sampler.max_modulus()} window starts, fewer than the "
                f"{world_size} ranks that must draw disjoint windows; use longer trajectories or fewer devices"
            )
        self.sampler = sampler
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = start

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Batch number ``index`` of this rank (see :meth:`WindowSampler.sample_batch` for its fields)."""
        rng = np.random.default_rng([self.seed, 0, self.rank, index])
        return self.sampler.sample_batch(rng, self.batch_size, residue=self.rank, modulus=self.world_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        index = self.start + worker
        while True:
            yield self.batch(index)
            index += workers


class WindowSet(torch.utils.data.Dataset):
    """A map-style dataset over pre-drawn windows (a dict of tensors sharing their first dimension)."""

    def __init__(self, windows: dict[str, torch.Tensor]):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows["context"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.windows.items()}


def check_dataset(path: str | None) -> dict[str, object]:
    """Validate a dataset directory for training and describe it; raises a clear error when unusable."""
    if path is None:
        raise ValueError("no dataset given: pass --data DIR (a directory written by `panda-fm generate`)")
    dataset = open_dataset(path)
    train = dataset.ids("train")
    if not train:
        raise ValueError(
            f"dataset {path} has no systems in the train split ({len(dataset)} systems in all); "
            "generate one with training systems (`panda-fm generate`) or pass another --data"
        )
    return {
        "path": str(path),
        "manifest_hash": dataset.manifest_hash,
        "num_train": len(train),
        "num_test": len(dataset.ids("test")),
    }


class PandaDataModule(L.LightningDataModule):
    """Training windows streamed from a generated dataset, validation windows fixed once.

    Args:
        data: data settings (``data.path`` must be set).
        context_length: context steps of a window.
        prediction_length: target steps of a window.
        seed: run seed (validation split, validation windows, training stream).
    """

    def __init__(self, data: DataConfig, context_length: int, prediction_length: int, seed: int = 0):
        super().__init__()
        self.config = data
        self.spec = WindowSpec(context_length, prediction_length, data.num_channels)
        self.seed = seed
        self.start_batch = 0  # set by the LightningModule's batch counter on resume
        self.val_names: list[str] = []
        self.sampler: WindowSampler | None = None
        self._val: dict[str, WindowSet] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.sampler is not None:
            return
        info = check_dataset(self.config.path)
        dataset = open_dataset(self.config.path)
        train_ids, heldout_ids = split_systems(dataset.ids("train"), self.config.val_fraction, self.seed)
        test_ids = dataset.ids("test")
        self.sampler = WindowSampler(self.config.path, train_ids, self.spec, self.config.augment)
        self.train_ids, self.heldout_ids, self.test_ids = train_ids, heldout_ids, test_ids
        self.manifest_hash = info["manifest_hash"]
        for tag, (name, ids) in enumerate(zip(VAL_SETS, (heldout_ids, test_ids), strict=True)):
            if not ids:
                logger.warning("no %s systems: val/%s_loss will not be reported", name, name)
                continue
            sampler = WindowSampler(self.config.path, ids, self.spec, augment=None)
            self._val[name] = WindowSet(fixed_windows(sampler, self.config.val_windows, self.seed + tag))
        self.val_names = list(self._val)
        logger.info(
            "dataset %s: %d training systems, %d held out, %d test",
            self.config.path,
            len(train_ids),
            len(heldout_ids),
            len(test_ids),
        )

    def state_dict(self) -> dict[str, object]:
        """Saved in Lightning checkpoints: which dataset the stream was drawn from."""
        return {"manifest_hash": getattr(self, "manifest_hash", None)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        saved, current = state.get("manifest_hash"), getattr(self, "manifest_hash", None)
        if saved and current and saved != current:
            logger.warning(
                "resuming on a different dataset (manifest %s..., the checkpoint's was %s...): the window "
                "stream does not continue the original one",
                str(current)[:12],
                str(saved)[:12],
            )

    def train_stream(self) -> WindowStream:
        assert self.sampler is not None, "call setup() first"
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        module = self.trainer.lightning_module if self.trainer else None
        start = getattr(module, "batches_seen", self.start_batch)
        return WindowStream(self.sampler, self.config.batch_size, self.seed, rank, world, start)

    def train_dataloader(self) -> DataLoader:
        stream = self.train_stream()
        if stream.start:
            logger.info("rank %d: window stream resumes at batch %d", stream.rank, stream.start)
        return DataLoader(
            stream,
            batch_size=None,  # the stream yields whole batches
            num_workers=self.config.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )

    def val_dataloader(self) -> list[DataLoader]:
        world = self.trainer.world_size if self.trainer else 1
        if world > 1 and self.config.val_windows % world:
            logger.warning(
                "data.val_windows (%d) is not a multiple of the %d ranks: some validation windows count twice",
                self.config.val_windows,
                world,
            )
        return [
            DataLoader(self._val[name], batch_size=self.config.val_batch_size, shuffle=False)
            for name in self.val_names
        ]
