"""Classical baselines: shapes, known answers, accuracy on real dysts trajectories, input checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from panda_fm.eval.baselines import BASELINES, make_baselines
from panda_fm.eval.metrics import smape
from panda_fm.forecasters import (
    AnalogueForecaster,
    Forecaster,
    LinearARForecaster,
    MeanForecaster,
    NaiveForecaster,
    NVARForecaster,
    QuadraticNVARForecaster,
)


@pytest.fixture(scope="module")
def lorenz() -> np.ndarray:
    """(T, 3) Lorenz trajectory, 100 points per period."""
    from dysts.flows import Lorenz

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Lorenz().make_trajectory(1900, pts_per_period=100, rtol=1e-9, atol=1e-10)


def _score(context: np.ndarray, truth: np.ndarray, forecast: np.ndarray) -> float:
    mu, sd = context.mean(0), context.std(0)
    return smape((truth - mu) / sd, (forecast - mu) / sd)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_batch_independence(name: str, channels: int, lorenz: np.ndarray) -> None:
    f = make_baselines([name])[0]
    assert isinstance(f, Forecaster) and f.name == name
    ctx = lorenz[:300, :channels].astype(np.float32)  # (T, C)
    single = f.predict(ctx, 20)
    assert single.shape == (20, channels) and single.dtype == np.float32
    assert np.isfinite(single).all()
    batch = np.stack([ctx, lorenz[300:600, :channels]])  # (2, T, C)
    out = f.predict(batch, 20)
    assert out.shape == (2, 20, channels)
    np.testing.assert_allclose(out[0], single, rtol=1e-5, atol=1e-5)  # each series fits only its own context


def test_mean_and_naive_known_answers() -> None:
    ctx = np.array([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]])
    np.testing.assert_allclose(MeanForecaster().predict(ctx, 4), np.tile([[3.0, 30.0]], (4, 1)))
    np.testing.assert_allclose(NaiveForecaster().predict(ctx, 2), [[5.0, 60.0], [5.0, 60.0]])


def test_linear_ar_continues_a_sinusoid() -> None:
    t = np.arange(600)
    x = np.stack([np.sin(2 * np.pi * t / 37), np.cos(2 * np.pi * t / 53)], 1)
    fc = LinearARForecaster().predict(x[:400], 200)
    np.testing.assert_allclose(fc, x[400:], atol=1e-3)


def test_nvar_forecasts_lorenz(lorenz: np.ndarray) -> None:
    fc = NVARForecaster().predict(lorenz[:512], 128)
    assert _score(lorenz[:512], lorenz[512:640], fc) < 2.0  # a polynomial vector field: near exact
    quadratic = QuadraticNVARForecaster().predict(lorenz[:512], 128)
    assert _score(lorenz[:512], lorenz[512:640], quadratic) < 20.0


def test_analogue_beats_naive_on_lorenz(lorenz: np.ndarray) -> None:
    starts = range(512, 1772, 180)  # 7 windows
    scores = {
        f.name: np.median(
            [
                _score(lorenz[t - 512 : t], lorenz[t : t + 128], f.predict(lorenz[t - 512 : t], 128))
                for t in starts
            ]
        )
        for f in (AnalogueForecaster(), NaiveForecaster())
    }
    assert scores["analogue"] < scores["naive"] - 10.0


def test_selector_picks_the_expert_that_forecasts_the_context_best(lorenz: np.ndarray) -> None:
    from panda_fm.forecasters import EXPERTS, SelectorForecaster, backtest_experts

    context = lorenz[:512]
    z = (context - context.mean(0)) / context.std(0)
    names = ("analogue", "nvar")
    _, errors = backtest_experts(z[None], names, 16, 128)  # (1, 2, 3)
    assert errors[0, 1].mean() < 0.1 * errors[0, 0].mean()  # the NVAR backtests far better on Lorenz
    chosen = SelectorForecaster(experts=names).predict(context, 128)
    np.testing.assert_allclose(chosen, NVARForecaster().predict(context, 128), rtol=1e-6, atol=1e-6)
    noisy = context + 0.05 * context.std(0) * np.random.default_rng(0).standard_normal(context.shape)
    scores = {name: _score(context, lorenz[512:640], EXPERTS[name]().predict(noisy, 128)) for name in EXPERTS}
    chosen = _score(context, lorenz[512:640], SelectorForecaster().predict(noisy, 128))
    assert np.isclose(chosen, list(scores.values()), rtol=1e-6).any()  # one of the experts' forecasts
    assert chosen < np.median(list(scores.values()))


def test_iterated_forecasts_stay_bounded(lorenz: np.ndarray) -> None:
    noisy = lorenz[:512] + 0.3 * lorenz[:512].std(0) * np.random.default_rng(0).standard_normal((512, 3))
    lo, hi = noisy.min(0), noisy.max(0)
    for f in (NVARForecaster(), LinearARForecaster(), AnalogueForecaster()):
        fc = f.predict(noisy, 1000)
        assert np.isfinite(fc).all()
        assert (fc >= lo - (hi - lo) - 1e-6).all() and (fc <= hi + (hi - lo) + 1e-6).all()


def test_bad_input_raises_a_clear_error(lorenz: np.ndarray) -> None:
    f = NVARForecaster()
    with pytest.raises(ValueError, match="must be \\(T, C\\)"):
        f.predict(lorenz[:, 0], 10)
    with pytest.raises(ValueError, match="prediction_length"):
        f.predict(lorenz, 0)
    with pytest.raises(ValueError, match="at least"):
        f.predict(lorenz[:20], 10)
    bad = lorenz[:300].copy()
    bad[5, 1] = np.inf
    with pytest.raises(ValueError, match="inf.*NaN"):
        f.predict(bad, 10)
    bad[:, 1] = np.nan
    with pytest.raises(ValueError, match="no observation"):
        f.predict(bad, 10)
    with pytest.raises(ValueError, match="unknown baselines"):
        make_baselines(["nvar", "prophet"])
    with pytest.raises(ValueError, match="delays"):
        NVARForecaster(delays=0)
    with pytest.raises(ValueError, match="ridges"):
        LinearARForecaster(ridges=())
    assert [m.name for m in make_baselines("all")] == list(BASELINES)
