"""Probabilistic forecasts of the pipeline: quantiles, samples and the predictability horizon, in every input
form, on the tiny committed checkpoint (and the shipped one on a chaotic context)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.special import ndtr, ndtri

from panda_fm import MissingDataWarning, PandaPipeline
from panda_fm.eval.probabilistic import analogue_members
from panda_fm.uncertainty import (
    MAX_LAG_STRETCH,
    CalibrationConfig,
    ForecastDistribution,
    autocorrelation_time,
    context_lags,
    corrected,
    distribution_spread,
    extrapolated,
    horizon_spread,
    lag_stretch,
    lagged_members,
    lagged_spread,
    lead_corrected,
    lead_offset,
    lead_spread,
    learning_slope,
    noise_corrected,
    noise_level,
    observation_noise,
    spread_floors,
    varying_channels,
)
from tests.conftest import integrate

pd = pytest.importorskip("pandas")
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
H = 40


@pytest.fixture(scope="module")
def lorenz() -> np.ndarray:
    """``(600, 3)`` of a chaotic trajectory."""
    return integrate("Lorenz", 600, 1, periods=20.0)[0][0].astype(np.float64)


def _forms(x: np.ndarray) -> list[tuple[str, object, tuple[int, ...]]]:
    """(name, input, expected quantile shape) for every input form."""
    df = pd.DataFrame(x, columns=["x", "y", "z"])
    return [
        ("1-D numpy", x[:, 0], (H, len(LEVELS))),
        ("list of numbers", x[:, 0].tolist(), (H, len(LEVELS))),
        ("2-D numpy", x, (H, 3, len(LEVELS))),
        ("3-D numpy", np.stack([x, x[::-1].copy()]), (2, H, 3, len(LEVELS))),
        ("2-D torch", torch.from_numpy(x).float(), (H, 3, len(LEVELS))),
        ("list of arrays", [x, x[-300:]], (2, H, 3, len(LEVELS))),
        ("pandas Series", df["x"], (H, len(LEVELS))),
        ("DataFrame", df, (H, 3 * len(LEVELS))),
    ]


def test_quantiles_are_ordered_and_shaped_like_the_input_in_every_form(tiny_pipeline, lorenz) -> None:
    for name, value, shape in _forms(lorenz):
        q, mean = tiny_pipeline.predict_quantiles(value, H, LEVELS)
        point = tiny_pipeline.predict(value, H)
        assert type(q) is not list and tuple(q.shape) == shape, name
        assert type(mean) is type(point) and tuple(mean.shape) == tuple(point.shape), name
        values = q.to_numpy().reshape(H, -1, len(LEVELS)) if hasattr(q, "to_numpy") else np.asarray(q)
        assert np.isfinite(values).all(), name
        assert (np.diff(values, axis=-1) >= 0).all(), f"{name}: quantiles out of order"
        if isinstance(value, torch.Tensor):
            assert isinstance(q, torch.Tensor) and q.dtype == torch.float32


def test_a_dataframe_gives_a_column_per_channel_and_level_with_the_index_continued(
    tiny_pipeline, lorenz
) -> None:
    index = pd.date_range("2026-01-01", periods=len(lorenz), freq="h")
    df = pd.DataFrame(lorenz, columns=["x", "y", "z"], index=index)
    q, mean = tiny_pipeline.predict_quantiles(df, H, (0.1, 0.9))
    assert list(q.columns) == [(c, level) for c in ("x", "y", "z") for level in (0.1, 0.9)]
    assert q.index[0] == index[-1] + pd.Timedelta(hours=1) and (q.index == mean.index).all()
    assert (q["y"][0.1] <= q["y"][0.9]).all()
    horizon = tiny_pipeline.predictability_horizon(df, H)
    assert list(horizon.index) == ["x", "y", "z"] and ((horizon >= 0) & (horizon <= H)).all()
    with pytest.raises(ValueError, match="threshold must be positive"):
        tiny_pipeline.predictability_horizon(df, H, threshold=float("nan"))
    with pytest.raises(TypeError, match="calibration must be a CalibrationConfig"):
        tiny_pipeline.predict_quantiles(df, H, calibration={"inflation": 1.0})
    samples = tiny_pipeline.sample(df, H, num_samples=5)
    assert list(samples.columns) == [(c, k) for c in ("x", "y", "z") for k in range(5)]


def test_samples_agree_with_the_quantiles(tiny_pipeline, lorenz) -> None:
    q, mean = tiny_pipeline.predict_quantiles(lorenz, H, LEVELS)
    paths = tiny_pipeline.sample(lorenz, H, num_samples=4000, seed=1)  # (H, C, K)
    assert paths.shape == (H, 3, 4000)
    sd = lorenz.std(axis=0)[None, :, None]
    sampled = np.moveaxis(np.quantile(paths, LEVELS, axis=-1), 0, -1)  # (H, C, Q)
    assert np.abs((sampled - q) / sd).mean() < 0.03
    assert np.abs((paths.mean(axis=-1) - mean) / sd[..., 0]).max() < 0.1
    np.testing.assert_array_equal(paths, tiny_pipeline.sample(lorenz, H, num_samples=4000, seed=1))  # seeded


def test_predict_with_num_samples_gives_the_sample_paths(tiny_pipeline, lorenz) -> None:
    paths = tiny_pipeline.predict(lorenz, H, num_samples=7)  # the form of the sample paths
    assert paths.shape == (H, 3, 7)
    np.testing.assert_array_equal(paths, tiny_pipeline.sample(lorenz, H, 7))
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        tiny_pipeline.predict(lorenz, H, num_samples=0)


@pytest.mark.parametrize(
    ("combine", "scales", "noise"),
    [
        ("mixture", 1.0, 0.0),
        ("mixture", 0.0, 0.0),
        ("quantile", 0.0, 0.0),
        ("shifted", 1.25, 0.0),
        ("symmetric", 1.25, 0.0),
        ("split", 1.25, 0.0),
        ("mixture", 1.0, 0.3),
        ("quantile", 0.0, 0.3),
        ("shifted", 1.25, 0.3),
        ("symmetric", 1.25, 0.3),
        ("split", 1.25, 0.3),
    ],
)
def test_samples_agree_with_the_quantiles_for_every_shape(combine: str, scales: float, noise: float) -> None:
    rng = np.random.default_rng(0)
    context = np.cumsum(rng.standard_normal((2, 300, 2)), axis=1)
    context = (context - context.mean(axis=1, keepdims=True)) / context.std(axis=1, keepdims=True)
    point = np.repeat(context[:, -1:], 50, axis=1)  # (B, H, C)
    spread = np.broadcast_to(np.geomspace(0.01, 3.0, 50)[None, :, None], point.shape)  # crosses saturation
    dist = ForecastDistribution(
        point, spread, context, combine, scales, noise=np.array([[noise, noise / 2]] * 2) if noise else None
    )
    levels = np.array(LEVELS)
    q = dist.quantiles(levels)  # (B, H, C, Q)
    assert (np.diff(q, axis=-1) >= 0).all()
    paths = dist.sample(8000, np.random.default_rng(1))  # (B, K, H, C)
    sampled = np.moveaxis(np.quantile(paths, levels, axis=1), 0, -1)
    assert np.abs(sampled - q).mean() < 0.03
    np.testing.assert_allclose(paths.mean(axis=1), dist.mean, atol=0.1)


def test_observation_noise_widens_the_gaussian_part_in_quadrature() -> None:
    """An observation's distribution: the spread s and the noise nu add in quadrature, one Gaussian
    (scale_spread 0) or each scale of the mixture; the mean is the state's, the median the point forecast."""
    context = np.random.default_rng(0).standard_normal((1, 400, 2))
    point = np.zeros((1, 3, 2))
    spread = np.broadcast_to(np.array([0.01, 0.1, 0.3])[None, :, None], point.shape)
    nu = np.array([[0.2, 0.0]])
    dist = ForecastDistribution(point, spread, context, "split", 0.0, noise=nu)
    q = dist.quantiles(np.array([0.1, 0.5, 0.9]))  # (1, 3, 2, 3)
    # by hand: the climatology's weight s^2 / 2 is at most 0.045 here, so the 0.9 level is nearly the Gaussian's
    width = ndtri(0.9) * np.sqrt(spread**2 + nu[:, None] ** 2)
    np.testing.assert_allclose(q[0, 0, :, 2], width[0, 0], rtol=1e-3)  # s = 0.01: w = 5e-5
    np.testing.assert_array_equal(q[..., 1], point)
    state = ForecastDistribution(point, spread, context, "split", 0.0)
    np.testing.assert_array_equal(dist.mean, state.mean)  # noise of mean 0
    np.testing.assert_array_equal(q[:, :, 1], state.quantiles(np.array([0.1, 0.5, 0.9]))[:, :, 1])  # nu 0
    mixed = ForecastDistribution(point, spread, context, "mixture", 1.25, noise=nu)
    x = np.full((1, 3, 2), 0.15)
    a = 1.25 * np.sqrt(3.0)
    parts = [(np.exp(-a), 1 / 6), (1.0, 2 / 3), (np.exp(a), 1 / 6)]
    gauss = sum(p * ndtr(0.15 / np.sqrt((spread * f) ** 2 + nu[:, None] ** 2)) for f, p in parts)
    w = np.minimum(spread**2 / 2, 1)
    climatology = (np.sort(context[0], axis=0) <= 0.15).mean(axis=0)  # (C,) nearly: the grid is 512 points
    np.testing.assert_allclose(mixed.cdf(x), (1 - w) * gauss + w * climatology, atol=2e-3)
    with pytest.raises(ValueError, match="noise must be shaped"):
        ForecastDistribution(point, spread, context, "split", 0.0, noise=np.zeros(2))


