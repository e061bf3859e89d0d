"""The tensor NVAR (:func:`panda_fm.forecasters.tensor.nvar.nvar_forecast`) against the numpy NVARForecaster.

float64 reproduces the numpy forecaster to rounding wherever the fits are well conditioned (noisy contexts,
the Lorenz attractor); float32 stays close to float64 on most windows and is as accurate against the truth,
but its rounding can change a series' penalty or move an ill-conditioned fit, and a chaotic rollout then
drifts apart (bounded by the clip). Errors below are in units of each context's per-channel std.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch

from panda_fm.forecasters.nvar import NVARForecaster
from panda_fm.forecasters.tensor.nvar import _choose_penalties, _monomial_index, nvar_forecast

H = 128


def lorenz_trajectory() -> np.ndarray:
    """(1900, 3) Lorenz trajectory from dysts, 100 points per period (as test_forecasters.py integrates one,
    at a looser tolerance: 2 s instead of 6 s without numba)."""
    from dysts.flows import Lorenz

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Lorenz().make_trajectory(1900, pts_per_period=100, rtol=1e-7, atol=1e-8)


@pytest.fixture(scope="module")
def lorenz() -> np.ndarray:
    """:func:`lorenz_trajectory`."""
    return lorenz_trajectory()


def quasi_periodic(batch: int, steps: int, channels: int, noise: float, seed: int) -> np.ndarray:
    """``(B, T, C)`` smooth quasi-periodic series in arbitrary units: each channel a random mix of two
    incommensurate oscillations (periods 37 and 37 phi) and their product, plus white noise of ``noise``
    times the channel's std."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[None, :, None] + rng.uniform(0, 1000, (batch, 1, 1))  # (B, T, 1)
    w1, w2 = 2 * np.pi / 37.0, 2 * np.pi / (37.0 * 1.618)
    waves = [np.sin(w1 * t), np.cos(w1 * t), np.sin(w2 * t), np.cos(w2 * t), np.sin(w1 * t) * np.cos(w2 * t)]
    x = np.concatenate(waves, axis=-1) @ rng.normal(size=(batch, 5, channels))  # (B, T, 5) @ (B, 5, C)
    x = x + noise * x.std(axis=1, keepdims=True) * rng.standard_normal(x.shape)
    return 5.0 * x + 2.0


def lorenz_windows(traj: np.ndarray, steps: int, batch: int = 4) -> np.ndarray:
    """``(B, steps, 3)`` standardised windows of the trajectory, evenly spaced from its start to
    ``len - steps - H`` (each window's next ``H`` steps are also in the trajectory)."""
    starts = np.linspace(0, len(traj) - steps - H, batch).astype(int)
    x = np.stack([traj[s : s + steps] for s in starts])  # (B, T, 3)
    return (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)


#: name -> contexts (B, T, C); "6ch" falls back to quadratic features (12 variables, 90 instead of 454).
CASES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "quasi_periodic_3ch": lambda _: quasi_periodic(4, 512, 3, 0.1, seed=0),
    "quasi_periodic_3ch_T384": lambda _: quasi_periodic(4, 384, 3, 0.1, seed=1),
    "quasi_periodic_1ch": lambda _: quasi_periodic(4, 512, 1, 0.1, seed=2),
    "quasi_periodic_6ch": lambda _: quasi_periodic(4, 512, 6, 0.1, seed=3),
    "quasi_periodic_6ch_T384": lambda _: quasi_periodic(4, 384, 6, 0.1, seed=4),
    "lorenz": lambda traj: lorenz_windows(traj, 512),
    "lorenz_T384": lambda traj: lorenz_windows(traj, 384),
}


def standardised_error(out: np.ndarray, ref: np.ndarray, context: np.ndarray) -> np.ndarray:
    """``(B,)`` max abs difference of two ``(B, H, C)`` forecasts per window, in the context's stds."""
    return (np.abs(out - ref) / context.std(axis=1, keepdims=True)).max(axis=(1, 2))


