"""Probabilistic benchmark: quantile forecasts of the model and of probabilistic baselines on the runner's windows.

Windows, noise and standardisation are those of :mod:`panda_fm.eval.runner`. Every method forecasts the
quantiles :data:`LEVELS` (0.05, 0.10, ..., 0.95) of each window and a spread (its expected root mean square
error at each lead, in context stds, from which the predicted predictability horizon is read). Scores at each
horizon ``h``, on the first ``h`` steps, standardised by the clean context: CRPS (from the quantiles,
:func:`panda_fm.eval.metrics.crps_quantiles`, and from 100 sample paths where a method draws them,
:func:`panda_fm.eval.metrics.crps_samples`), weighted quantile loss, coverage of the central 50% and 80%
intervals, sMAPE and MAE of the median (and of the point forecast where a method has one). Over the windows of a
noise level: means of the CRPS, loss and coverages, medians of the sMAPEs and MAEs, and the Spearman correlation between the
predicted horizon and the realised valid prediction time of the median.

Methods (:class:`QuantileMethod`): the checkpoint with in-context calibration (:class:`ModelQuantiles`), the
point baselines with residual-bootstrap intervals from their backtest on the context
(:class:`BootstrapQuantiles`), an analogue ensemble of the ``k`` nearest neighbours of the last state
(:class:`AnalogueEnsemble`) and the context's climatology (:class:`Climatology`).

Shape letters: B batch, T time, C channels, H horizon, O origins, M leads, Q levels, K members.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from panda_fm.eval import metrics
from panda_fm.eval.runner import (
    EvalConfig,
    _no_windows,
    _test_ids,
    noisy_batches,
    observed_truths,
    system_windows,
)
from panda_fm.forecasters import ContextForecaster, NVARForecaster
from panda_fm.scaling import context_moments
from panda_fm.systems.store import Dataset
from panda_fm.uncertainty import (
    CalibrationConfig,
    ForecastDistribution,
    context_lags,
    corrected,
    horizon_spread,
    lagged_spread,
    lead_spread,
)

logger = logging.getLogger(__name__)

#: The delay vectors of :func:`analogue_members`: entries, steps between them, and the context's last steps that
#: are not neighbours (they are the present itself).
ANALOGUE_DELAYS, ANALOGUE_LAG, ANALOGUE_EXCLUSION = 4, 5, 16

#: Quantile levels every method forecasts: 0.05 .. 0.95 in steps of 0.05 (the 50% and 80% intervals are
#: 0.25-0.75 and 0.10-0.90).
LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
INTERVALS: tuple[float, ...] = (0.5, 0.8)

#: A method's forecast of a batch: quantiles ``(B, H, C, Q)`` in data units, spread ``(B, H, C)`` in context
#: stds (what the predicted horizon is read off: the model's :func:`panda_fm.uncertainty.horizon_spread`), the
#: point forecast ``(B, H, C)`` and sample paths ``(B, K, H, C)`` in data units (either None where the
#: method has none).
Forecast = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]
SAMPLES = 100  # paths per window for the sample-based CRPS


class QuantileMethod(Protocol):
    """A probabilistic method: one or more named forecasts of a batch (several when they share work)."""

    names: list[str]

    def forecast(self, contexts: np.ndarray, length: int, levels: np.ndarray) -> dict[str, Forecast]:
        """Forecasts of ``contexts (B, T, C)`` for ``length`` steps, by name."""
        ...


def _moments(contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = context_moments(contexts)  # (B, 1, C)
    return mu, sd


def residual_quantiles(
    point: np.ndarray,
    errors: np.ndarray,
    levels: np.ndarray,
    config: CalibrationConfig,
    prefix: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Residual bootstrap from a backtest: the point forecast plus the backtest's errors, rescaled by lead.

    The errors ``(B, O, M, C)`` of in-context forecasts are divided by the spread at their lead
    (:func:`panda_fm.uncertainty.lead_spread`); the quantiles of these standardised residuals (pooled over
    origins, leads and channels of a series) times the spread at each lead of the forecast give its quantiles.

    Returns:
        Quantiles ``(B, H, C, Q)`` and spread ``(B, H, C)``, in the units of ``point`` and ``errors``.
    """
    B, H, C = point.shape
    M = errors.shape[2]
    spread = lead_spread(errors, max(H, M), config, prefix)  # (B, max(H, M), C)
    u = errors / spread[:, None, :M]  # (B, O, M, C)
    uq = np.nanquantile(u.reshape(B, -1), levels, axis=1).T  # (B, Q)
    return point[..., None] + spread[:, :H, :, None] * uq[:, None, None, :], spread[:, :H]


