"""Attractor tests: pure functions of a trajectory ``(T, D)`` sampled uniformly in time.

Every test returns True when the trajectory passes (looks like a bounded, stationary, chaotic attractor).
:func:`run_tests` applies them in order of cost, cheapest first, and stops at the first failure.
:func:`descriptor` summarises an accepted trajectory for near-duplicate rejection.

The thresholds follow the reference's selection (docs/method.md, "Generation"), with two additions of ours:
the limit-cycle test (near-exact return of the whole trajectory after some lag) and a positive largest
Lyapunov exponent (Rosenstein's nearest-neighbour divergence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks
from scipy.signal.windows import blackmanharris
from scipy.spatial import cKDTree

TESTS = (
    "bounded",
    "not_linear",
    "not_fixed_point",
    "stationary",
    "broadband",
    "not_limit_cycle",
    "chaotic_01",
    "positive_lyapunov",
)


@dataclass(frozen=True)
class SelectionConfig:
    """Thresholds of the attractor tests."""

    transient_fraction: float = 0.1  # fraction of samples dropped before testing
    max_value: float = 1e4  # bounded: |x| limit
    max_zscore: float = 15.0  # bounded: largest |z-score| of any coordinate
    max_pca_ratio: float = 0.99  # not linear: first principal component's explained-variance ratio
    fixed_point_atol: float = 1e-3  # not a fixed point: step norms in the last 10% all below this
    min_peaks: int = 4  # broadband: spectral peaks needed in some coordinate
    peak_prominence: float = 1e-5  # broadband: relative height/prominence of a peak
    limit_cycle_tol: float = 1e-3  # not a limit cycle: min over lags of MSD / (2 var) must exceed this
    # 0-1 test: K counted as chaotic at or above this, needed for this fraction of the c values. The
    # reference's 0.2 / 0.2 passes a van der Pol limit cycle (resonant c values); 0.5 / 0.5 (a median
    # K of 0.5, Gottwald and Melbourne's usual reading) does not.
    zero_one_threshold: float = 0.5
    zero_one_fraction: float = 0.5
    zero_one_samples_per_period: float = 10.0  # 0-1 test: downsample to about this many per period
    min_lyapunov: float = 0.02  # largest Lyapunov exponent must exceed this (per dominant period)

    def __post_init__(self) -> None:
        if not 0 <= self.transient_fraction < 0.9:
            raise ValueError(f"transient_fraction must lie in [0, 0.9), got {self.transient_fraction}")
        if not 0 < self.max_pca_ratio <= 1:
            raise ValueError(f"max_pca_ratio must lie in (0, 1], got {self.max_pca_ratio}")
        if self.min_peaks < 1 or self.zero_one_samples_per_period <= 0:
            raise ValueError("min_peaks must be >= 1 and zero_one_samples_per_period > 0")


def _check(traj: np.ndarray) -> np.ndarray:
    x = np.asarray(traj, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 16:
        raise ValueError(f"a trajectory must be (T, D) with T >= 16, got shape {np.shape(traj)}")
    return x


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def is_bounded(traj: np.ndarray, max_value: float = 1e4, max_zscore: float = 15.0) -> bool:
    """Finite, ``|x| <= max_value`` everywhere, and no coordinate with a z-score above ``max_zscore``."""
    x = _check(traj)
    if not np.isfinite(x).all() or np.abs(x).max() > max_value:
        return False
    return bool(np.abs(_standardise(x)).max() <= max_zscore)


def is_not_linear(traj: np.ndarray, max_ratio: float = 0.99) -> bool:
    """The first principal component explains at most ``max_ratio`` of the variance."""
    x = _check(traj)
    if x.shape[1] == 1:
        return False
    ev = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    total = ev.sum()
    return bool(total > 0 and ev[-1] / total <= max_ratio)


def is_not_fixed_point(traj: np.ndarray, atol: float = 1e-3, tail: float = 0.1) -> bool:
    """Some step in the last ``tail`` fraction moves more than ``atol`` times the size of the set
    (RMS distance from its mean): the trajectory has not settled on a point."""
    x = _check(traj)
    steps = np.linalg.norm(np.diff(x, axis=0), axis=1)
    last = steps[-max(1, int(tail * len(steps))) :]
    size = np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())
    return bool(last.max() > atol * size)


def _adf_tstat(y: np.ndarray, lags: int) -> float:
    """t-statistic of the augmented Dickey-Fuller regression with a constant."""
    dy = np.diff(y)
    n = len(dy) - lags
    cols = [np.ones(n), y[lags:-1]] + [dy[lags - i : -i] for i in range(1, lags + 1)]
    design = np.stack(cols, axis=1)
    target = dy[lags:]
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ coef
    sigma2 = resid @ resid / (n - design.shape[1])
    cov = sigma2 * np.linalg.pinv(design.T @ design)
    return float(coef[1] / np.sqrt(max(cov[1, 1], 1e-300)))


def _kpss_stat(y: np.ndarray, lags: int) -> float:
    """KPSS level-stationarity statistic with a Bartlett long-run variance."""
    e = y - y.mean()
    n = len(e)
    s = np.cumsum(e)
    lrv = e @ e / n
    for k in range(1, lags + 1):
        lrv += 2 * (1 - k / (lags + 1)) * (e[k:] @ e[:-k]) / n
    return float(s @ s / (n * n * max(lrv, 1e-300)))


def is_stationary(traj: np.ndarray, samples_per_period: float | None = None) -> bool:
    """No coordinate is non-stationary by both ADF (p >= 0.05) and KPSS (p < 0.05).

    Decisions use 5% critical values: ADF with a constant -2.86 (MacKinnon, finite-sample corrected),
    KPSS level 0.463 (Kwiatkowski et al. 1992). With ``samples_per_period`` the series is first
    thinned to about 10 samples per period, so the autoregressions see the dynamics, not the sampling.
    """
    x = _check(traj)
    if samples_per_period is not None:
        x = x[:: max(1, int(samples_per_period / 10))]
    n = x.shape[0]
    lags = int(np.ceil(12 * (n / 100) ** 0.25))
    lags = min(lags, n // 4)
    adf_crit = -2.8621 - 2.738 / n - 8.36 / n**2
    for y in x.T:
        if np.ptp(y) == 0:
            continue  # a constant coordinate is (trivially) stationary; other tests catch it
        nonstationary_adf = _adf_tstat(y, lags) > adf_crit
        nonstationary_kpss = _kpss_stat(y, lags) > 0.463
        if nonstationary_adf and nonstationary_kpss:
            return False
    return True


def count_spectral_peaks(y: np.ndarray, prominence: float = 1e-5) -> int:
    """Peaks of the windowed power spectrum of ``y`` with relative height and prominence >= ``prominence``."""
    y = np.asarray(y, dtype=float)
    y = y - y.mean()
    power = np.abs(np.fft.rfft(y * blackmanharris(len(y)))) ** 2
    top = power.max()
    if top <= 0:
        return 0
    power = power / top
    peaks, _ = find_peaks(power, height=prominence, prominence=prominence)
    return len(peaks)


def is_broadband(traj: np.ndarray, min_peaks: int = 4, prominence: float = 1e-5) -> bool:
    """Some coordinate's power spectrum has at least ``min_peaks`` peaks."""
    x = _check(traj)
    return any(count_spectral_peaks(y, prominence) >= min_peaks for y in x.T)


