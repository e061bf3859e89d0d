"""The analogue whose delay embedding is chosen on the context (experts version 4's ``analogue_auto``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panda_fm.forecasters import EXPERT_VERSIONS, backtest_experts
from panda_fm.forecasters.analogue import AnalogueForecaster, auto_embedding, correlation_time
from panda_fm.forecasters.experts import SelectorForecaster
from panda_fm.forecasters.tensor.analogue import analogue_forecast
from panda_fm.forecasters.tensor.analogue import auto_embedding as auto_embedding_tensor
from panda_fm.forecasters.tensor.experts import backtest_experts_tensor

AUTO = dict(
    delays=4, k=4, exclude_recent=0, clip=True, embedding="auto", acf_threshold=0.25, min_embedding=12
)


def _oscillator(length: int, samples_per_period: float, channels: int = 3, seed: int = 0) -> np.ndarray:
    """``(T, C)`` a smooth quasi-periodic signal sampled ``samples_per_period`` times per period, plus 5% noise."""
    rng = np.random.default_rng(seed)
    t = 2 * np.pi * np.arange(length) / samples_per_period
    x = np.stack([np.sin(t), np.cos(1.3 * t), np.sin(0.7 * t) * np.cos(t)], axis=1)[:, :channels]
    return x + 0.05 * rng.normal(size=x.shape)


def _batch(length: int, channels: int) -> np.ndarray:
    """``(4, T, C)`` contexts at 25, 100, 100 and 400 samples per period: several strides in one batch."""
    return np.stack([_oscillator(length, p, channels, seed) for seed, p in enumerate((25, 100, 100, 400))])


def test_the_registry_expert_is_the_auto_analogue():
    expert = EXPERT_VERSIONS[4]["analogue_auto"]()
    assert isinstance(expert, AnalogueForecaster) and expert.name == "analogue_auto"
    assert {k: getattr(expert, k) for k in AUTO} == AUTO
    assert list(EXPERT_VERSIONS[4]) == [*EXPERT_VERSIONS[3], "analogue_auto"]


def test_the_stride_follows_the_sampling_rate_and_the_delays_the_channels():
    """A sine of period 80 and of period 320 samples: the strides are in the ratio of the rates."""
    t = np.arange(2048)
    z = np.stack([np.sin(2 * np.pi * t / p) for p in (80, 320)])[:, :, None]  # (2, T, 1)
    z = (z - z.mean(axis=1, keepdims=True)) / z.std(axis=1, keepdims=True)
    delays, strides = auto_embedding(z, 4, 0.25, 0)
    # the autocorrelation ~cos(2 pi l / P) falls below 0.25 at l ~ 0.21 P: lags 17 and 68, over 4 delays
    assert correlation_time(z, 0.25).tolist() == [17, 68]
    assert delays == 4 and strides.tolist() == [4, 17]
    assert auto_embedding(z, 4, 0.25, 12)[0] == 12  # one channel: 12 delays
    assert [auto_embedding(np.zeros((1, 64, c)), 4, 0.25, 12)[0] for c in (1, 2, 3, 6)] == [12, 6, 4, 4]
    # the stride keeps a delay vector within half the context
    assert auto_embedding(np.ones((1, 64, 1)), 4, 0.25, 12)[1].tolist() == [2]  # never decorrelates: capped
    tensor_delays, tensor_strides = auto_embedding_tensor(torch.from_numpy(z), 4, 0.25, 0)
    assert tensor_delays == 4 and tensor_strides.tolist() == [4, 17]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("gaps", [False, True])
def test_the_tensor_analogue_equals_the_numpy_one(channels: int, gaps: bool):
    x = _batch(400, channels)
    if gaps:
        x[1, 150:170, 0] = np.nan  # a gap inside the context
        x[3, -3:] = np.nan  # and at its end
    ref = AnalogueForecaster(**AUTO).predict(x, 64)
    out = analogue_forecast(torch.from_numpy(x), 64, **AUTO)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-10)  # measured 1.9e-15 at most
    if not gaps:  # several strides in the batch, and each series alone is forecast as in the batch
        z = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
        assert len(set(auto_embedding(z, 4, 0.25, 12)[1].tolist())) == 3
        for i in (0, 3):
            np.testing.assert_array_equal(AnalogueForecaster(**AUTO).predict(x[i : i + 1], 64)[0], ref[i])


def test_the_fixed_embedding_is_unchanged():
    """The default (``embedding="fixed"``) ignores the new settings: version 1's analogue as before."""
    x = _batch(300, 3)
    fixed = AnalogueForecaster(delays=4, stride=4, k=4).predict(x, 32)
    same = AnalogueForecaster(delays=4, stride=4, k=4, acf_threshold=0.9, min_embedding=30).predict(x, 32)
    np.testing.assert_array_equal(fixed, same)
    assert AnalogueForecaster().min_context == 18 and AnalogueForecaster(**AUTO).min_context == 17
    with pytest.raises(ValueError, match="embedding"):
        AnalogueForecaster(embedding="adaptive")


def test_version_4_adds_an_expert_and_keeps_version_3s_outputs():
    x = _batch(256, 3)
    z = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    z[1, :60] = np.nan  # a shorter context, left-padded
    names = list(EXPERT_VERSIONS[3])
    v3 = backtest_experts(z, names, 32, 128, version=3)
    v4 = backtest_experts(z, [*names, "analogue_auto"], 32, 128, version=4)
    np.testing.assert_array_equal(v4[0][:, :5], v3[0])
    np.testing.assert_array_equal(v4[1][:, :5], v3[1])
    tensor = backtest_experts_tensor(torch.from_numpy(z), ["analogue", "analogue_auto"], 32, 128, version=4)
    np.testing.assert_allclose(tensor[0].numpy(), v4[0][:, [3, 5]], rtol=0, atol=1e-9)
    np.testing.assert_allclose(tensor[1].numpy(), v4[1][:, [3, 5]], rtol=0, atol=1e-9)


def test_the_selector_runs_every_expert_of_version_4():
    selector = SelectorForecaster()
    assert "analogue_auto" in selector.experts and selector.min_context == 119
    x = _oscillator(160, 100)[None]
    assert np.isfinite(selector.predict(x[:, -128:], 32)).all()


def test_a_model_of_version_4_runs_the_new_expert():
    from tests.conftest import random_model

    model = random_model(incontext="experts", experts=["analogue", "analogue_auto"], experts_version=4)
    x = torch.from_numpy(_batch(512, 2)).float()
    with torch.no_grad():
        y = model(x)
    assert y.shape[:1] == (4,) and y.shape[2] == 2 and torch.isfinite(y).all()
