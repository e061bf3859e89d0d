"""Zero-shot benchmark runner: the same windows of held-out systems for every method, scored alike.

Protocol (docs/method.md, "Evaluation"):

1. Windows. For each system of the test split, ``windows_per_system`` windows are drawn with a
   generator seeded by ``(seed, crc32(system id))``, so the draw does not depend on which other systems
   or methods are present. A window is a trajectory index ``k`` and a forecast origin ``t0`` with the
   context ``x[k, t0 - context_length : t0]`` before it and at least ``max(horizons)`` steps after it
   (``max(horizons, rollout)`` when the trajectory is long enough). Windows of one system are distinct.
2. Noise. For each noise level ``sigma``, the context a method sees is the clean context plus Gaussian
   noise of ``sigma`` times each channel's std over that context (seeded per system and level). Truth
   stays clean.
3. Forecast. Every method forecasts ``max(max(horizons), rollout)`` steps once per window; point metrics
   at horizon ``h`` score its first ``h`` steps, distributional metrics its first ``rollout`` steps.
4. Scoring. Truth and forecast are standardised by the clean context's per-channel mean and std. Point
   metrics: sMAPE, MAE, MSE, Spearman at each horizon; valid prediction time (normalised RMSE above
   ``vpt_threshold``, in context stds) over the longest horizon. Distributional metrics over the
   rollout: attractor KL and spectral Hellinger distance (see :mod:`panda_fm.eval.metrics`). A forecast with
   NaN or inf is counted in ``nonfinite`` and those entries are scored as the context mean.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from panda_fm.eval import metrics
from panda_fm.forecasters import Forecaster
from panda_fm.forecasters.base import ContextTooShortError
from panda_fm.scaling import context_moments
from panda_fm.systems.store import Dataset

logger = logging.getLogger(__name__)

POINT_METRICS = ("smape", "mae", "mse", "spearman")
ROLLOUT_METRICS = ("kl", "hellinger")


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one benchmark run.

    Attributes:
        horizons: forecast lengths scored by the point metrics, in steps.
        context_length: steps of context each method sees.
        windows_per_system: windows drawn per system (fewer when a system has fewer distinct ones).
        noise: observation-noise levels, each a fraction of the context's per-channel std; 0 is clean.
        rollout: steps of the long rollout scored by distributional metrics; 0 skips them.
        seed: seeds window positions and noise.
        split: the dataset split to evaluate.
        vpt_threshold: normalised RMSE (in context stds) that ends the valid prediction time.
        kl_bandwidth: kernel width of the attractor densities, in standardised units.
        batch_size: windows per ``predict`` call.
        max_systems: evaluate only the first this many systems of the split (None: all).
        n_samples: windows (the first of the first systems) whose forecasts are kept for plots.
        missing: fraction of the context entries the methods see as missing (NaN), each entry independently
            (after the noise; seeded by system, level and batch as the noise is); 0: complete contexts.
        gap: steps of one contiguous run missing in every channel of every context (0: none), its start drawn
            per window uniformly over the context (it may end the context), seeded as :attr:`missing` is.
        noisy_truth: score the continuation as it would be observed, with new observation noise of the
            window's level (:func:`observed_truths`), rather than the noise-free truth; read by the probabilistic
            evaluation (``panda_fm.eval.probabilistic``), for quantiles of observations.
    """

    horizons: tuple[int, ...] = (128, 256, 512)
    context_length: int = 512
    windows_per_system: int = 5
    noise: tuple[float, ...] = (0.0,)
    rollout: int = 2048
    seed: int = 0
    split: str = "test"
    vpt_threshold: float = 0.5
    kl_bandwidth: float = 0.3
    batch_size: int = 32
    max_systems: int | None = None
    n_samples: int = 6
    missing: float = 0.0
    gap: int = 0
    noisy_truth: bool = False

    def __post_init__(self) -> None:
        if not self.horizons or min(self.horizons) < 1:
            raise ValueError(f"horizons must be positive step counts, got {self.horizons}")
        if self.context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {self.context_length}")
        if self.windows_per_system < 1 or self.batch_size < 1:
            raise ValueError("windows_per_system and batch_size must be >= 1")
        if not self.noise or min(self.noise) < 0:
            raise ValueError(f"noise levels must be >= 0 (fractions of the channel std), got {self.noise}")
        if self.rollout < 0 or 0 < self.rollout < 16:
            raise ValueError(f"rollout must be 0 (off) or >= 16 steps, got {self.rollout}")
        if self.vpt_threshold <= 0 or self.kl_bandwidth <= 0:
            raise ValueError("vpt_threshold and kl_bandwidth must be positive")
        if self.max_systems is not None and self.max_systems < 1:
            raise ValueError(f"max_systems must be >= 1 or None, got {self.max_systems}")
        if not 0 <= self.missing < 1:
            raise ValueError(f"missing must be a fraction in [0, 1), got {self.missing}")
        if not 0 <= self.gap < self.context_length:
            raise ValueError(
                f"gap must be in [0, context_length={self.context_length}) steps, got {self.gap}"
            )
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {self.split!r}")

    @property
    def forecast_length(self) -> int:
        """Steps every method forecasts per window."""
        return max(max(self.horizons), self.rollout)


