"""The NVAR (ridge regression on polynomial features of a delay embedding) as batched torch code.

:func:`nvar_forecast` computes what :meth:`panda_fm.forecasters.NVARForecaster.predict` computes, for a whole
batch at once and on the input's device and dtype: the features of all series in one tensor operation, the
Gram matrices of all series ``(B, F, F)``, one batched solve for every penalty of every series
``(B, R, F, F)``, the held-out rollouts of all ``R`` penalties of all ``B`` series in lockstep, and the final
rollout of all series in lockstep. The only Python loops run over the time steps of a rollout.

Shape letters: B batch, T time, C channels, H horizon, N training pairs, F features, R penalties, L delays,
D delay-vector entries (``L*C``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from itertools import combinations_with_replacement

import torch

from panda_fm.forecasters.nvar import NVARForecaster
from panda_fm.forecasters.tensor.common import (
    check_context,
    clip_bounds,
    delay_vectors,
    rollout,
    solve_spd,
    standardise,
)
from panda_fm.forecasters.tensor.gaps import fill_gaps, pair_mask, start_index

__all__ = ["nvar_forecast"]

#: Bytes of features a fit treats at once on a CPU: the fits run a chunk of series at a time (a multiple of
#: 8) so that their temporaries stay a few MB (whole-batch temporaries of tens of MB cost more in fresh pages
#: from the OS than in arithmetic: the cubic fits of a batch of 96 three-channel contexts ran 1.7x faster in
#: chunks of 8 series). Other devices fit the whole batch at once.
FIT_CHUNK_BYTES = 1 << 22


@lru_cache(maxsize=64)
def _monomial_table(n_vars: int, degree: int) -> tuple[tuple[int, ...], ...]:
    """Every monomial of degree 1 to ``degree`` of ``n_vars`` variables as ``degree`` factor indices.

    The order is that of the numpy forecasters: degree 1, then degree 2, ..., each degree in
    ``itertools.combinations_with_replacement`` order. Index 0 is a constant 1 and index ``i + 1`` is
    variable ``i``; a lower degree's monomial is padded in front with 1s, so the left-to-right product of its
    factors is exactly the product ``np.prod`` computes (a product with 1 is exact).
    """
    rows = []
    for d in range(1, degree + 1):
        for combo in combinations_with_replacement(range(1, n_vars + 1), d):
            rows.append((0,) * (degree - d) + combo)
    return tuple(rows)


def _monomial_index(n_vars: int, degree: int, device: torch.device) -> torch.Tensor:
    """:func:`_monomial_table` as an int64 ``(degree, F)`` tensor on ``device`` (row ``k``: ``k``-th factors)."""
    return torch.tensor(_monomial_table(n_vars, degree), dtype=torch.long, device=device).T.contiguous()


def _monomials(v: torch.Tensor, index: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """All unique monomials of degree 1 to ``degree`` of the variables along ``dim``.

    Args:
        v: ``D`` variables along ``dim``, e.g. ``(B, D)`` or ``(B, D, N)``.
        index: ``(degree, F)`` from :func:`_monomial_index` for ``D`` variables.
        dim: the variables' axis.

    Returns:
        ``v`` with ``F`` monomials along ``dim`` in the numpy forecasters' order, e.g. ``(B, F)`` or
        ``(B, F, N)``.
    """
    if index.shape[0] == 1:
        return v
    va = torch.cat([torch.ones_like(v.narrow(dim, 0, 1)), v], dim=dim)  # D + 1 along dim: a constant first
    out = va.index_select(dim, index[0])  # F along dim
    for factor in index[1:]:
        out = out * va.index_select(dim, factor)
    return out


def _ridge_path(
    x: torch.Tensor, y: torch.Tensor, alphas: torch.Tensor, weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regressions with an unpenalised intercept, batched over series and penalties.

    The arithmetic of the numpy forecaster's ``_ridge_path``: features scaled to unit variance (population
    std, 1 where it is 0), features and targets centred, ``(alpha * N + 1e-10) * I`` added to the Gram
    matrix, weights returned in the original feature units with intercept ``ym - xm @ w``.

    Args:
        x: ``(B, F, N)`` features, feature-major (every reduction then runs over contiguous memory).
        y: ``(B, N, C)`` targets.
        alphas: ``(R,)`` penalties shared by all series, or ``(B, R)`` per series.
        weight: ``(B, N)`` 0/1 marking the pairs that are data (None: all); a series without any pair gets
            zero weights and intercept.

    Returns:
        Weights ``(B, R, F, C)`` and intercepts ``(B, R, C)``.
    """
    if weight is None:
        n = torch.tensor(float(x.shape[2]), dtype=x.dtype, device=x.device)
        xm, ym = x.mean(dim=2, keepdim=True), y.mean(dim=1, keepdim=True)  # (B, F, 1), (B, 1, C)
        xd = x - xm  # (B, F, N)
        xs = (xd * xd).mean(dim=2, keepdim=True).sqrt()  # (B, F, 1): numpy's two-pass population std
        yc = y - ym  # (B, N, C)
    else:  # the same arithmetic on the pairs of weight 1 only
        n = weight.sum(dim=1).clamp_min(1)[:, None]  # (B, 1)
        xm = (x * weight[:, None]).sum(dim=2, keepdim=True) / n[..., None]  # (B, F, 1)
        ym = (y * weight[..., None]).sum(dim=1, keepdim=True) / n[..., None]  # (B, 1, C)
        xd = (x - xm) * weight[:, None]
        xs = ((xd * xd).sum(dim=2, keepdim=True) / n[..., None]).sqrt()
        yc = (y - ym) * weight[..., None]
    xs = torch.where(xs > 0, xs, torch.ones_like(xs))
    xc = xd / xs  # (B, F, N)
    gram = xc @ xc.mT  # (B, F, F)
    rhs = xc @ yc  # (B, F, C)
    jitter = (alphas.to(x.dtype) * n + 1e-10).expand(x.shape[0], -1)  # (B, R)
    a = gram[:, None].repeat(1, jitter.shape[1], 1, 1)  # (B, R, F, F)
    a.diagonal(dim1=-2, dim2=-1).add_(jitter[:, :, None])  # + (alpha N + 1e-10) I
    w = solve_spd(a, rhs[:, None].expand(-1, a.shape[1], -1, -1))  # (B, R, F, C)
    w = w / xs[:, None]  # (B, R, F, C): back to the original feature units
    b = ym - (xm.mT[:, None] @ w).squeeze(-2)  # (B, 1, 1, F) @ (B, R, F, C) -> (B, R, C)
    return w, b


