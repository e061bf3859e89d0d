"""Ridge regressions on delay embeddings: linear autoregression and the NVAR (polynomial features).

Shape letters: B batch, T time, C channels, N training pairs, F features, R penalties.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations_with_replacement
from math import comb

import numpy as np

from panda_fm.forecasters.base import IteratedDelayForecaster, delay_vector

__all__ = ["LinearARForecaster", "NVARForecaster", "QuadraticNVARForecaster", "n_monomials"]


@lru_cache(maxsize=64)
def _monomial_index(n_vars: int, degree: int) -> np.ndarray:
    """Index tuples of all degree-``degree`` monomials of ``n_vars`` variables: ``(M, degree)``."""
    return np.array(list(combinations_with_replacement(range(n_vars), degree)), dtype=np.intp)


def _monomials(v: np.ndarray, degree: int) -> np.ndarray:
    """All unique monomials of degree 1 to ``degree`` of the last axis: ``(..., F) -> (..., M)``."""
    out = [v]
    for d in range(2, degree + 1):
        out.append(np.prod(v[..., _monomial_index(v.shape[-1], d)], axis=-1))  # (..., M_d)
    return np.concatenate(out, axis=-1) if degree > 1 else v


def n_monomials(n_vars: int, degree: int) -> int:
    """Number of features :func:`_monomials` makes from ``n_vars`` variables."""
    return sum(comb(n_vars + d - 1, d) for d in range(1, degree + 1))


@lru_cache(maxsize=64)
def _degree_of(n_vars: int, n_features: int) -> int:
    """The degree whose :func:`_monomials` of ``n_vars`` variables make ``n_features`` features."""
    degree = 1
    while n_monomials(n_vars, degree) < n_features:
        degree += 1
    return degree


def _ridge_path(
    x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge regressions with an unpenalised intercept, one per penalty, sharing one Gram matrix.

    (A linear solve per penalty rather than one eigendecomposition: on small matrices LAPACK's
    eigensolver is slower by orders of magnitude when its threads compete for busy cores.)

    Args:
        x: ``(N, F)`` features.
        y: ``(N, C)`` targets.
        alphas: penalties per sample on the feature weights (features are scaled to unit variance first).

    Returns:
        For each penalty, weights ``(F, C)`` and intercept ``(C,)`` in the original feature units.
    """
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    xs = x.std(axis=0)
    xs = np.where(xs > 0, xs, 1.0)
    xc = (x - xm) / xs  # (N, F)
    gram, rhs = xc.T @ xc, xc.T @ (y - ym)  # (F, F), (F, C)
    eye = np.eye(x.shape[1])
    out = []
    for alpha in alphas:
        # the 1e-10 jitter keeps alpha = 0 solvable when features are collinear
        w = np.linalg.solve(gram + (alpha * x.shape[0] + 1e-10) * eye, rhs) / xs[:, None]  # (F, C)
        out.append((w, ym - xm @ w))
    return out


