"""The experts of :data:`panda_fm.forecasters.EXPERT_VERSIONS` as tensor code, and their backtest.

Settings are read off the numpy registry's forecasters (one source of truth for every setting): each
registry entry becomes a function ``(x (B, T, C), horizon) -> (B, H, C)`` on the input's device and dtype.

Shape letters: B batch, T time, C channels, E experts, H horizon, V backtest steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, partial

import torch

from panda_fm.forecasters.analogue import AnalogueForecaster
from panda_fm.forecasters.base import Forecaster, MeanForecaster, NaiveForecaster
from panda_fm.forecasters.denoise import DenoisedForecaster
from panda_fm.forecasters.experts import EXPERT_VERSIONS, LATEST_EXPERTS_VERSION
from panda_fm.forecasters.nvar import NVARForecaster
from panda_fm.forecasters.tensor.analogue import analogue_forecast
from panda_fm.forecasters.tensor.denoise import gaussian_smooth, savgol_smooth
from panda_fm.forecasters.tensor.nvar import nvar_forecast

__all__ = ["tensor_expert", "backtest_experts_tensor"]

TensorForecast = Callable[[torch.Tensor, int], torch.Tensor]


def _denoised(smooth: Callable[[torch.Tensor], torch.Tensor], base: TensorForecast) -> TensorForecast:
    def forecast(x: torch.Tensor, horizon: int) -> torch.Tensor:
        return base(smooth(x), horizon)

    return forecast


def tensor_expert(forecaster: Forecaster) -> TensorForecast:
    """The tensor function that computes what ``forecaster.predict`` does, with its settings.

    Raises:
        TypeError: for a forecaster without a tensor implementation.
    """
    f = forecaster
    if isinstance(f, NaiveForecaster):
        return lambda x, horizon: x[:, -1:].expand(-1, horizon, -1).clone()
    if isinstance(f, MeanForecaster):
        return lambda x, horizon: x.mean(dim=1, keepdim=True).expand(-1, horizon, -1).clone()
    if isinstance(f, DenoisedForecaster):
        if f.smoother == "gauss":
            smooth = partial(gaussian_smooth, sigma=float(f.width))
        else:
            smooth = partial(savgol_smooth, window=int(f.width), order=3)
        return _denoised(smooth, tensor_expert(f.base))
    if isinstance(f, NVARForecaster):
        return partial(
            nvar_forecast,
            delays=f.delays,
            stride=f.stride,
            degree=f.degree,
            ridges=tuple(f.ridges),
            validation=f.validation,
            max_feature_ratio=f.max_feature_ratio,
            clip=f.clip,
        )
    if isinstance(f, AnalogueForecaster):
        return partial(
            analogue_forecast,
            delays=f.delays,
            stride=f.stride,
            k=f.k,
            exclude_recent=f.exclude_recent,
            clip=f.clip,
        )
    raise TypeError(f"no tensor implementation of {type(f).__name__}")


@cache
def _registry(version: int) -> dict[str, TensorForecast]:
    return {name: tensor_expert(make()) for name, make in EXPERT_VERSIONS[version].items()}


def backtest_experts_tensor(
    z: torch.Tensor, names: Sequence[str], horizon: int, backtest: int, version: int = LATEST_EXPERTS_VERSION
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`panda_fm.forecasters.backtest_experts` in torch, on ``z``'s device and dtype.

    Args:
        z: ``(B, T, C)`` standardised contexts, finite.
        names: keys of ``EXPERT_VERSIONS[version]``.
        horizon: steps to forecast.
        backtest: the last ``backtest`` steps of the context are forecast from the steps before them.
        version: the registry version.

    Returns:
        Forecasts ``(B, E, H, C)`` and backtest mean absolute errors ``(B, E, C)``, both finite (a diverged
        forecast's non-finite values become 0, its error stays large).
    """
    experts = [_registry(version)[name] for name in names]
    past_context, held_out = z[:, :-backtest], z[:, -backtest:]
    forecasts = torch.stack([e(z, horizon) for e in experts], dim=1)  # (B, E, H, C)
    past = torch.stack([e(past_context, backtest) for e in experts], dim=1)  # (B, E, V, C)
    errors = (past - held_out[:, None]).abs().mean(dim=2)  # (B, E, C)
    errors = torch.nan_to_num(errors, nan=1e6, posinf=1e6)
    return torch.nan_to_num(forecasts, nan=0.0, posinf=0.0, neginf=0.0), errors