def _fit_path(
    z: torch.Tensor,
    alphas: torch.Tensor,
    delays: int,
    stride: int,
    index: torch.Tensor,
    trusted: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge fits of the increment ``z[t+1] - z[t]`` on the features of the delay vector at ``t``, a chunk of
    series at a time on a CPU (:data:`FIT_CHUNK_BYTES`).

    Args:
        z: ``(B, T, C)`` standardised contexts.
        alphas: ``(R,)`` or ``(B, R)`` penalties.
        delays: ``L``.
        stride: steps between delayed copies.
        index: :func:`_monomial_index` ``(degree, F)`` of the feature degree.
        trusted: ``(B, T, C)`` bool or None: fit only the pairs that are data.

    Returns:
        Weights ``(B, R, F, C)`` and intercepts ``(B, R, C)``.
    """
    span = (delays - 1) * stride + 1
    t = torch.arange(span - 1, z.shape[1] - 1, device=z.device)  # (N,) times with a full delay vector
    v = delay_vectors(z, t, delays, stride).mT  # (B, N, L*C) -> (B, L*C, N)
    y = z[:, t + 1] - z[:, t]  # (B, N, C)
    weight = None if trusted is None else pair_mask(trusted, t, delays, stride).to(z.dtype)  # (B, N)
    size = z.shape[0]
    if z.device.type == "cpu":
        size = max(8, FIT_CHUNK_BYTES // (index.shape[1] * t.shape[0] * z.element_size()) // 8 * 8)
    fits = [
        _ridge_path(
            _monomials(v[i : i + size], index, dim=1),  # features (b, F, N)
            y[i : i + size],
            alphas if alphas.ndim == 1 else alphas[i : i + size],
            None if weight is None else weight[i : i + size],
        )
        for i in range(0, z.shape[0], size)
    ]
    w, b = zip(*fits, strict=True)
    return torch.cat(w), torch.cat(b)


def _rollout(
    z: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    horizon: int,
    delays: int,
    stride: int,
    clip: bool,
    index: torch.Tensor,
    trusted: torch.Tensor | None = None,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Iterate the fitted one-step maps of all series in lockstep.

    Args:
        z: ``(B, T, C)`` contexts the rollouts continue.
        w: ``(B, F, C)`` weights.
        b: ``(B, C)`` intercepts.
        horizon: ``H``.
        delays: ``L``.
        stride: steps between delayed copies.
        clip: bound the states to the context's range widened by its span on each side.
        index: :func:`_monomial_index` ``(degree, F)`` of the feature degree.
        trusted: ``(B, T, C)`` bool or None; the rollout then starts at the last delay vector that is data.
        bounds: the clipping bounds, as for :func:`panda_fm.forecasters.tensor.common.rollout`.

    Returns:
        ``(B, H, C)``.
    """

    # Series along the last axis: the feature gathers copy whole rows, and a multiply and a sum beat a
    # batched matrix product of (1, F) rows (2x faster on one CPU thread for B = 256).
    wt = w.permute(2, 1, 0).contiguous()  # (C, F, B)

    def step(history: torch.Tensor, t: int) -> torch.Tensor:
        x = _monomials(delay_vectors(history, t, delays, stride).T, index, dim=0)  # (B, L*C) -> (F, B)
        return (x * wt).sum(dim=1).T + b  # (C, F, B) -> (C, B) -> (B, C)

    start = None if trusted is None else start_index(trusted, delays, stride)
    return rollout(z, step, horizon, clip, trusted, start, bounds)


#: ``(z (B, T, C), alphas (R,) or (B, R), trusted=None) -> (weights (B, R, ...), intercepts (B, R, ...))``
FitPath = Callable[..., tuple[torch.Tensor, torch.Tensor]]
#: ``(z, weights (B, ...), intercepts (B, ...), horizon, trusted=None, bounds=None) -> (B, H, C)``
Rollout = Callable[..., torch.Tensor]


def choose_penalties(
    z: torch.Tensor,
    alphas: torch.Tensor,
    validation: int,
    delays: int,
    stride: int,
    fit: FitPath,
    roll: Rollout,
    trusted: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each series' penalty by a held-out rollout, all penalties of all series in lockstep.

    Every penalty is fitted on the context less its last ``validation`` steps, which it then forecasts
    iteratively; the penalty of the smallest mean squared error wins (NaN counts as +inf, ties go to the
    first, as ``np.nanargmin``).

    Args:
        z: ``(B, T, C)`` standardised contexts.
        alphas: ``(R,)`` penalties.
        validation: ``V``, steps held out.
        delays: ``L``, of the model's delay vectors.
        stride: steps between delayed copies.
        fit: the ridge fits of all penalties (:func:`_fit_path` with the model's settings).
        roll: the rollout of fitted maps (:func:`_rollout` with the model's settings).
        trusted: ``(B, T, C)`` bool or None: fit on the pairs that are data, score on the held-out steps
            that are data (on all of them where none is).

    Returns:
        ``(B,)`` int64 indices into ``alphas``.
    """
    B, T, C = z.shape
    R, V = alphas.shape[0], validation
    head, tail = z[:, :-V], z[:, -V:]  # (B, T - V, C), (B, V, C)
    head_ok = None if trusted is None else trusted[:, :-V]
    w, b = fit(head, alphas, trusted=head_ok)  # (B, R, ...), (B, R, ...)

    def per_penalty(a: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B*R, ...): one rollout per penalty
        return a[:, None].expand(-1, R, *a.shape[1:]).flatten(0, 1)

    # each penalty's copy of a context holds only the states its rollout reads (from the start's delay vector
    # on), clipped by the range of the whole head
    first = T - V - 1 if head_ok is None else start_index(head_ok, delays, stride)
    first -= (delays - 1) * stride
    starts = per_penalty(head[:, first:])
    starts_ok = None if head_ok is None else per_penalty(head_ok[:, first:])
    lo, hi = clip_bounds(head)  # (B, C) each
    bounds = (per_penalty(lo), per_penalty(hi))
    forecasts = roll(starts, w.flatten(0, 1), b.flatten(0, 1), V, trusted=starts_ok, bounds=bounds)
    err = (forecasts.reshape(B, R, V, C) - tail[:, None]) ** 2  # (B, R, V, C)
    mse = err.mean(dim=(2, 3))  # (B, R)
    if trusted is not None:
        scored = trusted[:, None, -V:].to(z.dtype)  # (B, 1, V, C)
        count = scored.sum(dim=(2, 3))  # (B, 1)
        mse = torch.where(count > 0, (err * scored).sum(dim=(2, 3)) / count.clamp_min(1), mse)
    return torch.where(mse.isnan(), torch.inf, mse).argmin(dim=1)


def penalised_forecast(
    z: torch.Tensor,
    ridges: Sequence[float],
    validation: int,
    delays: int,
    stride: int,
    fit: FitPath,
    roll: Rollout,
    horizon: int,
    trusted: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each series' penalty of ``ridges`` by :func:`choose_penalties` (with more than one), the refit on the
    whole context and its rollout for ``horizon`` steps: ``(B, H, C)`` in ``z``'s standardised units."""
    alphas = torch.tensor(ridges, dtype=z.dtype, device=z.device)  # (R,)
    if len(ridges) > 1:
        best = choose_penalties(z, alphas, validation, delays, stride, fit, roll, trusted)  # (B,)
        alphas = alphas[best][:, None]  # (B, 1)
    w, b = fit(z, alphas, trusted=trusted)  # (B, 1, ...), (B, 1, ...)
    return roll(z, w[:, 0], b[:, 0], horizon, trusted=trusted)


def _nvar_maps(delays: int, stride: int, clip: bool, index: torch.Tensor) -> tuple[FitPath, Rollout]:
    """The NVAR's ridge fits and rollout with these settings (``index`` from :func:`_monomial_index`)."""
    fit = partial(_fit_path, delays=delays, stride=stride, index=index)
    return fit, partial(_rollout, delays=delays, stride=stride, clip=clip, index=index)


def _choose_penalties(
    z: torch.Tensor,
    alphas: torch.Tensor,
    validation: int,
    delays: int,
    stride: int,
    clip: bool,
    index: torch.Tensor,
    trusted: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`choose_penalties` of the NVAR with these settings (``index`` from :func:`_monomial_index`)."""
    return choose_penalties(
        z, alphas, validation, delays, stride, *_nvar_maps(delays, stride, clip, index), trusted
    )


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Switch off autocast on ``device`` (the fits need their full precision), where autocast exists."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


@torch.no_grad()
def nvar_forecast(
    x: torch.Tensor,
    horizon: int,
    *,
    delays: int = 2,
    stride: int = 1,
    degree: int = 3,
    ridges: Sequence[float] = NVARForecaster.ridges,
    validation: int = 64,
    max_feature_ratio: float = 0.5,
    clip: bool = True,
) -> torch.Tensor:
    """``NVARForecaster(...).predict(x, horizon)`` for a whole batch at once, on ``x``'s device and dtype.

    Each series is standardised per channel by its own context. The feature degree is the largest up to
    ``degree`` whose monomial count stays within ``max_feature_ratio`` times the training pairs. With more
    than one penalty, each series fits all of ``ridges`` on its context less the last ``validation`` steps,
    forecasts those steps iteratively with each, keeps the penalty of the smallest mean squared error (NaN
    counts as +inf) and refits on the whole context. The forecast iterates the fitted increments from the
    end of the context (clipped with ``clip``) and undoes the scaling.

    The arithmetic is that of the numpy forecaster, in ``x``'s dtype. float64 agrees with it to rounding
    (1e-8 stds or better on noisy and on Lorenz contexts; only where the fits are ill-conditioned, as on
    noise-free quasi-periodic contexts, does rounding move the forecasts). float32 does not reproduce it
    reliably: its rounding of the Gram matrices exceeds the smallest penalties, so some series choose another
    penalty or get another fit, and a few rollouts drift apart (by several stds in ~1 window of 8 measured in
    ``tests/forecasters/test_tensor_nvar.py``); its matrix products also follow
    ``torch.set_float32_matmul_precision`` (TF32 on GPUs under "high"). Pass float64 where the numpy
    forecaster's results are wanted.

    Autocast is switched off and no gradients are recorded (as the numpy forecaster). NaN marks a missing
    value, handled as :mod:`panda_fm.forecasters.gaps` describes (checking for it reads one flag back from
    the device); infinite values are not checked for and give non-finite forecasts.

    Args:
        x: ``(B, T, C)`` contexts in any units, float32 or float64; NaN for missing values.
        horizon: ``H``, steps to forecast.
        delays: ``L``, delayed copies in the embedding.
        stride: steps between delayed copies.
        degree: highest polynomial degree of the features.
        ridges: ``R`` penalties per sample on the standardised features' weights, all >= 0.
        validation: steps at the end of the context held out to choose the penalty (with ``R > 1``).
        max_feature_ratio: features per training pair, at most.
        clip: keep the rollout within the context's range widened by its span on each side.

    Returns:
        ``(B, H, C)`` forecasts in ``x``'s units, dtype and device.

    Raises:
        ValueError: for invalid settings, a context that is not ``(B, T, C)`` or is shorter than the
            numpy forecaster's ``min_context``, or ``horizon < 1``.
        TypeError: for a context that is not float32 or float64.
    """
    ridges = tuple(float(r) for r in ridges)
    # the numpy forecaster of these settings validates them and owns the context and degree rules
    spec = NVARForecaster(
        delays=delays,
        stride=stride,
        degree=degree,
        ridges=ridges,
        validation=validation,
        max_feature_ratio=max_feature_ratio,
        clip=clip,
    )
    check_context(x, horizon, spec.min_context, "nvar")
    T, C = x.shape[1:]
    with _autocast_off(x.device):
        observed = trusted = None
        if bool(torch.isnan(x).any()):
            observed = ~torch.isnan(x)
            x, trusted = fill_gaps(x)
        z, mu, sd = standardise(x, observed)  # (B, T, C), (B, 1, C), (B, 1, C)
        d = spec.feature_degree(T, C)
        index = _monomial_index(delays * C, d, x.device)  # (d, F)
        fit, roll = _nvar_maps(delays, stride, clip, index)
        out = penalised_forecast(
            z, ridges, validation, delays, stride, fit, roll, horizon, trusted
        )  # (B, H, C)
        return out * sd + mu
