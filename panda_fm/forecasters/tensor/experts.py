"""The experts of :data:`panda_fm.forecasters.EXPERT_VERSIONS` as tensor code, and their backtest.

Settings are read off the numpy registry's forecasters (one source of truth for every setting): each
registry entry becomes a :class:`TensorExpert` ``(x (B, T, C), horizon) -> (B, H, C)`` on the input's device
and dtype, and experts that share a base forecaster (the raw and denoised NVARs, say) run as one batch.

Shape letters: B batch, T time, C channels, E experts, H horizon, V backtest steps.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from functools import cache, partial
from typing import Any

import torch

from panda_fm.forecasters.analogue import AnalogueForecaster, SMapForecaster
from panda_fm.forecasters.base import Forecaster, MeanForecaster, NaiveForecaster
from panda_fm.forecasters.denoise import DenoisedForecaster
from panda_fm.forecasters.experts import (
    CHANNEL_GROUPING,
    EXPERT_VERSIONS,
    LATEST_EXPERTS_VERSION,
    backtest_lengths,
)
from panda_fm.forecasters.field import FieldNVARForecaster, WideNVARForecaster
from panda_fm.forecasters.nvar import NVARForecaster
from panda_fm.forecasters.tensor.analogue import analogue_forecast, smap_forecast
from panda_fm.forecasters.tensor.channels import channel_groups, keep_better_groups
from panda_fm.forecasters.tensor.denoise import gaussian_smooth, savgol_smooth
from panda_fm.forecasters.tensor.field import field_nvar_forecast, wide_nvar_forecast
from panda_fm.forecasters.tensor.gaps import fill_gaps
from panda_fm.forecasters.tensor.nvar import nvar_forecast

__all__ = [
    "TensorExpert",
    "tensor_expert",
    "run_experts",
    "experts_channel_groups",
    "backtest_experts_tensor",
]

TensorForecast = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class TensorExpert:
    """An expert as tensor code: an optional filter, then a base forecast.

    Experts whose bases are the same function with the same settings (``key``) run as one batched call
    (:func:`run_experts`): the raw and the filtered contexts stacked along the batch.
    """

    base: TensorForecast  # (x (B, T, C), horizon) -> (B, H, C)
    key: Hashable  # the base function and its settings
    smooth: Callable[[torch.Tensor], torch.Tensor] | None = None  # (B, T, C) -> (B, T, C)

    def prepare(self, x: torch.Tensor, gaps: bool = False) -> torch.Tensor:
        """The context the base forecasts from: ``x`` filtered, or ``x``.

        With ``gaps`` (``x`` holds NaN), the filter runs over the filled context and the entries that are
        not data stay NaN (the numpy ``DenoisedForecaster.denoise``).
        """
        if self.smooth is None:
            return x
        if not gaps:
            return self.smooth(x)
        filled, trusted = fill_gaps(x)
        return torch.where(trusted, self.smooth(filled), torch.nan)

    def __call__(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        return self.base(self.prepare(x), horizon)


def _naive(x: torch.Tensor, horizon: int) -> torch.Tensor:
    last = fill_gaps(x)[0][:, -1:]  # the last observed value of each channel
    return last.expand(-1, horizon, -1).clone()


def _mean(x: torch.Tensor, horizon: int) -> torch.Tensor:
    return x.nanmean(dim=1, keepdim=True).expand(-1, horizon, -1).clone()


def _with_settings(function: TensorForecast, **settings: Any) -> TensorExpert:
    return TensorExpert(partial(function, **settings), (function.__name__, *sorted(settings.items())))


def _ridge_settings(f: NVARForecaster | FieldNVARForecaster) -> dict[str, Any]:
    """The keyword settings of the tensor function of an NVAR or a field NVAR."""
    settings = dict(
        delays=f.delays,
        stride=f.stride,
        degree=f.degree,
        ridges=tuple(f.ridges),
        validation=f.validation,
        max_feature_ratio=f.max_feature_ratio,
        clip=f.clip,
    )
    return settings | ({"radius": f.radius} if isinstance(f, FieldNVARForecaster) else {})


def tensor_expert(forecaster: Forecaster) -> TensorExpert:
    """The tensor code that computes what ``forecaster.predict`` does, with its settings.

    Raises:
        TypeError: for a forecaster without a tensor implementation.
    """
    f = forecaster
    if isinstance(f, NaiveForecaster):
        return TensorExpert(_naive, "naive")
    if isinstance(f, MeanForecaster):
        return TensorExpert(_mean, "mean")
    if isinstance(f, DenoisedForecaster):
        if f.smoother == "gauss":
            smooth = partial(gaussian_smooth, sigma=float(f.width))
        else:
            smooth = partial(savgol_smooth, window=int(f.width), order=3)
        return replace(tensor_expert(f.base), smooth=smooth)
    if isinstance(f, WideNVARForecaster):
        return _with_settings(
            wide_nvar_forecast,
            joint=tuple(sorted(_ridge_settings(f.joint).items())),
            shared=tuple(sorted(_ridge_settings(f.shared).items())),
            min_channels=f.min_channels,
            validation=f.validation,
            margin=f.margin,
        )
    if isinstance(f, FieldNVARForecaster):
        return _with_settings(field_nvar_forecast, **_ridge_settings(f))
    if isinstance(f, NVARForecaster):
        return _with_settings(nvar_forecast, **_ridge_settings(f))
    if isinstance(f, AnalogueForecaster):
        embedding = dict(
            delays=f.delays,
            stride=f.stride,
            exclude_recent=f.exclude_recent,
            clip=f.clip,
            embedding=f.embedding,
            acf_threshold=f.acf_threshold,
            min_embedding=f.min_embedding,
        )
        if not isinstance(f, SMapForecaster):
            return _with_settings(analogue_forecast, k=f.k, **embedding)
        if f.theta is not None:  # a theta chosen per series on the context has no tensor code
            return _with_settings(smap_forecast, theta=f.theta, ridge=f.ridge, **embedding)
    raise TypeError(f"no tensor implementation of {type(f).__name__}")


def run_experts(experts: Sequence[TensorExpert], x: torch.Tensor, horizon: int) -> torch.Tensor:
    """Every expert's forecast from ``x`` ``(B, T, C)`` (NaN for missing values): ``(B, E, H, C)``, one batched
    call per distinct base."""
    B = x.shape[0]
    gaps = bool(torch.isnan(x).any())
    groups: dict[Hashable, list[int]] = {}
    for i, expert in enumerate(experts):
        groups.setdefault(expert.key, []).append(i)
    out: list[torch.Tensor] = [x] * len(experts)  # placeholders, all replaced below
    for members in groups.values():
        contexts = torch.cat([experts[i].prepare(x, gaps) for i in members])  # (G*B, T, C)
        forecasts = experts[members[0]].base(contexts, horizon).split(B)  # G x (B, H, C)
        for i, forecast in zip(members, forecasts, strict=True):
            out[i] = forecast
    return torch.stack(out, dim=1)


@cache
def _registry(version: int) -> dict[str, TensorExpert]:
    return {name: tensor_expert(make()) for name, make in EXPERT_VERSIONS[version].items()}


def experts_channel_groups(z: torch.Tensor, version: int = LATEST_EXPERTS_VERSION) -> torch.Tensor | None:
    """The channel groups the experts of ``version`` fit separately: ``(B, C)`` labels of
    :func:`panda_fm.forecasters.tensor.channels.channel_groups` for ``z`` ``(B, T, C)`` (NaN for missing
    values), or None when the version fits all channels jointly or there is one channel."""
    if not CHANNEL_GROUPING[version] or z.shape[2] == 1:
        return None
    return channel_groups(fill_gaps(z)[0])


def backtest_experts_tensor(
    z: torch.Tensor,
    names: Sequence[str],
    horizon: int,
    backtest: int,
    version: int = LATEST_EXPERTS_VERSION,
    labels: torch.Tensor | None = None,
    with_backtest: bool = False,
    lengths: Sequence[int] | None = None,
) -> tuple[torch.Tensor, ...]:
    """:func:`panda_fm.forecasters.backtest_experts` in torch, on ``z``'s device and dtype: the same arguments
    (``z`` a ``(B, T, C)`` tensor, NaN for missing values) and the same finite forecasts ``(B, E, H, C)`` and
    backtest errors ``(B, E, C)``, channel grouping included (``labels`` from :func:`experts_channel_groups`
    when the caller has them). Each window backtests on its own length (``lengths`` when the caller has them, else
    :func:`panda_fm.forecasters.experts.backtest_lengths`). With ``with_backtest``, also the backtest's own
    forecasts ``(B, E, V, C)`` of the context's last ``V`` steps (``V`` the longest length; from the same fits,
    group or joint, as the errors): finite on each window's own last steps, NaN before them.
    """
    experts = [_registry(version)[name] for name in names]
    if labels is None:
        labels = experts_channel_groups(z, version)  # (B, C) or None
    if lengths is None:
        lengths = backtest_lengths(z, backtest, version)
    if all(v == lengths[0] for v in lengths):
        return _backtest(experts, z, horizon, lengths[0], labels, with_backtest)
    B, C, V = z.shape[0], z.shape[2], max(lengths)
    forecasts = z.new_empty(B, len(experts), horizon, C)
    errors = z.new_empty(B, len(experts), C)
    past = z.new_full((B, len(experts), V, C), torch.nan)
    for v in sorted(set(lengths)):  # windows of one backtest length at a time
        rows = torch.tensor([i for i, n in enumerate(lengths) if n == v], device=z.device)
        out = _backtest(experts, z[rows], horizon, v, None if labels is None else labels[rows], with_backtest)
        forecasts[rows], errors[rows] = out[0], out[1]
        if with_backtest:
            past[rows, :, V - v :] = out[2]
    return (forecasts, errors, past) if with_backtest else (forecasts, errors)


def _backtest(
    experts: Sequence[TensorExpert],
    z: torch.Tensor,
    horizon: int,
    backtest: int,
    labels: torch.Tensor | None,
    with_backtest: bool,
) -> tuple[torch.Tensor, ...]:
    """:func:`backtest_experts_tensor` of windows ``z`` that share the backtest length ``backtest``."""

    def joint(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past_context, held_out = x[:, :-backtest], x[:, -backtest:]
        forecasts = run_experts(experts, x, horizon)  # (B, E, H, C)
        past = run_experts(experts, past_context, backtest)  # (B, E, V, C)
        misses = (past - held_out[:, None]).abs()  # (B, E, V, C)
        missing = torch.isnan(held_out)[:, None]  # (B, 1, V, C)
        if bool(missing.any()):  # scored on the observed steps; a channel without any: 1 std
            count = (~missing).sum(dim=2)  # (B, 1, C)
            total = misses.masked_fill(missing, 0.0).sum(dim=2)
            errors = torch.where(count > 0, total / count.clamp_min(1), 1.0)
        else:
            errors = misses.mean(dim=2)  # (B, E, C)
        errors = torch.nan_to_num(errors, nan=1e6, posinf=1e6)
        if with_backtest:  # the backtest's forecasts travel before the forecasts, through the group choice
            forecasts = torch.cat([past, forecasts], dim=2)
        return torch.nan_to_num(forecasts, nan=0.0, posinf=0.0, neginf=0.0), errors

    forecasts, errors = joint(z)
    if labels is not None:
        forecasts, errors = keep_better_groups(joint, z, labels, forecasts, errors)
    if with_backtest:
        return forecasts[:, :, backtest:], errors, forecasts[:, :, :backtest]
    return forecasts, errors
