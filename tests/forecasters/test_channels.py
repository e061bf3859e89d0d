"""Channel groups: which channels of a context form one system, and the experts fitted per group."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from panda_fm.forecasters import backtest_experts
from panda_fm.forecasters.tensor.channels import channel_groups, grouped, help_ratios
from panda_fm.forecasters.tensor.experts import backtest_experts_tensor
from panda_fm.forecasters.tensor.nvar import nvar_forecast
from tests.forecasters.test_tensor_nvar import lorenz_trajectory


@pytest.fixture(scope="module")
def lorenz() -> np.ndarray:
    return lorenz_trajectory()


@pytest.fixture(scope="module")
def rossler() -> np.ndarray:
    from dysts.flows import Rossler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Rossler().make_trajectory(1200, pts_per_period=100, rtol=1e-7, atol=1e-8)


def _standardised(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((x - x.mean(axis=0)) / x.std(axis=0))[None])


def test_noise_channels_stand_alone_and_a_system_stays_together(lorenz):
    noise = np.random.default_rng(0).standard_normal((512, 3))
    z = _standardised(np.concatenate([lorenz[:512], noise], axis=1))
    ratios = help_ratios(z)[0]
    assert ratios[:3, 3:].min() > 0.8  # noise explains nothing of Lorenz's increments
    assert channel_groups(z)[0].tolist()[:3] == [0, 0, 0]
    assert len(set(channel_groups(z)[0].tolist())) == 4  # Lorenz, and each noise channel alone


def test_two_stacked_systems_separate(lorenz, rossler):
    z = _standardised(np.concatenate([lorenz[:512], rossler[300:812]], axis=1))
    labels = channel_groups(z)[0].tolist()
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]


def test_grouped_runs_each_group_alone():
    z = torch.randn(2, 50, 4, dtype=torch.float64)
    labels = torch.tensor([[0, 0, 2, 2], [0, 1, 1, 0]])

    def per_group(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # depends on the whole group
        return x.sum(dim=2, keepdim=True).expand_as(x)[:, -3:] + x[:, -3:], x.mean(dim=1)

    last, mean = grouped(per_group, z, labels, (2, 1))
    for b, groups in enumerate([[[0, 1], [2, 3]], [[0, 3], [1, 2]]]):
        for channels in groups:
            expected = per_group(z[b : b + 1, :, channels])
            torch.testing.assert_close(last[b, :, channels], expected[0][0])
            torch.testing.assert_close(mean[b, channels], expected[1][0])


def test_grouped_experts_agree_with_the_numpy_experts_and_ignore_noise_channels(lorenz):
    names = ["nvar", "analogue"]
    alone = torch.from_numpy(np.stack([lorenz[:512], lorenz[600:1112]]))
    noise = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 512, 3)))
    z = torch.cat([alone, noise], dim=2)
    z = (z - z.mean(dim=1, keepdim=True)) / z.std(dim=1, keepdim=True)
    forecasts, errors = backtest_experts_tensor(z, names, 64, 128, version=2)
    ref_forecasts, ref_errors = backtest_experts(z.numpy(), names, 64, 128, version=2)
    np.testing.assert_allclose(forecasts.numpy(), ref_forecasts, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(errors.numpy(), ref_errors, rtol=1e-5, atol=1e-5)
    # Lorenz's channels get the forecasts of Lorenz alone; version 1 fits them jointly with the noise
    only, _ = backtest_experts_tensor(z[..., :3], names, 64, 128, version=2)
    torch.testing.assert_close(forecasts[..., :3], only)
    joint, _ = backtest_experts_tensor(z, names, 64, 128, version=1)
    assert (joint[:, 0, :, :3] - only[:, 0]).abs().mean() > 100 * (
        forecasts[:, 0, :, :3] - only[:, 0]
    ).abs().mean()


def test_large_nvar_fits_solve_with_several_threads():
    """torch 2.13's batched CPU LU fails for ~160+ features with 2 threads; the NVAR's Cholesky solve does not
    (9 channels: 189 quadratic features, 8 penalties)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(3, 512, 9, dtype=torch.float64).cumsum(dim=1)
        assert torch.isfinite(nvar_forecast(x, 16)).all()
    finally:
        torch.set_num_threads(threads)


def test_series_with_one_group_and_with_several_batch_together(lorenz):
    """A batch mixing a series whose channels form one system with one that has noise channels gives each
    series what it gets alone."""
    names = ["nvar", "analogue"]
    system = lorenz[:512]
    one = np.concatenate(
        [system, system[:, :3] ** 2 / 10 + system[:, [1, 2, 0]]], axis=1
    )  # 6 related channels
    several = np.concatenate([lorenz[600:1112], np.random.default_rng(2).standard_normal((512, 3))], axis=1)
    z = torch.from_numpy(np.stack([one, several]))
    z = (z - z.mean(dim=1, keepdim=True)) / z.std(dim=1, keepdim=True)
    forecasts, errors = backtest_experts_tensor(z, names, 32, 128, version=2)
    for b in range(2):
        alone, alone_errors = backtest_experts_tensor(z[b : b + 1], names, 32, 128, version=2)
        torch.testing.assert_close(forecasts[b : b + 1], alone)
        torch.testing.assert_close(errors[b : b + 1], alone_errors)
