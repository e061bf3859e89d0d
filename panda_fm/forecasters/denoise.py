"""Denoising filters along time, in front of another forecaster."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import savgol_filter

from panda_fm.forecasters.base import ContextForecaster
from panda_fm.forecasters.gaps import fill_gaps

__all__ = ["DenoisedForecaster"]


@dataclass
class DenoisedForecaster:
    """Another forecaster applied after a denoising filter along time.

    ``smoother`` is ``"gauss"`` (a Gaussian of std ``width`` steps) or ``"savgol"`` (Savitzky-Golay of order
    3 over ``width`` steps, fitted up to the context's end, so the last state is not biased towards the past).
    """

    base: ContextForecaster
    smoother: str
    width: float
    name: str = "denoised"

    def __post_init__(self) -> None:
        if self.smoother not in ("gauss", "savgol"):
            raise ValueError(f"smoother must be 'gauss' or 'savgol', got {self.smoother!r}")

    def denoise(self, context: np.ndarray) -> np.ndarray:
        """The filtered context, same shape: ``(T, C)`` or ``(B, T, C)``.

        Missing values (NaN) are filtered over as :func:`panda_fm.forecasters.gaps.fill_gaps` fills them and
        stay missing where they are not trusted as data.
        """
        x = np.asarray(context)
        gaps = np.isnan(x).any()
        if gaps:
            filled, trusted = fill_gaps(x if x.ndim == 3 else x[None])
            filled, trusted = (filled, trusted) if x.ndim == 3 else (filled[0], trusted[0])
        else:
            filled = x
        if self.smoother == "gauss":
            out = gaussian_filter1d(filled, self.width, axis=-2, mode="nearest")
        else:
            out = savgol_filter(filled, int(self.width), 3, axis=-2, mode="interp")
        return np.where(trusted, out, np.nan) if gaps else out

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        return self.base.predict(self.denoise(context), prediction_length)