def test_observation_noise_is_the_noise_level_bounded_by_the_one_step_errors() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    smooth = np.sin(2 * np.pi * t / 100)[:, None]
    x = np.stack([smooth + 0.1 * rng.standard_normal(smooth.shape), smooth])  # (2, T, 1)
    errors = np.full((2, 3, 8, 1), np.nan)
    errors[0, :, 0] = 0.12  # a noisy target is in every lead-1 error: they exceed the noise
    errors[1, :, 0] = 1e-9
    nu = observation_noise(x, errors)
    np.testing.assert_allclose(nu[0], noise_level(x)[0])
    assert nu[0, 0] == pytest.approx(0.1, rel=0.1)
    # a rough deterministic series (the logistic map) reads a large noise level; exact one-step forecasts cap it
    r = np.empty(2000)
    r[0] = 0.3
    for i in range(1999):
        r[i + 1] = 3.9 * r[i] * (1 - r[i])
    rough = np.stack([r[:, None], r[:, None]])
    first = np.full((2, 3, 8, 1), np.nan)
    first[0, :, 0], first[1, :, 0] = 1e-9, 5.0  # series 0 exact at lead 1, series 1 far off
    capped = observation_noise(rough, first)
    assert noise_level(rough)[0, 0] > 0.1 and capped[0, 0] == 1e-9
    assert capped[1, 0] == noise_level(rough)[1, 0]
    no_first = np.full((1, 3, 8, 1), np.nan)  # no lead-1 error measured: the noise level
    np.testing.assert_allclose(observation_noise(x[:1], no_first), noise_level(x[:1]))


def test_the_pipeline_observes_noise_only_where_the_context_has_it(tiny_pipeline, lorenz) -> None:
    observed = replace(tiny_pipeline.calibration, observation_noise=True)
    clean_state, _ = tiny_pipeline.predict_quantiles(lorenz, H, LEVELS)
    clean_observed, _ = tiny_pipeline.predict_quantiles(lorenz, H, LEVELS, calibration=observed)
    sd = lorenz.std(axis=0)
    # a clean context reads almost no noise (well under its one-step errors): the same quantiles
    assert np.abs((clean_observed - clean_state) / sd[:, None]).max() < 1e-3
    noisy = lorenz + 0.1 * sd * np.random.default_rng(3).standard_normal(lorenz.shape)
    state, _ = tiny_pipeline.predict_quantiles(noisy, H, LEVELS)
    obs, _ = tiny_pipeline.predict_quantiles(noisy, H, LEVELS, calibration=observed)
    np.testing.assert_array_equal(obs[..., 2], state[..., 2])  # the median is the point forecast
    assert ((obs[..., -1] - obs[..., 0]) >= (state[..., -1] - state[..., 0]) - 1e-9).all()
    # at lead 1 the 80% interval of an observation is at least that of the noise alone (0.1 context stds)
    assert ((obs[0, :, -1] - obs[0, :, 0]) / sd > 0.8 * 2 * ndtri(0.9) * 0.1).all()


def test_spread_grows_with_lead_and_crosses_the_threshold_on_chaos(lorenz) -> None:
    pipe = PandaPipeline.from_pretrained("panda-fm-small")
    torch.set_num_threads(1)
    dist, loc, scale = pipe.forecast_distribution(lorenz[None, :512], 256)
    assert dist.spread.shape == (1, 256, 3) and (np.diff(dist.spread, axis=1) >= 0).all()
    assert dist.spread[0, 0].max() < 0.2 < dist.spread[0, -1].min()  # a small error first, large later
    horizon = pipe.predictability_horizon(lorenz[:512], 256)
    assert horizon.shape == (3,) and 0 < horizon.min() and horizon.max() < 256
    np.testing.assert_array_equal(horizon, dist.horizon()[0])
    # the default horizon is the lagged ensemble's: the same forecast from the context cut 1, 2, 4, 8 steps short
    members = np.stack([pipe.predict(lorenz[None, : 512 - g], 256 + g)[:, g:] for g in (1, 2, 4, 8)], axis=1)
    by_hand = lagged_spread((members - loc[:, None]) / scale[:, None], dist.point)
    # corrected for the context's noise level (a clean context of 30 steps a period reads a little)
    nu2 = noise_level(dist.context)[:, None] ** 2
    assert 0 < nu2.max() < 1e-4
    cal = pipe.calibration
    by_hand = by_hand / np.sqrt(1 + nu2 / (nu2 + cal.lagged_noise_scale**2))
    # and for the members' longer leads: an error growing as lead^p, above k times the noise level
    h = np.arange(1, 257)[:, None]
    offset = np.mean(((h + np.array([1, 2, 4, 8])) / h) ** (2 * cal.lagged_lead_power), axis=1)[:, None]
    floor2 = np.minimum(cal.lagged_noise_floor**2 * nu2, by_hand**2)
    by_hand = np.sqrt((by_hand**2 - floor2) / offset + floor2)
    np.testing.assert_allclose(dist.horizon_spread, by_hand, rtol=1e-4, atol=1e-5)
    calibrated = pipe.predictability_horizon(
        lorenz[:512], 256, calibration=CalibrationConfig(horizon="spread")
    )
    # the default spread blends the in-context spread with the same lagged ensemble's disagreement (then keeps a
    # floor on wider series, spread_floor_wide: below; off here)
    b = pipe.calibration.lagged_blend
    assert 0 < b < 1
    unfloored = replace(pipe.calibration, spread_floor_wide=0.0)
    plain, _, _ = pipe.forecast_distribution(lorenz[None, :512], 256, calibration=unfloored)
    bare, _, _ = pipe.forecast_distribution(
        lorenz[None, :512], 256, calibration=replace(unfloored, lagged_blend=0.0)
    )
    # the "spread" horizon reads the in-context spread (before the blend): it crosses too, at its own leads
    assert (bare.spread[0] > 0.5).any(axis=0).all()
    np.testing.assert_array_equal(calibrated, (bare.spread[0] <= 0.5).sum(axis=0))
    blend = bare.spread ** (1 - b) * np.maximum(by_hand, 1e-5) ** b
    np.testing.assert_allclose(plain.spread, blend, rtol=1e-4, atol=1e-5)
    assert np.abs(np.log(plain.spread / bare.spread)).max() > 0.1  # the blend moves it
    # a lagged floor: the spread is at least k times that disagreement
    floored, _, _ = pipe.forecast_distribution(
        lorenz[None, :512], 256, calibration=replace(unfloored, lagged_floor=2.0)
    )
    np.testing.assert_allclose(floored.spread, np.maximum(plain.spread, 2.0 * by_hand), rtol=1e-4, atol=1e-5)
    assert (floored.spread > plain.spread + 1e-3).any()
    # a spread floor: at least kappa times the in-context spread on a series of at most spread_floor_channels
    # varying channels; this 3-channel context is left alone by the default limit of 2
    kept = np.maximum(plain.spread, 0.5 * bare.spread)
    assert (kept > plain.spread + 1e-3).any()
    for limit, expected in ((2, plain.spread), (3, kept)):
        cal = replace(unfloored, spread_floor=0.5, spread_floor_channels=limit)
        floored, _, _ = pipe.forecast_distribution(lorenz[None, :512], 256, calibration=cal)
        np.testing.assert_allclose(floored.spread, expected, rtol=1e-4, atol=1e-5)
    # a floor on wider series (spread_floor_wide) where the context's learning curve is at least the gate: the
    # gate just under and just over this context's own slope; the default (0.2 from -1.0) by hand
    _, errors, prefix, *_ = pipe.incontext_errors(lorenz[:512], 256)
    slope = learning_slope(errors, prefix)[0]
    for gate, expected in ((slope - 0.01, kept), (slope + 0.01, plain.spread)):
        cal = replace(pipe.calibration, spread_floor_wide=0.5, spread_floor_wide_slope=gate)
        floored, _, _ = pipe.forecast_distribution(lorenz[None, :512], 256, calibration=cal)
        np.testing.assert_allclose(floored.spread, expected, rtol=1e-4, atol=1e-5)
    gated = slope >= pipe.calibration.spread_floor_wide_slope
    expected = (
        np.maximum(plain.spread, pipe.calibration.spread_floor_wide * bare.spread) if gated else plain.spread
    )
    np.testing.assert_allclose(dist.spread, expected, rtol=1e-4, atol=1e-5)