@dataclass
class _RidgeDelayForecaster(IteratedDelayForecaster):
    """Ridge regression of the increment on polynomial features of a delay embedding.

    The polynomial degree is the largest up to ``degree`` whose feature count stays within
    ``max_feature_ratio`` times the number of training pairs (so high-dimensional systems fall back to
    lower degrees). The penalty is chosen per context from ``ridges`` by a held-out rollout: fit on all
    but the last ``validation`` steps, forecast them iteratively, keep the penalty with the smallest mean
    squared error, refit on the whole context. Noisy contexts thereby get stronger regularisation.
    """

    ridges: tuple[float, ...] = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    validation: int = 64  # steps at the end of the context held out to choose the penalty
    degree: int = 1  # highest polynomial degree of the features: 1 is linear
    max_feature_ratio: float = 0.5  # features per training pair, at most

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.degree < 1:
            raise ValueError(f"degree must be >= 1, got {self.degree}")
        if not self.ridges or min(self.ridges) < 0:
            raise ValueError(f"ridges must be non-empty and >= 0, got {self.ridges}")
        if self.validation < 1 or self.max_feature_ratio <= 0:
            raise ValueError("validation must be >= 1 and max_feature_ratio > 0")
        self.min_context = self.span + 8 + (self.validation if len(self.ridges) > 1 else 0)

    def feature_degree(self, n_steps: int, n_channels: int) -> int:
        """The feature degree used for contexts of this size (the same for every series of a batch)."""
        n_pairs = n_steps - self.span - (self.validation if len(self.ridges) > 1 else 0)
        degree = self.degree
        while degree > 1 and n_monomials(self.delays * n_channels, degree) > self.max_feature_ratio * n_pairs:
            degree -= 1
        return degree

    def _fit_path(
        self, z: np.ndarray, ridges: tuple[float, ...], degree: int, trusted: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``(R, F, C)`` and intercepts ``(R, C)`` for each of ``R`` penalties, on ``z (T, C)``'s
        trusted pairs (``trusted (T, C)`` or None: all)."""
        t = self.pair_times(z.shape[0], trusted)  # (N,) times with a full delay vector and a successor
        if len(t) == 0:  # nothing to fit: no increment (a flat forecast)
            F = n_monomials(self.delays * z.shape[1], degree)
            return np.zeros((len(ridges), F, z.shape[1])), np.zeros((len(ridges), z.shape[1]))
        x = _monomials(delay_vector(z, t, self.delays, self.stride), degree)  # (N, F)
        path = _ridge_path(x, z[t + 1] - z[t], ridges)  # increments (N, C) as targets
        return np.stack([w for w, _ in path]), np.stack([b for _, b in path])

    def _fit(self, z: np.ndarray, trusted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        degree = self.feature_degree(*z.shape)
        ridge = self.ridges[0]
        if len(self.ridges) > 1:
            V = self.validation
            head, tail = z[:-V], z[-V:]  # (T - V, C), (V, C)
            head_ok = None if trusted is None else trusted[:-V]
            starts = np.broadcast_to(head, (len(self.ridges), *head.shape))  # one rollout per penalty
            masks = None if head_ok is None else np.broadcast_to(head_ok, starts.shape)
            path = self._fit_path(head, self.ridges, degree, head_ok)
            forecasts = self._rollout(starts, path, V, masks)  # (R, V, C)
            err = (forecasts - tail) ** 2  # (R, V, C)
            if trusted is None or not trusted[-V:].any():
                mse = err.mean(axis=(1, 2))
            else:  # scored on the held-out steps that are data
                mse = (err * trusted[-V:]).sum(axis=(1, 2)) / trusted[-V:].sum()
            ridge = self.ridges[int(np.nanargmin(mse))]
        w, b = self._fit_path(z, (ridge,), degree, trusted)
        return w[0], b[0]

    def _step(self, state: tuple[np.ndarray, np.ndarray], history: np.ndarray, t: int) -> np.ndarray:
        w, b = state  # (B, F, C), (B, C)
        v = delay_vector(history, t, self.delays, self.stride)  # (B, L*C)
        x = _monomials(v, _degree_of(v.shape[1], w.shape[1]))  # (B, F)
        return np.einsum("bf,bfc->bc", x, w) + b


@dataclass
class LinearARForecaster(_RidgeDelayForecaster):
    """Linear vector autoregression: ridge regression of the next increment on a delay embedding."""

    name: str = "linear_ar"
    delays: int = 8
    stride: int = 2
    degree: int = 1


@dataclass
class NVARForecaster(_RidgeDelayForecaster):
    """Next-generation reservoir computer (NVAR): ridge on polynomial features of a delay embedding.

    Cubic features where the context affords them (up to 4 channels with 2 delays and a 512-step
    context), quadratic otherwise; :class:`QuadraticNVARForecaster` is the quadratic-only variant.
    """

    name: str = "nvar"
    delays: int = 2
    stride: int = 1
    degree: int = 3


@dataclass
class QuadraticNVARForecaster(NVARForecaster):
    """The NVAR with quadratic features only (the classical floor of docs/method.md)."""

    name: str = "nvar2"
    degree: int = 2
