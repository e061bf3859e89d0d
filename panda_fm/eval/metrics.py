"""Forecast metrics: point errors over a horizon, distributional statistics of long rollouts, and scores of
probabilistic forecasts (quantiles ``(H, C, Q)`` or samples ``(H, C, K)`` against the truth ``(H, C)``).

All functions are pure: they take ``y_true`` and ``y_pred`` of shape ``(H, C)`` (time, channels; a
1-D array is read as one channel) and return a float (or an int for the valid prediction time).
Nothing here standardises its input unless the docstring says so; the benchmark runner standardises
truth and forecast with the context's per-channel mean and std before calling these.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import welch
from scipy.stats import rankdata

__all__ = [
    "smape",
    "smape_curve",
    "mae",
    "mse",
    "spearman",
    "valid_prediction_time",
    "normalised_rmse",
    "attractor_kl",
    "spectral_hellinger",
    "pinball_loss",
    "crps_quantiles",
    "crps_samples",
    "weighted_quantile_loss",
    "interval_coverage",
    "horizon_correlation",
]


def _pair(y_true: np.ndarray, y_pred: np.ndarray, same_length: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return both arrays as float64 ``(H, C)``."""
    a = np.asarray(y_true, dtype=np.float64)
    b = np.asarray(y_pred, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"y_true and y_pred must be (H, C) or (H,), got {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"channel counts differ: y_true {a.shape}, y_pred {b.shape}")
    if same_length and a.shape[0] != b.shape[0]:
        raise ValueError(f"shapes differ: y_true {a.shape}, y_pred {b.shape}; slice both to the same horizon")
    if a.shape[0] == 0:
        raise ValueError("empty series: the horizon must be at least one step")
    return a, b


def smape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Symmetric mean absolute percentage error on a 0-100 scale.

    ``100 * mean(|x - y| / (|x| + |y|))`` over all steps and channels, with ``0/0`` counted as 0
    (both exactly zero is a perfect forecast). 0 is perfect; 100 means opposite signs everywhere.

    Args:
        y_true: ``(H, C)`` truth.
        y_pred: ``(H, C)`` forecast.
    """
    return float(smape_curve(y_true, y_pred).mean())


def smape_curve(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """sMAPE (0-100) at each step, averaged over channels: ``(H, C), (H, C) -> (H,)``; see :func:`smape`."""
    a, b = _pair(y_true, y_pred)
    num = np.abs(a - b)
    den = np.abs(a) + np.abs(b)
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)  # (H, C)
    return 100.0 * ratio.mean(axis=1)


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error over all steps and channels; inputs ``(H, C)``."""
    a, b = _pair(y_true, y_pred)
    return float(np.abs(a - b).mean())


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error over all steps and channels; inputs ``(H, C)``."""
    a, b = _pair(y_true, y_pred)
    return float(((a - b) ** 2).mean())


def spearman(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman rank correlation over time, averaged over channels.

    Ties get average ranks. A channel in which either series is constant has no rank information and
    contributes 0 (so a constant forecast scores 0, not NaN).

    Args:
        y_true: ``(H, C)`` truth.
        y_pred: ``(H, C)`` forecast.

    Returns:
        A value in ``[-1, 1]``.
    """
    a, b = _pair(y_true, y_pred)
    ra = rankdata(a, axis=0)  # (H, C)
    rb = rankdata(b, axis=0)  # (H, C)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    den = np.sqrt((ra**2).sum(axis=0) * (rb**2).sum(axis=0))  # (C,)
    num = (ra * rb).sum(axis=0)  # (C,)
    rho = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(rho.mean())


def normalised_rmse(
    y_true: np.ndarray, y_pred: np.ndarray, scale: np.ndarray | float | None = None
) -> np.ndarray:
    """Root mean squared error across channels at each step, each channel divided by its scale.

    Args:
        y_true: ``(H, C)`` truth.
        y_pred: ``(H, C)`` forecast.
        scale: per-channel scale ``(C,)`` or a scalar; ``None`` uses the std of ``y_true`` over time
            (a constant channel gets scale 1).

    Returns:
        ``(H,)`` array: ``sqrt(mean_c ((x_tc - y_tc) / scale_c)^2)``.
    """
    a, b = _pair(y_true, y_pred)
    if scale is None:
        s = a.std(axis=0)
        s[s == 0] = 1.0
    else:
        s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (a.shape[1],))
        if np.any(s <= 0):
            raise ValueError("scale must be positive")
    return np.sqrt((((a - b) / s) ** 2).mean(axis=1))


