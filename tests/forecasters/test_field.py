"""The field NVAR (one local model shared by the sites of a ring) and the NVAR of wide contexts, numpy and torch.

Lorenz-96 (32 sites, F = 8) is the field: its vector field is quadratic in a radius-2 neighbourhood, so the shared
quadratic model forecasts it nearly exactly, where the joint NVAR (linear on 64 delay entries) cannot.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from panda_fm.eval.metrics import smape
from panda_fm.eval.stress import lorenz96
from panda_fm.forecasters.experts import EXPERT_VERSIONS
from panda_fm.forecasters.field import FieldNVARForecaster, WideNVARForecaster, neighbourhoods
from panda_fm.forecasters.nvar import NVARForecaster
from panda_fm.forecasters.tensor.experts import tensor_expert
from panda_fm.forecasters.tensor.field import field_nvar_forecast, wide_nvar_forecast
from panda_fm.forecasters.tensor.field import neighbourhoods as tensor_neighbourhoods
from panda_fm.model.experts import expert_forecasts
from panda_fm.scaling import fit_scale

H = 128


@pytest.fixture(scope="module")
def field() -> tuple[np.ndarray, np.ndarray]:
    """Two Lorenz-96 windows: contexts ``(2, 512, 32)`` and their continuations ``(2, H, 32)``."""
    traj = lorenz96(n_ics=1, n_steps=1400)[0]  # (1400, 32)
    starts = (0, 700)
    return np.stack([traj[s : s + 512] for s in starts]), np.stack(
        [traj[s + 512 : s + 512 + H] for s in starts]
    )


def scores(contexts: np.ndarray, truths: np.ndarray, forecasts: np.ndarray) -> list[float]:
    """sMAPE over the horizon per window, in units standardised by the context (as the benchmark)."""
    m, s = contexts.mean(axis=1, keepdims=True), contexts.std(axis=1, keepdims=True)
    return [smape((t - mi) / si, (f - mi) / si) for t, f, mi, si in zip(truths, forecasts, m, s, strict=True)]


def test_neighbourhoods_by_hand() -> None:
    z = 10.0 * np.arange(3)[:, None] + np.arange(5)[None, :]  # z[t, c] = 10 t + c
    v = neighbourhoods(z, 2, radius=1, delays=2, stride=1)  # (C, D)
    assert v.shape == (5, 6)
    assert v[0].tolist() == [24, 20, 21, 14, 10, 11]  # site 0 wraps round to site 4, delay-major
    assert v[4].tolist() == [23, 24, 20, 13, 14, 10]
    t = torch.from_numpy(z)[None]
    assert torch.equal(tensor_neighbourhoods(t, 2, 1, 2, 1)[0], torch.from_numpy(v))
    many = tensor_neighbourhoods(t, torch.tensor([1, 2]), 1, 2, 1)[0]  # (N, C, D)
    assert torch.equal(many, torch.from_numpy(neighbourhoods(z, np.array([1, 2]), 1, 2, 1)))


def test_the_field_nvar_forecasts_lorenz96_where_the_joint_nvar_cannot(field) -> None:
    contexts, truths = field
    shared = scores(contexts, truths, FieldNVARForecaster().predict(contexts, H))
    joint = scores(contexts, truths, NVARForecaster().predict(contexts, H))
    assert max(shared) < 5 and min(joint) > 40, (shared, joint)  # measured: about 1 against 60-70


def test_the_field_nvar_reads_every_site_in_common_units(field) -> None:
    """One mean and std for all channels: an affine change of units common to all sites carries over exactly,
    and the forecast does not depend on the sites' own means and stds."""
    contexts, _ = field
    f = FieldNVARForecaster()
    base = f.predict(contexts[:1], 16)
    np.testing.assert_allclose(f.predict(3.0 * contexts[:1] - 7.0, 16), 3.0 * base - 7.0, rtol=0, atol=1e-6)


def test_tensor_agrees_with_numpy(field) -> None:
    contexts, _ = field
    gappy = contexts.copy()
    gappy[0, 100:130, 5] = np.nan  # a gap longer than the filled holes
    gappy[1, -2:, :3] = np.nan  # missing values at the end
    for x in (contexts, gappy):
        ref = FieldNVARForecaster().predict(x, H)
        out = field_nvar_forecast(torch.from_numpy(x), H).numpy()
        scale = np.nanstd(x, axis=1, keepdims=True)
        assert np.abs((out - ref) / scale).max() < 1e-5  # measured 1e-7 (the fits' rounding, amplified)


def test_the_wide_nvar_is_the_joint_nvar_below_its_channel_count() -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((2, 300, 7)), axis=1)
    wide, joint = WideNVARForecaster(), NVARForecaster()
    assert np.array_equal(wide.predict(x, 16), joint.predict(x, 16))
    expert = tensor_expert(wide)
    assert torch.equal(expert(torch.from_numpy(x), 16), tensor_expert(joint)(torch.from_numpy(x), 16))