def numpy_penalty(forecaster: NVARForecaster, series: np.ndarray) -> int:
    """The index of the penalty the numpy forecaster chooses for one ``(T, C)`` context."""
    z = (series - series.mean(axis=0)) / series.std(axis=0)
    w, _ = forecaster._fit(z)
    degree = forecaster.feature_degree(*z.shape)
    fits = [forecaster._fit_path(z, (r,), degree)[0][0] for r in forecaster.ridges]
    return next(i for i, fit in enumerate(fits) if np.array_equal(fit, w))


@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_reproduces_the_numpy_forecaster(case: str, lorenz: np.ndarray) -> None:
    x = CASES[case](lorenz)
    ref = NVARForecaster().predict(x, H)
    out = nvar_forecast(torch.from_numpy(x), H)
    assert out.dtype == torch.float64 and out.shape == ref.shape
    # measured max over windows (std units): quasi-periodic 1ch 7e-12, 3ch 1.5e-9, 3ch T=384 2.5e-8,
    # 6ch 2e-12, 6ch T=384 4e-11; Lorenz 2e-9, Lorenz T=384 8e-9
    assert standardised_error(out.numpy(), ref, x).max() < 1e-6


def test_noise_free_quasi_periodic_chooses_the_numpy_penalty() -> None:
    # Without noise the series lies on a torus and the cubic features are nearly collinear: the fits with
    # the small penalties they choose are ill-conditioned, and rounding moves the forecasts (measured: 1e-9
    # to 0.07 stds apart here; up to 12 stds on other seeds). Their validation errors agree to 4 digits, so
    # the choice of penalty is the same.
    x = quasi_periodic(4, 512, 3, 0.0, seed=5)
    z = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    f = NVARForecaster()
    alphas = torch.tensor(f.ridges, dtype=torch.float64)
    chosen = _choose_penalties(
        torch.from_numpy(z), alphas, 64, 2, 1, True, _monomial_index(6, 3, torch.device("cpu"))
    )
    assert chosen.tolist() == [numpy_penalty(f, series) for series in x]


def test_float32_stays_near_float64_on_most_windows(lorenz: np.ndarray) -> None:
    # float32 rounding of the Gram matrices is far above the smallest penalties' jitter (1e-9 N), so an
    # ill-conditioned fit moves or a series switches penalty, and the rollout can drift far. Measured per-window
    # max errors over the 28 windows of CASES: median 6e-3, 24 of 28 below 0.1, the others 0.17, 1.0, 3.0 and
    # 8.0 (noisy quasi-periodic windows whose float32 rollout diverges towards the clip bound). With the fits
    # in float64 and only the rollouts in float32 the max was 5e-4: the fits, not the rollouts, lose the digits.
    errors = []
    for make in CASES.values():
        x = make(lorenz)
        out64 = nvar_forecast(torch.from_numpy(x), H).numpy()
        out32 = nvar_forecast(torch.from_numpy(x).float(), H)
        assert out32.dtype == torch.float32 and torch.isfinite(out32).all()
        z = (out32.double().numpy() - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
        zc = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
        lo, hi = zc.min(axis=1, keepdims=True), zc.max(axis=1, keepdims=True)
        assert (z >= 2 * lo - hi - 1e-3).all() and (z <= 2 * hi - lo + 1e-3).all()  # within the clip bounds
        errors.append(standardised_error(out32.double().numpy(), out64, x))
    errors = np.concatenate(errors)  # (28,)
    assert np.median(errors) < 0.1
    assert (errors < 0.1).mean() >= 0.7


def test_float32_forecasts_most_lorenz_windows_nearly_as_well(lorenz: np.ndarray) -> None:
    # Mean abs error against the true continuation over 16 windows (raw units), measured: float64 at most
    # 7.4e-4 stds; float32 median 1.5e-3 (T = 512, max 0.015) and 2.5e-3 (T = 384), but at T = 384 two windows
    # of 16 drift (MAE 0.31 and 1.2; with standardised input neither does: it depends on the rounding). On a
    # trajectory integrated at rtol 1e-9, one window of 16 drifted at each length (MAE 0.27 and 5.8).
    for steps in (512, 384):
        starts = np.linspace(0, len(lorenz) - steps - H, 16).astype(int)
        windows = np.stack([lorenz[s : s + steps + H] for s in starts])  # (B, T + H, 3)
        context, truth = windows[:, :steps], windows[:, steps:]
        sd = context.std(axis=1, keepdims=True)
        out64 = nvar_forecast(torch.from_numpy(context), H).numpy()
        out32 = nvar_forecast(torch.from_numpy(context).float(), H).double().numpy()
        assert (np.abs(out64 - truth) / sd).mean(axis=(1, 2)).max() < 2e-3
        mae32 = (np.abs(out32 - truth) / sd).mean(axis=(1, 2))  # (B,)
        assert np.median(mae32) < 0.02
        assert (mae32 < 0.05).sum() >= 13


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_each_series_is_forecast_from_its_own_context(dtype: torch.dtype) -> None:
    x = torch.from_numpy(quasi_periodic(4, 512, 3, 0.1, seed=6)).to(dtype)
    x[2] = x[2] * 100 + 7  # other units for one series
    batched = nvar_forecast(x, H)
    single = torch.cat([nvar_forecast(x[i : i + 1], H) for i in range(len(x))])  # (B, H, C)
    error = standardised_error(single.double().numpy(), batched.double().numpy(), x.double().numpy())
    # The batched LAPACK solves round differently from single ones (measured 6e-11 on the float64 weights);
    # float64 forecasts then differ by 2e-13 stds, float32 ones by up to 0.09 (an ill-conditioned refit).
    assert error.max() < (1e-9 if dtype == torch.float64 else 0.5)
    z = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True, correction=0)
    alphas = torch.tensor(NVARForecaster().ridges, dtype=dtype)
    index = _monomial_index(6, 3, torch.device("cpu"))
    chosen = _choose_penalties(z, alphas, 64, 2, 1, True, index)
    assert chosen.tolist() == [
        _choose_penalties(z[i : i + 1], alphas, 64, 2, 1, True, index).item() for i in range(4)
    ]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy, unclipped
