"""S-maps: locally weighted linear maps on a delay embedding (a classical baseline, ``smap``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from panda_fm.eval.baselines import make_baselines
from panda_fm.forecasters import SMapForecaster

FIXED = dict(embedding="fixed", delays=2, stride=1, ridge=0.0, clip=False)


def _sine(length: int, omega: float, phase: float = 0.0) -> np.ndarray:
    return np.sin(omega * np.arange(length) + phase)[:, None]  # (T, 1)


def test_theta_zero_is_one_linear_map_and_forecasts_a_sine_exactly():
    # x[t+1] = 2 cos(w) x[t] - x[t-1]: a linear recurrence in 2 delays, which the global linear map (theta 0)
    # recovers from the context; the forecast continues the sine
    x = _sine(700, 0.07)
    f = SMapForecaster(theta=0.0, **FIXED).predict(x[:600], 100)
    np.testing.assert_allclose(f, x[600:], atol=1e-6)


def test_a_large_theta_fits_around_the_current_state():
    # the logistic map x' = 3.8 x (1 - x): one linear map for the whole attractor is wrong, linear maps fitted
    # around the current state (the library weighted by exp(-theta d / mean d)) are nearly right
    x = np.empty(700)
    x[0] = 0.3
    for i in range(699):
        x[i + 1] = 3.8 * x[i] * (1 - x[i])
    x = x[:, None]
    fixed = {**FIXED, "delays": 1, "ridge": 1e-9}
    errors = {
        theta: np.abs(SMapForecaster(theta=theta, **fixed).predict(x[:600], 5) - x[600:605]).max()
        for theta in (0.0, 32.0)
    }
    assert errors[0.0] > 0.2 and errors[32.0] < 0.01


def test_theta_is_chosen_per_series_on_the_end_of_its_context():
    x = np.stack([_sine(600, 0.07), np.concatenate([_sine(300, 0.05), _sine(300, 0.11, phase=15.0)])])
    chosen = SMapForecaster(theta=None, thetas=(0.0, 8.0), validation=32, **FIXED).predict(
        x, 40
    )  # (2, 40, 1)
    fixed = {t: SMapForecaster(theta=t, **FIXED).predict(x, 40) for t in (0.0, 8.0)}
    for row in range(2):  # each row is one of the candidates' forecasts
        assert any(np.array_equal(chosen[row], fixed[t][row]) for t in fixed)
    np.testing.assert_allclose(chosen[0], fixed[0.0][0])  # the pure sine: theta 0 (exact) wins


def test_the_baseline_runs_on_gaps_short_contexts_and_several_channels():
    rng = np.random.default_rng(0)
    x = np.stack([np.sin(0.05 * np.arange(300)), np.cos(0.08 * np.arange(300))], axis=1)
    x = x + 0.05 * rng.normal(size=x.shape)
    x[100:120, 0] = np.nan
    (smap,) = make_baselines(["smap"])
    assert smap.name == "smap" and smap.embedding == "auto"
    f = smap.predict(x, 64)
    assert f.shape == (64, 2) and np.isfinite(f).all()
    assert np.isfinite(
        replace(smap, validation=64).predict(x[-128:], 16)
    ).all()  # 128 steps: a 32-step validation
