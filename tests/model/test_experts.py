"""The model's in-context experts: missing values, agreement with the classical forecasters, saved outputs."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from panda_fm import PandaPipeline
from panda_fm.config import EXPERT_NAMES, PandaConfig
from panda_fm.forecasters import EXPERT_VERSIONS, EXPERTS, AnalogueForecaster, NVARForecaster
from panda_fm.forecasters.experts import backtest_experts
from panda_fm.model.experts import expert_forecasts
from tests.conftest import FIXTURES


def _lorenz_like(T: int = 512) -> np.ndarray:
    t = np.arange(T) * 0.05
    return np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t) * np.cos(t)], axis=1)


def test_a_default_experts_config_uses_the_experts_of_its_default_version_in_order():
    """The default experts are version 1's five (versions 1-3 share them; version 4 adds one, named explicitly)."""
    assert PandaConfig(incontext="experts").experts == list(EXPERT_VERSIONS[1]) == list(EXPERTS)[:5]


def test_raw_experts_are_the_baselines():
    """Version 1 (no channel grouping): each expert is its classical forecaster on the whole context."""
    x = torch.from_numpy(_lorenz_like()[None]).float()
    out, errors, _ = expert_forecasts(
        x, None, ["nvar", "analogue"], 32, 100, version=1
    )  # (1, 2, 32, 3), (1, 2, 3)
    z = x.double().numpy()
    np.testing.assert_allclose(out[0, 0].numpy(), NVARForecaster().predict(z, 32)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out[0, 1].numpy(), AnalogueForecaster().predict(z, 32)[0], rtol=1e-5, atol=1e-5
    )


def test_gaps_reach_the_experts_as_missing_values():
    """Unobserved entries are missing values to the experts: the model's experts give what the numpy experts
    give on the context with NaN there (left padding, a long gap in one channel, the last steps of another)."""
    x = torch.from_numpy(_lorenz_like()[None]).float()
    observed = torch.ones_like(x, dtype=torch.bool)
    observed[:, :100] = False
    observed[:, 300:340, 1] = False
    observed[:, -20:, 2] = False
    out, errors, _ = expert_forecasts(torch.where(observed, x, 0.0), observed, list(EXPERT_NAMES), 16, 64)
    z = torch.where(observed, x, torch.nan).double().numpy()
    ref, ref_errors = backtest_experts(z, list(EXPERT_NAMES), 16, 64)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(errors.numpy(), ref_errors, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"experts": ["nvar", "oracle"]}, "experts must be distinct names"),
        ({"experts": []}, "experts must be distinct names"),
        ({"experts": ["nvar", "nvar"]}, "experts must be distinct names"),
        ({"expert_combine": "vote"}, "expert_combine"),
        ({"context_length": 200, "patch_length": 4, "patch_stride": 4}, "expert_backtest \\+ 80"),
        ({"expert_backtest": 0}, "expert_backtest >= 1"),
        ({"prediction_length": 100}, "multiple of patch_length"),
    ],
)
def test_experts_config_is_validated(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        PandaConfig(incontext="experts", **kwargs)


def test_experts_checkpoint_reproduces_its_saved_forecasts_and_weights():
    """A tiny experts checkpoint with a random head: any change to an expert, the backtest, the tokens the
    network reads or its weighing changes these outputs (tests/fixtures/make_expert_fixtures.py)."""
    saved = load_file(FIXTURES / "experts_outputs.safetensors")
    pipe = PandaPipeline.from_pretrained(FIXTURES / "tiny_experts")
    torch.testing.assert_close(pipe.predict(saved["context"], 64), saved["forecast"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        pipe.predict(saved["context"], 200), saved["long_forecast"], rtol=1e-4, atol=1e-4
    )
    with torch.no_grad():
        _, weights = pipe.model.expert_weights(saved["standardised"].float(), None, 64)
    torch.testing.assert_close(weights, saved["weights"], rtol=1e-4, atol=1e-6)


def test_channels_of_another_system_leave_a_systems_forecast_alone():
    """Experts version 2: a system's channels are forecast as if alone, whatever channels stand beside them
    (noise here): the experts fit the group apart, and the network's channel attention and backtest prior
    stay within the group. Version 1 mixes them."""
    from tests.forecasters.test_tensor_nvar import lorenz_trajectory

    pipe = PandaPipeline.from_pretrained(FIXTURES / "tiny_experts")
    lorenz = lorenz_trajectory()[: pipe.config.context_length]
    noise = 10 * np.random.default_rng(0).standard_normal((len(lorenz), 3))
    pipe.model.config.experts_version = 2
    alone = pipe.predict(lorenz, 64)
    beside = pipe.predict(np.concatenate([lorenz, noise], axis=1), 64)[:, :3]
    np.testing.assert_allclose(beside, alone, rtol=1e-4, atol=1e-4 * lorenz.std())
    pipe.model.config.experts_version = 1
    mixed = pipe.predict(np.concatenate([lorenz, noise], axis=1), 64)[:, :3]
    assert np.abs(mixed - pipe.predict(lorenz, 64)).max() > 0.01 * lorenz.std()