def valid_prediction_time(
    y_true: np.ndarray, y_pred: np.ndarray, threshold: float = 0.5, scale: np.ndarray | float | None = None
) -> int:
    """Number of leading steps for which the normalised RMSE stays at or below ``threshold``.

    Args:
        y_true: ``(H, C)`` truth.
        y_pred: ``(H, C)`` forecast.
        threshold: largest acceptable normalised RMSE (in units of ``scale``).
        scale: as in :func:`normalised_rmse`; pass 1.0 for data already standardised.

    Returns:
        The index of the first step whose error exceeds the threshold, or ``H`` if none does.
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    err = normalised_rmse(y_true, y_pred, scale)  # (H,)
    over = np.flatnonzero(~(err <= threshold))  # NaN counts as over the threshold
    return int(over[0]) if over.size else int(err.shape[0])


def _subsample(x: np.ndarray, max_points: int) -> np.ndarray:
    """Evenly spaced rows of ``x`` (deterministic), at most ``max_points`` of them."""
    if x.shape[0] <= max_points:
        return x
    idx = np.linspace(0, x.shape[0] - 1, max_points).round().astype(int)
    return x[idx]


def _log_mixture_density(points: np.ndarray, centres: np.ndarray, bandwidth: float) -> np.ndarray:
    """Log density at ``points (M, C)`` of an equal-weight isotropic Gaussian mixture on ``centres (N, C)``."""
    # Squared distances channel by channel: no BLAS call, which on small shapes is slow on busy cores.
    d2 = np.zeros((points.shape[0], centres.shape[0]))  # (M, N)
    for c in range(points.shape[1]):
        d2 += (points[:, c, None] - centres[None, :, c]) ** 2
    log_kernel = -0.5 * d2 / bandwidth**2  # (M, N)
    peak = log_kernel.max(axis=1)  # (M,)
    log_sum = np.log(np.exp(log_kernel - peak[:, None]).sum(axis=1)) + peak  # log-sum-exp, (M,)
    log_norm = np.log(centres.shape[0]) + 0.5 * centres.shape[1] * np.log(2 * np.pi * bandwidth**2)
    return log_sum - log_norm


def attractor_kl(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    bandwidth: float = 0.3,
    max_points: int = 512,
    standardise: bool = True,
) -> float:
    """KL divergence ``KL(p_true || p_pred)`` between the state-space occupation densities of two rollouts.

    Estimator: each rollout's occupation density is a Gaussian mixture with one isotropic component of
    width ``bandwidth`` on each of (at most ``max_points``, evenly spaced in time) visited states, in
    coordinates standardised by the truth's per-channel mean and std (the smoothed empirical measure of
    Hess et al., 2023, which works in any dimension, unlike a histogram). The expectation over
    ``p_true`` is a Monte Carlo average over the truth's own states:
    ``mean_i [log p_true(x_i) - log p_pred(x_i)]``. Lengths may differ. 0 for identical point sets;
    grows without bound as the forecast leaves the attractor. Non-finite forecast states give ``inf``.

    Args:
        y_true: ``(H1, C)`` true long trajectory.
        y_pred: ``(H2, C)`` forecast rollout.
        bandwidth: mixture component width, in standardised units.
        max_points: subsample each trajectory to this many states (cost is quadratic in it).
        standardise: rescale both by the truth's mean and std first.
    """
    a, b = _pair(y_true, y_pred, same_length=False)
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    if not np.isfinite(b).all():
        return float("inf")
    if standardise:
        mu, sd = a.mean(axis=0), a.std(axis=0)
        sd[sd == 0] = 1.0
        a, b = (a - mu) / sd, (b - mu) / sd
    a, b = _subsample(a, max_points), _subsample(b, max_points)
    kl = _log_mixture_density(a, a, bandwidth) - _log_mixture_density(a, b, bandwidth)
    return float(max(kl.mean(), 0.0))


def _spectrum(x: np.ndarray, nperseg: int) -> np.ndarray:
    """Welch power spectrum per channel, normalised to sum to 1: ``(F, C)``."""
    _, p = welch(x, nperseg=nperseg, axis=0, detrend="constant")  # (F, C)
    tot = p.sum(axis=0, keepdims=True)
    flat = np.full_like(p, 1.0 / p.shape[0])  # a constant channel: spread evenly (no preferred frequency)
    return np.where(tot > 0, p / np.where(tot > 0, tot, 1.0), flat)


def spectral_hellinger(y_true: np.ndarray, y_pred: np.ndarray, nperseg: int = 256) -> float:
    """Hellinger distance between normalised power spectra, averaged over channels.

    Each channel's power spectrum is estimated with Welch's method (Hann windows of ``nperseg`` steps,
    half overlap; the same segment length for both series, so their frequency grids agree even when
    lengths differ) and normalised to a probability distribution over frequency. Then
    ``H = sqrt(1 - sum_f sqrt(p_f q_f))``, in ``[0, 1]``; 0 for identical spectra.

    Args:
        y_true: ``(H1, C)`` true trajectory.
        y_pred: ``(H2, C)`` forecast.
        nperseg: Welch segment length, clipped to the shorter series.
    """
    a, b = _pair(y_true, y_pred, same_length=False)
    if not np.isfinite(b).all():
        return 1.0
    n = min(nperseg, a.shape[0], b.shape[0])
    if n < 4:
        raise ValueError(f"series too short for a spectrum ({n} steps); use at least 4")
    p, q = _spectrum(a, n), _spectrum(b, n)  # (F, C) each
    bc = np.sqrt(p * q).sum(axis=0)  # (C,) Bhattacharyya coefficient
    return float(np.sqrt(np.clip(1.0 - bc, 0.0, 1.0)).mean())


def _levels_pair(
    y_true: np.ndarray, quantiles: np.ndarray, levels: np.ndarray | list[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate truth ``(H, C)`` (or ``(H,)``), quantiles ``(H, C, Q)`` (or ``(H, Q)``) and levels ``(Q,)``."""
    y = np.asarray(y_true, dtype=np.float64)
    q = np.asarray(quantiles, dtype=np.float64)
    tau = np.asarray(levels, dtype=np.float64).reshape(-1)
    if y.ndim == 1:
        y, q = y[:, None], q[:, None] if q.ndim == 2 else q
    if q.ndim != 3 or q.shape[:2] != y.shape or q.shape[2] != tau.size:
        raise ValueError(
            f"quantiles must be (H, C, Q) for truth (H, C) and Q levels; got truth {y.shape}, quantiles "
            f"{q.shape}, {tau.size} levels"
        )
    if not ((tau > 0) & (tau < 1)).all():
        raise ValueError(f"levels must lie strictly between 0 and 1, got {tau.tolist()}")
    return y, q, tau


