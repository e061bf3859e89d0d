"""Shared fixtures: a tiny committed checkpoint, small configs, and a tiny real dataset of dysts trajectories."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from panda_fm import PandaConfig, PandaModel, PandaPipeline
from panda_fm.systems.store import DatasetWriter

FIXTURES = Path(__file__).parent / "fixtures"
TINY_CHECKPOINT = FIXTURES / "tiny_panda"
REFERENCE_FIXTURE = FIXTURES / "reference_panda"


def tiny_config(**overrides: object) -> PandaConfig:
    """A model small enough to run hundreds of times in a test, with every component switched on."""
    base = dict(
        context_length=512,
        prediction_length=64,
        patch_length=16,
        patch_stride=16,
        d_model=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        num_poly_feats=8,
        poly_degrees=2,
        num_rff=16,
    )
    base.update(overrides)
    return PandaConfig(**base)


@pytest.fixture(scope="session")
def tiny_pipeline() -> PandaPipeline:
    """The committed tiny checkpoint (random weights, fixed forever by its files)."""
    return PandaPipeline.from_pretrained(TINY_CHECKPOINT)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def random_model(seed: int = 0, **overrides: object) -> PandaModel:
    return PandaModel(tiny_config(**overrides), seed=seed).eval()


REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "train" / "configs"
TRAIN_SYSTEMS = ("Lorenz", "Thomas", "Aizawa", "Halvorsen", "SprottA")
TEST_SYSTEMS = ("Rossler", "SprottB")
STEPS = 400  # time steps per initial condition
ICS = 2  # initial conditions per system


def integrate(name: str, steps: int, ics: int, periods: float = 12.0) -> tuple[np.ndarray, float, float]:
    """``(ics, steps, D)`` trajectories of dysts system ``name``: dysts' right-hand side and parameters,
    integrated with scipy at modest tolerance (dysts' own integrator takes seconds per system here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dysts.flows

        system = getattr(dysts.flows, name)()
    period = float(system.period)
    total = periods * period * (ics + 1)
    t = np.linspace(0.0, total, steps * (ics + 1))
    sol = solve_ivp(
        lambda _, x: np.asarray(system.rhs(x, 0.0), dtype=float),
        (0.0, total),
        np.asarray(system.ic, dtype=float),
        t_eval=t,
        rtol=1e-6,
        atol=1e-8,
    )
    assert sol.success, f"{name}: {sol.message}"
    traj = sol.y.T[steps:].reshape(ics, steps, -1)  # drop the first segment as transient
    return traj.astype(np.float32), float(t[1] - t[0]), period


def write_dataset(root: Path, train: tuple[str, ...], test: tuple[str, ...]) -> Path:
    with DatasetWriter(root, shard_size=3) as writer:
        for split, names in (("train", train), ("test", test)):
            for name in names:
                traj, dt, period = integrate(name, STEPS, ICS)
                writer.add({"id": name, "split": split, "dt": dt, "period": period}, traj)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 training and 2 test dysts systems, 2 initial conditions x 400 steps x 3 dimensions each."""
    return write_dataset(tmp_path_factory.mktemp("data") / "tiny", TRAIN_SYSTEMS, TEST_SYSTEMS)


def cli_env() -> dict[str, str]:
    """Environment for a `python -m panda_fm.cli` subprocess: the repository importable, one thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "panda_fm.cli", *args]