def test_distribution_spread_by_hand() -> None:
    spread = np.array([0.1, 0.2, 0.3]).reshape(1, 3, 1)
    lagged = np.array([0.0, 0.3, 0.1]).reshape(1, 3, 1)
    cfg = CalibrationConfig(lagged_floor=2.0, lagged_blend=0.0, spread_floor=0.0, spread_floor_wide=0.0)
    np.testing.assert_allclose(distribution_spread(spread, lagged, cfg)[0, :, 0], [0.1, 0.6, 0.3])
    # a geometric blend, half each: sqrt(spread * lagged), a lagged spread of 0 counted as min_spread (1e-5)
    half = replace(cfg, lagged_floor=0.0, lagged_blend=0.5)
    np.testing.assert_allclose(
        distribution_spread(spread, lagged, half)[0, :, 0], [1e-3, 0.06**0.5, 0.03**0.5]
    )
    np.testing.assert_allclose(
        distribution_spread(spread, lagged, replace(half, lagged_blend=1.0)), [[[1e-5], [0.3], [0.1]]]
    )
    # blended, then floored
    np.testing.assert_allclose(
        distribution_spread(spread, lagged, replace(half, lagged_floor=2.0))[0, :, 0], [1e-3, 0.6, 0.2]
    )
    # blended, then kept at least its floor (spread_floors) times the in-context spread: sqrt(0.1 * 1e-5) = 1e-3
    # < 0.5 * 0.1; a floor of 1.5 lifts every lead; a floor of 0 (a series it does not apply to) none
    floored = replace(half, spread_floor=0.5)
    np.testing.assert_allclose(
        distribution_spread(spread, lagged, floored, np.array([0.5]))[0, :, 0], [0.05, 0.06**0.5, 0.03**0.5]
    )
    np.testing.assert_allclose(
        distribution_spread(spread, lagged, floored, np.array([1.5]))[0, :, 0], [0.15, 0.3, 0.45]
    )
    np.testing.assert_allclose(
        distribution_spread(spread, lagged, floored, np.array([0.0])),
        distribution_spread(spread, lagged, half),
    )
    with pytest.raises(ValueError, match="spread floor needs each series' floor"):
        distribution_spread(spread, lagged, floored)
    with pytest.raises(ValueError, match="spread floor needs each series' floor"):  # a wide floor alone too
        distribution_spread(spread, lagged, replace(half, spread_floor_wide=0.2))
    off = replace(cfg, lagged_floor=0.0)
    assert distribution_spread(spread, None, off) is spread and not off.lagged_in_distribution
    with pytest.raises(ValueError, match="lagged blend or floor needs"):
        distribution_spread(spread, None, cfg)
    with pytest.raises(ValueError, match="lagged blend or floor needs"):
        distribution_spread(spread, None, half)
    with pytest.raises(ValueError, match="lagged_floor must be"):
        CalibrationConfig(lagged_floor=-1.0)
    with pytest.raises(
        ValueError, match="spread_floor, spread_floor_wide and spread_floor_stretch_power must be"
    ):
        CalibrationConfig(spread_floor=-0.5)
    with pytest.raises(ValueError, match="spread_floor_wide and spread_floor_stretch_power must be >= 0"):
        CalibrationConfig(spread_floor_wide=-0.3)
    with pytest.raises(ValueError, match="spread_floor_channels >= 1"):
        CalibrationConfig(spread_floor_channels=0)
    with pytest.raises(ValueError, match="spread_floor_stretch_power must be >= 0"):
        CalibrationConfig(spread_floor_stretch_power=-1.0)

    with pytest.raises(ValueError, match="lagged_blend must be"):
        CalibrationConfig(lagged_blend=1.5)
    with pytest.raises(ValueError, match="lags must be positive"):
        CalibrationConfig(horizon="spread", lags=(), lagged_floor=0.5)
    with pytest.raises(ValueError, match="lags must be positive"):
        CalibrationConfig(horizon="spread", lags=())  # the default blend reads the lagged ensemble
    assert CalibrationConfig(horizon="spread", lagged_blend=0.0).needs_lagged is False and cfg.needs_lagged


def test_varying_channels_counts_channels_that_move() -> None:
    t = np.linspace(0, 6, 50)
    x = np.stack([np.sin(t), np.full_like(t, 2.0), np.cos(t)], axis=-1)[None].repeat(2, axis=0)  # (2, 50, 3)
    x[1, :, 0] = np.nan  # a channel never observed
    x[1, :10, 2] = np.nan  # a gap: still varying
    np.testing.assert_array_equal(varying_channels(x), [2, 1])
    # the floor applies to series of 1-2 varying channels (both of x), not to those of more (a gap or not); these
    # series are unstretched (an autocorrelation time of a few steps), so the floor is kappa whatever the power
    cal = CalibrationConfig(spread_floor=0.5, spread_floor_wide=0.0)
    assert (lag_stretch(cal, x) == 1).all()
    np.testing.assert_array_equal(spread_floors(cal, x), [0.5, 0.5])
    np.testing.assert_array_equal(spread_floors(replace(cal, spread_floor_stretch_power=2.0), x), [0.5, 0.5])
    x3 = np.stack([np.sin(t), np.cos(t), np.sin(2 * t)], axis=-1)[None].repeat(2, axis=0)
    x3[1, ::5, 1] = np.nan
    np.testing.assert_array_equal(spread_floors(cal, x3), [0.0, 0.0])
    np.testing.assert_array_equal(spread_floors(replace(cal, spread_floor_channels=3), x3), [0.5, 0.5])
    # a floor of its own on the wider series where the in-context errors do not fall steeply with the prefix
    # (errors by hand: rms proportional to prefix^-2 on the first series, flat on the second); not stretched
    prefix = np.array([192, 256, 320, 384, 448])
    errors = (
        np.ones((2, 5, 16, 3))
        * (prefix / 448.0)[None, :, None, None] ** np.array([-2.0, 0.0])[:, None, None, None]
    )
    wide = replace(cal, spread_floor_wide=0.3)
    np.testing.assert_array_equal(spread_floors(wide, x3, errors, prefix), [0.0, 0.3])
    np.testing.assert_array_equal(
        spread_floors(replace(wide, spread_floor_wide_slope=-2.5), x3, errors, prefix), [0.3, 0.3]
    )
    np.testing.assert_array_equal(
        spread_floors(wide, x, errors[:, :, :, :1], prefix), [0.5, 0.5]
    )  # 1-2 channels
    with pytest.raises(ValueError, match="wide spread floor needs the in-context errors"):
        spread_floors(wide, x3)