def pinball_loss(y_true: np.ndarray, quantiles: np.ndarray, levels: np.ndarray | list[float]) -> np.ndarray:
    """Pinball (quantile) loss at each level, averaged over steps and channels: ``(Q,)``.

    ``rho_tau(y - q) = max(tau (y - q), (tau - 1) (y - q))``.
    """
    y, q, tau = _levels_pair(y_true, quantiles, levels)
    d = y[..., None] - q  # (H, C, Q)
    return np.maximum(tau * d, (tau - 1) * d).mean(axis=(0, 1))


def crps_quantiles(y_true: np.ndarray, quantiles: np.ndarray, levels: np.ndarray | list[float]) -> float:
    """CRPS approximated from quantiles: twice the pinball loss averaged over the levels, over steps and channels.

    With levels evenly spread over (0, 1) (e.g. 0.05, 0.10, ..., 0.95) this approaches the CRPS, which is the
    integral of twice the pinball loss over all levels. In the units of the data; 0 is perfect.

    Args:
        y_true: ``(H, C)`` truth.
        quantiles: ``(H, C, Q)`` forecast quantiles at ``levels``.
        levels: ``(Q,)`` levels in (0, 1).
    """
    return float(2 * pinball_loss(y_true, quantiles, levels).mean())


def crps_samples(y_true: np.ndarray, samples: np.ndarray) -> float:
    """CRPS of an ensemble (the unbiased-in-the-limit energy form), averaged over steps and channels.

    ``CRPS = E|X - y| - E|X - X'| / 2`` over the samples ``X``; ``E|X - X'|`` from the sorted samples in
    ``O(K log K)``: ``2 / K^2 sum_i (2 i - K - 1) x_(i)``.

    Args:
        y_true: ``(H, C)`` truth.
        samples: ``(H, C, K)`` samples (``(H, K)`` for a ``(H,)`` truth).
    """
    y = np.asarray(y_true, dtype=np.float64)
    x = np.asarray(samples, dtype=np.float64)
    if y.ndim == 1:
        y, x = y[:, None], x[:, None] if x.ndim == 2 else x
    if x.ndim != 3 or x.shape[:2] != y.shape or x.shape[2] < 1:
        raise ValueError(f"samples must be (H, C, K) for truth (H, C); got {x.shape} and {y.shape}")
    K = x.shape[2]
    first = np.abs(x - y[..., None]).mean(axis=2)  # (H, C)
    xs = np.sort(x, axis=2)
    weights = 2 * np.arange(1, K + 1) - K - 1  # (K,)
    spread = 2 * (xs * weights).sum(axis=2) / K**2  # (H, C): E|X - X'|
    return float((first - 0.5 * spread).mean())


