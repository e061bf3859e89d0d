"""The experts registry: frozen, versioned, and pinned by saved outputs."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from panda_fm.forecasters import EXPERT_VERSIONS, EXPERTS, LATEST_EXPERTS_VERSION, backtest_experts
from panda_fm.forecasters import experts as experts_module
from panda_fm.forecasters.nvar import NVARForecaster
from panda_fm.forecasters.tensor.experts import backtest_experts_tensor
from tests.conftest import FIXTURES


def _lorenz_like(T: int = 512) -> np.ndarray:
    t = np.arange(T) * 0.05
    return np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t) * np.cos(t)], axis=1)


def test_version_1_reproduces_its_saved_forecasts_and_backtest_errors():
    saved = load_file(FIXTURES / "experts_outputs.safetensors")
    names = list(EXPERT_VERSIONS[1])
    forecasts, errors = backtest_experts(saved["standardised"].numpy(), names, 200, 128, version=1)
    np.testing.assert_allclose(forecasts, saved["expert_forecasts_v1"].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(errors, saved["expert_errors_v1"].numpy(), rtol=1e-4, atol=1e-6)


def test_the_tensor_experts_reproduce_the_numpy_reference_of_every_version():
    """All five experts and their backtest, batched in torch (float64), within 2e-5 context stds of the numpy
    reference's saved outputs. Measured: 6.6e-6 at most, on the Savitzky-Golay-filtered NVAR 200 steps out (its
    filter differs from scipy's by ~1e-13 and the ill-conditioned NVAR fit amplifies it); 1e-8 elsewhere."""
    saved = load_file(FIXTURES / "experts_outputs.safetensors")
    names = list(EXPERT_VERSIONS[1])
    forecasts, errors = backtest_experts_tensor(saved["standardised"], names, 200, 128, version=1)
    torch.testing.assert_close(forecasts, saved["expert_forecasts_v1"], rtol=0, atol=2e-5)
    torch.testing.assert_close(errors, saved["expert_errors_v1"], rtol=0, atol=2e-5)


def test_the_registry_is_read_only_and_its_experts_ignore_the_baselines_defaults(monkeypatch):
    assert EXPERTS is EXPERT_VERSIONS[LATEST_EXPERTS_VERSION]
    with pytest.raises(TypeError):
        EXPERT_VERSIONS[1]["nvar"] = NVARForecaster  # type: ignore[index]
    z = _lorenz_like()[None]
    before = EXPERTS["nvar"]().predict(z, 32)

    @dataclass
    class Retuned(NVARForecaster):  # a baseline whose defaults someone tuned
        delays: int = 5
        degree: int = 2

    monkeypatch.setattr(experts_module, "NVARForecaster", Retuned)
    assert isinstance(EXPERTS["nvar"]().joint, Retuned)  # the NVAR of narrow contexts (version 5's wide NVAR)
    np.testing.assert_array_equal(EXPERTS["nvar"]().predict(z, 32), before)
    assert not np.array_equal(Retuned().predict(z, 32), before)


@pytest.mark.parametrize("name", ["nvar_g1", "nvar_sg11", "analogue_g2"])
def test_denoised_experts_filter_the_noise_and_keep_the_shape(name: str):
    clean = _lorenz_like()[None]
    noisy = clean + 0.1 * np.random.default_rng(0).normal(size=clean.shape)
    expert = EXPERTS[name]()
    assert expert.name == name
    smooth = expert.denoise(noisy)
    assert smooth.shape == noisy.shape
    assert np.abs(smooth - clean).mean() < 0.6 * np.abs(noisy - clean).mean()
    assert expert.predict(noisy, 16).shape == (1, 16, 3)


def test_version_3_shortens_the_backtest_on_short_contexts_only():
    from panda_fm.forecasters.experts import MIN_BACKTEST, backtest_length

    assert [backtest_length(span, 128, 2) for span in (512, 256, 40)] == [128, 128, 128]
    assert [backtest_length(span, 128, 3) for span in (512, 384, 256, 128, 30)] == [
        128,
        128,
        85,
        42,
        MIN_BACKTEST,
    ]
    z = _lorenz_like()[None]  # (1, 512, 3), fully observed: version 3 is version 2
    v2, v3 = (backtest_experts(z, ["nvar", "analogue"], 64, 128, version=v) for v in (2, 3))
    np.testing.assert_array_equal(v2[0], v3[0])
    np.testing.assert_array_equal(v2[1], v3[1])
    # 256 observed steps after 256 missing ones (a short context, left-padded): an 85-step backtest, the same
    # in numpy and in torch
    short = z.copy()
    short[:, :256] = np.nan
    numpy_v3 = backtest_experts(short, ["nvar", "analogue"], 64, 128, version=3)
    tensor_v3 = backtest_experts_tensor(torch.from_numpy(short), ["nvar", "analogue"], 64, 128, version=3)
    np.testing.assert_allclose(tensor_v3[0].numpy(), numpy_v3[0], atol=1e-6)
    np.testing.assert_allclose(tensor_v3[1].numpy(), numpy_v3[1], atol=1e-6)
    numpy_v2 = backtest_experts(short, ["nvar", "analogue"], 64, 128, version=2)
    assert not np.allclose(numpy_v2[1], numpy_v3[1])  # the backtest itself changed


def test_the_selector_runs_on_contexts_its_shortened_backtest_allows():
    from panda_fm.forecasters.base import ContextTooShortError
    from panda_fm.forecasters.experts import SelectorForecaster

    selector = SelectorForecaster()
    assert selector.min_context == 119  # 119 - 39 backtest steps = the 80 the NVAR needs before them
    z = _lorenz_like(160)[None]
    assert np.isfinite(selector.predict(z[:, -128:], 32)).all()
    with pytest.raises(ContextTooShortError, match="at least 119"):
        selector.predict(z[:, -100:], 32)