def test_learning_slope_by_hand() -> None:
    """The slope of the log root mean square error over leads 1-16 against the log prefix, pooled over channels,
    over the origins that measured an error: exact for errors that scale as a power of the prefix."""
    rng = np.random.default_rng(0)
    prefix = np.array([192, 256, 320, 384, 448])
    pattern = np.sign(
        rng.standard_normal((3, 1, 32, 2))
    )  # one error pattern of unit size scaled along the origins
    powers = np.array([-2.0, 0.0, 0.5])
    errors = pattern * (prefix / 448.0)[None, :, None, None] ** powers[:, None, None, None]
    np.testing.assert_allclose(learning_slope(errors, prefix), powers, atol=1e-12)
    errors[:, :, 16:] = 1e6  # leads past 16 are not read
    errors[0, 3:] = np.nan  # two origins unmeasured: the slope of the other three
    errors[1, 1:] = np.nan  # one origin left: no slope
    errors[2, 4, :4] = np.nan  # an origin's measured leads are averaged
    slopes = learning_slope(errors, prefix)
    np.testing.assert_allclose(slopes[[0, 2]], powers[[0, 2]], atol=1e-12)
    assert np.isnan(slopes[1])
    # by hand: rms e at prefixes 192 and 448 as 1 and 0.5 -> slope log(0.5) / log(448 / 192)
    e = np.stack([np.ones((16, 1)), np.full((16, 1), 0.5)])[None]  # (1, 2, 16, 1)
    np.testing.assert_allclose(learning_slope(e, np.array([192, 448])), np.log(0.5) / np.log(448 / 192))


def test_spread_floor_grows_with_the_lag_stretch() -> None:
    """On a finely sampled series (lags stretched by ``tau / lag_timescale``) the floor is ``kappa`` times the
    stretch to ``spread_floor_stretch_power``, capped with the stretch at MAX_LAG_STRETCH."""
    t = np.arange(512)
    x = np.stack([np.sin(2 * np.pi * t / p) for p in (200.0, 300.0, 3000.0)])[:, :, None]  # (3, 512, 1)
    cal = CalibrationConfig(spread_floor=0.5, spread_floor_stretch_power=1.0)
    stretch = lag_stretch(cal, x)
    tau = autocorrelation_time(x)
    np.testing.assert_allclose(stretch[:2], tau[:2] / cal.lag_timescale)
    assert 1 < stretch[0] < stretch[1] < MAX_LAG_STRETCH == stretch[2]
    np.testing.assert_allclose(spread_floors(cal, x), 0.5 * stretch)
    np.testing.assert_allclose(
        spread_floors(replace(cal, spread_floor_stretch_power=0.5), x), 0.5 * stretch**0.5
    )
    np.testing.assert_array_equal(spread_floors(replace(cal, spread_floor_stretch_power=0.0), x), 0.5)


def test_noise_level_by_hand() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(4000)
    smooth = np.stack([np.sin(2 * np.pi * t / 30), np.cos(2 * np.pi * t / 120)], axis=1)  # (T, 2)
    sigma = np.array([0.05, 0.2])
    noisy = smooth + sigma * rng.standard_normal(smooth.shape)
    x = np.stack([smooth, noisy, noisy])
    x[2, 1000:1100, 0] = np.nan  # a gap: its differences are skipped
    x[2, :, 1] = np.nan  # a channel without values
    nu = noise_level(x)
    assert nu.shape == (3, 2)
    # a sinusoid of 30 steps a period keeps (2 sin(pi / 30))^6 of its amplitude in its sixth differences
    assert nu[0].max() < (2 * np.sin(np.pi / 30)) ** 6
    np.testing.assert_allclose(nu[1], sigma, rtol=0.1)
    assert nu[2, 0] == pytest.approx(nu[1, 0], rel=0.05) and nu[2, 1] == 0.0
    # the lagged ensemble's correction on a noisy context: divided by sqrt(1 + nu^2 / (nu^2 + c^2))
    point = np.zeros((1, 3, 2))
    lagged = np.full((1, 3, 2), 0.4)
    errors = np.full((1, 1, 3, 2), 0.3)
    cfg = CalibrationConfig(
        lagged_blend=1.0, lagged_noise_scale=0.05, horizon="lagged", lagged_lead_power=0.0
    )
    dist = ForecastDistribution.calibrated(
        point, errors, np.array([200]), x[1:2], cfg, lagged, with_horizon=True
    )
    nu2 = noise_level(x[1:2])[0] ** 2
    expected = 0.4 / np.sqrt(1 + nu2 / (nu2 + 0.05**2))
    assert expected[0] == pytest.approx(0.4 / np.sqrt(1.5), rel=0.05)  # nu = c: half the correction
    np.testing.assert_allclose(dist.spread[0], np.broadcast_to(expected, (3, 2)))
    np.testing.assert_allclose(dist.horizon_spread[0], np.broadcast_to(expected, (3, 2)))
    off = ForecastDistribution.calibrated(
        point, errors, np.array([200]), x[1:2], replace(cfg, lagged_noise_scale=0.0), lagged
    )
    np.testing.assert_allclose(off.spread, lagged)
    with pytest.raises(ValueError, match="lagged_noise_scale must be"):
        CalibrationConfig(lagged_noise_scale=-0.1)
    # a context under min_context observed steps reads short_lagged_noise_scale: by default no correction
    short = np.concatenate([np.full((1, 400, 2), np.nan), x[1:2, -112:]], axis=1)  # 112 observed of 512
    both = np.concatenate([x[1:2, -512:], short])
    lagged2 = np.full((2, 3, 2), 0.4)
    out = noise_corrected(lagged2, both, cfg)
    nu2 = noise_level(both)[:, None] ** 2
    np.testing.assert_allclose(out[0], 0.4 / np.sqrt(1 + nu2[0] / (nu2[0] + 0.05**2)) * np.ones((3, 2)))
    np.testing.assert_array_equal(out[1], lagged2[1])
    out = noise_corrected(lagged2, both, replace(cfg, short_lagged_noise_scale=0.05))
    np.testing.assert_allclose(out[1], 0.4 / np.sqrt(1 + nu2[1] / (nu2[1] + 0.05**2)) * np.ones((3, 2)))
    # where "short" ends is a setting of its own: from 100 steps on, the 112-step context is corrected too
    out = noise_corrected(lagged2, both, replace(cfg, lagged_noise_min_context=100))
    np.testing.assert_allclose(out[1], 0.4 / np.sqrt(1 + nu2[1] / (nu2[1] + 0.05**2)) * np.ones((3, 2)))
    out = noise_corrected(
        lagged2, both, replace(cfg, lagged_noise_min_context=600)
    )  # and the 512-step one not
    np.testing.assert_array_equal(out, lagged2)
    with pytest.raises(ValueError, match="lagged_noise_min_context must be"):
        CalibrationConfig(lagged_noise_min_context=0)