@dataclass
class Window:
    """One evaluation window.

    Attributes:
        system: system id.
        ic: trajectory index within the system.
        start: forecast origin ``t0`` (index of the first forecast step).
        context: ``(T, C)`` clean context.
        truth: ``(L, C)`` clean continuation, ``max(horizons) <= L <= forecast_length``.
    """

    system: str
    ic: int
    start: int
    context: np.ndarray
    truth: np.ndarray


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: the report and, for plots, a few kept forecasts."""

    report: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)


def _system_seed(seed: int, system: str, *extra: int) -> list[int]:
    return [seed, zlib.crc32(system.encode()), *extra]


def system_windows(dataset: Dataset, system: str, config: EvalConfig) -> list[Window]:
    """Draw the evaluation windows of one system, deterministically (empty if it is too short).

    Args:
        dataset: an opened dataset.
        system: a system id of ``dataset``.
        config: benchmark settings.

    Returns:
        Windows sorted by trajectory and start.
    """
    ctx = config.context_length
    traj = dataset.load(system)  # (K, T, D)
    n_ic, n_t, _ = traj.shape
    after = config.forecast_length if n_t >= ctx + config.forecast_length else max(config.horizons)
    n_starts = n_t - after - ctx + 1
    if n_starts < 1:
        return []
    rng = np.random.default_rng(_system_seed(config.seed, system))
    n = min(config.windows_per_system, n_ic * n_starts)
    windows = []
    for flat in sorted(rng.choice(n_ic * n_starts, size=n, replace=False)):
        k, t0 = divmod(int(flat), n_starts)
        t0 += ctx
        windows.append(
            Window(
                system=system,
                ic=k,
                start=t0,
                context=np.array(traj[k, t0 - ctx : t0], dtype=np.float64),
                truth=np.array(traj[k, t0 : t0 + after], dtype=np.float64),
            )
        )
    return windows


def _test_ids(dataset: Dataset, config: EvalConfig) -> list[str]:
    ids = dataset.ids(config.split)
    if not ids:
        raise ValueError(f"{dataset.root} has no {config.split!r} systems; pass a dataset with a test split")
    return ids[: config.max_systems]


def _no_windows(dataset: Dataset, config: EvalConfig) -> ValueError:
    return ValueError(
        f"no system in {dataset.root} is long enough for context {config.context_length} + horizon "
        f"{max(config.horizons)}; pass a shorter --context-length or --horizons"
    )


def draw_windows(dataset: Dataset, config: EvalConfig) -> list[Window]:
    """The windows of every system of ``config.split`` (see :func:`system_windows`), in manifest order.

    Systems too short for one window are skipped with a warning.
    """
    windows: list[Window] = []
    skipped = []
    for sid in _test_ids(dataset, config):
        mine = system_windows(dataset, sid, config)
        windows += mine
        if not mine:
            skipped.append(sid)
    if skipped:
        logger.warning(
            "skipped %d systems too short for one window: %s", len(skipped), ", ".join(skipped[:5])
        )
    if not windows:
        raise _no_windows(dataset, config)
    return windows


def _noisy(contexts: np.ndarray, sigma: float, seed: list[int]) -> np.ndarray:
    """Add observation noise of ``sigma`` times each window's per-channel std: ``(B, T, C)``."""
    if sigma == 0:
        return contexts
    rng = np.random.default_rng(seed)
    return contexts + sigma * contexts.std(axis=1, keepdims=True) * rng.standard_normal(contexts.shape)


def noisy_batches(
    system: str, windows: list[Window], config: EvalConfig
) -> Iterator[tuple[float, int, list[Window], np.ndarray]]:
    """The windows of one system in batches, at every noise level: ``(sigma, offset of the batch's first
    window, the batch, the contexts the methods see (B, T, C))``; the noise (and the missing entries, with
    :attr:`EvalConfig.missing` and :attr:`EvalConfig.gap`) is seeded by system, level and offset, so every
    method and every benchmark sees the same noisy contexts."""
    for level, sigma in enumerate(config.noise):
        for lo in range(0, len(windows), config.batch_size):
            batch = windows[lo : lo + config.batch_size]
            clean = np.stack([w.context for w in batch])  # (B, T, C)
            seen = _noisy(clean, sigma, _system_seed(config.seed, system, level + 1, lo))
            if config.missing:
                rng = np.random.default_rng(_system_seed(config.seed, system, level + 1, lo, 1))
                seen = np.where(rng.random(seen.shape) < config.missing, np.nan, seen)
            if config.gap:
                rng = np.random.default_rng(_system_seed(config.seed, system, level + 1, lo, 2))
                T = seen.shape[1]
                start = rng.integers(0, T - config.gap + 1, size=(len(batch), 1))
                steps = np.arange(T)[None]
                seen = np.where(((steps >= start) & (steps < start + config.gap))[..., None], np.nan, seen)
            yield sigma, lo, batch, seen


