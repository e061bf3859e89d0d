"""The torch analogue expert and denoising filters against the float64 numpy / scipy references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.ndimage import gaussian_filter1d
from scipy.signal import savgol_filter

from panda_fm.forecasters import EXPERT_VERSIONS
from panda_fm.forecasters.analogue import AnalogueForecaster
from panda_fm.forecasters.tensor.analogue import analogue_forecast
from panda_fm.forecasters.tensor.denoise import gaussian_smooth, savgol_smooth

EXPERT = dict(delays=4, stride=4, clip=True, k=4, exclude_recent=0)  # the registry's analogue, version 1


@pytest.fixture(scope="module")
def lorenz() -> np.ndarray:
    """(T, 3) Lorenz trajectory, 100 points per period: dysts' equations, parameters, initial condition and
    period, integrated by scipy's DOP853 (dysts' ``make_trajectory`` uses Radau, 6.5 s here, not 0.3 s)."""
    from dysts.flows import Lorenz

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        system = Lorenz()
    t = np.arange(1900) * float(system.period) / 100  # (T,)
    sol = solve_ivp(
        lambda _, state: np.asarray(system.rhs(state, 0.0), dtype=float),
        (0.0, t[-1]),
        np.asarray(system.ic, dtype=float),
        method="DOP853",
        t_eval=t,
        rtol=1e-10,
        atol=1e-10,
    )
    assert sol.success, sol.message
    return sol.y.T  # (T, 3)


def _quasi_periodic(batch: int, length: int, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """(B, T, 3) smooth quasi-periodic series, random phases, plus ``noise`` times white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) * 0.05  # (T,)
    series = [
        np.stack([np.sin(t + p), np.cos(1.3 * t + p), np.sin(0.7 * t) * np.cos(t + p)], axis=1)
        for p in rng.uniform(0, 2 * np.pi, batch)
    ]
    x = np.stack(series)  # (B, T, 3)
    return x + noise * rng.normal(size=x.shape)


def _windows(series: np.ndarray, length: int, step: int = 50) -> np.ndarray:
    """(B, length, C) windows of a ``(T, C)`` series every ``step`` steps."""
    return np.stack([series[i : i + length] for i in range(0, series.shape[0] - length + 1, step)])


def _errors(x: np.ndarray, out: torch.Tensor, horizon: int) -> np.ndarray:
    """(B,) max abs difference to the numpy expert over each forecast, in units of the context's std."""
    ref = AnalogueForecaster(**EXPERT).predict(x, horizon)  # (B, H, C)
    return (np.abs(out.double().numpy() - ref) / x.std(axis=1, keepdims=True)).max(axis=(1, 2))


def _contexts(name: str, lorenz: np.ndarray) -> np.ndarray:
    """The float64 test contexts ``(B, T, C)``."""
    if name == "quasi_periodic":
        return _quasi_periodic(4, 512)
    if name == "quasi_periodic_T384":
        return _quasi_periodic(4, 384, seed=1)
    if name == "lorenz":
        return _windows(lorenz, 512)
    if name == "lorenz_1ch":
        return _windows(lorenz[:, :1], 512)
    if name == "lorenz_6ch":
        return _windows(np.concatenate([lorenz[:-300], lorenz[300:]], axis=1), 512)  # two phases
    return _windows(lorenz, 384)  # lorenz_T384


CASES = ["quasi_periodic", "quasi_periodic_T384", "lorenz", "lorenz_1ch", "lorenz_6ch", "lorenz_T384"]


@pytest.mark.parametrize("case", CASES)
def test_float64_analogue_equals_the_numpy_expert(case: str, lorenz: np.ndarray) -> None:
    x = _contexts(case, lorenz)
    err = _errors(x, analogue_forecast(torch.from_numpy(x), 128, **EXPERT), 128)
    # Measured max: 4.7e-15 (quasi-periodic), 4.0e-15 (T=384), 1.8e-14 (Lorenz), 3.9e-13 (1 channel),
    # 3.1e-15 (6 channels), 4.3e-14 (Lorenz T=384); on 288 windows of a longer Lorenz run the worst was
    # 2.6e-11 (1 channel): last-bit differences in the distances grow along a chaotic rollout.
    assert err.max() < 1e-11


@pytest.mark.parametrize("case", CASES)
def test_float32_analogue_stays_close_to_the_float64_expert(case: str, lorenz: np.ndarray) -> None:
    x = _contexts(case, lorenz)
    out = analogue_forecast(torch.from_numpy(x).float(), 128, **EXPERT)
    assert out.dtype == torch.float32
    err = _errors(x, out, 128)
    # Measured on these windows: median 7e-7 to 1.6e-6, max 1.3e-6 to 1.6e-4 (the 1-channel Lorenz). Where
    # float32 rounding swaps a neighbour the rollout parts from float64's: on 288 windows of a longer Lorenz run
    # (50 points per period) the median was 1.2e-6 to 1.4e-6 and the max 3.5e-4 on 3 channels, but 4 of the
    # 288 1-channel windows differed by more than 1e-3, the worst by 1.07 (another, equally valid analogue).
    assert np.median(err) < 5e-6
    assert err.max() < 1e-3


