"""Missing values in the classical forecasters: the fill rule, numpy against torch, and forecasts that stay
on the data's scale (the newcomer cases of a Lorenz context with gaps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panda_fm.forecasters import EXPERTS, AnalogueForecaster, NVARForecaster
from panda_fm.forecasters.gaps import MAX_FILL, fill_gaps
from panda_fm.forecasters.tensor.analogue import analogue_forecast
from panda_fm.forecasters.tensor.gaps import fill_gaps as fill_gaps_tensor
from panda_fm.forecasters.tensor.nvar import nvar_forecast
from tests.forecasters.test_tensor_nvar import lorenz_trajectory

H = 128


@pytest.fixture(scope="module")
def lorenz() -> np.ndarray:
    return lorenz_trajectory()


def test_short_holes_get_a_cubic_and_count_as_data_long_gaps_do_not():
    t = np.arange(30, dtype=np.float64)
    x = np.stack([t**3 / 100, t**2], axis=1)[None]  # (1, 30, 2): cubics are interpolated exactly
    gappy = x.copy()
    gappy[0, 5 : 5 + MAX_FILL, 0] = np.nan  # a short hole
    gappy[0, 12:20, 0] = np.nan  # a long gap
    gappy[0, :3, 1] = np.nan  # before the first observation
    gappy[0, -2:, 1] = np.nan  # after the last
    filled, trusted = fill_gaps(gappy)
    np.testing.assert_allclose(filled[0, 5 : 5 + MAX_FILL, 0], x[0, 5 : 5 + MAX_FILL, 0], rtol=1e-12)
    assert trusted[0, 5 : 5 + MAX_FILL, 0].all() and not trusted[0, 12:20, 0].any()
    line = np.interp(np.arange(12, 20), [11, 20], x[0, [11, 20], 0])  # a long gap: the line, not the cubic
    np.testing.assert_allclose(filled[0, 12:20, 0], line)
    assert (filled[0, :3, 1] == x[0, 3, 1]).all() and (filled[0, -2:, 1] == x[0, -3, 1]).all()
    assert not trusted[0, :3, 1].any() and not trusted[0, -2:, 1].any()


def test_the_tensor_fill_is_the_numpy_fill():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 300, 3)).cumsum(axis=1)
    x[rng.random(x.shape) < 0.3] = np.nan
    x[1, :40] = np.nan
    x[2, -30:, 1] = np.nan
    filled, trusted = fill_gaps(x)
    filled_t, trusted_t = fill_gaps_tensor(torch.from_numpy(x))
    np.testing.assert_allclose(filled_t.numpy(), filled, rtol=1e-12, atol=1e-12)
    assert (trusted_t.numpy() == trusted).all()


def _gappy_batch(lorenz: np.ndarray) -> np.ndarray:
    """(4, 512, 3) Lorenz contexts with a long gap, a channel's last steps, scattered NaN, left padding."""
    x = np.stack([lorenz[s : s + 512] for s in (0, 300, 600, 900)])
    x[0, 200:260] = np.nan
    x[1, -40:, 1] = np.nan
    x[2][np.random.default_rng(0).random((512, 3)) < 0.1] = np.nan
    x[3, :150] = np.nan
    return x


@pytest.mark.parametrize(
    "numpy_forecaster, tensor_forecast",
    [(NVARForecaster(), nvar_forecast), (AnalogueForecaster(), analogue_forecast)],
    ids=["nvar", "analogue"],
)
def test_tensor_forecasters_with_gaps_are_the_numpy_ones(lorenz, numpy_forecaster, tensor_forecast):
    x = _gappy_batch(lorenz)
    expected = numpy_forecaster.predict(x, 64)
    got = tensor_forecast(torch.from_numpy(x), 64).numpy()
    scale = np.nanstd(x, axis=1, keepdims=True)
    assert np.abs(got - expected).max() / scale.min() < 1e-6


def _error(forecast: np.ndarray, truth: np.ndarray, context: np.ndarray) -> float:
    return float((np.abs(forecast - truth) / context.std(axis=0)).mean())


@pytest.mark.parametrize("name", ["nvar", "nvar_sg11", "analogue"])
def test_gaps_keep_forecasts_on_the_attractor(lorenz, name):
    """The newcomer cases: a 50-step gap 250 steps before the end, one channel's last 50 steps, the last 100
    steps of every channel, and 30% scattered NaN. Before, a filled-in straight line was fitted and
    extrapolated (a forecast settling at x = -47 on an attractor with |x| < 20)."""
    context, truth = lorenz[:512], lorenz[512 : 512 + H]
    clean = _error(EXPERTS[name]().predict(context, H), truth, context)
    mean_error = _error(np.broadcast_to(context.mean(axis=0), truth.shape), truth, context)
    cases = {"gap": (slice(212, 262), slice(None)), "y_end": (slice(462, 512), slice(1, 2))}
    cases["end"] = (slice(412, 512), slice(None))
    lo, hi = context.min(axis=0), context.max(axis=0)
    for where in cases.values():
        gappy = context.copy()
        gappy[where] = np.nan
        forecast = EXPERTS[name]().predict(gappy, H)
        assert ((forecast >= lo - (hi - lo)) & (forecast <= hi + (hi - lo))).all()
        assert _error(forecast, truth, context) < max(1.1 * mean_error, 3 * clean)
    scattered = context.copy()
    scattered[np.random.default_rng(0).random(context.shape) < 0.3] = np.nan
    assert _error(EXPERTS[name]().predict(scattered, H), truth, context) < 1.1 * mean_error
    if name == "nvar":  # fitted on the observed pairs only, the exact NVAR stays exact across a gap
        gappy = context.copy()
        gappy[cases["gap"]] = np.nan
        assert _error(EXPERTS[name]().predict(gappy, H), truth, context) < 1e-3