def test_the_wide_nvar_chooses_per_series_by_backtest(field) -> None:
    """32 sinusoids of different frequencies are no field: each follows its own linear recurrence, which the joint
    NVAR fits exactly and one shared model cannot; the backtest keeps the joint NVAR there and the field NVAR on
    Lorenz-96."""
    contexts, _ = field
    t = np.arange(512)[:, None]
    waves = np.sin(np.linspace(0.02, 0.3, 32) * t + np.arange(32))  # (512, 32)
    x = np.stack([contexts[0], waves])
    out = WideNVARForecaster().predict(x, H)
    assert np.array_equal(out[0], FieldNVARForecaster().predict(x[:1], H)[0])
    assert np.array_equal(out[1], NVARForecaster().predict(x[1:], H)[0])
    joint = tuple(sorted(dict(ridges=NVARForecaster.ridges).items()))
    tensor = wide_nvar_forecast(torch.from_numpy(x), H, joint=joint).numpy()
    # the same choices; noise-free sinusoids make the joint fit ill-conditioned, so rounding shows (measured 2e-4)
    assert np.abs((tensor - out) / x.std(axis=1, keepdims=True)).max() < 1e-3
    # a margin beyond the backtests' ratio on Lorenz-96 (about 1e-6 against 3) keeps the joint NVAR everywhere
    strict = WideNVARForecaster(margin=1e12).predict(x, H)
    assert np.array_equal(strict, NVARForecaster().predict(x, H))
    strict_tensor = wide_nvar_forecast(torch.from_numpy(x), H, joint=joint, margin=1e12).numpy()
    assert np.abs((strict_tensor - strict) / x.std(axis=1, keepdims=True)).max() < 1e-3
    with pytest.raises(ValueError, match="margin >= 1"):
        WideNVARForecaster(margin=0.5)


def test_experts_version_5_read_the_context_in_its_units(field) -> None:
    """Through the model's adapter, version 5's NVAR forecasts the field when the statistics of the
    standardisation come along (as ``PandaModel.forward`` passes them), and no worse than the joint NVAR
    without; version 3's experts ignore them."""
    contexts, truths = field
    raw = torch.as_tensor(contexts, dtype=torch.float32)
    stats = fit_scale(raw, torch.ones_like(raw, dtype=torch.bool), 1e-5)
    x = stats.normalise(raw)
    names = list(EXPERT_VERSIONS[3])

    def nvar_smape(version: int, units) -> float:
        forecasts = expert_forecasts(x, None, names, H, 128, version, units=units)[0][:, 0]  # (B, H, C)
        return float(np.median(scores(contexts, truths, stats.denormalise(forecasts).double().numpy())))

    with_units, without = nvar_smape(5, stats), nvar_smape(5, None)
    assert with_units < 5 < without  # measured: about 1, and 40-50 (per-channel units break the shared model)
    ignored, plain = (
        expert_forecasts(x, None, names, H, 128, 3, units=stats),
        expert_forecasts(x, None, names, H, 128, 3),
    )
    assert torch.equal(ignored[0], plain[0]) and torch.equal(ignored[1], plain[1])


def test_version_5_errors_stay_standardised_where_a_channel_is_unobserved() -> None:
    """In the context's own units an unobserved backtest still scores 1 context std (the experts' sentinel), and
    the other errors agree with version 3's on channels of very different scales."""
    torch.manual_seed(0)
    raw = torch.cumsum(torch.randn(2, 512, 3, dtype=torch.float64), 1) * torch.tensor([1.0, 100.0, 0.01])
    raw[0, -100:, 1] = torch.nan  # channel 1 of series 0 is not observed in the 64-step backtest
    observed = torch.isfinite(raw)
    stats = fit_scale(raw, observed, 1e-5)
    x = torch.where(observed, stats.normalise(raw), 0.0)
    names = list(EXPERT_VERSIONS[3])
    v3 = expert_forecasts(x, observed, names, 64, 64, 3)
    v5 = expert_forecasts(x, observed, names, 64, 64, 5, units=stats)
    assert torch.equal(v5[1][0, :, 1], torch.ones(5))
    torch.testing.assert_close(v5[1], v3[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        v5[0], v3[0], rtol=0, atol=1e-3
    )  # rounding of the units, amplified by some fits


def test_a_wide_context_without_observed_backtest_keeps_the_joint_nvar(field) -> None:
    """Nothing observed in the backtest's steps: no evidence for the field NVAR, the joint NVAR forecasts (and
    no warning about empty means)."""
    x = field[0][:1].copy()
    x[0, -64:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = WideNVARForecaster().predict(x, 16)
    assert np.array_equal(out, NVARForecaster().predict(x, 16))