def test_lead_corrected_undoes_the_members_lead_offset() -> None:
    """Members whose error grows as lead^p: the corrected disagreement is the error at the point's own lead."""
    t = np.arange(512, dtype=np.float64)
    smooth = np.sin(2 * np.pi * t / 200)[None, :, None]  # noise level about 1e-9 context stds
    lags, p, H = (1, 2, 4, 8), 1.5, 64
    h = np.arange(1, H + 1, dtype=np.float64)
    members = np.stack([0.01 * (h + g) ** p for g in lags])[None, :, :, None]  # (1, K, H, 1): lead h + g
    lagged = lagged_spread(members, np.zeros((1, H, 1)))
    cfg = CalibrationConfig(lags=lags, lagged_lead_power=p, lag_timescale=0.0)  # the members' own lags
    offset = lead_offset(cfg, H)
    np.testing.assert_allclose(lead_corrected(lagged, smooth, cfg, offset)[0, :, 0], 0.01 * h**p, rtol=1e-6)
    none = replace(cfg, lagged_lead_power=0.0)
    assert lead_corrected(lagged, smooth, none, lead_offset(none, H)) is lagged
    # a disagreement at most k nu (a noisy context's, flat in lead) is left as it is; above it, only the excess
    noisy = smooth + np.random.default_rng(0).normal(0, 0.05, smooth.shape)
    k_nu = cfg.lagged_noise_floor * noise_level(noisy)[0, 0]
    flat = np.full((1, H, 1), 0.9 * k_nu)
    np.testing.assert_allclose(lead_corrected(flat, noisy, cfg, offset), flat)
    above = lead_corrected(flat + lagged, noisy, cfg, offset)[0, :, 0]
    assert np.all(above >= 0.9 * k_nu) and np.all(above < (flat + lagged)[0, :, 0])
    assert np.all(np.diff(above) >= 0)
    # the distribution reads both corrections, noise first
    both = corrected(lagged, noisy, cfg)
    np.testing.assert_allclose(both, lead_corrected(noise_corrected(lagged, noisy, cfg), noisy, cfg, offset))
    with pytest.raises(ValueError, match="lagged_lead_power and lagged_noise_floor must be"):
        CalibrationConfig(lagged_lead_power=-1.0)


def test_measured_lead_offset_follows_the_in_context_error_growth() -> None:
    """In-context errors growing as lead^p give the power's offset; flat (noise-driven) ones give none."""
    lags, p, H = (1, 2, 4, 8), 1.5, 64
    M = H + max(lags)
    lead = np.arange(1, M + 1, dtype=np.float64)
    growing = np.broadcast_to(0.01 * lead[None, None, :, None] ** p, (1, 3, M, 2)).copy()
    cfg = CalibrationConfig(
        lags=lags, lagged_lead_measured=True, lagged_lead_power=0.0, smoothing=0.0, lag_timescale=0.0
    )
    prefix = np.array([300, 250, 200])
    np.testing.assert_allclose(
        lead_offset(cfg, H, growing, prefix)[0],
        np.broadcast_to(
            lead_offset(replace(cfg, lagged_lead_measured=False, lagged_lead_power=p), H)[0], (H, 2)
        ),
        rtol=1e-9,
    )
    flat = np.full((1, 3, M, 2), 0.05)
    np.testing.assert_allclose(lead_offset(cfg, H, flat, prefix), 1.0)
    lagged = np.full((1, H, 2), 0.3)
    smooth = np.repeat(np.sin(2 * np.pi * np.arange(512) / 200)[None, :, None], 2, axis=2)  # noise ~1e-9
    np.testing.assert_allclose(
        corrected(lagged, smooth, cfg, growing, prefix), 0.3 / np.sqrt(lead_offset(cfg, H, growing, prefix))
    )
    with pytest.raises(ValueError, match="needs the in-context errors"):
        lead_offset(cfg, H)
    with pytest.raises(ValueError, match="set one"):
        CalibrationConfig(lagged_lead_measured=True, lagged_lead_power=1.0)


def test_extrapolated_spread_grows_on_at_the_measured_rate_up_to_a_lost_forecast() -> None:
    measured = np.geomspace(0.01, 0.08, 64)  # three doublings over 64 leads: log(2) per 21 steps...
    spread = np.concatenate([measured, np.full(192, 0.08)])[
        None, :, None
    ]  # ...then held, as lead_spread does
    rate = np.log(0.08 / measured[31]) / 32  # the last measured octave, leads 32..64
    grown = extrapolated(spread, np.array([64]), 1.0, 0.99)[0, :, 0]
    np.testing.assert_allclose(grown[:64], measured)
    np.testing.assert_allclose(grown[64:80], 0.08 * np.exp(rate * np.arange(1, 17)))
    assert grown[-1] == 0.99 and np.all(np.diff(grown) >= 0)
    half = extrapolated(spread, np.array([64]), 0.5, 0.99)[0, :, 0]
    np.testing.assert_allclose(half[64:80], 0.08 * np.exp(0.5 * rate * np.arange(1, 17)))
    # measured to the end, or an error that did not grow: the spread as it was
    np.testing.assert_array_equal(extrapolated(spread, np.array([256]), 1.0, 0.99), spread)
    np.testing.assert_array_equal(extrapolated(np.full((1, 256, 1), 0.3), np.array([64]), 1.0, 0.99), 0.3)
    # never below the held value, even above the ceiling
    np.testing.assert_array_equal(extrapolated(np.full((1, 99, 1), 2.0), np.array([64]), 1.0, 0.99), 2.0)
    with pytest.raises(ValueError, match="extrapolation must be"):
        CalibrationConfig(extrapolation=-1.0)


def test_lead_spread_by_hand() -> None:
    errors = np.full((1, 2, 4, 1), np.nan)
    errors[0, 0, :4, 0] = [0.1, 0.2, 0.3, 0.4]
    errors[0, 1, :2, 0] = [0.3, 0.2]
    cfg = CalibrationConfig(
        smoothing=0.0,
        channel_pooling=0.0,
        min_spread=0.01,
        average="rms",
        recency=0.0,
        inflation=1.0,
        noise_inflation=0.0,
        extrapolation=0.0,
    )
    spread = lead_spread(errors, 6, cfg)[0, :, 0]
    # lead 1: rms(0.1, 0.3); lead 2: rms(0.2, 0.2) is smaller, so the lead-1 value holds; then 0.3, 0.4, 0.4...
    np.testing.assert_allclose(spread, [np.sqrt(0.05), np.sqrt(0.05), 0.3, 0.4, 0.4, 0.4])
    # ...or past lead 4, the longest measured, on at the rate of leads 2..4
    rate = np.log(0.4 / np.sqrt(0.05)) / 2
    grown = lead_spread(errors, 6, replace(cfg, extrapolation=1.0))[0, :, 0]
    np.testing.assert_allclose(grown, [*spread[:4], 0.4 * np.exp(rate), 0.4 * np.exp(2 * rate)])
    weighted = lead_spread(errors, 1, replace(cfg, recency=1.0), prefix=np.array([100, 300]))[0, 0, 0]
    assert weighted == pytest.approx(np.sqrt((0.01 * 1 / 3 + 0.09) / (1 / 3 + 1)))
    # the noise level: the RMS of the errors at leads 1-4 over origins, sqrt((0.01+0.04+0.09+0.16+0.09+0.04)/6)
    nu = np.sqrt(0.43 / 6)
    noisy = lead_spread(errors, 6, replace(cfg, noise_inflation=2.0))[0, :, 0]
    np.testing.assert_allclose(noisy, spread * (1 + 2.0 * nu))
    with pytest.raises(ValueError, match="noise_inflation must be"):
        CalibrationConfig(noise_inflation=-1.0)
    # geometric: lead 1 sqrt(sqrt(0.01 * 0.09)); lead 2 both 0.04
    geometric = lead_spread(errors, 4, replace(cfg, average="log"))[0, :, 0]
    np.testing.assert_allclose(geometric, [np.sqrt(0.03), 0.2, 0.3, 0.4])
    assert lead_spread(np.zeros((1, 2, 4, 1)), 4, replace(cfg, average="log")).min() == pytest.approx(0.01)


