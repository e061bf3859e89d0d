"""Each window's own backtest: independent of its batch (versions 3+), and started after a gap (version 6)."""

import numpy as np
import pytest
import torch

from panda_fm import PandaPipeline
from panda_fm.forecasters import backtest_experts
from panda_fm.forecasters.experts import GAP_WARMUP, MIN_BACKTEST, backtest_lengths
from panda_fm.forecasters.tensor.experts import backtest_experts_tensor
from tests.conftest import REPO

NAMES = ["nvar", "analogue"]


def _lorenz(n: int, T: int = 512, seed: int = 0, every: int = 3) -> np.ndarray:
    """``n`` Lorenz-63 windows ``(n, T, 3)`` sampled every ``every`` RK4 steps of 0.01, standardised."""
    rng = np.random.default_rng(seed)

    def f(x: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                10 * (x[:, 1] - x[:, 0]),
                x[:, 0] * (28 - x[:, 2]) - x[:, 1],
                x[:, 0] * x[:, 1] - 8 / 3 * x[:, 2],
            ],
            1,
        )

    x, dt, out = rng.normal(size=(n, 3)) + [0.0, 0.0, 25.0], 0.01, []
    for i in range(1000 + T * every):
        k1 = f(x)
        k2 = f(x + dt / 2 * k1)
        k3 = f(x + dt / 2 * k2)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + f(x + dt * k3))
        if i >= 1000 and (i - 1000) % every == 0:
            out.append(x)
    z = np.stack(out, axis=1)
    return (z - z.mean(axis=1, keepdims=True)) / z.std(axis=1, keepdims=True)


def _with_gap(z: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``z`` with every channel missing over steps ``start:stop`` counted from the end (negative)."""
    gappy = z.copy()
    gappy[:, start:stop] = np.nan
    return gappy


def test_lengths_by_hand():
    z = _lorenz(1)
    cases = {
        "full": (z, 128, 128),
        "short (150 steps)": (_with_gap(z, 0, -150), 50, 50),
        "gap over the origin": (_with_gap(z, -150, -100), 128, 100 - GAP_WARMUP),
        "gap just before the origin": (_with_gap(z, -160, -130), 128, 130 - GAP_WARMUP),
        "gap inside the backtest": (_with_gap(z, -60, -40), 128, 128),  # its steps are left out of the score
        "gap too close to the end": (_with_gap(z, -150, -20), 128, 128),  # too few steps after it
        "short hole (3 steps)": (_with_gap(z, -130, -127), 128, 128),  # filled and trusted
    }
    for name, (x, v5, v6) in cases.items():
        got = [backtest_lengths(torch.from_numpy(x), 128, version)[0] for version in (5, 6)]
        assert got == [v5, v6], name
    assert 20 - GAP_WARMUP < MIN_BACKTEST


@pytest.mark.parametrize("version", [5, 6])
def test_a_window_backtests_the_same_alone_and_in_a_batch(version: int):
    """A long window next to a short one (left-padded) and a gappy one keeps its own backtest: its errors and
    forecasts are those it gets alone, in torch (with the backtest's forecasts) and in numpy."""
    z = _lorenz(3)
    z[1, :-150] = np.nan
    z[2, -150:-100] = np.nan
    batch = torch.from_numpy(z)
    together = backtest_experts_tensor(batch, NAMES, 32, 128, version, with_backtest=True)
    lengths = backtest_lengths(batch, 128, version)
    assert together[2].shape[2] == max(lengths)
    for i in range(3):
        alone = backtest_experts_tensor(batch[i : i + 1], NAMES, 32, 128, version, with_backtest=True)
        torch.testing.assert_close(together[0][i : i + 1], alone[0], rtol=0, atol=1e-8)
        torch.testing.assert_close(together[1][i : i + 1], alone[1], rtol=0, atol=1e-8)
        v = alone[2].shape[2]
        assert v == lengths[i] and torch.isnan(together[2][i, :, :-v]).all()
        torch.testing.assert_close(together[2][i : i + 1, :, -v:], alone[2], rtol=0, atol=1e-8)
        numpy_alone = backtest_experts(z[i : i + 1], NAMES, 32, 128, version)
        np.testing.assert_allclose(numpy_alone[1], alone[1].numpy(), rtol=0, atol=1e-6)
    numpy_together = backtest_experts(z, NAMES, 32, 128, version)
    np.testing.assert_allclose(numpy_together[0], together[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(numpy_together[1], together[1].numpy(), rtol=0, atol=1e-6)


def test_version_6_backtests_after_a_gap_at_the_origin():
    """With the origin in a long gap, version 5's backtest forecasts across it (its errors measure long leads
    only, every expert is far off); version 6 starts after the gap, where the cubic NVAR is nearly exact."""
    z = _with_gap(_lorenz(4, seed=1, every=5), -150, -100)  # 20 samples a time unit: 150 steps are 7.5
    v5, v6 = (backtest_experts(z, NAMES, 32, 128, version) for version in (5, 6))
    assert np.median(v6[1][:, 0]) < 0.1 * np.median(v5[1][:, 0])  # the NVAR's backtest error
    assert (v6[1][:, 0].mean(axis=1) < v6[1][:, 1].mean(axis=1)).all()  # and it now beats the analogue's


def test_the_models_choice_is_the_same_alone_and_in_a_batch():
    """The shipped checkpoint (network and evidence chooser, whose evidence counts each window's leads from its
    own origin): a window's expert weights do not depend on the other windows of its batch."""
    model = PandaPipeline.from_pretrained(REPO / "checkpoints" / "panda-fm-small").model
    z = torch.as_tensor(_lorenz(3), dtype=torch.float32)
    z[1, :-150] = torch.nan
    with torch.inference_mode():
        x, observed, stats, _ = model.prepare(z)
        forecasts, weights = model.expert_weights(x, observed, 64, stats)
        for i in range(3):
            xi, oi, si, _ = model.prepare(z[i : i + 1])
            f, w = model.expert_weights(xi, oi, 64, si)
            torch.testing.assert_close(forecasts[i : i + 1], f, rtol=0, atol=1e-5)
            torch.testing.assert_close(weights[i : i + 1], w, rtol=0, atol=1e-5)
