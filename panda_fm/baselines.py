"""Classical context-only forecasters with the pipeline's ``predict`` signature.

Every forecaster here fits each series only on its own context, and shares the
signature of :meth:`panda_fm.PandaPipeline.predict`: ``predict(context, prediction_length)`` with a
context of shape ``(T, C)`` returns ``(H, C)``, and ``(B, T, C)`` returns ``(B, H, C)``.

Each forecaster standardises its context per channel (mean and std over time), forecasts in those
coordinates and undoes the scaling. The iterated ones (linear AR, NVAR, analogue) predict the one-step
increment ``z[t+1] - z[t]`` from a delay embedding of the recent past and feed their own output back,
with the state clipped to the context's range widened by its span on each side, so a diverging rollout
stays finite and visibly wrong instead of overflowing.

:class:`DenoisedForecaster` runs one of them on a filtered context, and :class:`SelectorForecaster` picks, per
context, whichever of :data:`EXPERTS` best forecasts the context's own last steps from the steps before them
(on the held-out founders this backtest choice beats every single forecaster with 5% noise and is close
to the NVAR on clean contexts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations_with_replacement
from math import comb
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import savgol_filter

__all__ = [
    "Forecaster",
    "MeanForecaster",
    "NaiveForecaster",
    "LinearARForecaster",
    "NVARForecaster",
    "QuadraticNVARForecaster",
    "AnalogueForecaster",
    "DenoisedForecaster",
    "SelectorForecaster",
    "EXPERTS",
    "backtest_experts",
    "BASELINES",
    "make_baselines",
]


@runtime_checkable
class Forecaster(Protocol):
    """Anything the benchmark can run: a name and the pipeline's ``predict`` signature."""

    name: str

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        """Forecast ``prediction_length`` steps: ``(T, C) -> (H, C)`` or ``(B, T, C) -> (B, H, C)``."""
        ...


class _ContextForecaster:
    """Shape handling, validation and per-channel standardisation shared by the baselines."""

    name = "base"
    min_context = 2  # subclasses raise this where they need a longer context

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        """Forecast each series from its own context.

        Args:
            context: ``(T, C)`` or ``(B, T, C)``, finite.
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
            raise ValueError(
                f"{self.name} needs a context of at least {self.min_context} steps, got {x.shape[-2]}; "
                "pass a longer context"
            )
        if not np.isfinite(x).all():
            raise ValueError("context contains NaN or inf; fill or drop missing values first")
        batch = (x if x.ndim == 3 else x[None]).astype(np.float64)  # (B, T, C)
        mu, sd = batch.mean(axis=1, keepdims=True), batch.std(axis=1, keepdims=True)  # (B, 1, C)
        sd = np.where(sd > 0, sd, 1.0)
        out = self._forecast((batch - mu) / sd, prediction_length) * sd + mu  # (B, H, C)
        out = out.astype(np.result_type(x.dtype, np.float32), copy=False)
        return out if x.ndim == 3 else out[0]

    def _forecast(self, z: np.ndarray, horizon: int) -> np.ndarray:
        """Forecast standardised contexts ``z (B, T, C)`` for ``horizon`` steps: ``(B, H, C)``."""
        raise NotImplementedError


@dataclass
class MeanForecaster(_ContextForecaster):
    """Forecasts the context's per-channel mean at every step."""

    name: str = "mean"

    def _forecast(self, z: np.ndarray, horizon: int) -> np.ndarray:
        return np.zeros((z.shape[0], horizon, z.shape[2]))  # the mean, in standardised coordinates


@dataclass
class NaiveForecaster(_ContextForecaster):
    """Repeats the context's last value."""

    name: str = "naive"

    def _forecast(self, z: np.ndarray, horizon: int) -> np.ndarray:
        return np.repeat(z[:, -1:], horizon, axis=1)


