from __future__ import annotations

import numpy as np
import pytest

from panda_fm.data.augment import (
    AugmentConfig,
    affine_map,
    augment_window,
    convex_combination,
    delay_embedding,
)


def _series(T: int = 50, D: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(T, D)).astype(np.float32)


def test_delay_embedding_reads_past_values():
    x = _series()
    y = delay_embedding(x, channel=1, dim=3, tau=4, length=20)
    assert y.shape == (20, 3)
    np.testing.assert_array_equal(y[:, 0], x[30:, 1])
    np.testing.assert_array_equal(y[:, 1], x[26:46, 1])
    np.testing.assert_array_equal(y[:, 2], x[22:42, 1])


def test_convex_combination_stays_in_the_channel_range():
    x = _series()
    y = convex_combination(x, np.random.default_rng(1))
    assert y.shape == x.shape
    assert np.all(y <= x.max(axis=1, keepdims=True) + 1e-5)
    assert np.all(y >= x.min(axis=1, keepdims=True) - 1e-5)


def test_affine_map_shape_and_dtype():
    x = _series()
    y = affine_map(x, np.random.default_rng(2))
    assert y.shape == x.shape and y.dtype == np.float32
    assert not np.allclose(y, x)


@pytest.mark.parametrize("kind", ["delay", "convex", "affine"])
def test_augment_window_applies_one_kind(kind: str):
    cfg = AugmentConfig(rate=1.0, kinds=[kind], max_delay=3)
    raw = _series(T=30 + cfg.history_needed(4), D=2)
    window, applied = augment_window(raw, 30, 4, cfg, np.random.default_rng(3))
    assert applied == kind
    assert window.shape == (30, 4 if kind == "delay" else 2)
    assert np.isfinite(window).all()


def test_rate_zero_is_identity_and_rate_is_respected():
    raw = _series(T=40)
    window, applied = augment_window(raw, 30, 3, AugmentConfig(rate=0.0), np.random.default_rng(0))
    assert applied is None and np.array_equal(window, raw[10:])
    cfg = AugmentConfig(rate=0.2)
    raw = _series(T=30 + cfg.history_needed(3))
    rng = np.random.default_rng(5)
    hits = sum(augment_window(raw, 30, 3, cfg, rng)[1] is not None for _ in range(2000))
    assert 300 < hits < 500


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rate": 1.5}, "rate"),
        ({"kinds": ["warp"]}, "warp"),
        ({"max_delay": 0}, "max_delay"),
        ({"noise": -0.1}, "augment.noise"),
        ({"noise_rate": 2.0}, "noise_rate"),
        ({"resample_rate": -0.1}, "resample_rate"),
        ({"short_rate": 1.1}, "short_rate"),
        ({"partial_rate": 2.0}, "partial_rate"),
        ({"max_resample": 0.5}, "max_resample"),
        ({"min_context": 0}, "min_context"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


def test_context_noise_touches_only_contexts_at_the_configured_level():
    from panda_fm.data.augment import add_context_noise

    batch = np.random.default_rng(0).normal(size=(400, 80, 2)).astype(np.float32) * np.float32([1.0, 50.0])
    before = batch.copy()
    add_context_noise(batch, 60, AugmentConfig(noise=0.2, noise_rate=0.5), np.random.default_rng(1))
    np.testing.assert_array_equal(batch[:, 60:], before[:, 60:])  # targets stay clean
    rel = (batch[:, :60] - before[:, :60]).std(axis=1) / before[:, :60].std(axis=1)  # (B, C): sigma drawn
    noisy = rel[:, 0] > 0
    assert 150 < noisy.sum() < 250  # about half the windows
    np.testing.assert_allclose(rel[noisy, 0], rel[noisy, 1], rtol=0.5)  # relative to each channel's std
    assert 0.07 < np.median(rel[noisy, 0]) < 0.13 and rel.max() < 0.25  # U(0, 0.2)
    clean = before.copy()
    add_context_noise(clean, 60, AugmentConfig(), np.random.default_rng(1))
    np.testing.assert_array_equal(clean, before)  # off by default


def test_resample_subsamples_at_whole_factors_and_is_exact_for_cubics():
    from panda_fm.data.augment import resample, resample_extent

    t = np.arange(40, dtype=np.float64)
    x = np.stack([t**3 - 2 * t, np.sin(t)], axis=1)  # (40, 2)
    # a whole factor reads stored steps 1, 3, 5, ...
    np.testing.assert_array_equal(resample(x, 2.0, 10), x[1:20:2])
    # 4x finer: times 1, 1.25, 1.5, ...; the cubic through 4 steps reproduces a cubic
    fine = resample(x, 0.25, 12)
    times = 1 + 0.25 * np.arange(12)
    np.testing.assert_allclose(fine[:, 0], times**3 - 2 * times, rtol=1e-12, atol=1e-9)
    # a sine sampled at 1 step per radian: within the bound max|(u+1)u(u-1)(u-2)| / 4! = 0.0234
    np.testing.assert_allclose(fine[:, 1], np.sin(times), atol=0.0235)
    assert resample_extent(12, 0.25) == 6 and resample_extent(10, 1.0) == 10
    assert resample(x, 2.5, 14).shape == (14, 2) and resample_extent(14, 2.5) <= 40
    with pytest.raises(AssertionError, match="need"):
        resample(x[:20], 2.5, 14)
    np.testing.assert_array_equal(resample(x, 1.0, 7), x[:7])


def test_resample_factor_is_log_uniform_within_the_bounds():
    cfg = AugmentConfig(resample_rate=0.5, max_resample=4.0)
    rng = np.random.default_rng(0)
    factors = np.array([cfg.resample_factor(rng) for _ in range(4000)])
    changed = factors[factors != 1.0]
    assert 1800 < len(changed) < 2200
    assert changed.min() >= 0.25 and changed.max() <= 4.0
    assert abs(np.median(np.log(changed))) < 0.1  # as often finer as coarser
    before = np.random.default_rng(5)
    assert AugmentConfig().resample_factor(before) == 1.0
    assert before.random() == np.random.default_rng(5).random()  # off: draws nothing


def test_shorten_contexts_pads_with_nan_before_the_kept_steps():
    from panda_fm.data.augment import shorten_contexts

    batch = np.random.default_rng(0).normal(size=(300, 20, 2)).astype(np.float32)
    before = batch.copy()
    shorten_contexts(batch, 16, AugmentConfig(short_rate=0.5, min_context=6), np.random.default_rng(1))
    np.testing.assert_array_equal(batch[:, 16:], before[:, 16:])  # targets untouched
    missing = np.isnan(batch[:, :16, 0])  # (B, 16)
    np.testing.assert_array_equal(missing, np.isnan(batch[:, :16, 1]))  # every channel alike
    pad = missing.sum(axis=1)
    for b in range(300):  # a prefix is missing, the rest is the original
        assert not missing[b, pad[b] :].any()
        np.testing.assert_array_equal(batch[b, pad[b] :], before[b, pad[b] :])
    short = pad > 0
    assert 120 < short.sum() < 180 and pad.max() <= 10 and set(pad[short]) == set(range(1, 11))
    unchanged = before.copy()
    shorten_contexts(unchanged, 16, AugmentConfig(), np.random.default_rng(1))
    np.testing.assert_array_equal(unchanged, before)
