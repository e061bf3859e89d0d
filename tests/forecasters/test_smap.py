"""S-maps: locally weighted linear maps on a delay embedding (a classical baseline, ``smap``, and an expert of
version 7 as tensor code)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from panda_fm.eval.baselines import make_baselines
from panda_fm.forecasters import EXPERT_VERSIONS, SMapForecaster, backtest_experts
from panda_fm.forecasters.tensor.analogue import smap_forecast
from panda_fm.forecasters.tensor.experts import backtest_experts_tensor, tensor_expert

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


def _lorenz(length: int, dt: float = 0.02) -> np.ndarray:
    """(T, 3) Lorenz-63 trajectory on its attractor (scipy's DOP853; the classic parameters)."""

    def rhs(_, s):
        return [10.0 * (s[1] - s[0]), s[0] * (28.0 - s[2]) - s[1], s[0] * s[1] - 8.0 / 3.0 * s[2]]

    t = np.arange(length + 500) * dt
    sol = solve_ivp(rhs, (0.0, t[-1]), [1.0, 1.0, 20.0], t_eval=t, method="DOP853", rtol=1e-10, atol=1e-10)
    return sol.y.T[500:]


def _windows(noise: float = 0.0) -> np.ndarray:
    """(6, 400, 3) windows of one Lorenz run, ``noise`` times each channel's std of white noise added."""
    x = _lorenz(1400)
    x = x + noise * x.std(axis=0) * np.random.default_rng(1).normal(size=x.shape)
    return np.stack([x[i : i + 400] for i in range(0, 1000, 200)] + [x[1000:1400]])


EXPERT_SMAP = dict(
    theta=16.0, ridge=1e-3
)  # the registry's S-map (version 7); the embedding is the default "auto"


@pytest.mark.parametrize("case", ["three channels", "one channel", "noisy", "gaps", "fixed embedding"])
def test_the_tensor_smap_reproduces_the_numpy_smap(case: str):
    x = _windows(0.1 if case == "noisy" else 0.0)
    settings = dict(EXPERT_SMAP)
    if case == "one channel":
        x = x[:, :, :1].copy()
    if case == "gaps":  # a short hole, a long gap, and the last steps of one channel missing
        x[:, 50:52, 0] = np.nan
        x[:, 150:190, 1] = np.nan
        x[:, -5:, 2] = np.nan
    if case == "fixed embedding":
        settings |= dict(embedding="fixed", delays=3, stride=2, clip=False)
    ref = SMapForecaster(**settings).predict(x, 96)  # (B, H, C)
    out = smap_forecast(torch.from_numpy(x), 96, **settings)
    assert out.dtype == torch.float64
    err = np.abs(out.numpy() - ref) / np.nanstd(x, axis=1, keepdims=True)
    # Measured (max over the windows, in context stds): 5e-13 to 3e-11; a chaotic rollout grows last-bit
    # differences of the weighted fits
    assert err.max() < 1e-8
    out32 = smap_forecast(torch.from_numpy(x).float(), 96, **settings)
    assert out32.dtype == torch.float32
    err32 = np.abs(out32.double().numpy() - ref) / np.nanstd(x, axis=1, keepdims=True)
    # float32 drifts further along the rollout: measured medians 5e-6 to 1.1e-4 context stds, max 2e-4 to 0.06
    assert np.median(err32) < 1e-3


def test_the_registry_s_map_runs_as_tensor_code_in_the_model_s_backtest():
    z = (lambda w: (w - w.mean(axis=1, keepdims=True)) / w.std(axis=1, keepdims=True))(_windows(0.05))
    ref_forecasts, ref_errors = backtest_experts(z, ["analogue", "smap"], 64, 128, version=7)
    forecasts, errors = backtest_experts_tensor(torch.from_numpy(z), ["analogue", "smap"], 64, 128, version=7)
    np.testing.assert_allclose(forecasts.numpy(), ref_forecasts, atol=1e-7)
    np.testing.assert_allclose(errors.numpy(), ref_errors, atol=1e-9)
    assert "smap" not in EXPERT_VERSIONS[6] and "smap" in EXPERT_VERSIONS[7]
    with pytest.raises(TypeError, match="no tensor implementation"):  # theta chosen per series: numpy only
        tensor_expert(SMapForecaster(theta=None))
    with pytest.raises(ValueError, match="fixed theta"):
        smap_forecast(torch.from_numpy(z), 8, theta=None)


def test_large_smap_fits_solve_with_several_threads():
    """torch 2.13's batched CPU LU fails for ~160+ unknowns with 2 threads (a user's 48-channel series through
    ``predict_quantiles`` raised "Pivots given to lu_solve ..."); the S-map's Cholesky solve does not and agrees
    with the numpy S-map (48 channels, 4 delays: 193 unknowns a fit)."""
    settings = dict(EXPERT_SMAP, embedding="fixed", delays=4, stride=1)
    x = np.random.default_rng(0).normal(size=(2, 300, 48)).cumsum(axis=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = smap_forecast(torch.from_numpy(x), 8, **settings)
    finally:
        torch.set_num_threads(threads)
    ref = SMapForecaster(**settings).predict(x, 8)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-8 * x.std())