def _delay_vector(z: np.ndarray, t: np.ndarray | int, delays: int, stride: int) -> np.ndarray:
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
class _IteratedDelayForecaster(_ContextForecaster):
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

    def _fit(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """Fit one standardised series ``z (T, C)``; returns the arrays ``_step`` needs."""
        raise NotImplementedError

    def _step(self, state: tuple[np.ndarray, ...], history: np.ndarray, t: int) -> np.ndarray:
        """Increments ``(B, C)`` from the delay vectors ending at index ``t`` of ``history (B, T', C)``;
        ``state`` holds the ``_fit`` arrays stacked along a leading batch axis."""
        raise NotImplementedError

    def _forecast(self, z: np.ndarray, horizon: int) -> np.ndarray:
        states = [self._fit(series) for series in z]
        return self._rollout(z, tuple(np.stack(parts) for parts in zip(*states, strict=True)), horizon)

    def _rollout(self, z: np.ndarray, state: tuple[np.ndarray, ...], horizon: int) -> np.ndarray:
        """Iterate the fitted one-step maps from the end of ``z (B, T, C)``: ``(B, H, C)``."""
        lo, hi = z.min(axis=1), z.max(axis=1)  # (B, C)
        lo, hi = lo - (hi - lo), hi + (hi - lo)
        t0 = z.shape[1]
        history = np.concatenate([z, np.empty((z.shape[0], horizon, z.shape[2]))], axis=1)  # (B, T + H, C)
        for t in range(t0 - 1, t0 - 1 + horizon):
            nxt = history[:, t] + self._step(state, history, t)  # (B, C)
            history[:, t + 1] = np.clip(nxt, lo, hi) if self.clip else nxt
        return history[:, t0:]


@dataclass
class _RidgeDelayForecaster(_IteratedDelayForecaster):
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

    def _degree(self, n_steps: int, n_channels: int) -> int:
        """The feature degree used for contexts of this size (the same for every series of a batch)."""
        n_pairs = n_steps - self.span - (self.validation if len(self.ridges) > 1 else 0)
        degree = self.degree
        while degree > 1 and n_monomials(self.delays * n_channels, degree) > self.max_feature_ratio * n_pairs:
            degree -= 1
        return degree

    def _fit_path(
        self, z: np.ndarray, ridges: tuple[float, ...], degree: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``(R, F, C)`` and intercepts ``(R, C)`` for each of ``R`` penalties, on ``z (T, C)``."""
        t = np.arange(self.span - 1, z.shape[0] - 1)  # (N,) times with a full delay vector and a successor
        x = _monomials(_delay_vector(z, t, self.delays, self.stride), degree)  # (N, F)
        path = _ridge_path(x, z[t + 1] - z[t], ridges)  # increments (N, C) as targets
        return np.stack([w for w, _ in path]), np.stack([b for _, b in path])

    def _fit(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        degree = self._degree(*z.shape)
        ridge = self.ridges[0]
        if len(self.ridges) > 1:
            head, tail = z[: -self.validation], z[-self.validation :]  # (T - V, C), (V, C)
            starts = np.broadcast_to(head, (len(self.ridges), *head.shape))  # one rollout per penalty
            forecasts = self._rollout(
                starts, self._fit_path(head, self.ridges, degree), self.validation
            )  # (R, V, C)
            ridge = self.ridges[int(np.nanargmin(((forecasts - tail) ** 2).mean(axis=(1, 2))))]
        w, b = self._fit_path(z, (ridge,), degree)
        return w[0], b[0]

    def _step(self, state: tuple[np.ndarray, np.ndarray], history: np.ndarray, t: int) -> np.ndarray:
        w, b = state  # (B, F, C), (B, C)
        v = _delay_vector(history, t, self.delays, self.stride)  # (B, L*C)
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
    """The NVAR with quadratic features only (the classical floor quoted in REFERENCE.md section 4)."""

    name: str = "nvar2"
    degree: int = 2


@dataclass
class AnalogueForecaster(_IteratedDelayForecaster):
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
        return _delay_vector(z, t, self.delays, self.stride), z[t + 1] - z[t]  # (N, L*C), (N, C)

    def _step(self, state: tuple[np.ndarray, np.ndarray], history: np.ndarray, t: int) -> np.ndarray:
        library, increments = state  # (B, N, L*C), (B, N, C)
        q = _delay_vector(history, t, self.delays, self.stride)  # (B, L*C)
        d = np.sqrt(((library - q[:, None]) ** 2).sum(axis=2))  # (B, N)
        k = min(self.k, d.shape[1])
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]  # (B, k)
        dn = np.take_along_axis(d, nn, axis=1)  # (B, k)
        w = np.exp(-dn / np.maximum(dn.min(axis=1, keepdims=True), 1e-12))  # (B, k)
        inc = np.take_along_axis(increments, nn[:, :, None], axis=1)  # (B, k, C)
        return (w[:, :, None] * inc).sum(axis=1) / w.sum(axis=1, keepdims=True)


@dataclass
class DenoisedForecaster:
    """Another forecaster applied after a denoising filter along time.

    ``smoother`` is ``"gauss"`` (a Gaussian of std ``width`` steps) or ``"savgol"`` (Savitzky-Golay of order
    3 over ``width`` steps, fitted up to the context's end, so the last state is not biased towards the past).
    """

    base: _ContextForecaster
    smoother: str
    width: float
    name: str = "denoised"

    def __post_init__(self) -> None:
        if self.smoother not in ("gauss", "savgol"):
            raise ValueError(f"smoother must be 'gauss' or 'savgol', got {self.smoother!r}")

    def denoise(self, context: np.ndarray) -> np.ndarray:
        """The filtered context, same shape: ``(T, C)`` or ``(B, T, C)``."""
        x = np.asarray(context)
        if self.smoother == "gauss":
            return gaussian_filter1d(x, self.width, axis=-2, mode="nearest")
        return savgol_filter(x, int(self.width), 3, axis=-2, mode="interp")

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        return self.base.predict(self.denoise(context), prediction_length)


#: Forecasters the selector (and ``PandaConfig.experts``) choose from; "_g" and "_sg" denoise first.
EXPERTS: dict[str, Callable[[], Forecaster]] = {
    "nvar": NVARForecaster,
    "nvar_g1": lambda: DenoisedForecaster(NVARForecaster(), "gauss", 1.0, "nvar_g1"),
    "nvar_sg11": lambda: DenoisedForecaster(NVARForecaster(), "savgol", 11, "nvar_sg11"),
    "analogue": AnalogueForecaster,
    "analogue_g2": lambda: DenoisedForecaster(AnalogueForecaster(), "gauss", 2.0, "analogue_g2"),
}


def backtest_experts(
    z: np.ndarray, names: Sequence[str], horizon: int, backtest: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each expert's forecast from the whole context, and its error on the context's own last steps.

    Args:
        z: ``(B, T, C)`` standardised contexts, finite.
        names: keys of :data:`EXPERTS`.
        horizon: steps to forecast.
        backtest: the last ``backtest`` steps of the context are forecast from the steps before them.

    Returns:
        Forecasts ``(B, E, H, C)`` and backtest mean absolute errors ``(B, E, C)``, both finite (a diverged
        forecast's non-finite values become 0, its error stays large).
    """
    experts = [EXPERTS[name]() for name in names]
    forecasts = np.stack([e.predict(z, horizon) for e in experts], axis=1)  # (B, E, H, C)
    past = np.stack([e.predict(z[:, :-backtest], backtest) for e in experts], axis=1)  # (B, E, V, C)
    errors = np.abs(past - z[:, None, -backtest:]).mean(axis=2)  # (B, E, C)
    errors = np.nan_to_num(errors, nan=1e6, posinf=1e6)
    return np.nan_to_num(forecasts, nan=0.0, posinf=0.0, neginf=0.0), errors


@dataclass
class SelectorForecaster(_ContextForecaster):
    """Forecasts with whichever expert of :data:`EXPERTS` best forecast the context's own last steps.

    Each expert forecasts the last ``backtest`` steps of the context from the steps before them; the one
    with the smallest mean absolute error (over those steps and all channels) then forecasts from the whole
    context. This is the in-context choice that ``PandaConfig(incontext="experts")`` starts from (which
    averages the logarithm of the errors over channels instead).
    """

    name: str = "selector"
    experts: tuple[str, ...] = tuple(EXPERTS)
    backtest: int = 128

    def __post_init__(self) -> None:
        unknown = sorted(set(self.experts) - set(EXPERTS))
        if unknown or not self.experts:
            raise ValueError(f"experts must be names from {sorted(EXPERTS)}, got {list(self.experts)}")
        if self.backtest < 1:
            raise ValueError(f"backtest must be >= 1, got {self.backtest}")
        self.min_context = self.backtest + 80  # the NVAR needs 74 steps to fit and choose its penalty

    def _forecast(self, z: np.ndarray, horizon: int) -> np.ndarray:
        forecasts, errors = backtest_experts(z, self.experts, horizon, self.backtest)
        best = errors.mean(axis=2).argmin(axis=1)  # (B,)
        return forecasts[np.arange(len(best)), best]


BASELINES: dict[str, type[_ContextForecaster]] = {
    "mean": MeanForecaster,
    "naive": NaiveForecaster,
    "linear_ar": LinearARForecaster,
    "nvar": NVARForecaster,
    "nvar2": QuadraticNVARForecaster,
    "analogue": AnalogueForecaster,
    "selector": SelectorForecaster,
}


def make_baselines(names: list[str] | tuple[str, ...] | str = "all") -> list[Forecaster]:
    """Baselines by name with their default settings; ``"all"`` gives every one.

    Args:
        names: ``"all"``, or names from :data:`BASELINES`.
    """
    if isinstance(names, str):
        names = list(BASELINES) if names == "all" else [names]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)} or 'all'")
    return [BASELINES[n]() for n in names]