class ModelQuantiles:
    """A checkpoint's probabilistic forecasts: its in-context calibrated mixture (the pipeline's
    :meth:`~panda_fm.PandaPipeline.predict_quantiles`) and variants of it; variants with the same in-context
    origins share their errors (others are measured once per set of origins).

    The spread it reports (the predicted horizon's) is :func:`panda_fm.uncertainty.horizon_spread` as each
    variant's ``CalibrationConfig.horizon`` says; the time-lagged forecasts it needs are made once for the union
    of the variants' lags (each series' own, :func:`panda_fm.uncertainty.context_lags`).

    Args:
        pipe: a :class:`panda_fm.PandaPipeline`.
        name: the method's name in reports.
        variants: extra named forecasts, ``name -> ("mixture" | "residual", CalibrationConfig)`` (``"mixture"``:
            the calibrated distribution, built as ``CalibrationConfig.combine`` says); the plain
            ``name`` is always the pipeline's own default.
        batch_size: series per forward pass.
    """

    def __init__(
        self,
        pipe: Any,
        name: str,
        variants: dict[str, tuple[str, CalibrationConfig]] | None = None,
        batch_size: int = 32,
    ):
        self.pipe = pipe
        self.variants = {name: ("mixture", pipe.calibration), **(variants or {})}
        for kind, _ in self.variants.values():
            if kind not in ("mixture", "residual"):
                raise ValueError(f"variant kind must be 'mixture' or 'residual', got {kind!r}")
        self.names = list(self.variants)
        self.batch_size = batch_size

    def forecast(self, contexts: np.ndarray, length: int, levels: np.ndarray) -> dict[str, Forecast]:
        # the in-context errors of each set of origins the variants read, each measured once
        measured: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        for _, cfg in self.variants.values():
            key = _origins(cfg)
            if key not in measured:
                point, errors, prefix, x, loc, scale, _ = self.pipe.incontext_errors(
                    contexts.astype(np.float32), length, self.batch_size, cfg
                )
                measured[key] = errors, prefix
        # each variant's lags (B, K_v) side by side: every (series, lag) is forecast once
        lags = {n: context_lags(c, x) for n, (_, c) in self.variants.items() if c.needs_lagged}
        if lags:
            members = self.pipe.lagged_forecasts(
                contexts.astype(np.float32),
                length,
                np.concatenate(list(lags.values()), axis=1),
                loc,
                scale,
                self.batch_size,
            )  # (B, sum K_v, H, C)
            ends = np.cumsum([v.shape[1] for v in lags.values()])
            columns = {
                n: slice(end - v.shape[1], end) for (n, v), end in zip(lags.items(), ends, strict=True)
            }
        out: dict[str, Forecast] = {}
        for name, (kind, cfg) in self.variants.items():
            errors, prefix = measured[_origins(cfg)]
            lag = None
            if cfg.needs_lagged:
                lag = lagged_spread(members[:, columns[name]], point)
            if kind == "mixture":
                dist = ForecastDistribution.calibrated(point, errors, prefix, x, cfg, lag, with_horizon=True)
                q, spread = dist.quantiles(levels), dist.horizon_spread
                paths = dist.sample(SAMPLES, np.random.default_rng(0)) * scale[:, None] + loc[:, None]
            else:
                q, spread = residual_quantiles(point, errors, levels, cfg, prefix)
                spread = horizon_spread(
                    spread, None if lag is None else corrected(lag, x, cfg, errors, prefix), cfg
                )
                paths = None
            out[name] = (q * scale[..., None] + loc[..., None], spread, point * scale + loc, paths)
        return out


def _origins(cal: CalibrationConfig) -> tuple:
    """What a calibration's in-context errors depend on: its origins and their shortest prefixes."""
    return cal.offsets, cal.min_prefix, cal.short_offsets, cal.short_min_prefix