def weighted_quantile_loss(
    y_true: np.ndarray, quantiles: np.ndarray, levels: np.ndarray | list[float]
) -> float:
    """Weighted quantile loss: ``mean_tau 2 sum rho_tau(y - q) / sum |y|`` (sums over steps and channels).

    Scale-free, as the CRPS divided by the mean absolute value of the truth; an all-zero truth gives inf.
    """
    y, q, tau = _levels_pair(y_true, quantiles, levels)
    denom = np.abs(y).mean()
    if denom == 0:
        return float("inf")
    return float(2 * pinball_loss(y, q, tau).mean() / denom)


def interval_coverage(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of the truth ``(H, C)`` inside ``[lower, upper]`` (both ``(H, C)``), ends included."""
    y, lo = _pair(y_true, lower)
    _, hi = _pair(y_true, upper)
    if (lo > hi).any():
        raise ValueError("lower exceeds upper somewhere: pass the interval's ends in order")
    return float(((y >= lo) & (y <= hi)).mean())


def horizon_correlation(predicted: np.ndarray, realised: np.ndarray) -> float:
    """Spearman rank correlation between predicted predictability horizons and realised valid prediction
    times, over forecasts ``(N,)`` (ties: average ranks); 0 when either is constant."""
    a = np.asarray(predicted, dtype=np.float64).reshape(-1)
    b = np.asarray(realised, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two equal-length arrays of at least 2 values, got {a.shape} and {b.shape}")
    return spearman(a, b)