def observed_truths(
    system: str, level: int, lo: int, batch: list[Window], length: int, config: EvalConfig
) -> np.ndarray:
    """``(B, length, C)`` the first ``length`` steps of the batch's continuations as the probabilistic evaluation
    scores them: with :attr:`EvalConfig.noisy_truth`, as observed at the noise level ``config.noise[level]`` (new
    noise of that fraction of each window's per-channel context std, seeded by system, level and batch apart
    from the context's: the same for every method); else, and at level 0, the noise-free truth."""
    truth = np.stack([w.truth[:length] for w in batch])
    sigma = config.noise[level]
    if not config.noisy_truth or sigma == 0:
        return truth
    std = np.stack([w.context for w in batch]).std(axis=1, keepdims=True)  # (B, 1, C)
    rng = np.random.default_rng(_system_seed(config.seed, system, level + 1, lo, 3))
    return truth + sigma * std * rng.standard_normal(truth.shape)


def score_window(
    context: np.ndarray, truth: np.ndarray, forecast: np.ndarray, config: EvalConfig
) -> dict[str, float]:
    """All metrics of one window, in coordinates standardised by the clean context.

    Args:
        context: ``(T, C)`` clean context.
        truth: ``(L, C)`` clean continuation.
        forecast: ``(>= L, C)`` forecast, finite.
        config: horizons, rollout and metric settings.

    Returns:
        ``{"smape@128": ..., "vpt": ..., "kl": ..., ...}``.
    """
    y, f = standardise_by_context(context, truth, forecast)  # (L, C) each
    out: dict[str, float] = {}
    for h in config.horizons:
        for name in POINT_METRICS:
            out[f"{name}@{h}"] = getattr(metrics, name)(y[:h], f[:h])
    h_max = max(config.horizons)
    out["vpt"] = float(metrics.valid_prediction_time(y[:h_max], f[:h_max], config.vpt_threshold, scale=1.0))
    if config.rollout:
        n = min(config.rollout, y.shape[0])
        out["kl"] = metrics.attractor_kl(y[:n], f[:n], bandwidth=config.kl_bandwidth)
        out["hellinger"] = metrics.spectral_hellinger(y[:n], f[:n])
    return out