class BootstrapQuantiles:
    """A point baseline with residual-bootstrap intervals from its own backtest on the context.

    The baseline forecasts from the origins ``config.offsets`` inside the context as well (``short_offsets`` in a
    short context, as the model); its errors there, rescaled by lead, are added to its forecast
    (:func:`residual_quantiles`).

    Args:
        forecaster: a point baseline (:class:`panda_fm.forecasters.ContextForecaster`).
        name: the method's name (default: the baseline's, with ``+bootstrap``).
        config: origins, pooling and averaging (default: the plain bootstrap, origins weighted alike and their
            squared errors averaged; on the calibration split it beats the model's geometric averaging at 128 and
            256 steps for this baseline, docs/probabilistic.md).
    """

    def __init__(
        self, forecaster: ContextForecaster, name: str | None = None, config: CalibrationConfig | None = None
    ):
        self.forecaster = forecaster
        self.names = [name or f"{forecaster.name}+bootstrap"]
        # the classical bootstrap: every origin alike, the arithmetic mean of squared errors, no scale mixture,
        # no lagged ensemble (the inflation cancels in the residuals but for the floor: kept as measured)
        self.config = config or CalibrationConfig(
            average="rms", recency=0.0, min_spread=0.01, scale_spread=0.0, inflation=0.85, lagged_blend=0.0
        )

    def forecast(self, contexts: np.ndarray, length: int, levels: np.ndarray) -> dict[str, Forecast]:
        B, T, C = contexts.shape
        mu, sd = _moments(contexts)
        offsets, least = self.config.origins(T)  # the model's rule: nearer the end in a short context
        least = max(least, self.forecaster.min_context)
        usable = [o for o in offsets if T - o >= least]
        if not usable:
            raise ValueError(f"contexts of {T} steps are too short for the backtest origins {offsets}")
        errors = np.full((B, len(usable), max(usable), C), np.nan)
        for i, o in enumerate(usable):
            errors[:, i, :o] = (self.forecaster.predict(contexts[:, : T - o], o) - contexts[:, T - o :]) / sd
        point = np.asarray(self.forecaster.predict(contexts, length), dtype=np.float64)
        prefix = np.array([T - o for o in usable])
        q, spread = residual_quantiles((point - mu) / sd, errors, levels, self.config, prefix)
        return {self.names[0]: (q * sd[..., None] + mu[..., None], spread, point, None)}


def analogue_members(
    context: np.ndarray,
    length: int,
    k: int,
    delays: int = ANALOGUE_DELAYS,
    lag: int = ANALOGUE_LAG,
    exclusion: int = ANALOGUE_EXCLUSION,
) -> np.ndarray:
    """``(B, k, length, C)`` an analogue ensemble of complete ``(B, T, C)`` contexts: the continuations of the
    ``k`` earlier states nearest the last one.

    States are delay vectors (``delays`` entries ``lag`` steps apart, every channel). Member ``i`` follows the
    context from the ``i``-th nearest earlier state on; reaching the end of the context, it jumps back to that
    state's successor and goes on (a member never leaves the attractor). States within the last ``exclusion``
    steps are not neighbours."""
    B, T, C = context.shape
    # candidate states: their successors lie in the context
    ends = np.arange((delays - 1) * lag, T - exclusion)
    if len(ends) < k:
        raise ValueError(f"a context of {T} steps has fewer than k={k} candidate states; lower k")
    taps = -lag * np.arange(delays)  # (D,)
    candidates = context[:, ends[:, None] + taps]  # (B, S, D, C)
    now = context[:, (T - 1) + taps]  # (B, D, C)
    dist = ((candidates - now[:, None]) ** 2).sum(axis=(2, 3))  # (B, S)
    nearest = ends[np.argsort(dist, axis=1)[:, :k]]  # (B, k)
    cycle = T - 1 - nearest  # steps a member runs before it reaches the end
    t = nearest[..., None] + 1 + np.arange(length)[None, None] % cycle[..., None]  # (B, k, H)
    return np.take_along_axis(context[:, None], np.broadcast_to(t[..., None], (*t.shape, C)), axis=2)


