"""The method of analogues: nearest neighbours in delay space vote on the next increment; and S-maps, where
every past state weighs in on a linear map fitted around the current one.

Shape letters: B batch, T time, C channels, N library states, L delays, E delay-vector entries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from panda_fm.forecasters.base import IteratedDelayForecaster, delay_vector

__all__ = ["AnalogueForecaster", "SMapForecaster", "auto_embedding", "correlation_time"]


def correlation_time(z: np.ndarray, threshold: float) -> np.ndarray:
    """The first lag at which the channels' mean autocorrelation falls below ``threshold``, per series.

    Args:
        z: ``(B, T, C)`` standardised series (no NaN).
        threshold: the autocorrelation to fall below, in ``(-1, 1)``.

    Returns:
        ``(B,)`` int lags in ``[1, T // 2]``; ``T // 2`` where the autocorrelation stays above ``threshold``
        up to that lag. The autocorrelation of a channel at lag ``l`` is ``sum_t z[t] z[t + l] / sum_t z[t]^2``
        (a constant channel counts as 0), computed by FFT. Mirrored in torch by
        :func:`panda_fm.forecasters.tensor.analogue.correlation_time`.
    """
    n = z.shape[1]
    max_lag = n // 2
    f = np.fft.rfft(z, n=2 * n, axis=1)  # (B, F, C)
    cov = np.fft.irfft(f.real**2 + f.imag**2, n=2 * n, axis=1)[:, : max_lag + 1]  # (B, max_lag + 1, C)
    var = cov[:, :1]  # (B, 1, C); about T for a standardised channel
    varies = var > 1e-6 * n  # a constant channel standardises to ~0 and counts as uncorrelated
    acf = np.where(varies, cov / np.where(varies, var, 1.0), 0.0).mean(axis=2)  # (B, max_lag + 1)
    below = acf[:, 1:] < threshold  # (B, max_lag)
    return np.where(below.any(axis=1), below.argmax(axis=1) + 1, max_lag)


def auto_embedding(
    z: np.ndarray, delays: int, threshold: float, min_embedding: int
) -> tuple[int, np.ndarray]:
    """The delay embedding chosen on the context (``AnalogueForecaster(embedding="auto")``).

    The number of delays is ``delays``, raised so that ``delays * C`` reaches ``min_embedding``; each series'
    stride is its :func:`correlation_time` divided by the delays (rounded half up, at least 1), and at most
    what keeps a delay vector within half the context.

    Args:
        z: ``(B, T, C)`` standardised series (no NaN).
        delays: the fewest delays.
        threshold: the autocorrelation that defines the correlation time.
        min_embedding: the fewest entries ``delays * C`` of a delay vector.

    Returns:
        The number of delays, and ``(B,)`` int strides.
    """
    c = z.shape[2]
    n_delays = max(delays, -(-min_embedding // c))
    tau = correlation_time(z, threshold)  # (B,)
    cap = max(1, (z.shape[1] // 2) // max(n_delays - 1, 1))
    return n_delays, np.clip((2 * tau + n_delays) // (2 * n_delays), 1, cap)


@dataclass
class AnalogueForecaster(IteratedDelayForecaster):
    """Method of analogues: the next increment is that of the nearest past states in delay space.

    At each step the ``k`` nearest delay vectors of the context vote on the increment with weights
    ``exp(-d / d_min)``. ``exclude_recent`` drops the context's last steps from the library (a Theiler
    window; their neighbours only extrapolate the current velocity); on the held-out founders leaving
    it at 0 scored better.

    With ``embedding="auto"`` the embedding is chosen on each context (:func:`auto_embedding`), so that it
    follows the sampling rate and the number of observed channels: ``delays`` is then the fewest delays
    (raised until ``delays * C >= min_embedding``), ``stride`` is ignored, and each series gets the stride
    ``correlation time / delays``, the correlation time being the first lag at which its channels' mean
    autocorrelation falls below ``acf_threshold``.
    """

    name: str = "analogue"
    delays: int = 4
    stride: int = 4
    k: int = 4
    exclude_recent: int = 0
    embedding: str = "fixed"  # "fixed": delays and stride as given; "auto": chosen on each context
    acf_threshold: float = 0.5
    min_embedding: int = 0

    def __post_init__(self) -> None:
        if self.embedding not in ("fixed", "auto"):
            raise ValueError(f"embedding must be 'fixed' or 'auto', got {self.embedding!r}")
        if self.embedding == "auto" and not -1 < self.acf_threshold < 1:
            raise ValueError(f"acf_threshold must be in (-1, 1), got {self.acf_threshold}")
        super().__post_init__()
        if self.k < 1 or self.exclude_recent < 0:
            raise ValueError(f"need k >= 1 and exclude_recent >= 0, got {self.k} and {self.exclude_recent}")
        # "auto": the shortest embedding it may choose, stride 1 (and the delays of one channel)
        span = self.span if self.embedding == "fixed" else max(self.delays, self.min_embedding)
        self.min_context = span + self.exclude_recent + self.k + 1

    def _forecast(self, z: np.ndarray, horizon: int, trusted: np.ndarray | None = None) -> np.ndarray:
        if self.embedding == "fixed":
            return super()._forecast(z, horizon, trusted)
        delays, strides = auto_embedding(z, self.delays, self.acf_threshold, self.min_embedding)
        out = np.empty((z.shape[0], horizon, z.shape[2]))  # (B, H, C)
        for stride in np.unique(strides):  # the series of one stride run in lockstep
            rows = np.flatnonzero(strides == stride)
            fixed = replace(self, embedding="fixed", delays=delays, stride=int(stride))
            out[rows] = fixed._forecast(z[rows], horizon, None if trusted is None else trusted[rows])
        return out

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


@dataclass
class SMapForecaster(AnalogueForecaster):
    """S-map (sequential locally weighted global linear map; Sugihara 1994) on the analogue's delay embedding.

    At each step every library state votes with weight ``exp(-theta d / mean d)`` (``d`` its distance to the
    current delay vector) in a weighted least-squares fit of the increment on the delay vector, centred on the
    current one, whose intercept is the forecast increment: ``theta = 0`` is one linear autoregression for the
    whole attractor, large ``theta`` a local linear map around the current state. With ``theta=None`` each
    series chooses its own from ``thetas`` by forecasting the last ``validation`` steps of its context (at most
    a quarter of it) from the rest, as the NVAR chooses its penalty. ``ridge`` (times the weighted trace)
    keeps the fits defined where few states carry weight. ``k`` is not used. The defaults (theta 16, ridge
    1e-3, ``analogue_auto``'s embedding) were chosen on training founders by ``benchmarks/smap.py``.
    """

    name: str = "smap"
    embedding: str = "auto"
    acf_threshold: float = 0.25
    min_embedding: int = 12
    theta: float | None = 16.0
    thetas: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    validation: int = 64
    ridge: float = 1e-3

    def _forecast(self, z: np.ndarray, horizon: int, trusted: np.ndarray | None = None) -> np.ndarray:
        if self.theta is not None:
            return super()._forecast(z, horizon, trusted)
        V = min(self.validation, z.shape[1] // 4)
        head, tail = z[:, :-V], z[:, -V:]
        scored = np.ones_like(tail, dtype=bool) if trusted is None else trusted[:, -V:]
        errors = []
        for theta in self.thetas:
            guess = replace(self, theta=theta)._forecast(
                head, V, None if trusted is None else trusted[:, :-V]
            )
            err = np.where(scored, (guess - tail) ** 2, 0.0).sum(axis=(1, 2)) / np.maximum(
                scored.sum(axis=(1, 2)), 1
            )
            errors.append(np.where(np.isfinite(err), err, np.inf))
        best = np.argmin(np.stack(errors, axis=1), axis=1)  # (B,)
        out = np.empty((z.shape[0], horizon, z.shape[2]))
        for i in np.unique(best):
            rows = np.flatnonzero(best == i)
            fixed = replace(self, theta=self.thetas[i])
            out[rows] = fixed._forecast(z[rows], horizon, None if trusted is None else trusted[rows])
        return out

    def _step(self, state: tuple[np.ndarray, ...], history: np.ndarray, t: int) -> np.ndarray:
        library, increments = state[:2]  # (B, N, E), (B, N, C)
        q = delay_vector(history, t, self.delays, self.stride)  # (B, E)
        offsets = library - q[:, None]  # (B, N, E)
        d = np.sqrt((offsets**2).sum(axis=2))  # (B, N)
        usable = np.ones_like(d, dtype=bool) if len(state) == 2 else state[2]
        mean = np.where(usable, d, 0.0).sum(axis=1, keepdims=True) / np.maximum(
            usable.sum(axis=1, keepdims=True), 1
        )
        w = np.where(usable, np.exp(-self.theta * d / np.maximum(mean, 1e-12)), 0.0)  # (B, N)
        design = np.concatenate([np.ones_like(d)[..., None], offsets], axis=2)  # (B, N, 1 + E)
        weighted = design * w[..., None]
        gram = weighted.transpose(0, 2, 1) @ design  # (B, 1 + E, 1 + E)
        scale = np.trace(gram, axis1=1, axis2=2)[:, None, None] / gram.shape[1]
        gram = gram + self.ridge * scale * np.eye(gram.shape[1]) + 1e-12 * np.eye(gram.shape[1])
        coef = np.linalg.solve(gram, weighted.transpose(0, 2, 1) @ increments)  # (B, 1 + E, C)
        return coef[:, 0]  # the fit's value at the current state