@pytest.mark.parametrize(
    "settings",
    [
        {"ridges": (1e-4,)},  # one penalty: no validation rollout, every pair a training pair
        {"delays": 3, "stride": 2, "degree": 2},
        {"degree": 1, "validation": 32},
        {"clip": False},
        {"max_feature_ratio": 0.1},  # quadratic fallback for 3 channels
    ],
)
def test_other_settings_reproduce_the_numpy_forecaster(settings: dict) -> None:
    x = quasi_periodic(3, 300, 3, 0.1, seed=7)
    ref = NVARForecaster(**settings).predict(x, 50)
    out = nvar_forecast(torch.from_numpy(x), 50, **settings).numpy()
    assert standardised_error(out, ref, x).max() < 1e-6


def test_the_degree_rule_falls_back_for_many_channels() -> None:
    f = NVARForecaster()  # nvar_forecast takes its degree from the numpy forecaster's rule
    assert (
        f.feature_degree(512, 6) == 2 and f.feature_degree(384, 3) == 3
    )  # the cases above: 6 channels fall back


def test_short_contexts_and_bad_inputs_are_refused() -> None:
    f = NVARForecaster()
    x = torch.from_numpy(quasi_periodic(2, f.min_context, 2, 0.1, seed=8))
    assert nvar_forecast(x, 4).shape == (2, 4, 2)
    with pytest.raises(ValueError, match=f"at least {f.min_context} steps"):
        nvar_forecast(x[:, 1:], 4)
    with pytest.raises(ValueError, match="at least 13 steps"):  # 2 delays 4 apart, one penalty: 5 + 8
        nvar_forecast(x[:, :12], 4, stride=4, ridges=(1e-3,))
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        nvar_forecast(x[0], 4)
    with pytest.raises(TypeError, match="float32 or float64"):
        nvar_forecast(x.half(), 4)
    with pytest.raises(ValueError, match="prediction_length"):
        nvar_forecast(x, 0)
    with pytest.raises(ValueError, match="ridges"):
        nvar_forecast(x, 4, ridges=())


def test_autocast_does_not_reach_the_fits() -> None:
    x = torch.from_numpy(quasi_periodic(2, 256, 3, 0.1, seed=9)).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = nvar_forecast(x, 32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, nvar_forecast(x, 32), rtol=0, atol=0)
