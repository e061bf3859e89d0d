"""The shared base of the classical forecasters: validation, per-channel standardisation, delay rollouts.

Every forecaster in :mod:`panda_fm.forecasters` fits each series only on its own context and has the
signature of :meth:`panda_fm.PandaPipeline.predict`: ``predict(context, prediction_length)`` maps a
context ``(T, C)`` to ``(H, C)`` and ``(B, T, C)`` to ``(B, H, C)``.

Each one standardises its context per channel (mean and std over time; one mean and std over all channels
where ``pooled_moments`` says so), forecasts in those coordinates and undoes the scaling. The iterated ones (linear AR, NVAR, analogue) predict the one-step increment
``z[t+1] - z[t]`` from a delay embedding of the recent past and feed their own output back, with the state
clipped to the context's range widened by its span on each side, so that a diverging rollout stays finite
and visibly wrong instead of overflowing.

Shape letters: B batch, T time, C channels, H horizon, L delays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from panda_fm.forecasters.gaps import fill_gaps, nan_moments
from panda_fm.scaling import context_moments

__all__ = [
    "ContextTooShortError",
    "Forecaster",
    "ContextForecaster",
    "IteratedDelayForecaster",
    "MeanForecaster",
    "NaiveForecaster",
]


class ContextTooShortError(ValueError):
    """A forecaster was given fewer context steps than it needs (its ``min_context``)."""


@runtime_checkable
class Forecaster(Protocol):
    """Anything the benchmark can run: a name and the pipeline's ``predict`` signature."""

    name: str

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        """Forecast ``prediction_length`` steps: ``(T, C) -> (H, C)`` or ``(B, T, C) -> (B, H, C)``."""
        ...


class ContextForecaster:
    """Shape handling, validation and per-channel standardisation shared by the baselines."""

    name = "base"
    min_context = 2  # subclasses raise this where they need a longer context
    # one mean and std for all channels instead of each channel's own (fields whose sites share their physics)
    pooled_moments = False

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        """Forecast each series from its own context.

        Args:
            context: ``(T, C)`` or ``(B, T, C)``; NaN marks a missing value (handled as
                :mod:`panda_fm.forecasters.gaps` describes), every channel needs an observation.
            prediction_length: ``H``, number of steps to forecast.

        Returns:
            ``(H, C)`` or ``(B, H, C)``, in the context's units and float dtype.
        """
        x = np.asarray(context)
        if x.ndim not in (2, 3):
            raise ValueError(f"context must be (T, C) or (B, T, C), got shape {x.shape}; add a channel axis")
        if prediction_length < 1:
            raise ValueError(f"prediction_length must be >= 1, got {prediction_length}")
        if x.shape[-2] < self.min_context:
            raise ContextTooShortError(
                f"{self.name} needs a context of at least {self.min_context} steps, got {x.shape[-2]}; "
                "pass a longer context"
            )
        if np.isinf(x).any():
            raise ValueError("context contains inf; replace it with NaN to mark it missing")
        batch = (x if x.ndim == 3 else x[None]).astype(np.float64)  # (B, T, C)
        trusted = None
        observed = ~np.isnan(batch)
        if not observed.all():
            if not observed.any(axis=1).all():
                raise ValueError("a channel of the context has no observation; drop it or give one")
            batch, trusted = fill_gaps(batch)
        if self.pooled_moments:
            mu, sd = nan_moments(
                batch.reshape(len(batch), -1, 1), observed.reshape(len(batch), -1, 1)
            )  # (B, 1, 1)
        elif trusted is not None:
            mu, sd = nan_moments(batch, observed)
        else:
            mu, sd = context_moments(batch)  # (B, 1, C)
        out = self._forecast((batch - mu) / sd, prediction_length, trusted) * sd + mu  # (B, H, C)
        out = out.astype(np.result_type(x.dtype, np.float32), copy=False)
        return out if x.ndim == 3 else out[0]

    def _forecast(self, z: np.ndarray, horizon: int, trusted: np.ndarray | None = None) -> np.ndarray:
        """Forecast standardised contexts ``z (B, T, C)`` for ``horizon`` steps: ``(B, H, C)``.

        ``trusted`` ``(B, T, C)`` marks the entries that are data (None: all are); the others were filled
        in by :func:`panda_fm.forecasters.gaps.fill_gaps`.
        """
        raise NotImplementedError


@dataclass
class MeanForecaster(ContextForecaster):
    """Forecasts the context's per-channel mean at every step."""

    name: str = "mean"

    def _forecast(self, z: np.ndarray, horizon: int, trusted: np.ndarray | None = None) -> np.ndarray:
        return np.zeros((z.shape[0], horizon, z.shape[2]))  # the mean, in standardised coordinates


@dataclass
class NaiveForecaster(ContextForecaster):
    """Repeats the context's last value."""

    name: str = "naive"

    def _forecast(self, z: np.ndarray, horizon: int, trusted: np.ndarray | None = None) -> np.ndarray:
        return np.repeat(z[:, -1:], horizon, axis=1)


