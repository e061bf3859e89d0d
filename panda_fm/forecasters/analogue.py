"""The method of analogues: nearest neighbours in delay space vote on the next increment.

Shape letters: B batch, T time, C channels, N library states, L delays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panda_fm.forecasters.base import IteratedDelayForecaster, delay_vector

__all__ = ["AnalogueForecaster"]


@dataclass
class AnalogueForecaster(IteratedDelayForecaster):
    """Method of analogues: the next increment is that of the nearest past states in delay space.

    At each step the ``k`` nearest delay vectors of the context vote on the increment with weights
    ``exp(-d / d_min)``. ``exclude_recent`` drops the context's last steps from the library (a Theiler
    window; their neighbours only extrapolate the current velocity); on the held-out founders leaving
    it at 0 scored better.
    """

    name: str = "analogue"
    delays: int = 4
    stride: int = 4
    k: int = 4
    exclude_recent: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1 or self.exclude_recent < 0:
            raise ValueError(f"need k >= 1 and exclude_recent >= 0, got {self.k} and {self.exclude_recent}")
        self.min_context = self.span + self.exclude_recent + self.k + 1

    def _fit(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(self.span - 1, z.shape[0] - 1 - self.exclude_recent)  # (N,)
        return delay_vector(z, t, self.delays, self.stride), z[t + 1] - z[t]  # (N, L*C), (N, C)

    def _step(self, state: tuple[np.ndarray, np.ndarray], history: np.ndarray, t: int) -> np.ndarray:
        library, increments = state  # (B, N, L*C), (B, N, C)
        q = delay_vector(history, t, self.delays, self.stride)  # (B, L*C)
        d = np.sqrt(((library - q[:, None]) ** 2).sum(axis=2))  # (B, N)
        k = min(self.k, d.shape[1])
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]  # (B, k)
        dn = np.take_along_axis(d, nn, axis=1)  # (B, k)
        w = np.exp(-dn / np.maximum(dn.min(axis=1, keepdims=True), 1e-12))  # (B, k)
        inc = np.take_along_axis(increments, nn[:, :, None], axis=1)  # (B, k, C)
        return (w[:, :, None] * inc).sum(axis=1) / w.sum(axis=1, keepdims=True)
