"""Standardisation by the context: per channel, over time.

The model's instance normalisation (:func:`fit_scale`, NaN-aware, torch), the classical forecasters' and
benchmark's standardisation (:func:`context_moments`, numpy) and the user's data before it meets the model
(:func:`standardise_observed` and :func:`standardise_series`, NaN-aware, float64) live here, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class InstanceScale:
    """Per-channel statistics of one context window.

    Attributes:
        loc: mean of the observed values, ``(B, 1, C)``.
        scale: ``sqrt(var + eps)`` of the observed values, ``(B, 1, C)``.
        constant: channels whose observed values are all equal, ``(B, 1, C)`` bool.
    """

    loc: torch.Tensor
    scale: torch.Tensor
    constant: torch.Tensor

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` in input units -> standardised units."""
        return (x - self.loc) / self.scale

    def denormalise(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, H, C)`` in standardised units -> input units; constant channels forecast their constant."""
        out = y * self.scale + self.loc
        return torch.where(self.constant, self.loc.expand_as(out), out)


def fit_scale(x: torch.Tensor, observed: torch.Tensor, eps: float) -> InstanceScale:
    """Mean and standard deviation of the observed entries of each channel.

    Args:
        x: ``(B, T, C)`` values; entries where ``observed`` is False are ignored (may be NaN).
        observed: ``(B, T, C)`` bool.
        eps: added to the variance before the square root.

    Returns:
        The statistics, computed in float32 whatever the input dtype.
    """
    assert x.shape == observed.shape and x.dim() == 3, f"expected matching (B, T, C), got {x.shape}"
    x = torch.where(observed, x.float(), 0.0)
    w = observed.float()
    count = w.sum(dim=1, keepdim=True).clamp_min(1.0)  # (B, 1, C)
    loc = x.sum(dim=1, keepdim=True) / count
    var = (((x - loc) * w) ** 2).sum(dim=1, keepdim=True) / count
    return InstanceScale(loc=loc, scale=torch.sqrt(var + eps), constant=var == 0)


#: In :func:`standardise_series`, a channel whose std is below this fraction of its series' common scale gets a
#: map of its own (on the common map its variation would be too small for the model's float32 and variance floor).
OWN_MAP_BELOW = 0.01


def standardise_series(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Series ``(..., T, C)`` standardised in float64 by one map for all their channels, except for the channels
    that map would flatten.

    One map per series keeps the channels' common units, which experts such as the field NVAR need. But a channel
    in other units (a small quantity beside a large one, or a small variation on an offset far from the other
    channels') would vary by a tiny fraction of the common scale, and lose its digits in the model's float32 or
    under its variance floor: each channel whose std is below :data:`OWN_MAP_BELOW` times the common scale is
    standardised on its own (constant channels included, which are then 0).

    Args:
        x: values, NaN for missing; every channel of every series needs an observed value.

    Returns:
        ``(z, loc, scale)`` as for :func:`standardise_observed`, ``loc`` and ``scale`` ``(..., 1, C)``.
    """
    x = np.asarray(x, dtype=np.float64)
    loc, scale = _observed_moments(x, axis=(-2, -1))  # (..., 1, 1)
    own_loc, own_scale = _observed_moments(x, axis=-2)  # (..., 1, C)
    own = own_scale < OWN_MAP_BELOW * scale
    loc, scale = np.where(own, own_loc, loc), np.where(own, own_scale, scale)
    return (x - loc) / scale, loc, scale


def context_moments(context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over time of fully observed contexts.

    Args:
        context: ``(..., T, C)``.

    Returns:
        ``(mean, std)``, each ``(..., 1, C)``; a constant channel gets std 1 (it is then only centred).
    """
    mu, sd = context.mean(axis=-2, keepdims=True), context.std(axis=-2, keepdims=True)
    return mu, np.where(sd > 0, sd, 1.0)


def standardise_observed(
    x: np.ndarray, axis: int | tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x`` standardised along ``axis`` by the mean and standard deviation of its observed values.

    In float64 and without a variance floor, so that the units of a user's data do not matter: the pipeline and
    fine-tuning standardise series this way (:func:`standardise_series`) before they round them to the model's
    float32 (where a small variation on a large offset loses its digits) and before :func:`fit_scale` (whose
    ``eps`` would flatten a series in small units).

    Args:
        x: values, NaN for missing; every slice along ``axis`` needs an observed value.
        axis: the axis or axes the statistics run over (time, or time and channels for one map per series).

    Returns:
        ``(z, loc, scale)``: ``z`` like ``x``, ``loc`` and ``scale`` with ``axis`` kept as 1 (``x = z * scale +
        loc``; scale 1 for a constant slice, which is only centred).
    """
    x = np.asarray(x, dtype=np.float64)
    loc, scale = _observed_moments(x, axis)
    return (x - loc) / scale, loc, scale


def _observed_moments(x: np.ndarray, axis: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The mean and std of float64 ``x``'s observed values along ``axis`` (kept as 1); std 1 for a constant slice."""
    loc = np.nanmean(x, axis=axis, keepdims=True)
    scale = np.sqrt(np.nanmean((x - loc) ** 2, axis=axis, keepdims=True))
    return loc, np.where(scale > 0, scale, 1.0)
