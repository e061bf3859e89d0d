"""Checks every user series passes, whether it is forecast (the pipeline) or trained on (fine-tuning).

Shape letters: T time, C channels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["MAX_ABS_VALUE", "as_series"]

MAX_ABS_VALUE = 1e15  # larger values overflow float32 statistics


def as_series(x: Any, name: str) -> np.ndarray:
    """One series as a ``(T, C)`` float32 array, NaN marking missing values.

    Args:
        x: ``(T,)`` (one channel) or ``(T, C)``: a numpy array, a torch tensor or a nested list of real numbers.
        name: how error messages call the series, e.g. ``"context"`` or ``"recording 2"``.

    Raises:
        ValueError: non-numeric values, a rank other than 1 or 2, no time steps or channels, infinite values,
            or values beyond +-:data:`MAX_ABS_VALUE`.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} has dtype {x.dtype}; pass real numbers (float or int), NaN for missing")
        x = x.numpy() if x.dtype != torch.bfloat16 else x.float().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} has dtype {arr.dtype}; pass real numbers (float or int), NaN for missing")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (T,) or (T, C) with time along axis 0, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); it needs time steps and channels")
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains infinite values; replace them with NaN to mark them missing")
    magnitude = np.abs(np.nan_to_num(arr.astype(np.float64, copy=False))).max()  # in float64: no overflow
    if magnitude > MAX_ABS_VALUE:
        raise ValueError(
            f"{name} has values beyond +-{MAX_ABS_VALUE:g}; rescale it (each window is standardised, so the "
            "units do not matter, and forecasts come back in the input's units)"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)