def test_a_series_spread_past_its_longest_measured_lead_ignores_the_batch() -> None:
    """A short context measures 16 leads; in a batch with a long one the errors run to lead 64 (NaN past 16 for it),
    and its smoothed spread there must be what it is alone, not windows over ever fewer of its last leads."""
    rng = np.random.default_rng(0)
    short = np.full((1, 1, 16, 2), np.nan)
    short[0, 0] = np.abs(rng.standard_normal((16, 2))) * np.linspace(0.1, 1.0, 16)[:, None]
    batch = np.full((2, 1, 64, 2), np.nan)
    batch[0, :, :16] = short[0]
    batch[1] = np.abs(rng.standard_normal((1, 64, 2)))
    for extrapolation in (0.0, 1.0):
        cfg = CalibrationConfig(smoothing=0.5, extrapolation=extrapolation)
        alone = lead_spread(short, 40, cfg)
        np.testing.assert_allclose(lead_spread(batch, 40, cfg)[:1], alone, rtol=1e-12)


def test_saturated_spread_gives_the_climatology() -> None:
    rng = np.random.default_rng(0)
    context = rng.standard_normal((1, 4000, 1))
    for combine in ("mixture", "quantile"):
        dist = ForecastDistribution(np.full((1, 3, 1), 5.0), np.full((1, 3, 1), 2.0), context, combine)
        q = dist.quantiles(np.array([0.1, 0.5, 0.9]))[0, :, 0]  # (H, Q)
        np.testing.assert_allclose(q, np.tile([-1.2816, 0.0, 1.2816], (3, 1)), atol=0.08)
        np.testing.assert_allclose(dist.mean, 0.0, atol=0.05)


def test_saturated_shifted_and_symmetric_keep_the_point_as_median() -> None:
    rng = np.random.default_rng(0)
    context = rng.standard_normal((1, 4000, 1))  # climatology N(0, 1); the point forecast is 5
    point, spread = np.full((1, 3, 1), 5.0), np.full((1, 3, 1), 2.0)
    levels = np.array([0.1, 0.5, 0.9])
    shifted = ForecastDistribution(point, spread, context, "shifted").quantiles(levels)[0, :, 0]
    np.testing.assert_allclose(shifted, np.tile([5 - 1.2816, 5.0, 5 + 1.2816], (3, 1)), atol=0.08)
    # half N(0, 1), half its reflection N(10, 1): P(X <= q) = 0.1 where Phi(q) = 0.2
    symmetric = ForecastDistribution(point, spread, context, "symmetric")
    np.testing.assert_allclose(
        symmetric.quantiles(levels)[0, :, 0], np.tile([-0.8416, 5.0, 10.8416], (3, 1)), atol=0.08
    )
    np.testing.assert_array_equal(symmetric.mean, point)


def test_saturated_split_climatology_keeps_the_point_as_median_and_the_attractor() -> None:
    rng = np.random.default_rng(0)
    context = rng.standard_normal((1, 20000, 1))  # climatology N(0, 1)
    levels = np.array([0.1, 0.5, 0.9])
    # the point inside the climatology, at 1: Phi(1) = 0.8413 of it below, weighted to 1/2, the rest to 1/2
    inside = ForecastDistribution(np.full((1, 2, 1), 1.0), np.full((1, 2, 1), 2.0), context, "split")
    # P(X <= q) = 0.5 Phi(q) / 0.8413 = 0.1 below; 0.5 + 0.5 (Phi(q) - 0.8413) / 0.1587 = 0.9 above
    np.testing.assert_allclose(
        inside.quantiles(levels)[0, :, 0], np.tile([-0.961, 1.0, 1.857], (2, 1)), atol=0.06
    )  # the climatology is a grid of 256 quantiles: 0.055 apart in the tail near 1.86
    # mean: half E[X | X < 1] = -phi(1) / Phi(1), half E[X | X > 1] = phi(1) / (1 - Phi(1))
    np.testing.assert_allclose(inside.mean, 0.5 * (-0.2420 / 0.8413 + 0.2420 / 0.1587), atol=0.02)
    # the point beyond every value, at 5: the climatology is the lower half, the upper half sits at the point
    beyond = ForecastDistribution(np.full((1, 2, 1), 5.0), np.full((1, 2, 1), 2.0), context, "split")
    np.testing.assert_allclose(
        beyond.quantiles(levels)[0, :, 0], np.tile([-0.8416, 5.0, 5.0], (2, 1)), atol=0.03
    )
    np.testing.assert_allclose(beyond.mean, 2.5, atol=0.02)
    # no mass outside the attractor's range and the point (the reflection puts half of it near 2 - x)
    q = inside.quantiles(np.array([0.01, 0.99]))[0, :, 0]
    assert q.min() >= context.min() and q.max() <= context.max()


def test_analogue_members_continue_the_nearest_earlier_states() -> None:
    t = np.arange(500)
    context = np.stack([np.sin(2 * np.pi * t / 50), np.cos(2 * np.pi * t / 50)], axis=-1)[None]  # period 50
    members = analogue_members(context, 120, k=4)
    assert members.shape == (1, 4, 120, 2)
    # a period of 50 steps repeats the last state exactly every 50 steps: every member continues the truth
    future = np.arange(500, 620)
    truth = np.stack([np.sin(2 * np.pi * future / 50), np.cos(2 * np.pi * future / 50)], axis=-1)
    np.testing.assert_allclose(members[0], np.broadcast_to(truth, (4, 120, 2)), atol=1e-9)
    with pytest.raises(ValueError, match="fewer than k=64 candidate states"):
        analogue_members(context[:, :80], 10, k=64)


@pytest.mark.parametrize("combine", ["shifted", "symmetric", "split"])
def test_the_median_is_the_point_forecast_at_every_lead(combine: str) -> None:
    rng = np.random.default_rng(2)
    context = np.abs(rng.standard_normal((2, 500, 3)))  # a skewed climatology: its median is not the point
    context = (context - context.mean(axis=1, keepdims=True)) / context.std(axis=1, keepdims=True)
    point = rng.uniform(1, 2, size=(2, 60, 3))  # the climatology's median is near -0.2
    spread = np.broadcast_to(np.geomspace(1e-4, 3.0, 60)[None, :, None], point.shape)  # up to saturation
    levels = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    plain = ForecastDistribution(point, spread, context, "mixture", 1.25).quantiles(levels)[..., 2]
    assert (
        np.abs(plain - point)[:, -5:].min() > 0.5
    )  # saturated: the plain mixture's median is the climatology's
    q = ForecastDistribution(point, spread, context, combine, 1.25).quantiles(levels)  # (B, H, C, Q)
    np.testing.assert_allclose(q[..., 2], point, atol=1e-12)
    if combine == "symmetric":
        np.testing.assert_allclose(q[..., ::-1] - point[..., None], point[..., None] - q, atol=1e-9)


def test_the_pipeline_median_is_predict(tiny_pipeline, lorenz) -> None:
    q, _ = tiny_pipeline.predict_quantiles(lorenz, H, (0.25, 0.5, 0.75))  # the default calibration
    np.testing.assert_allclose(q[..., 1], tiny_pipeline.predict(lorenz, H), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [48, 128, 191])