class AnalogueEnsemble:
    """Analogue ensemble: the continuations of the ``k`` nearest neighbours of the context's last state.

    The members are :func:`analogue_members` of the standardised context; the quantiles are
    their empirical quantiles, the spread their standard deviation.

    Args:
        k: members.
        delays: entries per delay vector.
        lag: steps between entries.
        exclusion: the last steps of the context that are not neighbours (they are the present itself).
    """

    def __init__(
        self,
        k: int = 32,
        delays: int = ANALOGUE_DELAYS,
        lag: int = ANALOGUE_LAG,
        exclusion: int = ANALOGUE_EXCLUSION,
        name: str = "analogue-ens",
    ):
        if k < 2 or delays < 1 or lag < 1 or exclusion < 1:
            raise ValueError("need k >= 2 and delays, lag, exclusion >= 1")
        self.k, self.delays, self.lag, self.exclusion = k, delays, lag, exclusion
        self.names = [name]

    def members(self, z: np.ndarray, length: int) -> np.ndarray:
        """``(B, K, H, C)`` member paths of standardised contexts ``z (B, T, C)`` (complete)."""
        return analogue_members(z, length, self.k, self.delays, self.lag, self.exclusion)

    def forecast(self, contexts: np.ndarray, length: int, levels: np.ndarray) -> dict[str, Forecast]:
        mu, sd = _moments(contexts)
        z = (contexts - mu) / sd
        if np.isnan(z).any():
            raise ValueError("the analogue ensemble needs complete contexts")
        paths = self.members(z, length)  # (B, K, H, C)
        q = np.moveaxis(np.quantile(paths, levels, axis=1), 0, -1)  # (B, H, C, Q)
        spread = paths.std(axis=1)
        return {
            self.names[0]: (
                q * sd[..., None] + mu[..., None],
                spread,
                None,
                paths * sd[:, None] + mu[:, None],
            )
        }


class Climatology:
    """The context's own distribution of values, at every lead (the forecast of someone who knows nothing of
    the dynamics); its spread is that of a random draw, sqrt(2) context stds."""

    def __init__(self, name: str = "climatology"):
        self.names = [name]

    def forecast(self, contexts: np.ndarray, length: int, levels: np.ndarray) -> dict[str, Forecast]:
        B, T, C = contexts.shape
        q = np.moveaxis(np.nanquantile(contexts, levels, axis=1), 0, -1)  # (B, C, Q)
        q = np.broadcast_to(q[:, None], (B, length, C, len(levels)))
        return {self.names[0]: (q, np.full((B, length, C), np.sqrt(2.0)), None, None)}


def default_baselines() -> list[QuantileMethod]:
    """The probabilistic baselines: NVAR with residual bootstrap, an analogue ensemble, the climatology."""
    return [BootstrapQuantiles(NVARForecaster()), AnalogueEnsemble(), Climatology()]


def score_quantiles(
    context: np.ndarray,
    truth: np.ndarray,
    quantiles: np.ndarray,
    spread: np.ndarray,
    point: np.ndarray | None,
    config: EvalConfig,
    levels: np.ndarray,
    samples: np.ndarray | None = None,
) -> dict[str, float]:
    """Scores of one window's quantile forecast, standardised by the clean context.

    Args:
        context: ``(T, C)`` clean context.
        truth: ``(L, C)`` clean continuation.
        quantiles: ``(H, C, Q)`` forecast quantiles at ``levels`` (``H >= max(config.horizons)``).
        spread: ``(H, C)`` the forecast's spread in context stds.
        point: ``(H, C)`` point forecast or None.
        samples: ``(K, H, C)`` sample paths or None; with them the sample-based CRPS (``crps_samples@h``) too.
    """
    mu, sd = context_moments(context)  # (1, C)
    y = (truth - mu) / sd
    q = (quantiles - mu[..., None]) / sd[..., None]
    median = q[..., int(np.argmin(np.abs(levels - 0.5)))]
    out: dict[str, float] = {}
    for h in config.horizons:
        out[f"crps@{h}"] = metrics.crps_quantiles(y[:h], q[:h], levels)
        if samples is not None:
            z = (np.moveaxis(samples, 0, -1) - mu[..., None]) / sd[..., None]  # (H, C, K)
            out[f"crps_samples@{h}"] = metrics.crps_samples(y[:h], z[:h])
        out[f"wql@{h}"] = metrics.weighted_quantile_loss(y[:h], q[:h], levels)
        for width in INTERVALS:
            lo = int(np.argmin(np.abs(levels - (1 - width) / 2)))
            hi = int(np.argmin(np.abs(levels - (1 + width) / 2)))
            out[f"cov{round(width * 100)}@{h}"] = metrics.interval_coverage(y[:h], q[:h, :, lo], q[:h, :, hi])
        out[f"smape_median@{h}"] = metrics.smape(y[:h], median[:h])
        out[f"mae_median@{h}"] = metrics.mae(y[:h], median[:h])
        if point is not None:
            out[f"smape_point@{h}"] = metrics.smape(y[:h], ((point - mu) / sd)[:h])
            out[f"mae_point@{h}"] = metrics.mae(y[:h], ((point - mu) / sd)[:h])
    h_max = max(config.horizons)
    out["vpt"] = float(
        metrics.valid_prediction_time(y[:h_max], median[:h_max], config.vpt_threshold, scale=1.0)
    )
    rms = np.sqrt((spread[:h_max] ** 2).mean(axis=1))  # (H,)
    over = np.flatnonzero(rms > config.vpt_threshold)
    out["predicted_horizon"] = float(over[0] if over.size else h_max)
    nominal = np.array(
        [round(0.1 * i, 1) for i in range(1, 10)]
    )  # central intervals for the reliability plot
    for width in nominal:
        lo = int(np.argmin(np.abs(levels - (1 - width) / 2)))
        hi = int(np.argmin(np.abs(levels - (1 + width) / 2)))
        out[f"reliability_{width:.1f}"] = metrics.interval_coverage(
            y[:h_max], q[:h_max, :, lo], q[:h_max, :, hi]
        )
    return out


