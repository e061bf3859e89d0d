"""The in-context experts: a frozen, versioned registry, their backtest, and the classical selector.

A model with ``PandaConfig(incontext="experts")`` runs the experts of its ``experts_version`` on every
context it reads, so their settings are part of the checkpoint's behaviour. They are spelled out here in
full, never taken from a forecaster's defaults: tuning a baseline cannot change a shipped model's forecasts.
A change to any expert is a new version (add an entry to :data:`EXPERT_VERSIONS`; configs name the version
they were trained with). A saved-output regression test (``tests/forecasters/test_experts.py``) pins
version 1. Version 4 adds ``analogue_auto`` (the analogue with its delay embedding chosen on the context) to
version 3's five; version 7 adds ``smap`` (an S-map on that embedding) to version 6's.

Shape letters: B batch, T time, C channels, E experts, H horizon, V backtest steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch

from panda_fm.forecasters.analogue import AnalogueForecaster, SMapForecaster
from panda_fm.forecasters.base import ContextForecaster, Forecaster
from panda_fm.forecasters.denoise import DenoisedForecaster
from panda_fm.forecasters.field import FieldNVARForecaster, WideNVARForecaster
from panda_fm.forecasters.nvar import NVARForecaster
from panda_fm.forecasters.tensor.channels import (  # the model's channel test
    channel_groups,
    keep_better_groups,
)
from panda_fm.forecasters.tensor.gaps import fill_gaps

__all__ = [
    "ADAPTIVE_BACKTEST",
    "CHANNEL_GROUPING",
    "CONTEXT_UNITS",
    "GAP_BACKTEST",
    "EXPERTS",
    "EXPERT_VERSIONS",
    "LATEST_EXPERTS_VERSION",
    "backtest_experts",
    "backtest_lengths",
    "SelectorForecaster",
]

_RIDGES = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def _nvar() -> NVARForecaster:
    """Cubic NVAR on 2 delays, penalty chosen by a 64-step held-out rollout."""
    return NVARForecaster(
        delays=2, stride=1, clip=True, ridges=_RIDGES, validation=64, degree=3, max_feature_ratio=0.5
    )


def _analogue() -> AnalogueForecaster:
    """4 nearest neighbours among delay vectors of 4 entries, 4 steps apart."""
    return AnalogueForecaster(delays=4, stride=4, clip=True, k=4, exclude_recent=0)


def _analogue_auto() -> AnalogueForecaster:
    """The analogue with its embedding chosen on each context (version 4): 4 nearest neighbours, at least 4
    delays and at least 12 entries (12 delays of one channel, 6 of two), the stride the correlation time (the
    first lag at which the channels' mean autocorrelation falls below 0.25) over the delays."""
    return AnalogueForecaster(
        name="analogue_auto",
        delays=4,
        clip=True,
        k=4,
        exclude_recent=0,
        embedding="auto",
        acf_threshold=0.25,
        min_embedding=12,
    )


_V1: dict[str, Callable[[], Forecaster]] = {
    "nvar": _nvar,
    "nvar_g1": lambda: DenoisedForecaster(_nvar(), "gauss", 1.0, "nvar_g1"),
    "nvar_sg11": lambda: DenoisedForecaster(_nvar(), "savgol", 11, "nvar_sg11"),
    "analogue": _analogue,
    "analogue_g2": lambda: DenoisedForecaster(_analogue(), "gauss", 2.0, "analogue_g2"),
}

# version 4: version 3's experts and the analogue whose embedding follows the sampling rate and the channels
_V4: dict[str, Callable[[], Forecaster]] = {**_V1, "analogue_auto": _analogue_auto}


def _wide_nvar() -> WideNVARForecaster:
    """The NVAR, or from 8 channels on the field NVAR (radius 2, 2 delays, quadratic) where its backtest error on
    the context's last 64 steps is below a tenth of the joint NVAR's (the margin chosen on training systems:
    benchmarks/results/stress/field_margin.md)."""
    shared = FieldNVARForecaster(radius=2, delays=2, degree=2, clip=True, ridges=_RIDGES, validation=64)
    return WideNVARForecaster(joint=_nvar(), shared=shared, min_channels=8, validation=64, margin=10.0)


# version 5: version 4's experts with the NVARs of wide contexts (the field NVAR for lattices and grids)
_V5: dict[str, Callable[[], Forecaster]] = {
    **_V4,
    "nvar": _wide_nvar,
    "nvar_g1": lambda: DenoisedForecaster(_wide_nvar(), "gauss", 1.0, "nvar_g1"),
    "nvar_sg11": lambda: DenoisedForecaster(_wide_nvar(), "savgol", 11, "nvar_sg11"),
}


def _smap() -> SMapForecaster:
    """The S-map (version 7) on ``analogue_auto``'s embedding: every library state weighs exp(-16 d / mean d) in a
    local linear fit of the increment, penalised by 1e-3 of the weighted trace (the baseline ``smap``'s
    settings, chosen on training founders: benchmarks/results/stress/smap.md)."""
    return SMapForecaster(
        name="smap",
        delays=4,
        clip=True,
        exclude_recent=0,
        embedding="auto",
        acf_threshold=0.25,
        min_embedding=12,
        theta=16.0,
        ridge=1e-3,
    )


# version 7: version 6's experts and the S-map
_V7: dict[str, Callable[[], Forecaster]] = {**_V5, "smap": _smap}

#: version -> (expert name -> factory); read-only.
EXPERT_VERSIONS: Mapping[int, Mapping[str, Callable[[], Forecaster]]] = MappingProxyType(
    {
        1: MappingProxyType(_V1),
        2: MappingProxyType(_V1),
        3: MappingProxyType(_V1),
        4: MappingProxyType(_V4),
        5: MappingProxyType(_V5),
        6: MappingProxyType(_V5),
        7: MappingProxyType(_V7),
    }
)
#: version -> whether the experts also forecast each group of related channels on its own and keep, per
#: group, whichever of the joint and the grouped forecast backtests better (version 2: the same experts).
CHANNEL_GROUPING: Mapping[int, bool] = MappingProxyType(
    {1: False, 2: True, 3: True, 4: True, 5: True, 6: True, 7: True}
)
#: version -> whether the backtest shortens on short contexts (:func:`backtest_length`; version 3).
ADAPTIVE_BACKTEST: Mapping[int, bool] = MappingProxyType(
    {1: False, 2: False, 3: True, 4: True, 5: True, 6: True, 7: True}
)
#: version -> whether the experts read the context in its own units where the caller knows them (version 5:
#: the field NVAR standardises all channels together, which a per-channel standardisation would undo).
CONTEXT_UNITS: Mapping[int, bool] = MappingProxyType(
    {1: False, 2: False, 3: False, 4: False, 5: True, 6: True, 7: True}
)
#: version -> whether a backtest whose origin sits in a long gap starts after the gap instead (version 6:
#: :func:`backtest_lengths`; version 6 is version 5's experts with this backtest).
GAP_BACKTEST: Mapping[int, bool] = MappingProxyType(
    {1: False, 2: False, 3: False, 4: False, 5: False, 6: True, 7: True}
)
MIN_BACKTEST = 16  # steps an adapted backtest keeps at least
#: Known steps a backtest's origin needs behind it after a gap: the experts' longest delay vector (the analogue's
#: 4 entries 4 steps apart span 13 steps), rounded up.
GAP_WARMUP = 16
LATEST_EXPERTS_VERSION = max(EXPERT_VERSIONS)
#: The experts of the latest version; "_g" and "_sg" denoise first (Gaussian, Savitzky-Golay).
EXPERTS = EXPERT_VERSIONS[LATEST_EXPERTS_VERSION]


def backtest_length(span: int, backtest: int, version: int) -> int:
    """The backtest's length for contexts whose observed part spans ``span`` steps (from the first step any
    channel is observed to the end): ``backtest``, or with :data:`ADAPTIVE_BACKTEST` at most a third of the
    span (and at least :data:`MIN_BACKTEST`), so that the fits before it keep two thirds of the data (a
    short context, which the model left-pads, would otherwise backtest fits on a few steps)."""
    if not ADAPTIVE_BACKTEST[version]:
        return backtest
    return min(backtest, max(MIN_BACKTEST, span // 3))


def backtest_lengths(z: torch.Tensor, backtest: int, version: int) -> list[int]:
    """Each window's backtest length for the experts of ``version``: ``z`` ``(B, T, C)``, NaN for missing values.

    :func:`backtest_length` of the window's own observed span (so a window's backtest does not depend on the
    other windows of its batch). With :data:`GAP_BACKTEST`, a backtest whose origin has a long gap
    (:mod:`panda_fm.forecasters.gaps`: more than ``MAX_FILL`` steps missing in any channel) among the
    :data:`GAP_WARMUP` steps before it is scored after the last such gap instead, from an origin ``GAP_WARMUP``
    known steps past it, if that leaves at least :data:`MIN_BACKTEST` steps: started in a gap, every expert's
    backtest would forecast across the gap and its error would measure long leads only. (A gap after the
    origin's known steps keeps the backtest: its steps are left out of the score.)
    """
    T = z.shape[1]
    seen = torch.isfinite(z).any(dim=2)  # (B, T): a step with any channel observed
    first = seen.to(torch.int32).argmax(dim=1).tolist()
    lengths = [backtest_length(T - f, backtest, version) for f in first]
    if not GAP_BACKTEST[version] or not bool(torch.isnan(z).any()):
        return lengths
    known = fill_gaps(z)[1].all(dim=2).cpu()  # (B, T): every channel observed or in a short hole
    for b, (f, v) in enumerate(zip(first, lengths, strict=True)):
        unknown = (~known[b, f:]).nonzero().flatten() + f  # steps of long gaps after the first observation
        origin = T - v
        if bool(((unknown >= origin - GAP_WARMUP) & (unknown <= origin)).any()):
            after = T - (int(unknown[-1]) + 1 + GAP_WARMUP)  # GAP_WARMUP known steps past the last gap
            lengths[b] = after if after >= MIN_BACKTEST else v
    return lengths


def backtest_experts(
    z: np.ndarray, names: Sequence[str], horizon: int, backtest: int, version: int = LATEST_EXPERTS_VERSION
) -> tuple[np.ndarray, np.ndarray]:
    """Each expert's forecast from the whole context, and its error on the context's own last steps.

    With :data:`ADAPTIVE_BACKTEST` (version 3) the backtest is shortened on short contexts, and with
    :data:`GAP_BACKTEST` (version 6) it starts after a long gap at its origin, window by window
    (:func:`backtest_lengths`). With :data:`CHANNEL_GROUPING` (version 2 on), the experts also run on each group
    of related channels (:func:`panda_fm.forecasters.tensor.channels.channel_groups`) and each group keeps, per
    expert, the forecasts (the joint fit's or its own) of the smaller backtest error averaged over its channels.

    Args:
        z: ``(B, T, C)`` standardised contexts; NaN marks a missing value (the experts handle gaps as
            :mod:`panda_fm.forecasters.gaps` describes; a backtest is scored on the observed steps).
        names: keys of ``EXPERT_VERSIONS[version]``.
        horizon: steps to forecast.
        backtest: the last ``backtest`` steps of the context are forecast from the steps before them.
        version: the registry version.

    Returns:
        Forecasts ``(B, E, H, C)`` and backtest mean absolute errors ``(B, E, C)``, both finite (a diverged
        forecast's non-finite values become 0, its error stays large).
    """
    registry = EXPERT_VERSIONS[version]
    experts = [registry[name]() for name in names]
    lengths = np.asarray(
        backtest_lengths(torch.from_numpy(np.asarray(z, dtype=np.float64)), backtest, version)
    )
    if (lengths == lengths[0]).all():
        return _backtest_experts(experts, z, horizon, int(lengths[0]), version)
    forecasts = np.empty((z.shape[0], len(experts), horizon, z.shape[2]))
    errors = np.empty((z.shape[0], len(experts), z.shape[2]))
    for length in np.unique(lengths):  # windows of one backtest length at a time
        rows = np.flatnonzero(lengths == length)
        forecasts[rows], errors[rows] = _backtest_experts(experts, z[rows], horizon, int(length), version)
    return forecasts, errors


def _backtest_experts(
    experts: Sequence[Forecaster], z: np.ndarray, horizon: int, backtest: int, version: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`backtest_experts` of windows ``z`` that share the backtest length ``backtest``."""

    def joint(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        forecasts = np.stack([e.predict(x, horizon) for e in experts], axis=1)  # (B, E, H, C)
        past = np.stack([e.predict(x[:, :-backtest], backtest) for e in experts], axis=1)  # (B, E, V, C)
        misses = np.abs(past - x[:, None, -backtest:])  # (B, E, V, C); NaN where the context is missing
        if np.isnan(x[:, -backtest:]).any():
            missing = np.isnan(x[:, None, -backtest:])  # (B, 1, V, C)
            misses = np.where(missing, 0.0, misses)
            count = (~missing).sum(axis=2)  # (B, 1, C)
            errors = np.where(count > 0, misses.sum(axis=2) / np.maximum(count, 1), 1.0)  # none observed: 1
        else:
            errors = misses.mean(axis=2)  # (B, E, C)
        errors = np.nan_to_num(errors, nan=1e6, posinf=1e6)
        return np.nan_to_num(forecasts, nan=0.0, posinf=0.0, neginf=0.0), errors

    forecasts, errors = joint(z)
    if CHANNEL_GROUPING[version] and z.shape[2] > 1:
        zt = torch.from_numpy(np.asarray(z, dtype=np.float64))
        labels = channel_groups(fill_gaps(zt)[0])  # (B, C), as experts_channel_groups of the tensor experts
        kept = keep_better_groups(
            lambda x: tuple(map(torch.from_numpy, joint(x.numpy()))),
            zt,
            labels,
            torch.from_numpy(forecasts),
            torch.from_numpy(errors),
        )
        forecasts, errors = (t.numpy() for t in kept)
    return forecasts, errors


@dataclass
class SelectorForecaster(ContextForecaster):
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
        # the NVAR needs 74 steps before the backtest to fit and choose its penalty; the backtest shortens
        # on short contexts where the experts' version says so (backtest_length)
        self.min_context = next(
            n
            for n in range(81, self.backtest + 81)
            if n - backtest_length(n, self.backtest, LATEST_EXPERTS_VERSION) >= 80
        )

    def _forecast(self, z: np.ndarray, horizon: int, trusted: np.ndarray | None = None) -> np.ndarray:
        if trusted is not None:  # the experts see the gaps as gaps
            z = np.where(trusted, z, np.nan)
        forecasts, errors = backtest_experts(z, self.experts, horizon, self.backtest)
        best = errors.mean(axis=2).argmin(axis=1)  # (B,)
        return forecasts[np.arange(len(best)), best]
