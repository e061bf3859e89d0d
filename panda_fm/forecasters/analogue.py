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

    def _fit(
        self, z: np.ndarray, trusted: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The library: delay vectors ``(N, L*C)`` and their increments ``(N, C)``, plus with ``trusted``
        ``(N,)`` bool marking the states that are data (every series keeps the same ``N``, so a batch stacks)."""
        t = self.pair_times(z.shape[0], None, self.exclude_recent)  # (N,)
        library = (delay_vector(z, t, self.delays, self.stride), z[t + 1] - z[t])  # (N, L*C), (N, C)
        if trusted is None:
            return library
        return *library, np.isin(t, self.pair_times(z.shape[0], trusted, self.exclude_recent))

    def _step(self, state: tuple[np.ndarray, ...], history: np.ndarray, t: int) -> np.ndarray:
        library, increments = state[:2]  # (B, N, L*C), (B, N, C)
        q = delay_vector(history, t, self.delays, self.stride)  # (B, L*C)
        d = np.sqrt(((library - q[:, None]) ** 2).sum(axis=2))  # (B, N)
        if len(state) == 3:  # states that touch a gap are not candidates
            d = np.where(state[2], d, np.inf)
        k = min(self.k, d.shape[1])
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]  # (B, k)
        dn = np.take_along_axis(d, nn, axis=1)  # (B, k)
        nearest = dn.min(axis=1, keepdims=True)  # (B, 1); inf when no state is a candidate
        w = np.exp(-dn / np.where(np.isfinite(nearest), np.maximum(nearest, 1e-12), 1.0))  # (B, k); 0 if inf
        inc = np.take_along_axis(increments, nn[:, :, None], axis=1)  # (B, k, C)
        total = w.sum(axis=1, keepdims=True)
        return (w[:, :, None] * inc).sum(axis=1) / np.where(
            total > 0, total, 1.0
        )  # no candidate: no increment