def evaluate_quantiles(
    methods: Sequence[QuantileMethod],
    dataset: Dataset,
    config: EvalConfig,
    levels: Sequence[float] = LEVELS,
    n_samples: int = 3,
) -> dict[str, Any]:
    """Run every probabilistic method on the runner's windows at every noise level and score them.

    Returns:
        A JSON-serialisable report: config, levels, per-window scores, and per noise level and method the means
        (CRPS, loss, coverages), medians (sMAPEs) and the horizon correlation; ``samples`` keeps a few windows'
        quantiles for the fan plot.
    """
    lv = np.asarray(levels, dtype=np.float64)
    names = [n for m in methods for n in m.names]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"methods must be non-empty with distinct names, got {names}")
    per_window: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    L = max(config.horizons)
    for index, sid in enumerate(tqdm(_test_ids(dataset, config), desc="probabilistic evaluation")):
        wins = system_windows(dataset, sid, config)
        for sigma, lo, batch, seen in noisy_batches(sid, wins, config):
            truths = observed_truths(sid, config.noise.index(sigma), lo, batch, L, config)
            for method in methods:
                for name, (q, spread, point, paths) in method.forecast(seen, L, lv).items():
                    for i, w in enumerate(batch):
                        scores = score_quantiles(
                            w.context,
                            truths[i],
                            q[i],
                            spread[i],
                            None if point is None else point[i],
                            config,
                            lv,
                            None if paths is None else paths[i],
                        )
                        per_window.append(
                            {
                                "system": sid,
                                "ic": w.ic,
                                "start": w.start,
                                "noise": sigma,
                                "method": name,
                                "metrics": scores,
                            }
                        )
                    if lo == 0 and index < n_samples:  # the first window of the first systems
                        samples.append(
                            {
                                "system": sid,
                                "noise": sigma,
                                "method": name,
                                "context": seen[0],
                                "truth": truths[0],
                                "quantiles": q[0],
                            }
                        )
    if not per_window:
        raise _no_windows(dataset, config)
    return {
        "config": asdict(config),
        "levels": lv.tolist(),
        "methods": names,
        "summary": summarise(per_window, names, config.noise),
        "per_window": per_window,
        "samples": samples,
    }


