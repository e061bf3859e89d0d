"""Probabilistic forecasts calibrated in context: error growth measured on the context itself.

A point forecaster is run from several origins inside the context (the context cut ``offset`` steps before its
end, for each of :attr:`CalibrationConfig.offsets`), and its errors against the known continuation give, at
each lead time and channel, the typical root mean square error the forecast makes from this context (a geometric
mean over the origins, later origins weighted more): :func:`lead_spread`. Chaos makes that error grow with lead
time until the forecast is no closer to the truth than a random state of the attractor. The predictive
distribution at lead ``h`` is then the mixture

    (1 - w(h)) G(point(h), s(h)) + w(h) Climatology*,

where ``s(h)`` is the measured spread (by default blended geometrically with the disagreement of a time-lagged
ensemble, below, and on a series of one or two channels kept at least half the measured spread:
:func:`distribution_spread`), ``G`` a Gaussian centred on the point forecast whose scale is itself
uncertain (a mixture over ``s exp(a z)``, :attr:`CalibrationConfig.scale_spread`), ``Climatology*`` is the
distribution of the context's own values in that channel, its values below the point forecast weighted to 1/2 in
all and those above to the other 1/2 (``combine="split"``: the point forecast stays the median, and the climatology
part stays on values the system takes; ``"symmetric"``, half of it reflected about the point, before),
and ``w(h) = min(1, s(h)^2 / 2)`` reaches 1 when the error is that of a random draw from the climatology (twice
its unit variance). :class:`ForecastDistribution` gives its quantiles, mean, sample paths and predictability
horizon.

The predictability horizon (:meth:`ForecastDistribution.horizon`) is read off a spread of its own
(:func:`horizon_spread`): by default (:attr:`CalibrationConfig.horizon` ``"lagged"``) the disagreement of a
time-lagged ensemble, the same forecaster run from the context cut 1, 2, 4 and 8 steps short
(:attr:`CalibrationConfig.lags`; more on a context whose autocorrelation time is long,
:attr:`CalibrationConfig.lag_timescale`), each forecast compared with the point forecast at the same future steps
(:func:`lagged_members`, :func:`lagged_spread`), and corrected for the context's noise and for the members'
longer leads (:func:`corrected`). The in-context errors come from origins 64-320 steps back,
where the forecast's sensitivity is that of another state; the lagged forecasts start next to the forecast's own
origin and measure its sensitivity there (chosen on a calibration split: docs/probabilistic.md).

Everything here works in context-standardised units (each series and channel by its context's mean and std)
and is numpy; the pipeline undoes the scaling.

Shape letters: B batch, T time, C channels, H horizon, O origins, Q quantile levels, K samples, G grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import comb, ndtr, ndtri

__all__ = [
    "CalibrationConfig",
    "ForecastDistribution",
    "lead_spread",
    "extrapolated",
    "autocorrelation_time",
    "context_lags",
    "varying_channels",
    "spread_floors",
    "learning_slope",
    "horizon_threshold",
    "lag_stretch",
    "lagged_members",
    "lagged_spread",
    "noise_level",
    "noise_corrected",
    "lead_offset",
    "lead_corrected",
    "corrected",
    "distribution_spread",
    "horizon_spread",
    "SATURATION_MS",
]

#: Mean squared error (in context variances) of a forecast drawn at random from the climatology: twice the
#: variance, where the predictive distribution has become the climatology itself.
SATURATION_MS = 2.0
CLIMATOLOGY_GRID = 256  # quantiles of a context's values that represent its climatology
NOISE_LEADS = 4  # the leads of the in-context errors that measure a context's noise level
LEARNING_LEADS = 16  # the leads of the in-context errors whose fall with the prefix is the learning curve
NOISE_ORDER = 6  # the order of the differences that measure a context's observation noise (noise_level)
#: The ways the Gaussian part and the climatology join (:attr:`CalibrationConfig.combine`).
COMBINES = ("mixture", "quantile", "shifted", "symmetric", "split")
#: What the predictability horizon is read off (:attr:`CalibrationConfig.horizon`).
HORIZONS = ("spread", "lagged", "geometric")


@dataclass(frozen=True)
class CalibrationConfig:
    """How the in-context calibration measures error growth (chosen on a calibration split: docs/probabilistic.md).

    Attributes:
        offsets: origins of the in-context forecasts, in steps before the end of the context; each forecasts
            ``offset`` steps, so an origin measures leads up to its offset.
        min_prefix: fewest steps (before an origin) an in-context forecast starts from; shorter prefixes are
            skipped.
        extrapolation: beyond the longest lead the origins measure, the in-context spread grows on at this
            fraction of its growth rate over the last measured octave of leads, up to that of a lost forecast
            (:func:`extrapolated`); 0: it is held. Acts only past the longest offset (320 steps on a long
            context, 64 on a short one). Chosen on 128-step contexts of the calibration founders, by a small
            margin (docs/probabilistic.md, thirteenth round).
        short_offsets: the origins of a context too short for any of :attr:`offsets` (fewer than
            ``min_prefix + min(offsets)`` observed steps, 192): nearer the end, so that they measure the error
            of the shortest leads only; beyond them the spread grows on (:attr:`extrapolation`), and the lagged
            ensemble's disagreement (:attr:`lagged_blend`) carries the growth.
        short_min_prefix: fewest steps before a short origin; a context needs at least
            ``short_min_prefix + min(short_offsets)`` observed steps (48) for quantiles.
        inflation: factor on the measured spread (the in-context origins see shorter contexts and few errors);
            with :attr:`lagged_blend` ``b`` it acts on the blend as its ``1 - b`` power.
        noise_inflation: the spread is also multiplied by ``1 + noise_inflation * nu``, ``nu`` the context's
            noise level: the root mean square in-context error at leads 1-4 (over origins and channels, in
            context stds; about 1e-4 on clean contexts, 0.1 with 5% observation noise); 0: none. On the
            calibration split inflation 0.6 with 5 kept every coverage target where one factor could not, but
            not on the held-out splits (docs/probabilistic.md, fourth round).
        lagged_blend: ``b``, the weight of the time-lagged ensemble's disagreement ``L`` (:func:`lagged_spread`)
            in the spread of the distribution: ``s^(1 - b) L^b``, a geometric blend with the inflated in-context
            spread ``s`` (0: the in-context spread alone). The in-context errors measure how large this
            context's forecast errors are; the lagged forecasts, from the forecast's own origin, measure which
            windows part early, and rank windows by their valid prediction time better (docs/probabilistic.md,
            eighth round).
        lagged_noise_scale: ``c``, on a noisy context the lagged disagreement is divided by
            ``sqrt(1 + nu^2 / (nu^2 + c^2))``, ``nu`` the context's observation noise in context stds
            (:func:`noise_level`): there the point forecast and each lagged member carry their own noise-driven
            error, and their difference counts it twice (a factor ``sqrt(2)``; none on a clean context). 0: no
            correction. For the quantiles, samples and the horizon alike (docs/probabilistic.md, ninth round).
        short_lagged_noise_scale: ``c`` for a context of fewer than :attr:`lagged_noise_min_context` observed
            steps; 0, no correction, was chosen on 128-step contexts (docs/probabilistic.md, thirteenth round).
        lagged_noise_min_context: observed steps from which a context's lagged disagreement is corrected with
            :attr:`lagged_noise_scale`; shorter contexts use :attr:`short_lagged_noise_scale`. 256 (192 before)
            was chosen on 192-step contexts (docs/probabilistic.md, fifteenth round).
        lagged_noise_stretch_power: ``q``, the noise correction fades on a context whose lags are stretched
            (:attr:`lag_timescale`): its share ``nu^2 / (nu^2 + c^2)`` divided by the stretch to this power (0:
            the same correction whatever the stretch, as before the twentieth round). 4 was chosen on training
            founders at 400 samples a period, where the full correction left the noisy 50% intervals at 0.33-0.34
            (docs/probabilistic.md, twentieth round).
        lagged_lead_power: ``p``, the lagged disagreement's lead offset undone (:func:`lead_corrected`): a member
            ``g`` steps short forecasts the point forecast's lead ``h`` at its own lead ``h + g``, so on a
            clean context, where the error grows from next to nothing, its disagreement at short leads is that of
            a longer lead. With the error growing as ``lead^p`` the factor ``(mean_g ((h + g) / h)^(2p))^(-1/2)``
            undoes it, on the part of the disagreement above :attr:`lagged_noise_floor` times the context's
            noise level (which does not grow with the lead). 0: no correction. 1, with inflation 0.9, flattens the
            clean coverage over lead at the same CRPS (docs/probabilistic.md, fourteenth round).
        lagged_noise_floor: ``k``, with :attr:`lagged_lead_power` or :attr:`lagged_lead_measured`: the part of
            the lagged disagreement up to ``k nu`` (``nu`` the context's noise level) is left as it is.
        lagged_lead_measured: undo the lagged disagreement's lead offset as :attr:`lagged_lead_power` does, but
            with the error growth this context's in-context errors measure (:func:`lead_offset`) instead of a
            power of the lead: where they are flat (noise-driven errors) nothing is undone. Not with a lead power.
        channel_pooling: weight of the mean over channels in each channel's mean squared error (0: each channel
            alone, 1: one spread for all).
        smoothing: the spread at lead ``h`` averages the errors at leads ``(1 - smoothing) h .. h``.
        min_spread: smallest spread, in context stds (a noise-free, perfectly forecast context still gets one).
        recency: errors from an origin count in proportion to its prefix length to this power (0: equally);
            origins late in the context see almost the whole context, as the forecast itself does.
        combine: how the Gaussian part and the climatology join: ``"mixture"`` (a mixture of the two
            distributions), ``"quantile"`` (each quantile the weighted average of the two parts' quantiles),
            ``"shifted"`` (the mixture moved so that its median is the point forecast), ``"symmetric"`` (a
            mixture with the climatology reflected about the point forecast, half each way: symmetric about the
            point, so its median is the point forecast at every lead) or ``"split"`` (a mixture with the
            climatology's values below the point forecast weighted to 1/2 in all and those above to the other
            1/2: the point is its median at every lead, and its climatology part stays on values the context
            takes).
        average: how the origins' mean squared errors at a lead are averaged (weighted): ``"rms"`` (their mean)
            or ``"log"`` (their geometric mean).
        scale_spread: the error of a forecast is uncertain in scale as well (a context's in-context errors span
            decades on clean data): the Gaussian part becomes a mixture over scales ``spread * exp(a z)``, ``z``
            standard normal, ``a`` this value (``"mixture"`` combine only; 0: one Gaussian).
        horizon: the spread the predictability horizon is read off (:func:`horizon_spread`): ``"spread"`` (the
            calibrated in-context spread, before any :attr:`lagged_blend`), ``"lagged"`` (the time-lagged
            ensemble's disagreement) or ``"geometric"`` (the geometric mean of the two, the in-context one before
            the constant :attr:`inflation`). The quantiles and samples do not depend on it. ``PandaPipeline.predictability_horizon`` and
            ``forecast_distribution`` (and the evaluation's ``ModelQuantiles``) forecast the lagged members it
            needs.
        lags: origins of the time-lagged ensemble, in steps before the end of the context (``"lagged"`` and
            ``"geometric"`` horizons, :attr:`lagged_blend` and :attr:`lagged_floor`): one extra forecast each.
        lag_timescale: ``tau_0``, in steps: on a context whose autocorrelation time ``tau``
            (:func:`autocorrelation_time`) is longer, the lags are stretched by ``tau / tau_0`` (at most
            :data:`MAX_LAG_STRETCH` times; :func:`context_lags`), so that on finely sampled data the members still
            start a comparable stretch of the dynamics before the forecast's origin. 0: the lags in steps
            whatever the sampling (the default before the nineteenth round). 24 is about the 95th percentile of
            ``tau`` on training founders' contexts at the training data's rate (about 100 samples a dominant
            period: 7-24 steps, 5th to 95th); at 400 samples a period they read 24-64 (docs/probabilistic.md,
            nineteenth round).
        lagged_floor: the spread is at least this many times the lagged ensemble's disagreement
            (:func:`lagged_spread`; 0: no floor). The in-context errors come from other states of the attractor;
            the lagged forecasts see the forecast's own origin, and part where it is sensitive, as when the point
            forecast runs off the attractor.
        spread_floor: ``kappa``, with :attr:`lagged_blend`: on a series of at most :attr:`spread_floor_channels`
            varying channels the blended spread is at least this many times the in-context spread (0: no floor).
            Lagged members cut from the same context can agree with each other while the forecast is poor (a
            scalar observation of a higher-dimensional state, whose hidden part every member infers alike from
            the same history), and the blend then follows their agreement below the errors the context measured.
            0.5 was chosen on training founders seen through their first coordinate and through random
            projections to 1-2 channels, where the intervals were too narrow (docs/probabilistic.md, twenty-first
            round).
        spread_floor_channels: the most varying channels (:func:`varying_channels`) a series may have for
            :attr:`spread_floor` to apply. 2: a chaotic flow has at least three state variables, so a series of
            one or two channels observes it partially; with more, a full state cannot be told from a partial one.
        spread_floor_stretch_power: ``r``: the floor is ``kappa`` times the series' lag stretch
            (:func:`lag_stretch`) to this power (:func:`spread_floors`; 0: ``kappa`` whatever the sampling, as
            before the twenty-fourth round). A finely sampled context spans fewer periods of the dynamics, and its
            in-context errors and lagged members see less of the attractor. 1 was chosen on training founders'
            first coordinate at 400 samples a period (docs/probabilistic.md, twenty-fourth round).
        spread_floor_wide: the floor on a series of more than :attr:`spread_floor_channels` varying channels whose
            in-context errors do not fall steeply with the origin's prefix (:attr:`spread_floor_wide_slope`), not
            stretched (0: none). Such a series may be a full state or a partial view of a larger one (sites of a
            field, some of a system's coordinates); on a full state the errors fall as the prefix grows, and the
            forecast from the whole context beats them, so the narrow intervals the lagged members give are right.
            0.2 was chosen on generated systems seen through every other coordinate, where the intervals were too
            narrow, against training founders at 400 samples a period, where a floor on every wider series
            widened right intervals (docs/probabilistic.md, thirty-first and thirty-second rounds).
        spread_floor_wide_slope: the gate of :attr:`spread_floor_wide`: it applies where the learning curve's
            slope (:func:`learning_slope`) is at least this (-1.0, chosen with it).
        observation_noise: the quantiles and samples are of the series as it will be *observed*: the state's
            distribution with the context's white observation noise added to its Gaussian part
            (:func:`observation_noise`; each channel its own, independent from step to step in the samples).
            False (the default): of the state itself, the noise-free continuation, which the acceptance figures
            of docs/probabilistic.md score. On a clean context the two agree. Against observed continuations
            of the calibration split's noisy contexts, both kept every coverage band and the same CRPS, the
            state's nearer nominal on the founders, the observation's on generated systems; the state's stay the
            default (docs/probabilistic.md, twenty-seventh round). Their in-context errors are measured against
            the noisy context, so they already hold much of the noise.
    """

    offsets: tuple[int, ...] = (320, 256, 192, 128, 64)
    min_prefix: int = 128
    extrapolation: float = 1.0
    short_offsets: tuple[int, ...] = (64, 32, 16)
    short_min_prefix: int = 32
    inflation: float = 0.9
    noise_inflation: float = 0.0
    lagged_blend: float = 0.75
    lagged_noise_scale: float = 0.005
    short_lagged_noise_scale: float = 0.0
    lagged_noise_min_context: int = 256
    lagged_noise_stretch_power: float = 4.0
    lagged_lead_power: float = 1.0
    lagged_noise_floor: float = 2.0
    lagged_lead_measured: bool = False
    channel_pooling: float = 0.5
    smoothing: float = 0.25
    min_spread: float = 1e-5
    recency: float = 8.0
    combine: str = "split"
    average: str = "log"
    scale_spread: float = 1.25
    horizon: str = "lagged"
    lags: tuple[int, ...] = (1, 2, 4, 8)
    lag_timescale: float = 24.0
    lagged_floor: float = 0.0
    spread_floor: float = 0.5
    spread_floor_channels: int = 2
    spread_floor_stretch_power: float = 1.0
    spread_floor_wide: float = 0.2
    spread_floor_wide_slope: float = -1.0
    observation_noise: bool = False

    @property
    def min_context(self) -> int:
        """Observed steps a context needs for in-context errors from :attr:`offsets`; shorter ones use
        :attr:`short_offsets`."""
        return self.min_prefix + min(self.offsets)

    @property
    def min_short_context(self) -> int:
        """Fewest observed steps of a context with quantiles (from :attr:`short_offsets`)."""
        return self.short_min_prefix + min(self.short_offsets)

    def origins(self, steps: int) -> tuple[tuple[int, ...], int]:
        """The in-context origins of a context of ``steps`` observed steps, and the fewest steps before each:
        :attr:`offsets` and :attr:`min_prefix` from :attr:`min_context` steps on, else :attr:`short_offsets` and
        :attr:`short_min_prefix`."""
        if steps >= self.min_context:
            return self.offsets, self.min_prefix
        return self.short_offsets, self.short_min_prefix

    @property
    def needs_lagged(self) -> bool:
        """Whether the distribution or its horizon reads the time-lagged ensemble (:func:`lagged_members`)."""
        return self.horizon != "spread" or self.lagged_in_distribution

    @property
    def lagged_in_distribution(self) -> bool:
        """Whether the quantiles and samples (not only the horizon) read the time-lagged ensemble."""
        return self.lagged_blend > 0 or self.lagged_floor > 0

    def __post_init__(self) -> None:
        if not self.offsets or min(self.offsets) < 1:
            raise ValueError(f"offsets must be positive step counts, got {self.offsets}")
        if not self.short_offsets or min(self.short_offsets) < 1:
            raise ValueError(f"short_offsets must be positive step counts, got {self.short_offsets}")
        if min(self.min_prefix, self.short_min_prefix) < 16:
            raise ValueError(
                f"min_prefix and short_min_prefix must be at least one patch (16 steps), got {self.min_prefix} "
                f"and {self.short_min_prefix}"
            )
        if self.inflation <= 0 or self.min_spread <= 0:
            raise ValueError("inflation and min_spread must be positive")
        if self.extrapolation < 0:
            raise ValueError(f"extrapolation must be >= 0, got {self.extrapolation}")
        if self.noise_inflation < 0:
            raise ValueError(f"noise_inflation must be >= 0, got {self.noise_inflation}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")
        if self.scale_spread < 0 or (self.scale_spread > 0 and self.combine == "quantile"):
            raise ValueError("scale_spread must be >= 0, and 0 when combine is 'quantile'")
        if self.average not in ("rms", "log"):
            raise ValueError(f"average must be 'rms' or 'log', got {self.average!r}")
        if self.recency < 0:
            raise ValueError(f"recency must be >= 0, got {self.recency}")
        if not 0 <= self.channel_pooling <= 1 or not 0 <= self.smoothing < 1:
            raise ValueError("channel_pooling must be in [0, 1] and smoothing in [0, 1)")
        if self.horizon not in HORIZONS:
            raise ValueError(f"horizon must be one of {HORIZONS}, got {self.horizon!r}")
        if self.lagged_floor < 0:
            raise ValueError(f"lagged_floor must be >= 0, got {self.lagged_floor}")
        if (
            min(self.spread_floor, self.spread_floor_wide, self.spread_floor_stretch_power) < 0
            or self.spread_floor_channels < 1
        ):
            raise ValueError(
                f"spread_floor, spread_floor_wide and spread_floor_stretch_power must be >= 0 and "
                f"spread_floor_channels >= 1, got {self.spread_floor}, {self.spread_floor_wide}, "
                f"{self.spread_floor_stretch_power} and {self.spread_floor_channels}"
            )
        if self.lagged_noise_scale < 0 or self.short_lagged_noise_scale < 0:
            raise ValueError(
                f"lagged_noise_scale and short_lagged_noise_scale must be >= 0, got {self.lagged_noise_scale} and "
                f"{self.short_lagged_noise_scale}"
            )
        if self.lagged_noise_stretch_power < 0:
            raise ValueError(
                f"lagged_noise_stretch_power must be >= 0, got {self.lagged_noise_stretch_power}"
            )
        if self.lagged_noise_min_context < 1:
            raise ValueError(f"lagged_noise_min_context must be >= 1, got {self.lagged_noise_min_context}")
        if self.lagged_lead_power < 0 or self.lagged_noise_floor < 0:
            raise ValueError(
                f"lagged_lead_power and lagged_noise_floor must be >= 0, got {self.lagged_lead_power} and "
                f"{self.lagged_noise_floor}"
            )
        if self.lagged_lead_measured and self.lagged_lead_power:
            raise ValueError(
                "lagged_lead_measured and lagged_lead_power both undo the lagged ensemble's lead offset: set one"
            )
        if not 0 <= self.lagged_blend <= 1:
            raise ValueError(f"lagged_blend must be in [0, 1], got {self.lagged_blend}")
        if self.lag_timescale < 0:
            raise ValueError(f"lag_timescale must be >= 0 (0: lags in steps), got {self.lag_timescale}")
        if self.needs_lagged and (not self.lags or min(self.lags) < 1):
            raise ValueError(
                f"lags must be positive step counts for a {self.horizon!r} horizon or a lagged blend or floor, "
                f"got {self.lags}"
            )


def lead_spread(
    errors: np.ndarray, horizon: int, config: CalibrationConfig, prefix: np.ndarray | None = None
) -> np.ndarray:
    """The spread (root mean square error) of a forecast at each lead, from in-context errors.

    Args:
        errors: ``(B, O, M, C)`` errors of the in-context forecasts in context stds at leads ``1..M``; NaN
            where an origin does not reach a lead or the truth is missing.
        horizon: ``H``, the leads wanted.
        config: pooling, smoothing, inflation (and noise inflation), floor and recency.
        prefix: ``(O,)`` steps of context before each origin, for ``config.recency`` (None: equal weights).

    Returns:
        ``(B, H, C)`` spread, non-decreasing in lead; leads beyond the measured ones keep the last measured
        spread, or with :attr:`CalibrationConfig.extrapolation` grow on (:func:`extrapolated`). A series
        without any measured error raises.
    """
    B, n_origins, M, C = errors.shape
    weight = np.ones(n_origins)
    if prefix is not None and config.recency > 0:
        weight = (np.asarray(prefix, dtype=np.float64) / max(prefix)) ** config.recency  # (O,)
    # each origin's mean squared error over the leads lo..h, by cumulative sums along the lead: (B, O, M, C)
    cum_s = np.cumsum(
        np.concatenate([np.zeros((B, n_origins, 1, C)), np.nan_to_num(errors**2)], axis=2), axis=2
    )
    cum_n = np.cumsum(np.concatenate([np.zeros((B, n_origins, 1, C)), ~np.isnan(errors)], axis=2), axis=2)
    h = np.arange(1, M + 1)
    lo = np.maximum(np.floor((1 - config.smoothing) * h).astype(int), 1)  # first lead of each window
    n_win = cum_n[:, :, h] - cum_n[:, :, lo - 1]
    ms_o = np.divide(cum_s[:, :, h] - cum_s[:, :, lo - 1], n_win, out=np.zeros_like(n_win), where=n_win > 0)
    w = np.where(n_win > 0, weight[None, :, None, None], 0.0)  # (B, O, M, C)
    total = w.sum(axis=1)  # (B, M, C)
    if config.average == "log":  # a geometric mean: errors that span decades are not ruled by the largest
        floor = (config.min_spread * 1e-2) ** 2
        log_ms = np.divide(
            (w * np.log(np.maximum(ms_o, floor))).sum(axis=1),
            total,
            where=total > 0,
            out=np.full(total.shape, np.nan),
        )
        ms = np.exp(log_ms)
    else:
        ms = np.divide((w * ms_o).sum(axis=1), total, where=total > 0, out=np.full(total.shape, np.nan))
    if np.isnan(ms).all(axis=(1, 2)).any():
        raise ValueError("no in-context error was measured for a series: its context is too short")
    # past a series' own longest measured lead its windows would average ever fewer of the last leads, and how many
    # such leads there are depends on the other series of the batch (M): hold the value at that lead instead
    measured = (~np.isnan(errors)).any(axis=(1, 3))  # (B, M)
    last = M - np.argmax(measured[:, ::-1], axis=1)  # (B,) each series' longest measured lead
    ms = np.where(np.arange(M)[None, :, None] < last[:, None, None], ms, np.nan)
    ms = _ffill(ms)  # leads without errors keep the last measured value
    ms = np.nan_to_num(ms, nan=np.nanmin(np.where(np.isnan(ms), np.inf, ms)))  # leading gaps (rare)
    lam = config.channel_pooling
    if config.average == "log":
        log_ms = np.log(np.maximum(ms, 1e-300))
        pooled = np.exp((1 - lam) * log_ms + lam * log_ms.mean(axis=2, keepdims=True))
    else:
        pooled = (1 - lam) * ms + lam * ms.mean(axis=2, keepdims=True)
    spread = np.sqrt(pooled) * config.inflation
    if config.noise_inflation:
        early = errors[:, :, :NOISE_LEADS]  # (B, O, 4, C)
        count = (~np.isnan(early)).sum(axis=(1, 2, 3))
        nu = np.sqrt(np.nansum(early**2, axis=(1, 2, 3)) / np.maximum(count, 1))  # (B,) noise level
        spread = spread * (1 + config.noise_inflation * nu)[:, None, None]
    spread = np.maximum.accumulate(np.maximum(spread, config.min_spread), axis=1)  # error never shrinks
    if horizon > M:
        spread = np.concatenate([spread, np.repeat(spread[:, -1:], horizon - M, axis=1)], axis=1)
    if config.extrapolation > 0:
        ceiling = config.inflation * np.sqrt(SATURATION_MS)
        spread = extrapolated(spread, last, config.extrapolation, ceiling)
    return spread[:, :horizon]


def extrapolated(spread: np.ndarray, last: np.ndarray, fraction: float, ceiling: float) -> np.ndarray:
    """``(B, H, C)`` ``spread`` grown on beyond each series' longest measured lead ``last`` ``(B,)``.

    Beyond ``last`` the spread grows exponentially at ``fraction`` of its growth rate over the leads
    ``last / 2 .. last`` (the rate of the measured error growth; none where it did not grow), up to ``ceiling``
    (the spread a lost forecast's in-context errors give: ``inflation * sqrt(2)``), and never below the held
    value. A short context's origins measure only its shortest leads; held, their spread stays that of the
    last measured lead, while a chaotic forecast's error grows on until it is lost.
    """
    out = spread.copy()
    H = spread.shape[1]
    for b, m in enumerate(np.asarray(last, dtype=int)):
        if m >= H or m < 2:
            continue
        half = m // 2
        rate = np.maximum(np.log(spread[b, m - 1] / spread[b, half - 1]) / (m - half), 0.0)  # (C,) per step
        grown = spread[b, m - 1] * np.exp(fraction * rate * np.arange(1, H - m + 1)[:, None])  # (H - m, C)
        out[b, m:] = np.maximum(np.minimum(grown, ceiling), spread[b, m:])
    return out


#: The most :attr:`CalibrationConfig.lag_timescale` stretches the lags (400 samples a period against the training
#: data's 100).
MAX_LAG_STRETCH = 4.0


def autocorrelation_time(context: np.ndarray, level: float = 0.5) -> np.ndarray:
    """``(B,)`` the steps a ``(B, T, C)`` context's autocorrelation takes to fall below ``level``: the median over
    its channels (NaN missing: each lag's autocovariance over the pairs of observed steps; a constant channel
    does not count, a series without any varying channel reads 0). ``T`` where it never falls that far."""
    T = context.shape[1]
    seen = np.isfinite(context)
    n = np.maximum(seen.sum(axis=1, keepdims=True), 1)
    x = np.where(seen, context, 0.0)
    x = np.where(seen, x - x.sum(axis=1, keepdims=True) / n, 0.0)
    fx = np.fft.rfft(x, 2 * T, axis=1)
    fm = np.fft.rfft(seen.astype(np.float64), 2 * T, axis=1)
    cov = np.fft.irfft(fx * np.conj(fx), 2 * T, axis=1)[:, :T]  # (B, T, C) sums over pairs at each lag
    pairs = np.rint(np.fft.irfft(fm * np.conj(fm), 2 * T, axis=1)[:, :T])
    acf = cov / np.maximum(pairs, 1)
    below = (acf < level * acf[:, :1]) & (pairs > 0)
    first = np.where(below.any(axis=1), below.argmax(axis=1), T).astype(np.float64)  # (B, C)
    # a channel never observed, or a series without a varying one, warns: NaN, then 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first[~(acf[:, 0] > 1e-12 * np.nanmean(context**2, axis=1))] = np.nan  # constant channels (round-off)
        return np.nan_to_num(np.nanmedian(first, axis=1), nan=0.0)


def varying_channels(context: np.ndarray) -> np.ndarray:
    """``(B,)`` how many channels of a ``(B, T, C)`` context (NaN missing) take more than one value."""
    seen = np.isfinite(context)
    low = np.where(seen, context, np.inf).min(axis=1)
    high = np.where(seen, context, -np.inf).max(axis=1)
    return (high > low).sum(axis=1)


def learning_slope(errors: np.ndarray, prefix: np.ndarray, leads: int = LEARNING_LEADS) -> np.ndarray:
    """``(B,)`` how the in-context errors ``(B, O, M, C)`` (NaN unmeasured) fall as the origins' prefixes ``(O,)``
    grow: the least-squares slope of the log root mean square error over leads ``1..leads`` (all channels)
    against the log prefix, over the origins that measured one; NaN with fewer than two. About -2 to -4 on full
    states of the training founders, -0.7 on every other coordinate of generated systems, +0.2 on sites of a
    spatiotemporal field (clean medians; docs/probabilistic.md, twenty-ninth and thirtieth rounds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an origin without any error: NaN
        ms = np.nanmean(errors[:, :, :leads] ** 2, axis=(2, 3))  # (B, O)
    y = 0.5 * np.log(np.maximum(ms, 1e-28))  # log rms
    ok = np.isfinite(ms)
    x = np.where(ok, np.log(np.asarray(prefix, dtype=np.float64))[None], 0.0)  # (B, O)
    n = ok.sum(axis=1)
    xm = np.divide(x.sum(axis=1), n, out=np.zeros(len(n)), where=n > 0)[:, None]
    ym = np.divide(np.where(ok, y, 0.0).sum(axis=1), n, out=np.zeros(len(n)), where=n > 0)[:, None]
    sxx = np.where(ok, (x - xm) ** 2, 0.0).sum(axis=1)
    sxy = np.where(ok, (x - xm) * (y - ym), 0.0).sum(axis=1)
    return np.divide(sxy, sxx, out=np.full(len(n), np.nan), where=(n >= 2) & (sxx > 0))


def spread_floors(
    config: CalibrationConfig,
    context: np.ndarray,
    errors: np.ndarray | None = None,
    prefix: np.ndarray | None = None,
) -> np.ndarray:
    """``(B,)`` each series' spread floor ``kappa`` (:attr:`CalibrationConfig.spread_floor`) for a ``(B, T, C)``
    context: on a series of at most :attr:`CalibrationConfig.spread_floor_channels` varying channels
    (:func:`varying_channels`), ``spread_floor`` times its lag stretch (:func:`lag_stretch`) to the power
    :attr:`CalibrationConfig.spread_floor_stretch_power`; on the others
    :attr:`CalibrationConfig.spread_floor_wide` where the learning curve of the in-context ``errors``
    ``(B, O, M, C)`` and ``prefix`` ``(O,)`` (:func:`learning_slope`; needed then) is at least
    :attr:`CalibrationConfig.spread_floor_wide_slope`, else 0."""
    kappa = config.spread_floor * lag_stretch(config, context) ** config.spread_floor_stretch_power
    narrow = varying_channels(context) <= config.spread_floor_channels
    wide = np.zeros(len(context))
    if config.spread_floor_wide and not narrow.all():
        if errors is None or prefix is None:
            raise ValueError(
                "a wide spread floor needs the in-context errors and their prefix lengths; pass them, or set "
                "spread_floor_wide=0.0"
            )
        gated = learning_slope(errors, prefix) >= config.spread_floor_wide_slope  # NaN: False
        wide = np.where(gated, config.spread_floor_wide, 0.0)
    return np.where(narrow, kappa, wide)


def context_lags(config: CalibrationConfig, context: np.ndarray) -> np.ndarray:
    """``(B, K)`` each series' lags: :attr:`CalibrationConfig.lags`, stretched by ``tau / lag_timescale`` where a
    context's autocorrelation time ``tau`` (:func:`autocorrelation_time`) is longer than
    :attr:`CalibrationConfig.lag_timescale` (at most :data:`MAX_LAG_STRETCH` times, and shorter than the
    context), rounded to steps."""
    T = context.shape[1]
    lags = np.asarray(config.lags, dtype=int)[None]
    stretch = lag_stretch(config, context)[:, None]  # (B, 1)
    return np.maximum(np.minimum(np.rint(stretch * lags), T - 1), lags).astype(int)


def lag_stretch(config: CalibrationConfig, context: np.ndarray) -> np.ndarray:
    """``(B,)`` the factor :func:`context_lags` stretches each series' lags by: ``tau / lag_timescale`` within
    ``[1, MAX_LAG_STRETCH]`` (1 without a :attr:`CalibrationConfig.lag_timescale`)."""
    if not config.lag_timescale:
        return np.ones(len(context))
    return np.clip(autocorrelation_time(context) / config.lag_timescale, 1.0, MAX_LAG_STRETCH)


def lagged_members(
    forecast: Callable[[Sequence[tuple[np.ndarray, int, int]]], Sequence[np.ndarray]],
    context: np.ndarray,
    length: int,
    lags: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """A time-lagged ensemble: forecasts of the same future steps from the context cut ``lag`` steps short.

    Args:
        forecast: the point forecaster of prefixes, all at once: ``[(rows, cut, steps), ...]`` -> for each, the
            ``(len(rows), steps, C)`` forecast from ``context[rows, :T - cut]``.
        context: ``(B, T, C)`` contexts (NaN missing, as ``forecast`` accepts).
        length: ``H``, the steps after the end of the context.
        lags: ``K`` lags, each at least 1 and shorter than the context, or ``(B, K)``, each series its own
            (:func:`context_lags`).

    Returns:
        ``(B, K, H, C)``: member ``k`` of series ``b`` forecasts ``lags[b, k] + H`` steps from
        ``context[b, :T - lags[b, k]]``; its last ``H`` steps are the same future steps as the point forecast's.
    """
    B, T, C = context.shape
    lags = np.broadcast_to(np.asarray(lags, dtype=int), (B, np.shape(lags)[-1]))
    if not lags.size or lags.min() < 1 or lags.max() >= T:
        raise ValueError(
            f"lags must be between 1 and the context length - 1 ({T - 1}), got lags from {lags.min()} to {lags.max()}"
        )
    jobs = [(np.flatnonzero((lags == g).any(axis=1)), int(g), int(g) + length) for g in np.unique(lags)]
    members = np.empty((B, lags.shape[1], length, C))
    for (rows, g, steps), f in zip(jobs, forecast(jobs), strict=True):
        f = np.asarray(f, dtype=np.float64)
        if f.shape != (len(rows), steps, C):
            raise ValueError(
                f"the forecaster returned {f.shape} for lag {g}, expected {(len(rows), steps, C)}"
            )
        for i, b in enumerate(rows):
            members[b, lags[b] == g] = f[i, g:]
    return members


def lagged_spread(members: np.ndarray, point: np.ndarray) -> np.ndarray:
    """The disagreement of a time-lagged ensemble with the point forecast at each lead.

    Args:
        members: ``(B, K, H, C)`` lagged forecasts of the point forecast's steps (:func:`lagged_members`).
        point: ``(B, H, C)`` the point forecast, in the same units.

    Returns:
        ``(B, H, C)`` the root mean square over members of ``member - point``, non-decreasing in lead (the
        members have parted from the forecast at least as far as at any earlier lead).
    """
    if members.ndim != 4 or members.shape[:1] + members.shape[2:] != point.shape:
        raise ValueError(f"members {members.shape} must be (B, K, H, C) for a point forecast {point.shape}")
    rms = np.sqrt(np.mean((members - point[:, None]) ** 2, axis=1))
    return np.maximum.accumulate(rms, axis=1)


def noise_level(context: np.ndarray) -> np.ndarray:
    """``(B, C)`` the std of white observation noise in ``(B, T, C)`` contexts (NaN missing), in their units.

    From sixth differences: white noise of std ``nu`` gives them the std ``sqrt(924) nu`` (924 = C(12, 6)), while
    a smooth signal nearly cancels (a sinusoid of ``P`` steps a period keeps ``(2 sin(pi / P))^6`` of its
    amplitude). Their median absolute value over time, scaled as for a Gaussian. A clean Lorenz context of 30
    steps a period reads 0.001-0.003 context stds (third differences: 0.016), one of 120 steps a period 1e-6. A
    channel without seven consecutive values gets 0.
    """
    d = np.abs(np.diff(context, n=NOISE_ORDER, axis=1))  # (B, T - 6, C), NaN wherever a step is missing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a channel without any difference: NaN, then 0
        med = np.nanmedian(d, axis=1)
    return np.nan_to_num(med / (ndtri(0.75) * np.sqrt(comb(2 * NOISE_ORDER, NOISE_ORDER))), nan=0.0)


def observation_noise(context: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """``(B, C)`` the std of the white noise each future observation carries, in context stds: the context's noise
    level (:func:`noise_level`), at most the root mean square of the in-context forecasts' errors at lead 1
    (``errors`` ``(B, O, M, C)``, NaN unmeasured). A noisy observation is the target of each of those errors, so
    they bound its noise; a deterministic but rough series (a map, a coarsely sampled flow) reads a large noise
    level from its sixth differences where its one-step forecasts may be nearly exact."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a channel without a lead-1 error: its noise level
        first = np.sqrt(np.nanmean(errors[:, :, 0] ** 2, axis=1))  # (B, C)
    return np.fmin(noise_level(context), first)


def noise_corrected(lagged: np.ndarray, context: np.ndarray, config: CalibrationConfig) -> np.ndarray:
    """``(B, H, C)`` the lagged ensemble's disagreement ``lagged`` (:func:`lagged_spread`) divided by
    ``sqrt(1 + nu^2 / (nu^2 + c^2))``, ``nu`` the noise level of the standardised ``context`` ``(B, T, C)``
    (:func:`noise_level`) and ``c`` :attr:`CalibrationConfig.lagged_noise_scale`, or
    :attr:`CalibrationConfig.short_lagged_noise_scale` for a context of fewer than
    :attr:`CalibrationConfig.lagged_noise_min_context` observed steps
    (0: that series' ``lagged`` as it is). With :attr:`CalibrationConfig.lagged_noise_stretch_power` ``q`` the
    share ``nu^2 / (nu^2 + c^2)`` is divided by the series' lag stretch (:func:`lag_stretch`) to the power ``q``."""
    observed = ~np.isnan(context).all(axis=2)  # (B, T)
    steps = context.shape[1] - np.argmax(observed, axis=1)  # (B,) from the first observed step
    c = np.where(
        steps >= config.lagged_noise_min_context, config.lagged_noise_scale, config.short_lagged_noise_scale
    )
    if not c.any():
        return lagged
    nu2 = noise_level(context)[:, None] ** 2  # (B, 1, C)
    c2 = (c**2)[:, None, None]  # (B, 1, 1); 0: that series as it is
    share = np.divide(nu2, nu2 + c2, out=np.zeros(np.broadcast_shapes(nu2.shape, c2.shape)), where=c2 > 0)
    if config.lagged_noise_stretch_power:
        share = share / lag_stretch(config, context)[:, None, None] ** config.lagged_noise_stretch_power
    return lagged / np.sqrt(1 + share)


def lead_offset(
    config: CalibrationConfig,
    horizon: int,
    errors: np.ndarray | None = None,
    prefix: np.ndarray | None = None,
    lags: np.ndarray | None = None,
) -> np.ndarray:
    """The mean square factor by which the lagged members' lead offset grows their disagreement at each lead.

    A member ``g`` steps short forecasts lead ``h`` of the point forecast at its own lead ``h + g``, so the root
    mean square over the members is about ``(mean_g e(h + g)^2 / e(h)^2)^(1/2)`` times the error ``e`` at ``h``:
    many times at the shortest leads of a clean context, where the error grows from next to nothing. ``e`` is
    ``lead^p`` (:attr:`CalibrationConfig.lagged_lead_power`), or with :attr:`CalibrationConfig.lagged_lead_measured`
    the context's own in-context spread (:func:`lead_spread` of ``errors`` ``(B, O, M, C)`` and ``prefix``), which
    is flat where noise drives the errors.

    ``lags``: the members' lags, ``(B, K)`` each series its own (:func:`context_lags`); default ``config.lags``.

    Returns:
        ``(B, H, C)`` (``(1, H, 1)`` for a power and one set of lags, ``(B, H, 1)`` for a power and per-series
        lags; all ones without a correction), at least 1.
    """
    h = np.arange(1, horizon + 1)
    lags = np.atleast_2d(config.lags if lags is None else lags)  # (1 or B, K)
    if config.lagged_lead_measured:
        if errors is None:
            raise ValueError("a measured lead offset needs the in-context errors (and their prefix lengths)")
        e = lead_spread(errors, horizon + int(lags.max()), config, prefix)  # (B, H + G, C), non-decreasing
        rows = np.arange(len(e))[:, None, None]
        ratio = e[rows, h[:, None] + lags[:, None] - 1] / e[:, h - 1, None]  # (B, H, K, C)
        return np.mean(ratio**2, axis=2)
    p = config.lagged_lead_power
    return np.mean(((h[:, None] + lags[:, None]) / h[:, None]) ** (2 * p), axis=2)[..., None]


def lead_corrected(
    lagged: np.ndarray, context: np.ndarray, config: CalibrationConfig, offset: np.ndarray
) -> np.ndarray:
    """``(B, H, C)`` the lagged ensemble's disagreement ``lagged`` with the members' lead offset undone: the part
    above ``k nu`` (``k`` :attr:`CalibrationConfig.lagged_noise_floor`, ``nu`` the standardised ``context``'s
    noise level, :func:`noise_level`) divided by ``offset`` (:func:`lead_offset`), in quadrature; a
    noise-driven disagreement, which does not grow with the lead, is left. No change without a lead power or a
    measured offset."""
    if not (config.lagged_lead_power or config.lagged_lead_measured):
        return lagged
    floor2 = np.minimum((config.lagged_noise_floor * noise_level(context))[:, None] ** 2, lagged**2)
    return np.sqrt((lagged**2 - floor2) / offset + floor2)


def corrected(
    lagged: np.ndarray,
    context: np.ndarray,
    config: CalibrationConfig,
    errors: np.ndarray | None = None,
    prefix: np.ndarray | None = None,
) -> np.ndarray:
    """``(B, H, C)`` the lagged disagreement as the distribution and the horizon read it: corrected for the
    context's noise (:func:`noise_corrected`), then for the members' lead offset (:func:`lead_corrected`; a
    measured one needs the in-context ``errors`` and ``prefix``)."""
    offset = lead_offset(config, lagged.shape[1], errors, prefix, context_lags(config, context))
    return lead_corrected(noise_corrected(lagged, context, config), context, config, offset)


def distribution_spread(
    spread: np.ndarray,
    lagged: np.ndarray | None,
    config: CalibrationConfig,
    floors: np.ndarray | None = None,
) -> np.ndarray:
    """``(B, H, C)`` the spread of the quantiles and samples: the calibrated spread (:func:`lead_spread`) blended
    with the lagged ensemble's disagreement ``lagged`` (:func:`lagged_spread`; may be None where ``config``
    reads none) as ``spread^(1 - b) lagged^b``, ``b`` :attr:`CalibrationConfig.lagged_blend`, then kept at
    least ``config.lagged_floor`` times ``lagged``; with a blend and a :attr:`CalibrationConfig.spread_floor`,
    also at least ``floors`` ``(B,)`` (:func:`spread_floors`; needed then) times ``spread``."""
    if not config.lagged_in_distribution:
        return spread
    if lagged is None or lagged.shape != spread.shape:
        raise ValueError(
            f"a lagged blend or floor needs the lagged ensemble's spread shaped as the spread {spread.shape}, "
            f"got {None if lagged is None else lagged.shape}"
        )
    b, blended = config.lagged_blend, spread
    if b > 0:  # lagged members that agree exactly (a constant series) still leave the smallest spread
        blended = spread ** (1 - b) * np.maximum(lagged, config.min_spread) ** b
    blended = np.maximum(blended, config.lagged_floor * lagged)
    if not (config.spread_floor or config.spread_floor_wide) or b == 0:  # without a blend: the in-context one
        return blended
    if floors is None or np.shape(floors) != spread.shape[:1]:
        raise ValueError(
            f"a spread floor needs each series' floor (spread_floors), shaped {spread.shape[:1]}, got "
            f"{None if floors is None else np.shape(floors)}"
        )
    return np.maximum(blended, np.asarray(floors, dtype=float)[:, None, None] * spread)


def horizon_spread(
    spread: np.ndarray,
    lagged: np.ndarray | None,
    config: CalibrationConfig,
) -> np.ndarray:
    """``(B, H, C)`` the spread the predictability horizon is read off, as :attr:`CalibrationConfig.horizon` says.

    Args:
        spread: ``(B, H, C)`` the calibrated spread (:func:`lead_spread` with ``config``, inflated).
        lagged: ``(B, H, C)`` the lagged ensemble's disagreement (:func:`lagged_spread`); needed unless
            ``config.horizon`` is ``"spread"``.
        config: the horizon's kind and the spread's inflation.
    """
    if config.horizon == "spread":
        return spread
    if lagged is None:
        raise ValueError(
            f"a {config.horizon!r} horizon needs the lagged ensemble's spread (lagged_members, lagged_spread); "
            "pass it, or use CalibrationConfig(horizon='spread')"
        )
    if lagged.shape != spread.shape:
        raise ValueError(f"lagged spread {lagged.shape} and spread {spread.shape} differ in shape")
    if config.horizon == "lagged":
        return lagged
    return np.sqrt(spread / config.inflation * lagged)


def _split_mean(values: np.ndarray, below: np.ndarray, point: np.ndarray) -> np.ndarray:
    """``(B, H, C)`` the mean of a part split at the point forecast: half the mean of its ``below`` smallest values
    (``values`` sorted along the last axis, broadcasting against ``(B, H, C)``), half that of the rest; the point
    where a side has no values."""
    n = values.shape[-1]
    sums = np.concatenate([np.zeros_like(values[..., :1]), np.cumsum(values, axis=-1)], axis=-1)
    low_sum = np.take_along_axis(sums, below[..., None], axis=-1)[..., 0]
    low = np.where(below > 0, low_sum / np.maximum(below, 1), point)
    high = np.where(below < n, (sums[..., -1] - low_sum) / np.maximum(n - below, 1), point)
    return 0.5 * (low + high)


def _smallest_reaching(levels: np.ndarray, n: int) -> np.ndarray:
    """Index of the smallest of ``n`` sorted values whose share (``(i + 1) / n``) reaches each of ``levels``."""
    return np.clip(np.ceil(levels * n - 1e-9).astype(int) - 1, 0, n - 1)


def _ffill(x: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along axis 1 of ``(B, M, C)``."""
    idx = np.where(np.isnan(x), 0, np.arange(x.shape[1])[None, :, None])
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.take_along_axis(x, idx, axis=1)


def horizon_threshold(threshold: float) -> float:
    """``threshold`` as a predictability horizon reads it: a positive number of context stds, else a ValueError."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)):
        raise ValueError(f"threshold must be a positive number of context stds (e.g. 0.5), got {threshold!r}")
    if not threshold > 0:  # NaN too
        raise ValueError(f"threshold must be positive, got {threshold}")
    return float(threshold)


@dataclass
class ForecastDistribution:
    """The predictive distribution of a batch of forecasts, in context-standardised units.

    Attributes:
        point: ``(B, H, C)`` the point forecast (the centre of the Gaussian part).
        spread: ``(B, H, C)`` the calibrated root mean square error at each lead, in context stds.
        context: ``(B, T, C)`` the standardised context (NaN missing): its values are the climatology.
        combine: ``"mixture"``, ``"quantile"``, ``"shifted"``, ``"symmetric"`` or ``"split"`` (see
            :class:`CalibrationConfig`).
        scale_spread: std of the log of the Gaussian part's scale (0: one Gaussian; see :class:`CalibrationConfig`).
        horizon_spread: ``(B, H, C)`` the spread the predictability horizon is read off (:func:`horizon_spread`);
            None: :attr:`spread`.
        noise: ``(B, C)`` the std of white observation noise added to the Gaussian part (each of its scales
            ``f s`` becomes ``sqrt((f s)^2 + noise^2)``; in the samples, independent at every lead), for the
            distribution of an observation rather than of the state (:attr:`CalibrationConfig.observation_noise`);
            None: none.
    """

    point: np.ndarray
    spread: np.ndarray
    context: np.ndarray
    combine: str = "mixture"
    scale_spread: float = 0.0
    horizon_spread: np.ndarray | None = None
    noise: np.ndarray | None = None
    _grid: np.ndarray = field(init=False, repr=False)
    _median_shift: np.ndarray | None = field(init=False, repr=False, default=None)
    _point_share: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        assert self.point.shape == self.spread.shape, (self.point.shape, self.spread.shape)
        assert self.context.shape[0] == self.point.shape[0] and self.context.shape[2] == self.point.shape[2]
        if self.horizon_spread is not None and self.horizon_spread.shape != self.spread.shape:
            raise ValueError(
                f"horizon_spread {self.horizon_spread.shape} must be shaped as spread {self.spread.shape}"
            )
        if self.noise is not None and np.shape(self.noise) != (self.point.shape[0], self.point.shape[2]):
            raise ValueError(
                f"noise must be shaped (B, C) = {self.point.shape[::2]}, got {np.shape(self.noise)}"
            )
        levels = (np.arange(CLIMATOLOGY_GRID) + 0.5) / CLIMATOLOGY_GRID
        self._grid = np.moveaxis(np.nanquantile(self.context, levels, axis=1), 0, 1)  # (B, G, C)

    @classmethod
    def calibrated(
        cls,
        point: np.ndarray,
        errors: np.ndarray,
        prefix: np.ndarray,
        context: np.ndarray,
        config: CalibrationConfig,
        lagged: np.ndarray | None = None,
        with_horizon: bool = False,
    ) -> ForecastDistribution:
        """The distribution ``config`` builds from the in-context errors: :func:`lead_spread` blended with the lagged
        ensemble's disagreement (corrected for the context's noise, :attr:`CalibrationConfig.lagged_noise_scale`)
        and under its floor (:func:`distribution_spread`), and with ``with_horizon`` the spread its horizon is
        read off (:func:`horizon_spread`).

        Args:
            point: ``(B, H, C)`` the point forecast, standardised as ``context``.
            errors: ``(B, O, M, C)`` and ``prefix`` ``(O,)``: as for :func:`lead_spread`.
            context: ``(B, T, C)`` the standardised context.
            config: the calibration.
            lagged: ``(B, H, C)`` the lagged ensemble's disagreement (:func:`lagged_spread`), or None where
                ``config`` needs none.
            with_horizon: also the horizon's spread.
        """
        spread = lead_spread(errors, point.shape[1], config, prefix)
        if lagged is not None:
            lagged = corrected(lagged, context, config, errors, prefix)
        horizon = horizon_spread(spread, lagged, config) if with_horizon else None
        blended = distribution_spread(spread, lagged, config, spread_floors(config, context, errors, prefix))
        return cls(
            point,
            blended,
            context,
            config.combine,
            config.scale_spread,
            horizon,
            observation_noise(context, errors) if config.observation_noise else None,
        )

    @property
    def weight(self) -> np.ndarray:
        """``(B, H, C)`` weight of the climatology in the mixture."""
        return np.minimum(self.spread**2 / SATURATION_MS, 1.0)

    @property
    def mean(self) -> np.ndarray:
        """``(B, H, C)`` the mean of the distribution."""
        if self.combine == "symmetric":  # every part symmetric about the point
            return self.point.copy()
        w = self.weight
        if self.combine == "split":
            G = self._grid.shape[1]
            grid = np.moveaxis(self._grid, 1, -1)[:, None]  # (B, 1, C, G)
            lost = _split_mean(grid, np.rint(self._below * G).astype(int), self.point)
        else:  # mixture, quantile and shifted
            lost = self._grid.mean(axis=1, keepdims=True)
        mean = (1 - w) * self.point + w * lost
        return mean + self._shift if self.combine == "shifted" else mean

    @property
    def _shift(self) -> np.ndarray:
        """``(B, H, C)`` for ``"shifted"``: the point forecast less the unshifted mixture's median."""
        if self._median_shift is None:
            self._median_shift = self.point - self._bisect(np.array([0.5]), self._mixture_cdf)[..., 0]
        return self._median_shift

    @property
    def _horizon_spread(self) -> np.ndarray:
        return self.spread if self.horizon_spread is None else self.horizon_spread

    def horizon(self, threshold: float = 0.5) -> np.ndarray:
        """``(B, C)`` predictability horizon: leads before the horizon's spread (:attr:`horizon_spread`, else
        :attr:`spread`) first exceeds ``threshold`` context stds.

        ``H`` where it never does (the horizon is at least the forecast's length).
        """
        over = self._horizon_spread > horizon_threshold(threshold)  # (B, H, C)
        return np.where(over.any(axis=1), over.argmax(axis=1), self.spread.shape[1])

    def horizon_all_channels(self, threshold: float = 0.5) -> np.ndarray:
        """``(B,)`` the horizon of the forecast as a whole: where the horizon's spread's root mean square over
        channels first exceeds ``threshold`` (the valid prediction time's criterion)."""
        rms = np.sqrt((self._horizon_spread**2).mean(axis=2))  # (B, H)
        over = rms > horizon_threshold(threshold)
        return np.where(over.any(axis=1), over.argmax(axis=1), rms.shape[1])

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """The CDF at ``x`` ``(B, H, C, ...)`` (trailing axes broadcast); not for ``"quantile"``."""
        if self.combine == "shifted":
            return self._mixture_cdf(x - self._shift[(...,) + (None,) * (x.ndim - 3)])
        return self._mixture_cdf(x)

    def _mixture_cdf(self, x: np.ndarray) -> np.ndarray:
        """CDF of ``(1 - w) G + w Lost``, the lost part the climatology (reflected about the point half the time
        for ``"symmetric"``)."""
        expand = (slice(None),) * 3 + (None,) * (x.ndim - 3)
        mu, w = self.point[expand], self.weight[expand]
        gauss = sum(p * ndtr((x - mu) / scale[expand]) for scale, p in self._gauss_scales())
        lost = self._lost_cdf(x)
        if self.combine == "symmetric":  # P(2 mu - X <= x) = 1 - P(X < 2 mu - x), ties aside
            lost = 0.5 * (lost + 1 - self._lost_cdf(2 * mu - x))
        return (1 - w) * gauss + w * lost

    def _lost_cdf(self, x: np.ndarray) -> np.ndarray:
        """CDF at ``x`` ``(B, H, C, ...)`` of the part that has lost track, before any reflection."""
        lost = self._climatology_cdf(x)
        if self.combine == "split":
            lost = self._split_cdf(x, lost, self._below)
        return lost

    @property
    def _below(self) -> np.ndarray:
        """``(B, H, C)`` for ``"split"``: the climatology's share at or below the point forecast."""
        if self._point_share is None:
            self._point_share = self._climatology_cdf(self.point)
        return self._point_share

    def _split_cdf(self, x: np.ndarray, f: np.ndarray, below: np.ndarray) -> np.ndarray:
        """CDF at ``x`` ``(B, H, C, ...)`` of a part split at the point forecast, from its own CDF ``f`` at ``x``
        and its share ``below`` ``(B, H, C)`` at or below the point: its values below the point weigh 1/2 in
        all, those above the other 1/2 (a side without values: its half at the point)."""
        expand = (slice(None),) * 3 + (None,) * (x.ndim - 3)
        mu, a = self.point[expand], below[expand]
        lower = np.where(a > 0, 0.5 * f / np.maximum(a, 1e-12), 0.0)
        upper = np.where(a < 1, 0.5 + 0.5 * (f - a) / np.maximum(1 - a, 1e-12), 1.0)
        return np.where(x < mu, lower, upper)

    def _split_values(
        self, u: np.ndarray, at: Callable[[np.ndarray], np.ndarray], below: np.ndarray
    ) -> np.ndarray:
        """``(B, K, H, C)`` a split part's quantiles at levels ``u`` ``(B, K, H, C)`` (see :meth:`_split_cdf`),
        from ``at``, the part's own quantiles: its at ``2 a u`` below the median, ``a + (2u - 1)(1 - a)``
        above, ``a`` = ``below`` ``(B, H, C)``."""
        mu, a = self.point[:, None], below[:, None]
        low = np.minimum(at(2 * a * u), mu)
        high = np.maximum(at(a + (2 * u - 1) * (1 - a)), mu)
        return np.where(u < 0.5, low, high)

    def _grid_at(self, levels: np.ndarray) -> np.ndarray:
        """The climatology grid's quantiles at ``levels`` ``(B, ..., C)``, each row's own: the inverse of
        :meth:`_climatology_cdf` (the smallest grid value whose share reaches the level)."""
        B, G, C = self._grid.shape
        i = _smallest_reaching(levels, G)
        return np.take_along_axis(self._grid, i.reshape(B, -1, C), axis=1).reshape(i.shape)

    def _scales(self) -> list[tuple[float, float]]:
        """Factors on the spread and their probabilities: the Gaussian part is a mixture over its scale, log-normal
        with std :attr:`scale_spread` (three-point Gauss-Hermite), or one Gaussian when that is 0."""
        if self.scale_spread == 0:
            return [(1.0, 1.0)]
        a = self.scale_spread * np.sqrt(3.0)
        return [(float(np.exp(-a)), 1 / 6), (1.0, 2 / 3), (float(np.exp(a)), 1 / 6)]

    def _gauss_scales(self) -> list[tuple[np.ndarray, float]]:
        """The Gaussian part's scales ``(B, H, C)`` and their probabilities: the spread times each of
        :meth:`_scales`' factors, with :attr:`noise` added in quadrature."""
        if self.noise is None:
            return [(self.spread * f, p) for f, p in self._scales()]
        nu2 = np.square(self.noise)[:, None]  # (B, 1, C)
        return [(np.sqrt((self.spread * f) ** 2 + nu2), p) for f, p in self._scales()]

    def _climatology_cdf(self, x: np.ndarray) -> np.ndarray:
        """Fraction of the climatology grid at or below ``x`` ``(B, H, C, ...)``: one sorted search for all rows."""
        B, G, C = self._grid.shape
        grid = np.moveaxis(self._grid, 1, 2).reshape(B * C, G)  # (B*C, G), sorted per row
        lo, hi = np.nanmin(grid), np.nanmax(grid)
        width = (hi - lo) + 1.0
        offsets = np.arange(B * C)[:, None] * 2 * width  # rows far apart: one flat sorted array
        flat = (grid - lo + offsets).ravel()
        xs = np.moveaxis(x, 2, 1)  # (B, C, H, ...)
        row = offsets.reshape(B, C, *([1] * (xs.ndim - 2)))
        q = np.clip(xs - lo, -width / 2, width * 1.5) + row  # clipped: never reaches a neighbouring row
        counts = (
            np.searchsorted(flat, q.ravel(), side="right").reshape(q.shape)
            - np.arange(B * C).reshape(B, C, *([1] * (xs.ndim - 2))) * G
        )
        return np.moveaxis(np.clip(counts, 0, G) / G, 1, 2)

    def quantiles(self, levels: np.ndarray, iterations: int = 48) -> np.ndarray:
        """``(B, H, C, Q)`` quantiles of the mixture at ``levels`` (bisection on its CDF), ordered in level."""
        levels = np.asarray(levels, dtype=np.float64)
        mu = self.point[..., None]
        if self.combine == "quantile":  # one Gaussian (scale_spread is 0)
            s, w = self._gauss_scales()[0][0][..., None], self.weight[..., None]
            return (1 - w) * (mu + s * ndtri(levels)) + w * self._climatology_quantiles(levels)[:, None]
        if self.combine == "symmetric":  # mirrored pairs: the median is the point forecast exactly
            both = self._bisect(np.concatenate([levels, 1 - levels]), self._mixture_cdf, iterations)
            q = mu + 0.5 * (both[..., : len(levels)] - both[..., len(levels) :])
        else:
            q = self._bisect(levels, self._mixture_cdf, iterations)
            if self.combine == "shifted":
                q = q + self._shift[..., None]
            elif self.combine == "split":  # the point is a median (the CDF may be flat at 1/2 about it)
                q = np.where(levels == 0.5, mu, q)
        return np.maximum.accumulate(q, axis=-1)  # exactly ordered despite round-off

    def _bisect(
        self, levels: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray], iterations: int = 48
    ) -> np.ndarray:
        """``(B, H, C, Q)`` where ``cdf`` reaches ``levels``, by bisection between the widest Gaussian's +-10
        spreads and the climatology's (and its reflection's) range."""
        mu = self.point[..., None]  # (B, H, C, 1)
        s = np.maximum.reduce([scale for scale, _ in self._gauss_scales()])[..., None]
        g_lo = self._grid[:, :1, :, None]  # (B, 1, C, 1)
        g_hi = self._grid[:, -1:, :, None]
        lo = np.minimum(np.minimum(mu - 10 * s, g_lo), 2 * mu - g_hi) * np.ones(levels.shape)  # (B, H, C, Q)
        hi = np.maximum(np.maximum(mu + 10 * s, g_hi), 2 * mu - g_lo) * np.ones(levels.shape)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = cdf(mid) < levels
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def _climatology_quantiles(self, levels: np.ndarray) -> np.ndarray:
        """``(B, C, Q)`` quantiles of the climatology grid (interpolated between its points)."""
        G = self._grid.shape[1]
        pos = np.clip(levels * G - 0.5, 0, G - 1)  # grid point i sits at level (i + 0.5) / G
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, G - 1)
        frac = pos - lo
        return self._grid[:, lo].transpose(0, 2, 1) * (1 - frac) + self._grid[:, hi].transpose(0, 2, 1) * frac

    def sample(self, num_samples: int, generator: np.random.Generator) -> np.ndarray:
        """``(B, K, H, C)`` sample paths.

        Each path follows the point forecast plus its own Gaussian error (one standard normal draw and one scale
        factor per path and channel, times the spread at each lead), until the lead at which it loses track (where the
        climatology's weight passes the path's own uniform draw); from there it follows a stretch of the
        context starting at a random step: a state of the attractor, wandering as the attractor does (for
        ``"symmetric"``, half the paths its mirror image about the point forecast; for ``"split"``, each value
        moved to the split climatology's quantile at its level in the climatology; for ``"shifted"``, every path
        moved by the shift of the median). With :attr:`noise`, a path that keeps track carries a new draw of the
        observation noise at every lead.
        """
        B, H, C = self.point.shape
        T = self.context.shape[1]
        K = num_samples
        if self.combine == "quantile":  # one uniform per path and channel: the path is that quantile's
            u = generator.uniform(size=(B, K, 1, C))
            w = self.weight[:, None]  # (B, 1, H, C)
            G = self._grid.shape[1]
            pos = np.clip(u[:, :, 0] * G - 0.5, 0, G - 1)  # (B, K, C)
            lo = np.floor(pos).astype(int)
            frac = pos - lo
            below = np.take_along_axis(self._grid, lo, axis=1)  # (B, K, C)
            above = np.take_along_axis(self._grid, np.minimum(lo + 1, G - 1), axis=1)
            clim = below * (1 - frac) + above * frac  # (B, K, C)
            scale = self._gauss_scales()[0][0]  # one Gaussian (scale_spread is 0)
            gauss = self.point[:, None] + scale[:, None] * ndtri(u)  # (B, K, H, C)
            return (1 - w) * gauss + w * clim[:, :, None]
        z = generator.standard_normal((B, K, 1, C))
        lost = generator.uniform(size=(B, K, 1, C)) < self.weight[:, None]  # (B, K, H, C)
        start = generator.integers(0, T, size=(B, K, 1, 1))
        steps = (start + np.arange(H)[None, None, :, None]) % T  # (B, K, H, 1)
        stretch = np.take_along_axis(self.context[:, None], np.broadcast_to(steps, (B, K, H, C)), axis=2)
        if np.isnan(stretch).any():  # missing context values: an independent draw from the climatology
            pick = generator.integers(0, CLIMATOLOGY_GRID, size=stretch.shape)
            grid = np.take_along_axis(self._grid[:, None], pick, axis=2)
            stretch = np.where(np.isnan(stretch), grid, stretch)
        factors, probs = zip(*self._scales(), strict=True)
        factor = generator.choice(np.array(factors), size=(B, K, 1, C), p=np.array(probs))
        tracked = self.point[:, None] + z * factor * self.spread[:, None]
        if self.noise is not None:  # an observation's own noise, new at every lead
            tracked = tracked + self.noise[:, None, None] * generator.standard_normal(tracked.shape)
        if self.combine == "split":
            # each stretch's values mapped, by their level in the climatology, onto the split climatology
            level = self._climatology_cdf(np.moveaxis(stretch, 1, -1))  # (B, H, C, K)
            jitter = generator.uniform(size=level.shape) / CLIMATOLOGY_GRID  # uniform within the grid's step
            u = np.clip(np.moveaxis(level - jitter, -1, 1), 0.0, 1.0)
            stretch = self._split_values(u, self._grid_at, self._below)
        if self.combine == "symmetric":  # half the paths mirror their stretch about the point forecast
            mirror = generator.uniform(size=(B, K, 1, C)) < 0.5
            stretch = np.where(mirror, 2 * self.point[:, None] - stretch, stretch)
        paths = np.where(lost, stretch, tracked)
        return paths + self._shift[:, None] if self.combine == "shifted" else paths