def test_a_short_context_is_calibrated_from_origins_near_its_end(tiny_pipeline, lorenz, steps: int) -> None:
    """Contexts of 48-191 steps forecast from the short offsets (64, 32, 16), each with 32 steps or more before
    it; the quantiles keep the rules of any context, and a short series in a batch leaves the others as they are."""
    cal = tiny_pipeline.calibration
    short = lorenz[-steps:]
    q, _ = tiny_pipeline.predict_quantiles(short, H, LEVELS)
    assert q.shape == (H, 3, len(LEVELS)) and np.all(np.diff(q, axis=-1) >= 0)
    np.testing.assert_allclose(q[..., 2], tiny_pipeline.predict(short, H), rtol=1e-5, atol=1e-5)
    _, errors, prefix, *_ = tiny_pipeline.incontext_errors(short, H)
    measured = {
        int(tiny_pipeline.config.context_length - p)
        for p, e in zip(prefix, errors[0], strict=True)
        if np.isfinite(e).any()
    }
    assert measured == {o for o in cal.short_offsets if steps - o >= cal.short_min_prefix}
    both, _ = tiny_pipeline.predict_quantiles([short, lorenz], H, LEVELS)
    np.testing.assert_allclose(both[0], q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        both[1], tiny_pipeline.predict_quantiles(lorenz, H, LEVELS)[0], rtol=1e-5, atol=1e-6
    )
    _, errors, prefix, *_ = tiny_pipeline.incontext_errors(
        lorenz, H
    )  # a long context: the usual offsets only
    assert sorted(tiny_pipeline.config.context_length - prefix) == sorted(cal.offsets)


def test_bad_input_is_refused_with_the_fix(tiny_pipeline, lorenz) -> None:
    with pytest.raises(ValueError, match="at least 48 steps"):
        tiny_pipeline.predict_quantiles(lorenz[:47], H)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        tiny_pipeline.predict_quantiles(lorenz, H, (0.1, 1.0))
    with pytest.raises(ValueError, match="num_samples"):
        tiny_pipeline.sample(lorenz, H, num_samples=0)
    with pytest.raises(ValueError, match="prediction_length"):
        tiny_pipeline.predict_quantiles(lorenz, 0)
    with pytest.raises(ValueError, match="all-NaN"):  # the same rules as predict
        bad = lorenz.copy()
        bad[:, 1] = np.nan
        tiny_pipeline.predict_quantiles(bad, H)
    with pytest.raises(ValueError, match="combine"):
        CalibrationConfig(combine="average")


def test_missing_values_are_handled_as_predict_does(tiny_pipeline, lorenz) -> None:
    gappy = lorenz.copy()
    gappy[100:140, 0] = np.nan
    gappy[300:305] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q, mean = tiny_pipeline.predict_quantiles(gappy, H, LEVELS)
    assert np.isfinite(q).all() and np.isfinite(mean).all()
    # a context missing its last steps is reported once, as predict reports it (at the caller's line), not once
    # per internal pass
    ends = lorenz.copy()
    ends[-3:, 1] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_pipeline.predict_quantiles(ends, H, LEVELS)
    assert [w.category for w in caught] == [MissingDataWarning] and caught[0].filename == __file__


def test_cli_forecast_writes_a_column_per_channel_and_level_and_draws_the_fan(tmp_path, lorenz) -> None:
    from panda_fm.cli import main
    from panda_fm.data.io import read_series
    from tests.conftest import TINY_CHECKPOINT

    src = tmp_path / "in.csv"
    src.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in lorenz) + "\n")
    args = ["forecast", "--checkpoint", str(TINY_CHECKPOINT), "--input", str(src), "--horizon", "30"]
    rc = main(
        [
            *args,
            "--out",
            str(tmp_path / "q.csv"),
            "--plot",
            str(tmp_path / "fan.png"),
            "--quantiles",
            "0.1",
            "0.5",
            "0.9",
        ]
    )
    assert rc == 0
    values, columns = read_series(tmp_path / "q.csv")
    assert columns == [f"{c}_q{level}" for c in "abc" for level in (0.1, 0.5, 0.9)] and values.shape == (
        30,
        9,
    )
    expected, _ = PandaPipeline.from_pretrained(TINY_CHECKPOINT).predict_quantiles(
        read_series(src)[0], 30, (0.1, 0.5, 0.9)
    )
    np.testing.assert_allclose(values, expected.reshape(30, 9), rtol=1e-5, atol=1e-5)
    assert (tmp_path / "fan.png").stat().st_size > 10_000
    assert main([*args, "--out", str(tmp_path / "q.npy"), "--quantiles", "0.5"]) == 0
    assert np.load(tmp_path / "q.npy").shape == (30, 3, 1)


def test_cli_forecast_observed_quantiles_add_the_contexts_noise(tmp_path, lorenz, capsys) -> None:
    from panda_fm.cli import main
    from panda_fm.data.io import read_series
    from tests.conftest import TINY_CHECKPOINT

    noisy = lorenz + 0.05 * lorenz.std(axis=0) * np.random.default_rng(0).standard_normal(lorenz.shape)
    src = tmp_path / "noisy.npy"
    np.save(src, noisy)
    args = ["forecast", "--checkpoint", str(TINY_CHECKPOINT), "--input", str(src), "--horizon", "30"]
    assert main([*args, "--out", str(tmp_path / "obs.csv"), "--quantiles", "0.1", "0.9", "--observed"]) == 0
    assert main([*args, "--out", str(tmp_path / "state.csv"), "--quantiles", "0.1", "0.9"]) == 0
    observed, state = read_series(tmp_path / "obs.csv")[0], read_series(tmp_path / "state.csv")[0]
    pipe = PandaPipeline.from_pretrained(TINY_CHECKPOINT)
    expected, _ = pipe.predict_quantiles(
        noisy, 30, (0.1, 0.9), calibration=replace(pipe.calibration, observation_noise=True)
    )
    np.testing.assert_allclose(observed, expected.reshape(30, 6), rtol=1e-5, atol=1e-5)
    width = lambda q: q[:, 1::2] - q[:, 0::2]  # noqa: E731 (columns: x0_q0.1, x0_q0.9, x1_q0.1, ...)
    assert (width(observed) >= width(state) - 1e-9).all() and (width(observed) > width(state)).any()
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "p.csv"), "--observed"]) == 2  # no quantiles asked for
    assert "add --quantiles" in capsys.readouterr().err and not (tmp_path / "p.csv").exists()


def test_lagged_members_forecast_the_same_future_steps() -> None:
    context = np.arange(20, dtype=np.float64).reshape(1, 20, 1) * np.ones((2, 1, 3))  # (B, T, C) ramps

    def persistence(c: np.ndarray, h: int) -> np.ndarray:  # the last value, held
        return np.repeat(c[:, -1:], h, axis=1)

    def of_prefixes(f):  # the forecaster lagged_members asks for: [(rows, cut, steps), ...] -> forecasts
        return lambda jobs: [f(context[rows, : context.shape[1] - cut], steps) for rows, cut, steps in jobs]

    members = lagged_members(of_prefixes(persistence), context, 5, (1, 3))
    assert members.shape == (2, 2, 5, 3)
    np.testing.assert_array_equal(members[:, 0], 18.0)  # cut 1 short: the value 18 held
    np.testing.assert_array_equal(members[:, 1], 16.0)
    point = persistence(context, 5)  # 19 held
    np.testing.assert_allclose(lagged_spread(members, point), np.sqrt((1 + 9) / 2))

    def ramp(c: np.ndarray, h: int) -> np.ndarray:  # continues the ramp exactly: every member agrees
        return c[:, -1:] + np.arange(1, h + 1)[None, :, None]

    exact = lagged_members(of_prefixes(ramp), context, 5, (1, 2, 4))
    np.testing.assert_array_equal(exact, np.repeat(ramp(context, 5)[:, None], 3, axis=1))
    # each series its own lags: series 1 cut 2 and 6 steps short, forecast once per (series, lag)
    asked = []
    own = lagged_members(
        lambda jobs: asked.extend(jobs) or of_prefixes(persistence)(jobs),
        context,
        5,
        np.array([[1, 3], [2, 6]]),
    )
    np.testing.assert_array_equal(own[0, :, 0, 0], [18.0, 16.0])
    np.testing.assert_array_equal(own[1, :, 0, 0], [17.0, 13.0])
    assert [(rows.tolist(), cut) for rows, cut, _ in asked] == [([0], 1), ([1], 2), ([0], 3), ([1], 6)]
    with pytest.raises(ValueError, match="lags must be between 1"):
        lagged_members(of_prefixes(ramp), context, 5, (0, 2))
    with pytest.raises(ValueError, match="lags must be between 1"):
        lagged_members(of_prefixes(ramp), context, 5, (20,))
    with pytest.raises(ValueError, match="expected"):
        lagged_members(of_prefixes(lambda c, h: c[:, :1]), context, 5, (1,))


