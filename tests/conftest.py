"""Shared fixtures: a tiny committed checkpoint and small configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from panda_fm import PandaConfig, PandaModel, PandaPipeline

FIXTURES = Path(__file__).parent / "fixtures"
TINY_CHECKPOINT = FIXTURES / "tiny_panda"
REFERENCE_FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "reference_panda"


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