def _msd_by_lag(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean squared displacement ``mean_t |x(t + L) - x(t)|^2`` for ``L = 0..max_lag-1`` (FFT)."""
    n = x.shape[0]
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(x, size, axis=0)
    auto = np.fft.irfft(np.abs(spec) ** 2, size, axis=0)[:max_lag].sum(axis=1)
    sq = (x**2).sum(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(sq)])
    lag = np.arange(max_lag)
    head = csum[n - lag]  # sum of |x_t|^2 for t < n - L
    tail = csum[n] - csum[lag]  # sum of |x_t|^2 for t >= L
    return (head + tail - 2 * auto) / (n - lag)


def return_distance(traj: np.ndarray) -> float:
    """Smallest normalised mean squared displacement ``MSD(L) / (2 var)`` over lags L past the first
    decorrelation; about 0 for a periodic orbit, of order 0.1 or more for chaos."""
    x = _standardise(_check(traj))
    msd = _msd_by_lag(x, x.shape[0] // 2) / (2 * x.shape[1])
    above = np.nonzero(msd > 0.5)[0]
    if above.size == 0:
        return 0.0  # never decorrelates: a fixed point, a line, or a very slow drift
    return float(msd[above[0] :].min())


def is_not_limit_cycle(traj: np.ndarray, tol: float = 1e-3) -> bool:
    """The trajectory never comes back onto itself: ``return_distance > tol``."""
    return return_distance(traj) > tol


def zero_one_k(y: np.ndarray, n_c: int = 100, rng: np.random.Generator | None = None) -> np.ndarray:
    """Gottwald-Melbourne 0-1 test: K for ``n_c`` values of c in [pi/5, 4pi/5] (modified MSD).

    ``c`` is drawn uniformly when ``rng`` is given, else evenly spaced. Returns ``(n_c,)`` K values.
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    if rng is None:
        c = np.linspace(np.pi / 5, 4 * np.pi / 5, n_c)
    else:
        c = rng.uniform(np.pi / 5, 4 * np.pi / 5, n_c)
    j = np.arange(1, n + 1)
    z = np.cumsum(y[None, :] * np.exp(1j * c[:, None] * j[None, :]), axis=1)  # (n_c, N): p + i q
    n_cut = n // 10
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.fft(z, size, axis=1)
    auto = np.fft.ifft(np.abs(spec) ** 2, axis=1)[:, 1 : n_cut + 1].real  # sum_j z_{j+L} conj(z_j)
    sq = np.abs(z) ** 2
    csum = np.concatenate([np.zeros((n_c, 1)), np.cumsum(sq, axis=1)], axis=1)
    lag = np.arange(1, n_cut + 1)
    msd = (csum[:, n - lag] + csum[:, n : n + 1] - csum[:, lag] - 2 * auto) / (n - lag)
    osc = y.mean() ** 2 * (1 - np.cos(np.outer(c, lag))) / (1 - np.cos(c))[:, None]
    d = msd - osc
    lc = lag - lag.mean()
    dc = d - d.mean(axis=1, keepdims=True)
    denom = np.sqrt((dc**2).sum(axis=1) * (lc**2).sum())
    return np.where(denom > 0, (dc @ lc) / np.where(denom > 0, denom, 1.0), 0.0)


def is_chaotic_01(
    traj: np.ndarray,
    samples_per_period: float | None = None,
    threshold: float = 0.5,
    fraction: float = 0.5,
    per_period: float = 10.0,
) -> bool:
    """0-1 test: in some coordinate, at least ``fraction`` of the c values give ``K >= threshold``.

    The series is thinned to about ``per_period`` samples per dominant period when
    ``samples_per_period`` is given (an oversampled series reads as regular).
    """
    x = _standardise(_check(traj))
    if samples_per_period is not None:
        x = x[:: max(1, int(round(samples_per_period / per_period)))]
    return any(np.mean(zero_one_k(y) >= threshold) >= fraction for y in x.T)


def lyapunov_rosenstein(
    traj: np.ndarray, dt: float, samples_per_period: float, horizon: float = 1.0, per_period: float = 20.0
) -> float:
    """Largest Lyapunov exponent (1 / time unit) by Rosenstein's method.

    The series is thinned to about ``per_period`` samples per period; nearest neighbours in the
    standardised state space exclude points within one period in time; the mean log distance of
    neighbour pairs is followed for ``horizon`` periods and its slope fitted.
    """
    x = _standardise(_check(traj))
    thin = max(1, int(round(samples_per_period / per_period)))
    x, dt, samples_per_period = x[::thin], dt * thin, samples_per_period / thin
    n = x.shape[0]
    window = max(1, int(round(samples_per_period)))
    follow = max(2, int(round(horizon * samples_per_period)))
    m = n - follow
    if m <= 2 * window + 1:
        raise ValueError("trajectory too short for a Rosenstein estimate; sample more periods")
    tree = cKDTree(x[:m])
    k = min(m, 2 * window + 2)
    dist, nbr = tree.query(x[:m], k=k)
    far = np.abs(nbr - np.arange(m)[:, None]) > window
    has = far.any(axis=1) & np.isfinite(dist).all(axis=1)
    first = np.argmax(far, axis=1)
    i = np.nonzero(has)[0]
    if i.size < 10:
        return 0.0
    j = nbr[i, first[i]]
    steps = np.arange(follow + 1)
    sep = np.linalg.norm(x[i[:, None] + steps] - x[j[:, None] + steps], axis=2)  # (pairs, follow+1)
    ok = (sep > 0).all(axis=1)
    if ok.sum() < 10:
        return 0.0
    curve = np.log(sep[ok]).mean(axis=0)
    slope = np.polyfit(steps * dt, curve, 1)[0]
    return float(slope)


def run_tests(
    traj: np.ndarray, dt: float, period: float, cfg: SelectionConfig | None = None
) -> tuple[str, dict[str, float]]:
    """Run the tests cheapest first; stop at the first failure.

    Args:
        traj: ``(T, D)`` trajectory sampled every ``dt``.
        dt: sample spacing (time units).
        period: dominant period (time units).

    Returns:
        ``(failed, values)``: the name of the first failed test ("" if all pass) and measured values
        (``lyapunov`` in 1 / time unit, ``return_distance``).
    """
    cfg = cfg or SelectionConfig()
    x = _check(traj)
    x = x[int(cfg.transient_fraction * len(x)) :]
    spp = period / dt
    values: dict[str, float] = {}
    if not is_bounded(x, cfg.max_value, cfg.max_zscore):
        return "bounded", values
    if not is_not_linear(x, cfg.max_pca_ratio):
        return "not_linear", values
    if not is_not_fixed_point(x, cfg.fixed_point_atol):
        return "not_fixed_point", values
    if not is_stationary(x, spp):
        return "stationary", values
    if not is_broadband(x, cfg.min_peaks, cfg.peak_prominence):
        return "broadband", values
    values["return_distance"] = return_distance(x)
    if values["return_distance"] <= cfg.limit_cycle_tol:
        return "not_limit_cycle", values
    if not is_chaotic_01(
        x, spp, cfg.zero_one_threshold, cfg.zero_one_fraction, cfg.zero_one_samples_per_period
    ):
        return "chaotic_01", values
    values["lyapunov"] = lyapunov_rosenstein(x, dt, spp)
    if values["lyapunov"] * period <= cfg.min_lyapunov:
        return "positive_lyapunov", values
    return "", values


def descriptor(traj: np.ndarray, dt: float, period: float, lyapunov: float) -> np.ndarray:
    """A dimension-agnostic summary for near-duplicate detection, each entry of order 1.

    Entries: Lyapunov exponent per period, dominant frequency per period (median over coordinates),
    normalised spectral entropy (mean), the two largest PCA variance ratios, mean absolute skewness / 3,
    mean excess kurtosis / 3.
    """
    x = _standardise(_check(traj))
    spec = np.abs(np.fft.rfft(x * blackmanharris(len(x))[:, None], axis=0)) ** 2  # (F, D)
    spec = spec[1:]
    p = spec / np.maximum(spec.sum(axis=0, keepdims=True), 1e-300)
    entropy = -(p * np.log(np.maximum(p, 1e-300))).sum(axis=0) / np.log(len(p))
    freqs = np.fft.rfftfreq(len(x), dt)[1:]
    dominant = freqs[np.argmax(spec, axis=0)] * period
    ev = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    ev = ev / ev.sum()
    ev = np.concatenate([ev, np.zeros(2)])
    skew = np.abs((x**3).mean(axis=0)).mean() / 3
    kurt = ((x**4).mean(axis=0) - 3).mean() / 3
    return np.array([lyapunov * period, np.median(dominant), entropy.mean(), ev[0], ev[1], skew, kurt])


def is_near_duplicate(desc: np.ndarray, accepted: np.ndarray | list[np.ndarray], tol: float) -> bool:
    """True when ``desc`` lies within Euclidean distance ``tol`` of any accepted descriptor ``(N, F)``."""
    accepted = np.asarray(accepted, dtype=float)
    if accepted.size == 0:
        return False
    return bool(np.min(np.linalg.norm(accepted.reshape(-1, len(desc)) - desc, axis=1)) < tol)