def test_each_series_alone_equals_the_batch(lorenz: np.ndarray) -> None:
    x = torch.from_numpy(_windows(lorenz, 400, step=300))  # (5, 400, 3), different ranges and phases
    for dtype in (torch.float64, torch.float32):
        batch = analogue_forecast(x.to(dtype), 64, **EXPERT)
        for i in range(x.shape[0]):
            alone = analogue_forecast(x[i : i + 1].to(dtype), 64, **EXPERT)
            torch.testing.assert_close(alone[0], batch[i], rtol=0, atol=0)


def test_other_settings_match_numpy_and_the_shortest_context_is_accepted() -> None:
    x = _quasi_periodic(3, 200, seed=2)
    settings = dict(delays=2, stride=1, k=1, exclude_recent=5, clip=False)
    ref = AnalogueForecaster(**settings).predict(x, 40)
    np.testing.assert_allclose(
        analogue_forecast(torch.from_numpy(x), 40, **settings).numpy(), ref, atol=1e-12
    )
    shortest = AnalogueForecaster(**EXPERT).min_context
    short = x[:, :shortest]
    np.testing.assert_allclose(
        analogue_forecast(torch.from_numpy(short), 20, **EXPERT).numpy(),
        AnalogueForecaster(**EXPERT).predict(short, 20),
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="at least"):
        analogue_forecast(torch.from_numpy(x[:, : shortest - 1]), 20, **EXPERT)
    with pytest.raises(ValueError, match="horizon"):
        analogue_forecast(torch.from_numpy(x), 0)
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        analogue_forecast(torch.from_numpy(x[0]), 10)


def test_analogue_g2_expert_is_the_gaussian_then_the_analogue() -> None:
    x = _quasi_periodic(2, 512, seed=3)
    ref = EXPERT_VERSIONS[1]["analogue_g2"]().predict(x, 64)
    out = analogue_forecast(gaussian_smooth(torch.from_numpy(x), 2.0), 64, **EXPERT)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def _filter_inputs() -> list[np.ndarray]:
    """Random and smooth ``(B, T, C)`` data of several lengths, some shorter than a kernel's radius."""
    rng = np.random.default_rng(4)
    out = [5 + 10 * rng.normal(size=(3, t, 4)) for t in (1, 2, 3, 5, 8, 11, 12, 64, 512)]
    return out + [_quasi_periodic(2, 512, noise=0.0), _quasi_periodic(2, 11, noise=0.0)]


@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.0, 3.7])
def test_gaussian_smooth_equals_scipy(sigma: float) -> None:
    for x in _filter_inputs():  # radius 2 to 15: T = 1, 2, 3 are shorter than every radius here
        ref = gaussian_filter1d(x, sigma, axis=-2, mode="nearest")
        out = gaussian_smooth(torch.from_numpy(x), sigma)
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-13)  # measured max 8.9e-15, |x| up to 38
        out32 = gaussian_smooth(torch.from_numpy(x).float(), sigma)
        assert out32.dtype == torch.float32
        np.testing.assert_allclose(out32.double().numpy(), ref, rtol=0, atol=4e-5)  # measured 4.1e-6
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smooth(torch.zeros(1, 5, 1), 0.0)


@pytest.mark.parametrize(("window", "order"), [(11, 3), (5, 3), (7, 2), (21, 3), (3, 0), (1, 0)])
def test_savgol_smooth_equals_scipy(window: int, order: int) -> None:
    for x in _filter_inputs():
        if x.shape[1] < window:
            with pytest.raises(ValueError):  # scipy's "interp" refuses these too
                savgol_filter(x, window, order, axis=-2, mode="interp")
            with pytest.raises(ValueError, match="at least"):
                savgol_smooth(torch.from_numpy(x), window, order)
            continue
        ref = savgol_filter(x, window, order, axis=-2, mode="interp")
        out = savgol_smooth(torch.from_numpy(x), window, order)
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=2e-12)  # measured max 4.4e-13, |x| up to 38
        out32 = savgol_smooth(torch.from_numpy(x).float(), window, order)
        np.testing.assert_allclose(out32.double().numpy(), ref, rtol=0, atol=4e-5)  # measured 3.3e-6
    with pytest.raises(ValueError, match="odd"):
        savgol_smooth(torch.zeros(1, 20, 1), 10)
    with pytest.raises(ValueError, match="order"):
        savgol_smooth(torch.zeros(1, 20, 1), 3, 3)
