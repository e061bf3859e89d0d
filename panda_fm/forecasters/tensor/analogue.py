"""The method of analogues as batched torch code: nearest neighbours in delay space vote on the next increment.

Reproduces :class:`panda_fm.forecasters.analogue.AnalogueForecaster` (the float64 numpy reference) for a
whole batch at once, on the context's device and in its dtype: every series has a library of the same
size, so the libraries stack along the batch, and each step of the rollout (the only Python loop) takes the
distances of all series at once and the ``k`` nearest by ``torch.topk``. A delay vector's squared distance
to a library vector is the sum of its states' squared distances to the library vector's states, so a step
computes those of its newest state to the context's ``M`` states once (the older states' come from earlier
steps): ``C`` rows of squared differences and ``L`` shifted sums a step instead of ``L*C`` rows (no matrix
product, so float32 stays float32 on a GPU whatever the TF32 settings).

S-maps (:func:`smap_forecast`, reproducing :class:`panda_fm.forecasters.analogue.SMapForecaster`) share the
library, the embedding and the rollout; a step weighs every library state and solves the batch's weighted
ridge fits at once.

Shape letters: B batch, T time, C channels, H horizon, N library states, M context states, L delays, E delay-vector
entries.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from panda_fm.forecasters.analogue import AnalogueForecaster, SMapForecaster
from panda_fm.forecasters.base import ContextTooShortError
from panda_fm.forecasters.tensor.common import delay_vectors, rollout, solve_spd, standardise
from panda_fm.forecasters.tensor.gaps import fill_gaps, pair_mask, start_index

__all__ = ["analogue_forecast", "smap_forecast", "auto_embedding", "correlation_time"]


def correlation_time(z: torch.Tensor, threshold: float) -> torch.Tensor:
    """:func:`panda_fm.forecasters.analogue.correlation_time` in torch: the first lag at which the channels'
    mean autocorrelation of ``z`` ``(B, T, C)`` (standardised, no NaN) falls below ``threshold``, ``(B,)`` int64
    in ``[1, T // 2]``."""
    n = z.shape[1]
    max_lag = n // 2
    f = torch.fft.rfft(z, n=2 * n, dim=1)  # (B, F, C)
    cov = torch.fft.irfft(f.real**2 + f.imag**2, n=2 * n, dim=1)[:, : max_lag + 1]  # (B, max_lag + 1, C)
    var = cov[:, :1]  # (B, 1, C)
    varies = var > 1e-6 * n
    acf = torch.where(varies, cov / torch.where(varies, var, 1.0), 0.0).mean(dim=2)  # (B, max_lag + 1)
    below = acf[:, 1:] < threshold  # (B, max_lag)
    first = below.to(torch.int64).argmax(dim=1) + 1  # the first True
    return torch.where(below.any(dim=1), first, max_lag)


def auto_embedding(
    z: torch.Tensor, delays: int, threshold: float, min_embedding: int
) -> tuple[int, torch.Tensor]:
    """:func:`panda_fm.forecasters.analogue.auto_embedding` in torch: the number of delays and ``(B,)`` int64
    strides chosen on the standardised contexts ``z`` ``(B, T, C)`` (no NaN)."""
    c = z.shape[2]
    n_delays = max(delays, -(-min_embedding // c))
    tau = correlation_time(z, threshold)  # (B,)
    cap = max(1, (z.shape[1] // 2) // max(n_delays - 1, 1))
    return n_delays, ((2 * tau + n_delays) // (2 * n_delays)).clamp(1, cap)


def analogue_forecast(
    x: torch.Tensor,
    horizon: int,
    *,
    delays: int = 4,
    stride: int = 4,
    k: int = 4,
    exclude_recent: int = 0,
    clip: bool = True,
    embedding: str = "fixed",
    acf_threshold: float = 0.5,
    min_embedding: int = 0,
) -> torch.Tensor:
    """Forecast each series by the method of analogues on its own context, the whole batch at once.

    Each context is standardised per channel; its library is the delay vectors
    ``[z[t], z[t - stride], ..., z[t - (delays - 1) stride]]`` at every ``t`` from the first full one to
    ``T - 2 - exclude_recent``, each paired with its next increment ``z[t + 1] - z[t]``. At each step of the
    rollout the ``k`` library vectors nearest (Euclidean) to the current delay vector vote on the increment
    with weights ``exp(-d / max(d_min, 1e-12))``; with ``clip`` the states are bounded as in
    :func:`panda_fm.forecasters.tensor.common.rollout`. The neighbours are ranked by squared distance (the
    same order as numpy's distances); equal distances at the ``k``-th place may pick a different neighbour
    than numpy's ``argpartition`` (only with repeated library vectors).

    With ``embedding="auto"`` each series' stride (and the batch's number of delays) is chosen on its
    standardised, gap-filled context by :func:`auto_embedding`, as ``AnalogueForecaster(embedding="auto")``
    does; the series of one stride run as one batch. The choice compares an autocorrelation with a threshold,
    so in float32 it may differ from the float64 reference's where the autocorrelation is within round-off
    of the threshold.

    Args:
        x: ``(B, T, C)`` contexts in any units, float32 or float64 (other dtypes are computed in float32,
            integers in float64); NaN marks a missing value, handled as :mod:`panda_fm.forecasters.gaps`
            describes (library states touching a gap are no candidates).
        horizon: ``H``, steps to forecast.
        delays: ``L``, entries of a delay vector (with ``"auto"``: the fewest).
        stride: steps between the entries (ignored with ``"auto"``).
        k: neighbours that vote.
        exclude_recent: the context's last steps left out of the library (a Theiler window).
        clip: bound the rollout by the context's range widened by its span on each side.
        embedding: ``"fixed"`` or ``"auto"``.
        acf_threshold: with ``"auto"``, the autocorrelation that defines the correlation time.
        min_embedding: with ``"auto"``, the fewest entries ``delays * C`` of a delay vector.

    Returns:
        ``(B, H, C)`` in the units, dtype and device of ``x`` (float64 for integer ``x``).

    Raises:
        ValueError: for a context that is not ``(B, T, C)``, shorter than ``AnalogueForecaster.min_context``, a
            horizon below 1 or invalid settings.
    """
    # the numpy forecaster of these settings validates them and owns the shortest context
    spec = AnalogueForecaster(
        delays=delays,
        stride=stride,
        k=k,
        exclude_recent=exclude_recent,
        clip=clip,
        embedding=embedding,
        acf_threshold=acf_threshold,
        min_embedding=min_embedding,
    )
    return _delay_forecast(x, horizon, spec, partial(_analogue, k=k))


def smap_forecast(
    x: torch.Tensor,
    horizon: int,
    *,
    theta: float = 16.0,
    ridge: float = 1e-3,
    delays: int = 4,
    stride: int = 4,
    exclude_recent: int = 0,
    clip: bool = True,
    embedding: str = "auto",
    acf_threshold: float = 0.25,
    min_embedding: int = 12,
) -> torch.Tensor:
    """Forecast each series by an S-map on its own context, the whole batch at once.

    Reproduces :class:`panda_fm.forecasters.analogue.SMapForecaster` with a fixed ``theta``: the library and the
    embedding are the analogue's (:func:`analogue_forecast`), and at each step of the rollout every library
    state weighs ``exp(-theta d / mean d)`` in a ridge-regularised, weighted least-squares fit of the increment
    on the delay vector's offset from the current one, whose intercept is the step. The fits of a step are
    one batched solve (``(B, 1 + L*C)`` unknowns per series). The arguments are :func:`analogue_forecast`'s,
    with ``theta`` and ``ridge`` for its ``k``.
    """
    spec = SMapForecaster(
        delays=delays,
        stride=stride,
        exclude_recent=exclude_recent,
        clip=clip,
        embedding=embedding,
        acf_threshold=acf_threshold,
        min_embedding=min_embedding,
        theta=theta,
        ridge=ridge,
    )
    if theta is None:
        raise ValueError("smap_forecast needs a fixed theta (the per-series choice is numpy's only)")
    return _delay_forecast(x, horizon, spec, partial(_smap, theta=theta, ridge=ridge))


#: builds a delay forecaster's one-step map from ``(z, t, valid, delays, stride)``: :func:`_analogue`, :func:`_smap`
StepMaker = Callable[..., Callable[[torch.Tensor, int], torch.Tensor]]


def _delay_forecast(
    x: torch.Tensor, horizon: int, spec: AnalogueForecaster, make_step: StepMaker
) -> torch.Tensor:
    """What the delay forecasters share: checks, gaps, standardisation and the (auto) embedding; ``make_step``
    builds each rollout's one-step map."""
    if x.ndim != 3:
        raise ValueError(f"context must be (B, T, C), got shape {tuple(x.shape)}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if x.shape[1] < spec.min_context:
        raise ContextTooShortError(
            f"{spec.name} needs a context of at least {spec.min_context} steps, got {x.shape[1]}; pass a longer context"
        )
    x = x.to(_working_dtype(x.dtype))  # the result keeps this dtype
    observed = trusted = None
    if bool(torch.isnan(x).any()):
        observed = ~torch.isnan(x)
        x, trusted = fill_gaps(x)
    z, mu, sd = standardise(x, observed)  # (B, T, C), (B, 1, C), (B, 1, C)
    settings = dict(exclude_recent=spec.exclude_recent, clip=spec.clip, make_step=make_step)
    if spec.embedding == "fixed":
        out = _forecast(z, trusted, horizon, spec.delays, spec.stride, **settings)
    else:
        n_delays, strides = auto_embedding(z, spec.delays, spec.acf_threshold, spec.min_embedding)
        out = z.new_empty((z.shape[0], horizon, z.shape[2]))  # (B, H, C)
        for s in torch.unique(strides).tolist():  # the series of one stride run as one batch
            rows = torch.nonzero(strides == s).squeeze(1)
            sub = None if trusted is None else trusted[rows]
            out[rows] = _forecast(z[rows], sub, horizon, n_delays, int(s), **settings)
    return out * sd + mu  # (B, H, C)


def _forecast(
    z: torch.Tensor,
    trusted: torch.Tensor | None,
    horizon: int,
    delays: int,
    stride: int,
    exclude_recent: int,
    clip: bool,
    make_step: StepMaker,
) -> torch.Tensor:
    """The rollout of standardised contexts ``z`` ``(B, T, C)`` (gaps filled, ``trusted`` marking the data or
    None) with a fixed embedding: ``(B, H, C)`` standardised."""
    valid = start = None
    span = (delays - 1) * stride + 1
    t = torch.arange(span - 1, z.shape[1] - 1 - exclude_recent, device=z.device)  # (N,)
    if trusted is not None:
        valid = pair_mask(trusted, t, delays, stride)  # (B, N): library states that are data
        start = start_index(trusted, delays, stride)
    step = make_step(z, t, valid, delays, stride)
    return rollout(z, step, horizon, clip, trusted, start)


def _analogue(
    z: torch.Tensor, t: torch.Tensor, valid: torch.Tensor | None, delays: int, stride: int, *, k: int
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The analogue's one-step map for the library at times ``t`` ``(N,)`` of ``z`` (``valid`` ``(B, N)``: the
    states that are data, or None)."""
    span = (delays - 1) * stride + 1
    N, M = t.shape[0], t.shape[0] + span - 1  # library states; context states they reach back to
    states = z[:, :M].transpose(1, 2).contiguous()  # (B, C, M)
    increments = z[:, t + 1] - z[:, t]  # (B, N, C)
    kk = min(k, N)
    c = z.shape[2]
    reached: dict[int, torch.Tensor] = {}  # time u -> (B, M) squared distances of state u to the context's

    def distances(history: torch.Tensor, u: int) -> torch.Tensor:
        """Squared distances ``(B, M)`` of the state at ``u`` (final once a step has read it) to the context's."""
        if u not in reached:
            squares = (states - history[:, u, :, None]).square_()  # (B, C, M)
            reached[u] = squares[:, 0] if c == 1 else squares.sum(dim=1)  # a sum over one row costs a copy
        return reached[u]

    def step(history: torch.Tensor, now: int) -> torch.Tensor:
        """Increments ``(B, C)`` voted by the ``kk`` nearest library vectors to the delay vector at ``now``."""
        # the squared distance of two delay vectors sums those of their states, each state's computed once
        d2 = distances(history, now)[:, span - 1 : span - 1 + N].clone()  # (B, N)
        for lag in range(stride, span, stride):
            d2 += distances(history, now - lag)[:, span - 1 - lag : span - 1 - lag + N]
        reached.pop(now - span + 1)  # no later delay vector reaches back to it
        if valid is not None:
            d2 = d2.masked_fill(~valid, torch.inf)
        d2n, idx = torch.topk(d2, kk, dim=1, largest=False)  # (B, kk), ascending
        dn = d2n.sqrt()  # (B, kk)
        # a missing neighbour (inf) weighs 0; no candidate at all: no increment
        nearest = dn[:, :1]
        w = torch.exp(-dn / torch.where(nearest.isfinite(), nearest.clamp_min(1e-12), 1.0))  # (B, kk)
        total = w.sum(dim=1, keepdim=True)
        total = torch.where(total > 0, total, 1.0)
        inc = torch.gather(increments, 1, idx[:, :, None].expand(-1, -1, c))  # (B, kk, C)
        return (w[:, :, None] * inc).sum(dim=1) / total

    return step


def _smap(
    z: torch.Tensor,
    t: torch.Tensor,
    valid: torch.Tensor | None,
    delays: int,
    stride: int,
    *,
    theta: float,
    ridge: float,
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The S-map's one-step map for the library at times ``t`` ``(N,)`` of ``z`` (``valid`` ``(B, N)``: the
    states that are data, or None)."""
    # entries along the middle, library states last: each step's products run along the states
    library = delay_vectors(z, t, delays, stride).transpose(1, 2).contiguous()  # (B, E, N)
    increments = z[:, t + 1] - z[:, t]  # (B, N, C)
    E = library.shape[1]
    ones = torch.ones_like(library[:, :1])  # (B, 1, N)
    # the fits' right-hand factor before centring on the current state: [1, library vector, increment]
    right = torch.cat([ones.transpose(1, 2), library.transpose(1, 2), increments], dim=2)  # (B, N, 1 + E + C)
    usable = None if valid is None else valid.to(z.dtype)  # (B, N)
    count = library.shape[2] if usable is None else usable.sum(dim=1, keepdim=True).clamp_min(1)
    eye = torch.eye(E + 1, dtype=z.dtype, device=z.device)

    def step(history: torch.Tensor, now: int) -> torch.Tensor:
        """Increments ``(B, C)``: the intercepts of the weighted linear fits around the delay vector at ``now``."""
        q = delay_vectors(history, now, delays, stride)  # (B, E)
        offsets = library - q[:, :, None]  # (B, E, N)
        d = offsets.square().sum(dim=1).sqrt()  # (B, N)
        if usable is not None:
            d = d * usable
        mean = (d.sum(dim=1, keepdim=True) / count).clamp_min(1e-12)  # (B, 1)
        w = torch.exp(-theta * d / mean)  # (B, N)
        if usable is not None:
            w = w * usable
        weighted = torch.cat([ones, offsets], dim=1) * w[:, None]  # (B, 1 + E, N): the weighted design
        products = weighted @ right  # (B, 1 + E, 1 + E + C)
        # centre the library vectors on the current one: subtract the weighted design's sums times q
        products[:, :, 1 : E + 1] -= weighted.sum(dim=2)[:, :, None] * q[:, None]
        gram, target = products[:, :, : E + 1], products[:, :, E + 1 :]  # (B, 1 + E, 1 + E), (B, 1 + E, C)
        scale = gram.diagonal(dim1=1, dim2=2).sum(dim=1)[:, None, None] / (E + 1)
        # symmetric positive definite with the ridge: Cholesky (solve_spd says why not LU)
        coef = solve_spd(gram + (ridge * scale + 1e-12) * eye, target)  # (B, 1 + E, C)
        return coef[:, 0]  # the fit's value at the current state

    return step


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 and float32 as they are, other floats in float32, integers and bools in float64."""
    if dtype in (torch.float64, torch.float32):
        return dtype
    return torch.float32 if dtype.is_floating_point else torch.float64
