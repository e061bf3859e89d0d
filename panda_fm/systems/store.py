"""Sharded trajectory storage with a manifest of recipes.

Layout of a dataset directory::

    ROOT/dataset.json          dataset-level metadata (generator settings, seed, version)
    ROOT/manifest.jsonl        one JSON object per system: its recipe plus where its data lives
    ROOT/shards/shard-NNNNN.npy  flat float32 arrays, memory-mappable; a system occupies
                                 ``prod(shape)`` consecutive values starting at ``offset``

Every system's trajectories have shape ``(K, T, D)``: K initial conditions, T time steps, D dimensions.
Writes are atomic: a shard is written to a temporary file and renamed, and only then are its manifest
lines appended, so a crash leaves at most an orphaned shard that the next writer removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
METADATA = "dataset.json"
SHARD_DIR = "shards"
REQUIRED_KEYS = ("id", "split", "dt", "period")
SPLITS = ("train", "test")


def _fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_manifest(root: Path) -> list[dict[str, Any]]:
    """Read the manifest, ignoring a torn last line left by a crash mid-append."""
    path = root / MANIFEST
    if not path.exists():
        return []
    records = []
    lines = path.read_bytes().split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:  # torn final line: the shard it described is re-generated
                logger.warning("ignoring a torn last manifest line in %s", path)
                break
            raise ValueError(
                f"{path} line {i + 1} is not valid JSON ({err}); the manifest is corrupt"
            ) from err
    return records


class DatasetWriter:
    """Appends systems to a dataset directory, a shard at a time; reopening resumes.

    Args:
        root: dataset directory (created if missing).
        shard_size: systems per shard.
        metadata: dataset-level metadata; on resume it must equal what is stored.
    """

    def __init__(self, root: str | Path, shard_size: int = 256, metadata: dict[str, Any] | None = None):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.root = Path(root)
        self.shard_size = shard_size
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        meta_path = self.root / METADATA
        if metadata is not None:
            if meta_path.exists():
                stored = json.loads(meta_path.read_text())
                if stored != json.loads(json.dumps(metadata)):
                    raise ValueError(
                        f"{self.root} holds a dataset made with other settings; "
                        "use a new --out directory or the original settings to resume"
                    )
            else:
                _fsync_write(meta_path, json.dumps(metadata, indent=2, sort_keys=True).encode())
        self.records = _read_manifest(self.root)
        # Rewrite the manifest without a torn tail so appends start on a clean line.
        _fsync_write(self.root / MANIFEST, b"".join(_line(r) for r in self.records))
        self.ids = {r["id"] for r in self.records}
        used = {r["shard"] for r in self.records}
        for shard in (self.root / SHARD_DIR).iterdir():
            if f"{SHARD_DIR}/{shard.name}" not in used:
                logger.info("removing orphaned shard %s", shard)
                shard.unlink()
        self._next_shard = len(used)
        self._pending: list[tuple[dict[str, Any], np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.records) + len(self._pending)

    def __contains__(self, system_id: str) -> bool:
        return system_id in self.ids

    def add(self, record: dict[str, Any], trajectories: np.ndarray) -> None:
        """Queue one system; ``trajectories`` is ``(K, T, D)`` and finite."""
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            raise ValueError(f"record lacks required keys {missing}")
        if record["split"] not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {record['split']!r}")
        if record["id"] in self.ids:
            raise ValueError(f"system id {record['id']!r} is already in {self.root}")
        traj = np.asarray(trajectories, dtype=np.float32)
        if traj.ndim != 3:
            raise ValueError(f"trajectories must be (K, T, D), got shape {traj.shape}")
        if not np.isfinite(traj).all():
            raise ValueError(f"trajectories of {record['id']!r} contain NaN or inf")
        self.ids.add(record["id"])
        self._pending.append((dict(record), traj))
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the queued systems as one shard, then append their manifest lines."""
        if not self._pending:
            return
        name = f"{SHARD_DIR}/shard-{self._next_shard:05d}.npy"
        offset = 0
        lines = []
        for record, traj in self._pending:
            record.update(shard=name, offset=offset, shape=list(traj.shape))
            offset += traj.size
            lines.append(_line(record))
        flat = np.concatenate([traj.ravel() for _, traj in self._pending])
        tmp = self.root / (name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, flat)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / name)
        with open(self.root / MANIFEST, "ab") as fh:
            fh.write(b"".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        self.records.extend(r for r, _ in self._pending)
        self._pending.clear()
        self._next_shard += 1

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True) + "\n").encode()


class Dataset:
    """Read access to a dataset directory; trajectories are memory-mapped, not loaded."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / MANIFEST).exists():
            raise FileNotFoundError(
                f"{self.root} is not a panda_fm dataset (no {MANIFEST}); create one with `panda-fm generate`"
            )
        self.records = _read_manifest(self.root)
        self.metadata: dict[str, Any] = (
            json.loads((self.root / METADATA).read_text()) if (self.root / METADATA).exists() else {}
        )
        self._by_id = {r["id"]: r for r in self.records}
        self._shards: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def record(self, system_id: str) -> dict[str, Any]:
        return self._by_id[system_id]

    def ids(self, split: str | None = None) -> list[str]:
        """System ids in manifest order, optionally only those of one split."""
        return [r["id"] for r in self.records if split is None or r["split"] == split]

    def load(self, system_id: str) -> np.ndarray:
        """Trajectories of one system, ``(K, T, D)`` float32, memory-mapped (read-only)."""
        rec = self._by_id[system_id]
        shard = self._shards.get(rec["shard"])
        if shard is None:
            shard = np.load(self.root / rec["shard"], mmap_mode="r")
            self._shards[rec["shard"]] = shard
        size = int(np.prod(rec["shape"]))
        return shard[rec["offset"] : rec["offset"] + size].reshape(rec["shape"])

    @property
    def manifest_hash(self) -> str:
        """SHA-256 of the manifest: identifies the dataset's exact contents."""
        return hashlib.sha256((self.root / MANIFEST).read_bytes()).hexdigest()


def open_dataset(root: str | Path) -> Dataset:
    """Open a dataset directory written by :class:`DatasetWriter`."""
    return Dataset(root)


def merge_datasets(parts: list[str | Path], out: str | Path, shard_size: int = 256) -> Dataset:
    """Merge datasets (e.g. the parts of a ``--shard i/n`` run) into a new dataset at ``out``.

    Records keep their ids (which must be distinct across parts) and recipes; trajectories are copied
    into new shards. The merged metadata lists each part's metadata under ``"parts"``. Re-running the
    same merge into the same ``out`` resumes: systems already present are skipped.
    """
    if not parts:
        raise ValueError("merge needs at least one dataset part")
    datasets = [open_dataset(p) for p in parts]
    seen: set[str] = set()
    for ds in datasets:
        clash = seen.intersection(ds.ids())
        if clash:
            raise ValueError(
                f"system ids {sorted(clash)[:3]} occur in more than one part; parts must be generated "
                "with distinct --shard indices"
            )
        seen.update(ds.ids())
    metadata = {
        "merged_from": [str(Path(p).resolve()) for p in parts],
        "parts": [ds.metadata for ds in datasets],
    }
    with DatasetWriter(out, shard_size=shard_size, metadata=metadata) as writer:
        for ds in datasets:
            for rec in ds:
                if rec["id"] in writer:
                    continue
                clean = {k: v for k, v in rec.items() if k not in ("shard", "offset", "shape")}
                writer.add(clean, np.asarray(ds.load(rec["id"])))
    return open_dataset(out)
