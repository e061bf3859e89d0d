"""What the tensor experts share: standardisation by the context, delay vectors, the clipped rollout.

Each function mirrors its numpy counterpart in :mod:`panda_fm.forecasters.base` (same arithmetic, batched).

Shape letters: B batch, T time, C channels, H horizon, N time indices, L delays.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from panda_fm.forecasters.base import ContextTooShortError

__all__ = ["check_context", "standardise", "delay_vectors", "clip_bounds", "rollout", "solve_spd"]


def check_context(x: torch.Tensor, horizon: int, min_context: int, name: str) -> None:
    """Refuse what a ridge forecaster's tensor function cannot take, naming the fix.

    Raises:
        ValueError: for ``x`` not ``(B, T, C)`` or ``horizon < 1``; ``ContextTooShortError`` (a ValueError) for
            fewer than ``min_context`` steps.
        TypeError: for ``x`` neither float32 nor float64.
    """
    if x.ndim != 3:
        raise ValueError(f"context must be (B, T, C), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"context must be float32 or float64, got {x.dtype}")
    if horizon < 1:
        raise ValueError(f"prediction_length must be >= 1, got {horizon}")
    if x.shape[1] < min_context:
        raise ContextTooShortError(
            f"{name} needs a context of at least {min_context} steps, got {x.shape[1]}; pass a longer context"
        )


def standardise(
    x: torch.Tensor, observed: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel standardisation over time, as ``panda_fm.scaling.context_moments`` (with ``observed``:
    ``panda_fm.forecasters.gaps.nan_moments``, the moments of the observed entries).

    Args:
        x: ``(B, T, C)`` finite contexts.
        observed: ``(B, T, C)`` bool or None (all observed).

    Returns:
        ``(z, mean, std)``: ``z`` ``(B, T, C)``, ``mean`` and ``std`` ``(B, 1, C)`` (population std; 1 for a
        constant channel).
    """
    if observed is None:
        mu = x.mean(dim=1, keepdim=True)
        sd = x.std(dim=1, keepdim=True, correction=0)
    else:
        w = observed.to(x.dtype)
        count = w.sum(dim=1, keepdim=True).clamp_min(1)
        mu = (x * w).sum(dim=1, keepdim=True) / count
        sd = ((((x - mu) * w) ** 2).sum(dim=1, keepdim=True) / count).sqrt()
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    return (x - mu) / sd, mu, sd


def delay_vectors(z: torch.Tensor, t: torch.Tensor | int, delays: int, stride: int) -> torch.Tensor:
    """Delay vectors ``[z[t], z[t - stride], ..., z[t - (delays - 1) stride]]``, flattened delay-major.

    Args:
        z: ``(B, T, C)``.
        t: a time index ``>= (delays - 1) * stride``, or ``(N,)`` indices (int64).
        delays: ``L``.
        stride: steps between copies.

    Returns:
        ``(B, L*C)`` for an int ``t`` (a slice of ``z``: a rollout's step reads its state without indexing
        tensors), ``(B, N, L*C)`` for indices; entry ``l*C + c`` is channel ``c`` at ``t - l*stride`` (the
        layout of the numpy forecasters).
    """
    if isinstance(t, int):
        v = z[:, t - (delays - 1) * stride : t + 1 : stride].flip(1)  # (B, L, C)
        return v.reshape(z.shape[0], -1)
    offsets = torch.arange(delays, device=z.device) * stride
    idx = t[:, None] - offsets  # (N, L)
    v = z[:, idx]  # (B, N, L, C)
    return v.reshape(z.shape[0], idx.shape[0], -1)


def clip_bounds(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounds a clipped :func:`rollout` of ``z`` ``(B, T, C)`` keeps to: the range of each channel widened
    by its span on each side, ``(B, C)`` each."""
    lo, hi = z.amin(dim=1), z.amax(dim=1)  # (B, C)
    return lo - (hi - lo), hi + (hi - lo)


def rollout(
    z: torch.Tensor,
    step: Callable[[torch.Tensor, int], torch.Tensor],
    horizon: int,
    clip: bool = True,
    trusted: torch.Tensor | None = None,
    start: int | None = None,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Iterate a one-step map from the end of ``z``: ``z[t+1] = z[t] + step(history, t)``.

    With ``clip``, every new state is clipped to the context's range widened by its span on each side (a
    diverging rollout stays finite and visibly wrong). With ``trusted`` the rollout starts at ``start`` (see
    :func:`panda_fm.forecasters.tensor.gaps.start_index`) and keeps every trusted entry of the context it
    passes, forecasting the others (the numpy forecasters' rule for missing values at the end).

    Args:
        z: ``(B, T, C)`` contexts.
        step: ``(history (B, T + H, C), t) -> increments (B, C)`` from the states up to index ``t``.
        horizon: ``H``.
        clip: bound the states.
        trusted: ``(B, T, C)`` bool or None (every entry is data).
        start: the index the rollout starts from with ``trusted`` (default ``T - 1``).
        bounds: the clipping bounds (default: :func:`clip_bounds` of ``z``; given, ``z`` may be the end of
            the contexts they were taken from, as far as ``step`` reads back).

    Returns:
        ``(B, H, C)``.
    """
    lo, hi = clip_bounds(z) if bounds is None else bounds
    t0 = z.shape[1]
    history = torch.cat([z, z.new_empty(z.shape[0], horizon, z.shape[2])], dim=1)  # (B, T + H, C)
    first = t0 - 1 if trusted is None or start is None else start
    for t in range(first, t0 - 1 + horizon):
        nxt = history[:, t] + step(history, t)  # (B, C)
        nxt = torch.clamp(nxt, lo, hi) if clip else nxt
        history[:, t + 1] = torch.where(trusted[:, t + 1], z[:, t + 1], nxt) if t + 1 < t0 else nxt
    return history[:, t0:]


def solve_spd(a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``a x = rhs`` for symmetric positive definite ``a`` ``(..., F, F)``, ``rhs`` ``(..., F, C)``.

    By Cholesky factors. (Batched LU solves of torch 2.13's CPU build fail with "pivots ... must all be
    greater or equal to 1" for ``F`` above about 160 when more than one thread runs; Cholesky does not.)
    A matrix that rounding leaves indefinite is solved by LU on its own.
    """
    factor, info = torch.linalg.cholesky_ex(a)
    # two triangular solves: cholesky_solve's result to the bit, without its copies (3x faster on a CPU)
    x = torch.linalg.solve_triangular(
        factor.mT, torch.linalg.solve_triangular(factor, rhs, upper=False), upper=True
    )
    failed = info != 0
    if bool(failed.any()):  # rare: synchronises with the device only to check
        for i in failed.nonzero().tolist():
            x[tuple(i)] = torch.linalg.solve_ex(a[tuple(i)], rhs[tuple(i)])[0]
    return x
