"""Test sets for the benchmark that need no generated dataset: the dysts held-out founders themselves.

:func:`founders_testset` integrates each held-out founder with dysts' ``make_trajectory`` and writes
the trajectories as an ordinary dataset directory (split ``"test"``), so the benchmark runner reads
them exactly like a generated test split. The directory is a cache: a second call with the same
settings reuses it.
"""

from __future__ import annotations

import fcntl
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from panda_fm.systems.founders import HELD_OUT
from panda_fm.systems.store import DatasetWriter

logger = logging.getLogger(__name__)

#: The held-out founders of the reference (docs/method.md, "Generation"), in alphabetical order.
HELD_OUT_FOUNDERS: tuple[str, ...] = tuple(sorted(HELD_OUT))


@dataclass(frozen=True)
class FounderTestsetConfig:
    """How the founders' test trajectories are integrated.

    Attributes:
        systems: dysts flow class names.
        n_steps: points per trajectory (the reference: 4096).
        pts_per_period: points per dominant period (4096 points over about 40 periods).
        n_ics: trajectories per system; the first starts at dysts' curated initial condition, the
            others at states drawn (with ``seed``) from that first trajectory, so all lie on the attractor.
        rtol: relative tolerance of the integrator.
        atol: absolute tolerance of the integrator.
        seed: seeds the choice of the extra initial conditions.
    """

    systems: tuple[str, ...] = HELD_OUT_FOUNDERS
    n_steps: int = 4096
    pts_per_period: int = 100
    n_ics: int = 1
    rtol: float = 1e-9
    atol: float = 1e-10
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.systems:
            raise ValueError("systems is empty; name at least one dysts flow")
        if self.n_steps < 16 or self.pts_per_period < 4 or self.n_ics < 1:
            raise ValueError("need n_steps >= 16, pts_per_period >= 4 and n_ics >= 1")
        if self.rtol <= 0 or self.atol <= 0:
            raise ValueError("rtol and atol must be positive")


def _integrate(name: str, cfg: FounderTestsetConfig) -> tuple[np.ndarray, dict]:
    """Integrate one founder: ``(n_ics, n_steps, D)`` float32 and its record."""
    import dysts.flows

    if not hasattr(dysts.flows, name):
        raise ValueError(f"{name!r} is not a dysts flow; check the spelling against dysts.flows")
    model = getattr(dysts.flows, name)()
    kw = dict(pts_per_period=cfg.pts_per_period, rtol=cfg.rtol, atol=cfg.atol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = model.make_trajectory(cfg.n_steps, **kw)
        if first is None or not np.isfinite(first).all():
            raise ValueError(f"dysts could not integrate {name}; drop it from systems")
        trajs = [first]
        rng = np.random.default_rng([cfg.seed, sum(map(ord, name))])
        for _ in range(cfg.n_ics - 1):
            ic = first[rng.integers(cfg.n_steps // 4, cfg.n_steps)]
            traj = model.make_trajectory(cfg.n_steps, init_cond=ic, **kw)
            if traj is None or not np.isfinite(traj).all() or traj.shape != first.shape:
                logger.warning("%s: an extra initial condition failed to integrate; skipped", name)
                continue
            trajs.append(traj)
    record = {
        "id": name,
        "split": "test",
        "dt": float(model.dt),
        "period": float(model.period),
        "founders": [name],
    }
    return np.stack(trajs).astype(np.float32), record


def founders_testset(cache_dir: str | Path, config: FounderTestsetConfig | None = None) -> Path:
    """Build (or reuse) a dataset directory holding the held-out founders' trajectories.

    Args:
        cache_dir: directory for the dataset; reused when its settings match ``config``.
        config: integration settings; defaults to :class:`FounderTestsetConfig`.

    Returns:
        The dataset directory, readable with :func:`panda_fm.systems.store.open_dataset`.
    """
    cfg = config or FounderTestsetConfig()
    root = Path(cache_dir)
    meta = {"kind": "held-out founders", **asdict(cfg)}
    meta["systems"] = list(cfg.systems)
    with _exclusive(root), DatasetWriter(root, shard_size=len(cfg.systems), metadata=meta) as writer:
        todo = [name for name in cfg.systems if name not in writer]
        for name in tqdm(todo, desc="integrating held-out founders", disable=not todo):
            traj, record = _integrate(name, cfg)
            writer.add(record, traj)
            writer.flush()  # one system per shard write, so an interrupted build resumes
    return root


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold a lock beside ``root`` (a file ``.NAME.lock``), so that concurrent builds of one cache (two
    evaluations started together) take turns: the later one finds the systems written and reuses them."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
