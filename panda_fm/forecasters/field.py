"""Forecasters for spatially extended systems: one local model shared by every site of a field.

A context whose channels are the sites of a field on a ring (a lattice of coupled oscillators, a PDE on a
periodic grid) is forecast by :class:`FieldNVARForecaster`: the increment of site ``i`` is a ridge regression on
polynomial features of its neighbourhood, sites ``i - r .. i + r`` at ``L`` delays, with the same weights at every
site. All sites' pairs train the one model (``C`` times the pairs of a single series), and its feature count does
not grow with the channels, where a joint NVAR's falls to degree 1 beyond a few channels. The channels are
standardised together (one mean and std), so the shared weights read every site in the same units.

:class:`WideNVARForecaster` is the NVAR of wide contexts: below ``min_channels`` channels it is the joint
:class:`~panda_fm.forecasters.nvar.NVARForecaster`; from there on it backtests the joint and the field NVAR on
the context's last ``validation`` steps and forecasts with the field NVAR where its error is below the joint's
divided by ``margin``, per series (the channels' order is a ring of neighbours only if the backtest says so).

Shape letters: B batch, T time, C channels (sites), N training times, D neighbourhood entries (``(2r+1) L``),
F features, R penalties, H horizon, V backtest steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panda_fm.forecasters.base import ContextForecaster
from panda_fm.forecasters.nvar import (
    NVARForecaster,
    _degree_of,
    _monomials,
    _ridge_path,
    _RidgeDelayForecaster,
    n_monomials,
)

__all__ = ["FieldNVARForecaster", "WideNVARForecaster", "neighbourhoods"]


def neighbourhoods(z: np.ndarray, t: np.ndarray | int, radius: int, delays: int, stride: int) -> np.ndarray:
    """Each site's neighbourhood on a ring at ``t``: sites ``i - radius .. i + radius`` (wrapping round), at
    delays ``0, stride, .., (delays - 1) stride``, delay-major.

    Args:
        z: ``(T, C)`` or ``(B, T, C)``.
        t: a time index, or ``(N,)`` indices.

    Returns:
        ``(..., C, D)``: ``(C, D)`` or ``(N, C, D)`` for one series, ``(B, C, D)`` or ``(B, N, C, D)`` for a
        batch; entry ``l (2r+1) + (j + r)`` of site ``i`` is site ``(i + j) mod C`` at ``t - l stride``.
    """
    C = z.shape[-1]
    idx = np.asarray(t)[..., None] - np.arange(delays) * stride  # (L,) or (N, L)
    v = z[idx] if z.ndim == 2 else z[:, idx]  # (..., L, C)
    sites = (np.arange(C)[:, None] + np.arange(-radius, radius + 1)) % C  # (C, 2r+1)
    v = v[..., sites]  # (..., L, C, 2r+1)
    return np.moveaxis(v, -3, -2).reshape(*v.shape[:-3], C, -1)  # (..., C, L*(2r+1))


@dataclass
class FieldNVARForecaster(_RidgeDelayForecaster):
    """NVAR shared by the sites of a field on a ring: each site's increment from its neighbourhood's
    polynomial features (see the module's docstring); the penalty chosen by a held-out rollout as the NVAR's.
    The feature degree is the largest up to ``degree`` within ``max_feature_ratio`` times the pairs of all
    sites."""

    name: str = "field_nvar"
    radius: int = 2
    delays: int = 2
    stride: int = 1
    degree: int = 2
    pooled_moments = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.radius < 0:
            raise ValueError(f"radius must be >= 0, got {self.radius}")

    @property
    def n_inputs(self) -> int:
        """Entries of one site's neighbourhood."""
        return (2 * self.radius + 1) * self.delays

    def feature_degree(self, n_steps: int, n_channels: int) -> int:
        n_pairs = (n_steps - self.span - (self.validation if len(self.ridges) > 1 else 0)) * n_channels
        degree = self.degree
        while degree > 1 and n_monomials(self.n_inputs, degree) > self.max_feature_ratio * n_pairs:
            degree -= 1
        return degree

    def _fit_path(
        self, z: np.ndarray, ridges: tuple[float, ...], degree: int, trusted: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``(R, F, 1)`` and intercepts ``(R, 1)`` of the shared model, on ``z (T, C)``'s pairs whose
        every channel is data."""
        t = self.pair_times(z.shape[0], trusted)  # (N,)
        if len(t) == 0:
            return np.zeros((len(ridges), n_monomials(self.n_inputs, degree), 1)), np.zeros((len(ridges), 1))
        x = _monomials(neighbourhoods(z, t, self.radius, self.delays, self.stride), degree)  # (N, C, F)
        y = (z[t + 1] - z[t]).reshape(-1, 1)  # (N*C, 1)
        path = _ridge_path(x.reshape(-1, x.shape[-1]), y, ridges)
        return np.stack([w for w, _ in path]), np.stack([b for _, b in path])

    def _step(self, state: tuple[np.ndarray, np.ndarray], history: np.ndarray, t: int) -> np.ndarray:
        w, b = state  # (B, F, 1), (B, 1)
        v = neighbourhoods(history, t, self.radius, self.delays, self.stride)  # (B, C, D)
        x = _monomials(v, _degree_of(v.shape[-1], w.shape[1]))  # (B, C, F)
        return np.einsum("bcf,bf->bc", x, w[..., 0]) + b


@dataclass
class WideNVARForecaster(ContextForecaster):
    """The joint NVAR, or from ``min_channels`` channels on the field NVAR where it backtests better."""

    name: str = "nvar"
    joint: NVARForecaster = field(default_factory=NVARForecaster)
    shared: FieldNVARForecaster = field(default_factory=FieldNVARForecaster)  # the field NVAR
    min_channels: int = 8
    validation: int = 64  # steps the two are backtested on
    margin: float = 1.0  # the field NVAR's backtest error must be below the joint NVAR's divided by this

    def __post_init__(self) -> None:
        if self.min_channels < 2 or self.validation < 1 or self.margin < 1:
            raise ValueError("min_channels must be >= 2, validation >= 1 and margin >= 1")
        self.min_context = self.joint.min_context

    def uses_field(self, n_steps: int, n_channels: int) -> bool:
        """Whether contexts of this size try the field NVAR (wide enough, and long enough for both backtests)."""
        need = max(self.joint.min_context, self.shared.min_context) + self.validation
        return n_channels >= self.min_channels and n_steps >= need

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        x = np.asarray(context)
        if x.ndim not in (2, 3) or not self.uses_field(x.shape[-2], x.shape[-1]):
            return self.joint.predict(context, prediction_length)
        batch = x if x.ndim == 3 else x[None]  # (B, T, C)
        V = self.validation
        past, held = batch[:, :-V], batch[:, -V:]
        if np.isnan(past).all(axis=1).any():  # a channel observed only in the last V steps: no backtest
            return self.joint.predict(context, prediction_length)
        sd = np.nanstd(past, axis=1, keepdims=True)
        sd = np.where(sd > 0, sd, 1.0)  # (B, 1, C): the errors in each channel's units

        def backtest_error(f: ContextForecaster) -> np.ndarray:
            miss = ((f.predict(past, V) - held) / sd) ** 2  # (B, V, C)
            count = (~np.isnan(miss)).sum(axis=(1, 2))  # the observed held-out entries
            mse = np.nansum(miss, axis=(1, 2)) / np.maximum(count, 1)
            return np.where((count > 0) & np.isfinite(mse), mse, np.inf)  # (B,)

        use_field = backtest_error(self.shared) * self.margin < backtest_error(self.joint)  # (B,)
        out = self.joint.predict(batch, prediction_length)
        if use_field.any():
            out[use_field] = self.shared.predict(batch[use_field], prediction_length)
        return out if x.ndim == 3 else out[0]
