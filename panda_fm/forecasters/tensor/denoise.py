"""Denoising filters along time as batched torch code: the filters of
:class:`panda_fm.forecasters.denoise.DenoisedForecaster`.

:func:`gaussian_smooth` reproduces ``scipy.ndimage.gaussian_filter1d(x, sigma, axis=-2, mode="nearest")``
and :func:`savgol_smooth` reproduces ``scipy.signal.savgol_filter(x, window, order, axis=-2, mode="interp")``.
Both are correlations along time written as one multiply-add of a shifted slice per kernel tap, not
``conv1d`` or matrix products: cuDNN runs float32 convolutions in TF32 by default and matrix products follow
``torch.set_float32_matmul_precision``, either of which would cost float32 three decimal digits on a GPU.
The kernels are computed in float64 (on the host: they are a few numbers) and applied in the input's dtype on
its device.

Shape letters: B batch, T time, C channels, K kernel taps, W window, P edge points (``W // 2``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["gaussian_smooth", "savgol_smooth"]


def gaussian_smooth(x: torch.Tensor, sigma: float, *, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian smoothing along time, edges extended by their last value.

    As ``gaussian_filter1d(x, sigma, axis=-2, mode="nearest", truncate=truncate)``: the kernel (scipy's,
    computed the same way in float64) has radius ``int(truncate * sigma + 0.5)`` and sums to 1; any
    ``T >= 1`` is accepted (a context shorter than the radius is padded with copies of its end values, as
    scipy does).

    Args:
        x: ``(B, T, C)``, floating point (integers are smoothed in float64).
        sigma: standard deviation of the kernel in steps, > 0.
        truncate: the kernel's radius in standard deviations.

    Returns:
        ``(B, T, C)``, dtype and device of ``x`` (float64 for integer ``x``).

    Raises:
        ValueError: for a shape other than ``(B, T, C)``, ``T < 1``, ``sigma <= 0`` or ``truncate < 0``.
    """
    _check_context(x)
    if not sigma > 0 or not truncate >= 0:
        raise ValueError(f"need sigma > 0 and truncate >= 0, got {sigma} and {truncate}")
    x = x if x.is_floating_point() else x.double()
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)  # (K,)
    kernel = np.exp(-0.5 / (float(sigma) * float(sigma)) * offsets**2)  # (K,) float64
    kernel = kernel / kernel.sum()
    head, tail = x[:, :1].expand(-1, radius, -1), x[:, -1:].expand(-1, radius, -1)  # (B, radius, C) each
    return _correlate(torch.cat([head, x, tail], dim=1), kernel.tolist())  # (B, T + 2 radius, C) -> (B, T, C)


def savgol_smooth(x: torch.Tensor, window: int, order: int = 3) -> torch.Tensor:
    """Savitzky-Golay smoothing along time, fitted up to the ends.

    As ``savgol_filter(x, window, order, axis=-2, mode="interp")``: each interior point is the value at its
    centre of the degree-``order`` polynomial least-squares fitted to the ``window`` points around it; the
    first and last ``window // 2`` points are values of the polynomial fitted to the first or last full
    window.

    Args:
        x: ``(B, T, C)``, floating point (integers are smoothed in float64), ``T >= window``.
        window: odd number of points in a fit (scipy's half-sample-shifted even windows are refused).
        order: polynomial degree, ``0 <= order < window``.

    Returns:
        ``(B, T, C)``, dtype and device of ``x`` (float64 for integer ``x``).

    Raises:
        ValueError: for a shape other than ``(B, T, C)``, an even window, ``order`` out of range or
            ``T < window`` (scipy refuses that too).
    """
    _check_context(x)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    if not 0 <= order < window:
        raise ValueError(f"need 0 <= order < window, got order {order} and window {window}")
    if x.shape[1] < window:
        raise ValueError(f"savgol_smooth needs at least window = {window} steps, got {x.shape[1]}")
    x = x if x.is_floating_point() else x.double()
    half = window // 2
    projection = _polynomial_projection(window, order)  # (W, W) float64
    interior = _correlate(x, projection[half].tolist())  # (B, T - 2 half, C)
    if half == 0:
        return interior
    # (2P, W): rows giving the fitted values at the first and the last P points of a window
    edges = torch.tensor(
        np.concatenate([projection[:half], projection[-half:]]), dtype=x.dtype, device=x.device
    )
    first = (x[:, None, :window] * edges[:half, :, None]).sum(dim=2)  # (B, 1, W, C) * (P, W, 1) -> (B, P, C)
    last = (x[:, None, -window:] * edges[half:, :, None]).sum(dim=2)  # (B, P, C)
    return torch.cat([first, interior, last], dim=1)


def _correlate(x: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Correlation along time without padding: ``y[:, t] = sum_j taps[j] x[:, t + j]``.

    One multiply-add of a shifted slice per tap (the taps are float64 numbers, applied in ``x``'s dtype).

    Args:
        x: ``(B, T, C)``.
        taps: ``K <= T`` weights.

    Returns:
        ``(B, T - K + 1, C)``.
    """
    n = x.shape[1] - len(taps) + 1
    y = x[:, :n] * taps[0]  # (B, n, C)
    for j in range(1, len(taps)):
        y.add_(x[:, j : j + n], alpha=taps[j])
    return y


def _check_context(x: torch.Tensor) -> None:
    """Raise a ValueError unless ``x`` is ``(B, T, C)`` with ``T >= 1``."""
    if x.ndim != 3 or x.shape[1] < 1:
        raise ValueError(f"context must be (B, T, C) with T >= 1, got shape {tuple(x.shape)}")


@functools.lru_cache(maxsize=32)
def _polynomial_projection(window: int, order: int) -> np.ndarray:
    """The least-squares projection onto polynomials of degree ``order`` over ``window`` equispaced points.

    Args:
        window: ``W``.
        order: polynomial degree, ``< W``.

    Returns:
        ``(W, W)`` float64 (read-only): ``projection @ y`` are the fitted polynomial's values at the points.
    """
    half = max(window // 2, 1)
    points = (np.arange(window) - window // 2) / half  # (W,) in [-1, 1], for conditioning
    vandermonde = points[:, None] ** np.arange(order + 1)  # (W, order + 1)
    projection = vandermonde @ np.linalg.pinv(vandermonde)  # (W, W)
    projection.flags.writeable = False
    return projection