def system_bootstrap_mean_ci(
    values: np.ndarray, systems: Sequence[str], n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean of ``values`` (one per window), resampling whole systems
    with replacement: the windows of one system are not independent of each other."""
    v = np.asarray(values, dtype=np.float64)
    _, index = np.unique(np.asarray(systems), return_inverse=True)
    sums, counts = np.bincount(index, weights=v), np.bincount(index).astype(np.float64)
    picks = np.random.default_rng(seed).integers(0, len(sums), (n_resamples, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def system_bootstrap_ci(
    statistic: Callable[[np.ndarray], float], systems: Sequence[Any], n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of ``statistic(rows)`` (``rows`` indexes the windows), resampling
    whole systems (``systems``: each window's) with replacement."""
    names, index = np.unique(np.asarray(systems), return_inverse=True)
    windows = [np.flatnonzero(index == i) for i in range(len(names))]
    picks = np.random.default_rng(seed).integers(0, len(names), (n_resamples, len(names)))
    values = [statistic(np.concatenate([windows[i] for i in pick])) for pick in picks]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def system_bootstrap_spearman_ci(
    predicted: Sequence[float],
    realised: Sequence[float],
    systems: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of :func:`panda_fm.eval.metrics.horizon_correlation` of
    ``predicted`` and ``realised`` (one pair per window), resampling whole systems with replacement
    (:func:`system_bootstrap_ci`)."""
    a, b = np.asarray(predicted, dtype=np.float64), np.asarray(realised, dtype=np.float64)
    return system_bootstrap_ci(
        lambda rows: metrics.horizon_correlation(a[rows], b[rows]), systems, n_resamples, seed
    )


def summarise(per_window: list[dict[str, Any]], names: list[str], noise: Sequence[float]) -> dict[str, Any]:
    """Per noise level and method: means of the scores, medians of the sMAPEs, the horizon correlation, for
    the coverages (``cov50@h``, ``cov80@h``) and the correlation a 95% interval over systems where there are
    several (``cov50@h_ci95``, ``horizon_spearman_ci95``; :func:`system_bootstrap_mean_ci`,
    :func:`system_bootstrap_spearman_ci`), and for the CRPS its median too (``crps@h_median``)."""
    groups: dict[tuple[float, str], list[dict[str, float]]] = defaultdict(list)
    systems: dict[tuple[float, str], list[str]] = defaultdict(list)
    for r in per_window:
        groups[r["noise"], r["method"]].append(r["metrics"])
        systems[r["noise"], r["method"]].append(r["system"])
    out: dict[str, Any] = {}
    for sigma in noise:
        out[str(sigma)] = {}
        for name in names:
            rows = groups[sigma, name]
            if not rows:
                continue
            stats: dict[str, float] = {}
            several = len(set(systems[sigma, name])) > 1  # an interval over systems needs more than one
            for key in rows[0]:
                v = np.array([r[key] for r in rows], dtype=np.float64)
                stats[key] = float(
                    np.median(v) if key.startswith(("smape", "mae")) or key == "vpt" else np.mean(v)
                )
                if key.startswith("cov") and several:
                    stats[f"{key}_ci95"] = system_bootstrap_mean_ci(v, systems[sigma, name])
                # one window whose truth leaves the context's range can rule the mean CRPS
                if key.startswith("crps"):
                    stats[f"{key}_median"] = float(np.median(v))
            horizon, vpt = [r["predicted_horizon"] for r in rows], [r["vpt"] for r in rows]
            stats["horizon_spearman"] = (
                metrics.horizon_correlation(horizon, vpt) if len(rows) > 1 else float("nan")
            )
            if several:  # more than one system: more than one window
                stats["horizon_spearman_ci95"] = system_bootstrap_spearman_ci(
                    horizon, vpt, systems[sigma, name]
                )
            stats["windows"] = len(rows)
            out[str(sigma)][name] = stats
    return out


def _with_interval(stats: dict[str, Any], key: str) -> str:
    """A coverage or correlation cell: the value and, where the summary has it, its interval over systems."""
    ci = stats.get(f"{key}_ci95")
    return f"{stats[key]:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else "")


def markdown_table(report: dict[str, Any]) -> str:
    """Tables per noise level: CRPS, coverages (with their intervals over systems) and sMAPE of the median at each
    horizon, the sample-based CRPS at the longest (where a method draws paths) and the horizon correlation (with its
    interval), one row per method."""
    horizons = report["config"]["horizons"]
    lines = []
    for sigma, by_method in report["summary"].items():
        lines.append(f"\n### noise {sigma}\n")
        head = ["method"]
        for h in horizons:
            head += [f"CRPS@{h}", f"cov50@{h}", f"cov80@{h}", f"sMAPE med@{h}"]
        head += [f"CRPS samples@{horizons[-1]}", "Spearman(horizon, VPT)"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for name, s in by_method.items():
            row = [name]
            for h in horizons:
                point = f" (pt {s[f'smape_point@{h}']:.1f})" if f"smape_point@{h}" in s else ""
                row += [
                    f"{s[f'crps@{h}']:.3f}",
                    _with_interval(s, f"cov50@{h}"),
                    _with_interval(s, f"cov80@{h}"),
                    f"{s[f'smape_median@{h}']:.1f}{point}",
                ]
            key = f"crps_samples@{horizons[-1]}"
            row.append(f"{s[key]:.3f}" if key in s else "-")
            row.append(_with_interval(s, "horizon_spearman"))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
