from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from panda_fm.data.augment import AugmentConfig
from panda_fm.data.windows import WindowSampler, WindowSpec, fixed_windows, split_systems
from panda_fm.systems.store import open_dataset
from panda_fm.training.datamodule import WindowStream

SPEC = WindowSpec(context_length=64, prediction_length=16, num_channels=2)


def test_split_systems_is_seeded_and_disjoint():
    ids = [f"s{i}" for i in range(20)]
    train, held = split_systems(ids, 0.25, seed=3)
    assert len(held) == 5 and not set(train) & set(held) and set(train) | set(held) == set(ids)
    assert split_systems(ids, 0.25, seed=3) == (train, held)
    assert split_systems(ids, 0.25, seed=4) != (train, held)
    assert split_systems(["a"], 0.5, seed=0) == (["a"], [])
    assert split_systems(["a", "b"], 0.01, seed=0)[1]  # at least one held out


def test_raw_windows_are_slices_of_the_stored_trajectories(tiny_dataset: Path):
    ds = open_dataset(tiny_dataset)
    sampler = WindowSampler(tiny_dataset, ds.ids("train"), SPEC)
    batch = sampler.sample_batch(np.random.default_rng(0), 6)
    assert batch["context"].shape == (6, 64, 2) and batch["target"].shape == (6, 16, 2)
    for i, (s, k, start) in enumerate(batch["key"].tolist()):
        traj = ds.load(sampler.ids[s])[k, start : start + SPEC.length]  # (L, D)
        window = torch.cat([batch["context"][i], batch["target"][i]]).numpy()
        # every kept channel is one of the system's channels
        for c in range(2):
            assert any(np.array_equal(window[:, c], traj[:, d]) for d in range(traj.shape[1]))


def test_residue_classes_partition_window_starts(tiny_dataset: Path):
    ids = open_dataset(tiny_dataset).ids("train")
    sampler = WindowSampler(tiny_dataset, ids, SPEC, AugmentConfig(max_delay=3))
    rng = np.random.default_rng(0)
    for residue in range(3):
        keys = sampler.sample_batch(rng, 50, residue=residue, modulus=3)["key"]
        assert (keys[:, 2] % 3 == residue).all()
        assert (keys[:, 2] >= sampler.history).all()


def test_short_systems_are_skipped_with_a_clear_error_when_none_fit(tiny_dataset: Path):
    ids = open_dataset(tiny_dataset).ids("train")
    with pytest.raises(ValueError, match="long enough"):
        WindowSampler(tiny_dataset, ids, WindowSpec(context_length=512, prediction_length=128))


def test_fixed_windows_repeat(tiny_dataset: Path):
    ids = open_dataset(tiny_dataset).ids("test")
    sampler = WindowSampler(tiny_dataset, ids, SPEC)
    a, b = fixed_windows(sampler, 8, seed=1), fixed_windows(sampler, 8, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _keys(batches: list[dict[str, torch.Tensor]]) -> list[tuple[int, ...]]:
    return [tuple(k) for b in batches for k in b["key"].tolist()]


def test_stream_is_reproducible_and_independent_of_workers(tiny_dataset: Path):
    ids = open_dataset(tiny_dataset).ids("train")
    sampler = WindowSampler(tiny_dataset, ids, SPEC, AugmentConfig(rate=0.5, max_delay=3))
    stream = WindowStream(sampler, batch_size=4, seed=11)
    direct = [stream.batch(i) for i in range(6)]
    for workers in (0, 2):
        loader = DataLoader(stream, batch_size=None, num_workers=workers)
        got = [b for _, b in zip(range(6), loader, strict=False)]
        for x, y in zip(direct, got, strict=True):
            assert all(torch.equal(x[k], y[k]) for k in x), f"{workers} workers changed the stream"
    # resuming at batch 3 continues the same stream
    resumed = WindowStream(sampler, batch_size=4, seed=11, start=3)
    again = [b for _, b in zip(range(3), resumed, strict=False)]
    assert _keys(again) == _keys(direct[3:])
    assert _keys([WindowStream(sampler, 4, seed=12).batch(0)]) != _keys(direct[:1])


def test_ranks_draw_disjoint_windows(tiny_dataset: Path):
    ids = open_dataset(tiny_dataset).ids("train")
    sampler = WindowSampler(tiny_dataset, ids, SPEC)
    seen = [
        set(_keys([WindowStream(sampler, 16, 0, rank, 2).batch(i) for i in range(20)])) for rank in (0, 1)
    ]
    assert len(seen[0]) > 100 and len(seen[1]) > 100
    assert not seen[0] & seen[1]


def test_observation_augmentations_resample_shorten_and_drop_channels(tiny_dataset: Path):
    from panda_fm.data.augment import resample, resample_extent

    ds = open_dataset(tiny_dataset)
    aug = AugmentConfig(rate=0.0, resample_rate=1.0, max_resample=2.0, short_rate=1.0, min_context=40)
    sampler = WindowSampler(tiny_dataset, ds.ids("train"), SPEC, aug)
    # a drawn window is the stored trajectory resampled from its start by the factor drawn first
    rng = np.random.default_rng(3)
    factor = aug.resample_factor(np.random.default_rng(3))
    raw, (s, k, start) = sampler.draw(rng)
    stored = ds.load(sampler.ids[s])[k, start : start + resample_extent(SPEC.length, factor)]
    np.testing.assert_allclose(raw, resample(stored.astype(np.float32), factor, SPEC.length), rtol=1e-5)
    assert factor != 1.0 and raw.shape == (SPEC.length, 3)
    batch = sampler.sample_batch(np.random.default_rng(0), 32)
    pad = torch.isnan(batch["context"][:, :, 0]).sum(dim=1)
    assert (pad >= 1).all() and (pad <= SPEC.context_length - 40).all()
    assert torch.isfinite(batch["target"]).all()
    # partial observation: some batches keep 1 channel instead of 2
    partial = WindowSampler(tiny_dataset, ds.ids("train"), SPEC, AugmentConfig(partial_rate=0.5))
    counts = [partial.sample_batch(np.random.default_rng(i), 4)["context"].shape[2] for i in range(40)]
    assert set(counts) == {1, 2} and 10 < counts.count(1) < 30