def standardise_by_context(
    context: np.ndarray, truth: np.ndarray, forecast: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Truth ``(L, C)`` and the forecast's first L steps, standardised by the context's mean and std."""
    mu, sd = context_moments(context)  # (1, C)
    return (truth - mu) / sd, (forecast[: truth.shape[0]] - mu) / sd


def _predict(method: Forecaster, contexts: np.ndarray, length: int) -> tuple[np.ndarray, int, bool]:
    """Run one method on a batch; returns the forecast ``(B, H, C)``, its count of non-finite values and
    whether the method refused the context as too short (then the forecast is the context's mean)."""
    try:
        out = np.asarray(method.predict(contexts, length), dtype=np.float64)
    except ContextTooShortError:
        mean = contexts.mean(axis=1, keepdims=True)  # (B, 1, C)
        return np.repeat(mean, length, axis=1), 0, True
    if out.shape != (contexts.shape[0], length, contexts.shape[2]):
        raise ValueError(
            f"{method.name} returned shape {out.shape} for contexts {contexts.shape} and "
            f"{length} steps; predict must return (B, H, C)"
        )
    bad = ~np.isfinite(out)
    if bad.any():
        means = np.broadcast_to(contexts.mean(axis=1, keepdims=True), out.shape)
        out = np.where(bad, means, out)
    return out, int(bad.sum()), False


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    q25, q50, q75 = np.nanpercentile(v, [25, 50, 75]) if np.isfinite(v).any() else (np.nan,) * 3
    return {
        "median": float(q50),
        "q25": float(q25),
        "q75": float(q75),
        "mean": float(np.nanmean(v)),
        "n": len(v),
    }


def _aggregate(
    per_window: list[dict[str, Any]], systems: list[str], names: list[str], noise: tuple[float, ...]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Medians and IQRs over windows per noise level, method and metric; medians per system."""
    metric_names = list(per_window[0]["metrics"])
    groups: dict[tuple[float, str], dict[str, list[dict[str, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in per_window:
        groups[r["noise"], r["method"]][r["system"]].append(r["metrics"])
    summary: dict[str, Any] = {}
    per_system: list[dict[str, Any]] = []
    for sigma in noise:
        summary[str(sigma)] = {}
        for name in names:
            by_sys = groups[sigma, name]
            rows = [m for sid in systems for m in by_sys[sid]]
            summary[str(sigma)][name] = {k: _summary([m[k] for m in rows]) for k in metric_names}
            per_system += [
                {
                    "system": sid,
                    "noise": sigma,
                    "method": name,
                    "windows": len(by_sys[sid]),
                    "metrics": {k: float(np.nanmedian([m[k] for m in by_sys[sid]])) for k in metric_names},
                }
                for sid in systems
            ]
    return summary, per_system


def evaluate(methods: Sequence[Forecaster], dataset: Dataset, config: EvalConfig) -> EvalResult:
    """Run every method on the same windows at every noise level and score them.

    Args:
        methods: forecasters with distinct names.
        dataset: the test dataset.
        config: benchmark settings.

    Returns:
        The report (JSON-serialisable: config, dataset, per-window and per-system metrics, medians and
        IQRs per noise level, method and metric, wall times) and the samples kept for plots.
    """
    names = [m.name for m in methods]
    if not methods or len(set(names)) != len(names):
        raise ValueError(f"methods must be non-empty with distinct names, got {names}")
    ids = _test_ids(dataset, config)
    logger.info("evaluating %s on %d systems", ", ".join(names), len(ids))
    h_max = max(config.horizons)
    curve_at = np.unique(np.geomspace(1, h_max, 64).round().astype(int)) - 1  # steps of the sMAPE curve

    per_window: list[dict[str, Any]] = []
    wall = {(s, m): 0.0 for s in config.noise for m in names}
    nonfinite = {(s, m): 0 for s in config.noise for m in names}
    refused = {(s, m): 0 for s in config.noise for m in names}  # windows scored as the mean forecast
    curves: dict[tuple[float, str], list[np.ndarray]] = defaultdict(list)  # per-step sMAPE, (len(curve_at),)
    samples: list[dict[str, Any]] = []
    systems = []
    for sid in tqdm(ids, desc="evaluating systems"):
        wins = system_windows(dataset, sid, config)  # one system's windows in memory at a time
        if not wins:
            logger.warning("skipping %s: too short for one window", sid)
            continue
        systems.append(sid)
        for sigma, lo, batch, seen in noisy_batches(sid, wins, config):
            for method in methods:
                t = time.perf_counter()
                forecast, bad, too_short = _predict(method, seen, config.forecast_length)  # (B, L, C)
                wall[sigma, method.name] += time.perf_counter() - t
                nonfinite[sigma, method.name] += bad
                refused[sigma, method.name] += len(batch) if too_short else 0
                for i, w in enumerate(batch):
                    y, f = standardise_by_context(w.context, w.truth[:h_max], forecast[i])  # (H, C) each
                    curves[sigma, method.name].append(metrics.smape_curve(y, f)[curve_at].astype(np.float32))
                    per_window.append(
                        {
                            "system": sid,
                            "ic": w.ic,
                            "start": w.start,
                            "noise": sigma,
                            "method": method.name,
                            "metrics": score_window(w.context, w.truth, forecast[i], config),
                        }
                    )
                if lo == 0 and len(systems) <= config.n_samples:
                    samples.append(
                        {
                            "system": sid,
                            "noise": sigma,
                            "method": method.name,
                            "context": seen[0],
                            "truth": batch[0].truth,
                            "forecast": forecast[0],
                        }
                    )
    if not per_window:
        raise _no_windows(dataset, config)

    summary, per_system = _aggregate(per_window, systems, names, config.noise)
    report = {
        "config": asdict(config),
        "dataset": {
            "root": str(dataset.root),
            "manifest_sha256": dataset.manifest_hash,
            "systems": len(systems),
            "windows": len(per_window) // (len(names) * len(config.noise)),
        },
        "methods": names,
        "metrics": list(per_window[0]["metrics"]),
        "summary": summary,
        "wall_time_s": {str(s): {m: wall[s, m] for m in names} for s in config.noise},
        "smape_curve_steps": (curve_at + 1).tolist(),
        "smape_curve": {
            str(s): {m: np.median(curves[s, m], axis=0).round(3).tolist() for m in names}
            for s in config.noise
        },
        "nonfinite": {str(s): {m: nonfinite[s, m] for m in names} for s in config.noise},
        "refused": {str(s): {m: refused[s, m] for m in names} for s in config.noise},
        "per_system": per_system,
        "per_window": per_window,
    }
    return EvalResult(report=report, samples=samples)