def delay_vector(z: np.ndarray, t: np.ndarray | int, delays: int, stride: int) -> np.ndarray:
    """Delay vectors ``[z[t], z[t - stride], ..., z[t - (delays - 1) stride]]``, flattened.

    Args:
        z: ``(T, C)`` series, or ``(B, T, C)`` series delay-embedded at the same times.
        t: time index, or ``(N,)`` indices.
        delays: number of delayed copies ``L``.
        stride: steps between copies.

    Returns:
        ``(L*C,)`` or ``(N, L*C)`` for one series; ``(B, L*C)`` or ``(B, N, L*C)`` for a batch.
    """
    idx = np.asarray(t)[..., None] - np.arange(delays) * stride  # (L,) or (N, L)
    v = z[idx] if z.ndim == 2 else z[:, idx]  # (..., L, C)
    return v.reshape(*v.shape[:-2], -1)


@dataclass
class IteratedDelayForecaster(ContextForecaster):
    """Iterated one-step forecaster on a delay embedding: ``z[t+1] = z[t] + g(delay vector at t)``.

    Subclasses fit ``g`` to one series (``_fit``, returning a tuple of arrays) and evaluate it for a
    batch (``_step``); the rollout runs all series of a batch in lockstep.
    """

    delays: int = 2
    stride: int = 1
    clip: bool = True  # keep the rollout within the context's range widened by its span on each side

    def __post_init__(self) -> None:
        if self.delays < 1 or self.stride < 1:
            raise ValueError(f"delays and stride must be >= 1, got {self.delays} and {self.stride}")
        self.min_context = (self.delays - 1) * self.stride + 8

    @property
    def span(self) -> int:
        """Steps of history one delay vector covers."""
        return (self.delays - 1) * self.stride + 1

    def pair_times(
        self, n_steps: int, trusted: np.ndarray | None = None, exclude_recent: int = 0
    ) -> np.ndarray:
        """The times ``t`` whose delay vector and successor ``t + 1`` are data: the training pairs.

        Args:
            n_steps: ``T``.
            trusted: ``(T, C)`` bool, or None when every entry is data.
            exclude_recent: leave out the last ``exclude_recent`` pairs' times.

        Returns:
            ``(N,)`` int indices, ascending.
        """
        t = np.arange(self.span - 1, n_steps - 1 - exclude_recent)  # (N,)
        if trusted is None:
            return t
        known = trusted.all(axis=-1)  # (T,): every channel is data
        keep = known[t + 1] & known[t[:, None] - np.arange(self.delays) * self.stride].all(axis=1)
        return t[keep]

    def start_index(self, trusted: np.ndarray | None, n_steps: int) -> int:
        """Where the rollout of a batch starts: the last time at which every series' delay vector is data.

        Args:
            trusted: ``(B, T, C)`` bool, or None when every entry is data.
            n_steps: ``T``.

        Returns:
            ``T - 1`` without gaps at the end; earlier when some series' last steps are not data (the
            rollout then forecasts them, keeping every trusted entry it passes).
        """
        if trusted is None:
            return n_steps - 1
        known = trusted.all(axis=2)  # (B, T)
        t = np.arange(self.span - 1, n_steps)  # (S,)
        full = known[:, t[:, None] - np.arange(self.delays) * self.stride].all(axis=2)  # (B, S)
        last = np.where(full.any(axis=1), len(t) - 1 - full[:, ::-1].argmax(axis=1), 0)  # (B,)
        return int(t[last.min()])

    def _fit(self, z: np.ndarray, trusted: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Fit one standardised series ``z (T, C)`` on its trusted entries (``trusted (T, C)`` or None: all);
        returns the arrays ``_step`` needs."""
        raise NotImplementedError

    def _step(self, state: tuple[np.ndarray, ...], history: np.ndarray, t: int) -> np.ndarray:
        """Increments ``(B, C)`` from the delay vectors ending at index ``t`` of ``history (B, T', C)``;
        ``state`` holds the ``_fit`` arrays stacked along a leading batch axis."""
        raise NotImplementedError

    def _forecast(self, z: np.ndarray, horizon: int, trusted: np.ndarray | None = None) -> np.ndarray:
        masks = [None] * len(z) if trusted is None else list(trusted)
        states = [self._fit(series, mask) for series, mask in zip(z, masks, strict=True)]
        return self._rollout(
            z, tuple(np.stack(parts) for parts in zip(*states, strict=True)), horizon, trusted
        )

    def _rollout(
        self, z: np.ndarray, state: tuple[np.ndarray, ...], horizon: int, trusted: np.ndarray | None = None
    ) -> np.ndarray:
        """Iterate the fitted one-step maps from the end of ``z (B, T, C)``: ``(B, H, C)``.

        With ``trusted`` ``(B, T, C)``, the rollout starts at :meth:`start_index` and keeps every trusted
        entry of the context it passes (each series' own data), forecasting the others.
        """
        lo, hi = z.min(axis=1), z.max(axis=1)  # (B, C)
        lo, hi = lo - (hi - lo), hi + (hi - lo)
        t0 = z.shape[1]
        history = np.concatenate([z, np.empty((z.shape[0], horizon, z.shape[2]))], axis=1)  # (B, T + H, C)
        for t in range(self.start_index(trusted, t0), t0 - 1 + horizon):
            nxt = history[:, t] + self._step(state, history, t)  # (B, C)
            nxt = np.clip(nxt, lo, hi) if self.clip else nxt
            history[:, t + 1] = np.where(trusted[:, t + 1], z[:, t + 1], nxt) if t + 1 < t0 else nxt
        return history[:, t0:]
