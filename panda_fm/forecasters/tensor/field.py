"""The field NVAR and the wide-context NVAR of :mod:`panda_fm.forecasters.field` as batched torch code.

:func:`field_nvar_forecast` computes what ``FieldNVARForecaster.predict`` does and :func:`wide_nvar_forecast` what
``WideNVARForecaster.predict`` does, for a whole batch on the input's device and dtype, with the NVAR's machinery
(:mod:`panda_fm.forecasters.tensor.nvar`: the ridge path, the penalty choice, the chunked fits).

Shape letters: B batch, T time, C channels (sites), N training times, D neighbourhood entries, F features,
R penalties, H horizon, V backtest steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from panda_fm.forecasters.field import FieldNVARForecaster, WideNVARForecaster
from panda_fm.forecasters.nvar import NVARForecaster
from panda_fm.forecasters.tensor.common import check_context, rollout, standardise
from panda_fm.forecasters.tensor.gaps import fill_gaps, pair_mask, start_index
from panda_fm.forecasters.tensor.nvar import (
    FIT_CHUNK_BYTES,
    _autocast_off,
    _monomial_index,
    _monomials,
    _ridge_path,
    nvar_forecast,
    penalised_forecast,
)

__all__ = ["field_nvar_forecast", "wide_nvar_forecast", "neighbourhoods"]


def neighbourhoods(
    z: torch.Tensor, t: torch.Tensor | int, radius: int, delays: int, stride: int
) -> torch.Tensor:
    """:func:`panda_fm.forecasters.field.neighbourhoods` of a batch ``z`` ``(B, T, C)``: ``(B, C, D)`` for an
    int ``t``, ``(B, N, C, D)`` for ``(N,)`` indices."""
    C = z.shape[2]
    sites = (
        torch.arange(C, device=z.device)[:, None] + torch.arange(-radius, radius + 1, device=z.device)
    ) % C
    if isinstance(t, int):
        v = z[:, t - (delays - 1) * stride : t + 1 : stride].flip(1)  # (B, L, C)
    else:
        v = z[:, t[:, None] - torch.arange(delays, device=z.device) * stride]  # (B, N, L, C)
    v = v[..., sites]  # (..., L, C, 2r+1)
    return v.movedim(-3, -2).flatten(-2)  # (..., C, L*(2r+1))


def _fit_path(
    z: torch.Tensor,
    alphas: torch.Tensor,
    radius: int,
    delays: int,
    stride: int,
    index: torch.Tensor,
    trusted: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared ridge fits of every site's increment on its neighbourhood's features, a chunk of series at a
    time on a CPU: weights ``(B, R, F, 1)`` and intercepts ``(B, R, 1)``."""
    B, T, C = z.shape
    t = torch.arange((delays - 1) * stride, T - 1, device=z.device)  # (N,)
    y = (z[:, t + 1] - z[:, t]).reshape(B, -1, 1)  # (B, N*C, 1)
    weight = None
    if trusted is not None:  # pairs whose every channel is data, at every site
        weight = pair_mask(trusted, t, delays, stride).to(z.dtype).repeat_interleave(C, dim=1)  # (B, N*C)
    size = B
    if z.device.type == "cpu":
        size = max(8, FIT_CHUNK_BYTES // (index.shape[1] * y.shape[1] * z.element_size()) // 8 * 8)
    fits = []
    for i in range(0, B, size):
        v = neighbourhoods(z[i : i + size], t, radius, delays, stride).flatten(1, 2)  # (b, N*C, D)
        fits.append(
            _ridge_path(
                _monomials(v.mT, index, dim=1),  # (b, F, N*C)
                y[i : i + size],
                alphas if alphas.ndim == 1 else alphas[i : i + size],
                None if weight is None else weight[i : i + size],
            )
        )
    w, b = zip(*fits, strict=True)
    return torch.cat(w), torch.cat(b)


def _rollout(
    z: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    horizon: int,
    radius: int,
    delays: int,
    stride: int,
    clip: bool,
    index: torch.Tensor,
    trusted: torch.Tensor | None = None,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Iterate the fitted shared maps (``w`` ``(B, F, 1)``, ``b`` ``(B, 1)``) of all series in lockstep, as the
    NVAR's ``_rollout``: ``(B, H, C)``."""
    wt = w[:, None, :, 0]  # (B, 1, F)

    def step(history: torch.Tensor, t: int) -> torch.Tensor:
        x = _monomials(neighbourhoods(history, t, radius, delays, stride), index, dim=-1)  # (B, C, F)
        return (x * wt).sum(dim=-1) + b  # (B, C)

    start = None if trusted is None else start_index(trusted, delays, stride)
    return rollout(z, step, horizon, clip, trusted, start, bounds)


@torch.no_grad()
def field_nvar_forecast(
    x: torch.Tensor,
    horizon: int,
    *,
    radius: int = 2,
    delays: int = 2,
    stride: int = 1,
    degree: int = 2,
    ridges: Sequence[float] = FieldNVARForecaster.ridges,
    validation: int = 64,
    max_feature_ratio: float = 0.5,
    clip: bool = True,
) -> torch.Tensor:
    """``FieldNVARForecaster(...).predict(x, horizon)`` for a whole batch at once, on ``x``'s device and dtype.

    The channels of each series are standardised together (one mean and std); its neighbourhoods' features
    train one ridge model for all sites, the penalty chosen by a held-out rollout as the NVAR's
    (:func:`panda_fm.forecasters.tensor.nvar.choose_penalties`). Pass float64 for the numpy forecaster's results.
    NaN marks a missing value (fits use the times at which every channel is data).

    Args:
        x: ``(B, T, C)`` contexts, float32 or float64; NaN for missing values.
        horizon: ``H``.
        radius, delays, stride, degree, ridges, validation, max_feature_ratio, clip: as
            :class:`~panda_fm.forecasters.field.FieldNVARForecaster`.

    Returns:
        ``(B, H, C)`` forecasts in ``x``'s units, dtype and device.

    Raises:
        ValueError: for invalid settings, a context that is not ``(B, T, C)`` or is shorter than the numpy
            forecaster's ``min_context``, or ``horizon < 1``.
        TypeError: for a context that is not float32 or float64.
    """
    ridges = tuple(float(r) for r in ridges)
    spec = FieldNVARForecaster(
        radius=radius,
        delays=delays,
        stride=stride,
        degree=degree,
        ridges=ridges,
        validation=validation,
        max_feature_ratio=max_feature_ratio,
        clip=clip,
    )
    check_context(x, horizon, spec.min_context, "field_nvar")
    B, T, C = x.shape
    with _autocast_off(x.device):
        observed = trusted = None
        if bool(torch.isnan(x).any()):
            observed = ~torch.isnan(x)
            x, trusted = fill_gaps(x)
        pooled = None if observed is None else observed.reshape(B, -1, 1)
        _, mu, sd = standardise(x.reshape(B, -1, 1), pooled)  # (B, 1, 1): one mean and std for all sites
        z = (x - mu) / sd
        index = _monomial_index(spec.n_inputs, spec.feature_degree(T, C), x.device)  # (d, F)
        fit = partial(_fit_path, radius=radius, delays=delays, stride=stride, index=index)
        roll = partial(_rollout, radius=radius, delays=delays, stride=stride, clip=clip, index=index)
        return (
            penalised_forecast(z, ridges, validation, delays, stride, fit, roll, horizon, trusted) * sd + mu
        )


def _backtest_error(forecast: torch.Tensor, held: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``(B,)`` of ``forecast`` against ``held`` ``(B, V, C)`` in units of ``scale`` ``(B, 1, C)``
    over the observed entries (+inf where none is or the error is not finite)."""
    miss = ((forecast - held) / scale).square()  # (B, V, C)
    seen = ~torch.isnan(held)
    mse = miss.nan_to_num(0.0).sum(dim=(1, 2)) / seen.sum(dim=(1, 2))
    return torch.where(torch.isfinite(mse), mse, torch.inf)


@torch.no_grad()
def wide_nvar_forecast(
    x: torch.Tensor,
    horizon: int,
    *,
    joint: tuple[tuple[str, Any], ...] = (),
    shared: tuple[tuple[str, Any], ...] = (),
    min_channels: int = 8,
    validation: int = 64,
    margin: float = 1.0,
) -> torch.Tensor:
    """``WideNVARForecaster(...).predict(x, horizon)`` for a whole batch: the joint NVAR
    (:func:`~panda_fm.forecasters.tensor.nvar.nvar_forecast` with the settings ``joint``), or per series the field
    NVAR (:func:`field_nvar_forecast` with ``shared``) where the context is wide enough and the field NVAR's
    backtest error on its last ``validation`` steps is below the joint NVAR's divided by ``margin``.

    Args:
        x: ``(B, T, C)`` contexts; NaN for missing values.
        horizon: ``H``.
        joint, shared: keyword settings of the two, as ``(name, value)`` pairs (hashable, for the experts'
            batching).
        min_channels, validation, margin: as :class:`~panda_fm.forecasters.field.WideNVARForecaster`.

    Returns:
        ``(B, H, C)`` in ``x``'s units, dtype and device.
    """
    joint_kw, shared_kw = dict(joint), dict(shared)
    spec = WideNVARForecaster(
        joint=NVARForecaster(**joint_kw),
        shared=FieldNVARForecaster(**shared_kw),
        min_channels=min_channels,
        validation=validation,
        margin=margin,
    )
    if x.ndim != 3 or not spec.uses_field(x.shape[1], x.shape[2]):
        return nvar_forecast(x, horizon, **joint_kw)
    V = validation
    past, held = x[:, :-V], x[:, -V:]
    seen = ~torch.isnan(past)
    if not bool(seen.any(dim=1).all()):  # a channel observed only in the last V steps: no backtest
        return nvar_forecast(x, horizon, **joint_kw)
    count = seen.sum(dim=1, keepdim=True)  # (B, 1, C)
    mean = past.nan_to_num(0.0).sum(dim=1, keepdim=True) / count
    sd = (((past - mean) * seen).nan_to_num(0.0).square().sum(dim=1, keepdim=True) / count).sqrt()
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))  # (B, 1, C): errors in each channel's units
    use_field = margin * _backtest_error(
        field_nvar_forecast(past, V, **shared_kw), held, sd
    ) < _backtest_error(nvar_forecast(past, V, **joint_kw), held, sd)  # (B,)
    out = nvar_forecast(x, horizon, **joint_kw)
    if bool(use_field.any()):
        out[use_field] = field_nvar_forecast(x[use_field], horizon, **shared_kw)
    return out