def test_lagged_forecasts_are_predicts_of_the_cut_contexts(lorenz) -> None:
    """The lagged members share forward passes, yet each is what predict makes of the context cut that many steps
    short, also for contexts longer than the model reads."""
    pipe = PandaPipeline.from_pretrained("panda-fm-small")
    torch.set_num_threads(1)
    context = np.stack([lorenz, lorenz[::-1]])  # (2, 600, 3): longer than the 512 steps the model reads
    loc, scale = np.zeros((2, 1, 3)), np.ones((2, 1, 3))
    members = pipe.lagged_forecasts(context, 64, (1, 4), loc, scale, batch_size=3)
    by_hand = np.stack([pipe.predict(context[:, : 600 - g], 64 + g)[:, g:] for g in (1, 4)], axis=1)
    np.testing.assert_allclose(members, by_hand, rtol=0, atol=1e-9)


def test_autocorrelation_time_and_the_lags_it_stretches() -> None:
    t = np.arange(1024)
    # a sinusoid of period P: its autocorrelation cos(2 pi k / P) falls below 0.5 after P / 6 steps
    sines = np.stack([np.sin(2 * np.pi * t / p) for p in (60.0, 240.0)])[..., None]  # (2, T, 1)
    np.testing.assert_allclose(autocorrelation_time(sines), [11, 41], atol=1)
    # missing steps and a constant channel do not move it; a series without a varying channel reads 0
    gappy = np.concatenate([sines, np.ones_like(sines)], axis=2)
    gappy[:, 100:140, 0] = np.nan
    gappy[:, :64] = np.nan  # padded on the left as missing
    np.testing.assert_allclose(autocorrelation_time(gappy), [11, 41], atol=1)
    assert autocorrelation_time(np.ones((1, 50, 2)))[0] == 0.0
    # lags stretch by tau / lag_timescale, never shorter than given, at most MAX_LAG_STRETCH times
    cfg = replace(CalibrationConfig(), lag_timescale=20.0)
    np.testing.assert_array_equal(context_lags(cfg, sines), [[1, 2, 4, 8], [2, 4, 8, 16]])
    slow = np.sin(2 * np.pi * t / 2000.0)[None, :, None]
    np.testing.assert_array_equal(context_lags(cfg, slow), [[4, 8, 16, 32]])
    np.testing.assert_array_equal(
        context_lags(replace(cfg, lag_timescale=0.0), slow), [[1, 2, 4, 8]]
    )  # in steps
    with pytest.raises(ValueError, match="lag_timescale"):
        CalibrationConfig(lag_timescale=-1.0)


def test_the_noise_correction_fades_with_the_lag_stretch() -> None:
    t = np.arange(512)
    rng = np.random.default_rng(0)
    # a slow sinusoid (stretch 4, the most) and a fast one (stretch 1), each with noise of 5% of its std
    clean = np.stack([np.sin(2 * np.pi * t / p) for p in (2000.0, 60.0)])[..., None]
    noisy = clean / clean.std(axis=1, keepdims=True) + rng.normal(0, 0.05, clean.shape)
    cfg = replace(CalibrationConfig(), lag_timescale=24.0, lagged_noise_stretch_power=0.0)  # unfaded
    np.testing.assert_allclose(lag_stretch(cfg, noisy), [MAX_LAG_STRETCH, 1.0])
    lagged = np.ones((2, 8, 1))
    share = 1 / noise_corrected(lagged, noisy, cfg)[:, 0, 0] ** 2 - 1  # nu^2 / (nu^2 + c^2), near 1
    faded = 1 / noise_corrected(lagged, noisy, replace(cfg, lagged_noise_stretch_power=2.0))[:, 0, 0] ** 2 - 1
    np.testing.assert_allclose(faded, share / np.array([MAX_LAG_STRETCH**2, 1.0]))
    assert share.min() > 0.95
    with pytest.raises(ValueError, match="lagged_noise_stretch_power"):
        CalibrationConfig(lagged_noise_stretch_power=-1.0)


def test_lead_offset_of_per_series_lags_is_each_series_own() -> None:
    cfg = CalibrationConfig()
    lags = np.array([[1, 2, 4, 8], [2, 4, 8, 16]])
    offset = lead_offset(cfg, 32, lags=lags)  # (B, H, 1)
    assert offset.shape == (2, 32, 1)
    np.testing.assert_allclose(offset[0], lead_offset(cfg, 32)[0])
    np.testing.assert_allclose(offset[1], lead_offset(replace(cfg, lags=(2, 4, 8, 16)), 32)[0])


def test_lagged_spread_by_hand_never_shrinks() -> None:
    point = np.zeros((1, 4, 1))
    members = np.array([[1.0, 0.0, 3.0, 1.0], [1.0, 2.0, 1.0, 1.0]]).reshape(1, 2, 4, 1)
    # rms per lead: 1, sqrt(2), sqrt(5), 1 -> held at sqrt(5)
    np.testing.assert_allclose(
        lagged_spread(members, point)[0, :, 0], [1, np.sqrt(2), np.sqrt(5), np.sqrt(5)]
    )
    with pytest.raises(ValueError, match="must be"):
        lagged_spread(members[0], point)


def test_the_horizon_is_read_off_the_chosen_spread() -> None:
    # the spread passes 0.5 at index 5, the lagged one at index 8
    spread = np.broadcast_to(np.linspace(0.1, 1.0, 10)[None, :, None], (1, 10, 2)).copy()
    lagged = np.broadcast_to(np.linspace(0.0, 0.6, 10)[None, :, None], (1, 10, 2)).copy()
    cfg = CalibrationConfig(inflation=0.8, horizon="geometric")
    np.testing.assert_allclose(horizon_spread(spread, lagged, cfg), np.sqrt(spread / 0.8 * lagged))
    np.testing.assert_array_equal(horizon_spread(spread, lagged, replace(cfg, horizon="lagged")), lagged)
    assert horizon_spread(spread, None, replace(cfg, horizon="spread")) is spread
    with pytest.raises(ValueError, match="needs the lagged ensemble"):
        horizon_spread(spread, None, cfg)
    context = np.random.default_rng(0).standard_normal((1, 300, 2))
    plain = ForecastDistribution(np.zeros((1, 10, 2)), spread, context)
    assert plain.horizon().tolist() == [[5, 5]] and plain.horizon_all_channels().tolist() == [5]
    lag = ForecastDistribution(np.zeros((1, 10, 2)), spread, context, horizon_spread=lagged)
    assert lag.horizon().tolist() == [[8, 8]] and lag.horizon_all_channels().tolist() == [8]
    assert lag.horizon(0.1).tolist() == [[2, 2]] and lag.horizon(np.float32(10)).tolist() == [[10, 10]]
    for bad in (0.0, -1.0, float("nan")):  # NaN would compare False everywhere: the forecast's length
        with pytest.raises(ValueError, match="threshold must be positive"):
            lag.horizon(bad)
        with pytest.raises(ValueError, match="threshold must be positive"):
            lag.horizon_all_channels(bad)
    with pytest.raises(ValueError, match="threshold must be a positive number of context stds"):
        lag.horizon("0.5")
    np.testing.assert_array_equal(lag.quantiles(np.array([0.1, 0.9])), plain.quantiles(np.array([0.1, 0.9])))
    with pytest.raises(ValueError, match="shaped as spread"):
        ForecastDistribution(np.zeros((1, 10, 2)), spread, context, horizon_spread=lagged[:, :5])
    with pytest.raises(ValueError, match="horizon must be"):
        CalibrationConfig(horizon="analogue")
    with pytest.raises(ValueError, match="lags must be positive"):
        CalibrationConfig(lags=())
    assert CalibrationConfig(horizon="spread", lagged_blend=0.0, lags=()).lags == ()
