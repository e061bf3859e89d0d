"""Real inputs: the gap, channel and unit suites, on held-out systems (issue 16).

The suites cut windows from trajectories of the held-out founders (never trained on), read from the
founders test-set cache (:func:`panda_fm.eval.testsets.founders_testset`, dysts ``make_trajectory`` at 100
points per period), and run any forecaster with the signature of :meth:`panda_fm.PandaPipeline.predict`:
the pipeline itself, a checkpoint, or a classical baseline.

Windows. A system's trajectory is cut into disjoint slots of ``T + H`` steps (context and truth) after an
offset drawn from the seed; a system's windows are distinct slots, so a partner drawn from another slot of
the same trajectory never overlaps a window's context or truth.

Gap suite (:func:`run_gap_suite`). Per window: the clean context; contiguous gaps of 10, 50, 100 and 200
steps ending 0, 50 and 250 steps before the context's end, in one channel (drawn per window) or in all
channels; scattered missing entries at 5, 10, 20 and 30 % (each entry independently), in one channel or in
all. Per case and window: the fraction of context entries missing, the forecast's MAE and the MAE of
forecasting the context's (NaN-aware) mean, both in the clean context's per-channel stds, their ratio, and
whether every forecast value lies inside ``[min - range, max + range]`` of the context as given (per channel,
NaN-aware).

Channel suite (:func:`run_channel_suite`). Per window of a 3-channel system: the system alone; plus 3, 6 or
30 white-noise channels; or 2, 3, 5, 9 or 13 independent systems side by side (``"others"``: other
3-channel held-out systems, each from its own slot; ``"copies"``: the same system from other slots of its
trajectory, where it has enough). The error is the MAE over the original system's channels only, in their
context stds, at the full horizon; its ratio to the error of the system alone (both floored at
:data:`ALONE_FLOOR` context stds, since a clean system alone is often forecast almost exactly) is the quantity
of interest; the raw ratio and the absolute rise are recorded too.

Unit suite (:func:`run_unit_suite`, on the gap suite's windows). Per window: the forecast in the units given,
and with all channels multiplied by 1e-9, or by 1e4 after a shift of 1e6 stds, or one channel (drawn per
window) multiplied by 1e-6 or 1e6, shifted by 1e7 stds, or multiplied by 1e-3 after a shift of 1e5 stds. The
forecasts in other units are mapped back; their largest difference from the forecast in the given units, in
context stds, is the quantity of interest (0 for a forecaster whose units do not matter).

Everything is deterministic given the seed. Shape letters: B batch, T time (context), C channels, H horizon.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from panda_fm.systems.founders import HELD_OUT

logger = logging.getLogger(__name__)

__all__ = [
    "ALONE_FLOOR",
    "THREE_CHANNEL_SYSTEMS",
    "GAP_SYSTEMS",
    "GapCase",
    "ChannelCase",
    "UnitCase",
    "Window",
    "RealInputsConfig",
    "gap_cases",
    "channel_cases",
    "unit_cases",
    "load_trajectories",
    "slot_starts",
    "draw_windows",
    "apply_gap",
    "run_gap_suite",
    "run_channel_suite",
    "run_unit_suite",
    "summarise_gap_suite",
    "summarise_channel_suite",
    "summarise_unit_suite",
    "run_real_inputs",
    "summary_markdown",
    "plot_real_inputs",
    "write_real_inputs",
]

#: The 3-channel held-out flows ("Lorenz-type"), the channel suite's systems and its stacking pool.
THREE_CHANNEL_SYSTEMS: tuple[str, ...] = (
    "Rossler",
    "ChenLee",
    "QiChen",
    "Bouali",
    "SprottB",
    "SprottF",
    "SprottR",
    "Coullet",
    "JerkCircuit",
    "KawczynskiStrizhak",
    "HastingsPowell",
    "Duffing",
    "OscillatingFlow",
)
#: Every held-out flow, ordered so that the first few mix dimensions (3, 4, 6, 5 channels) for the gap suite.
GAP_SYSTEMS: tuple[str, ...] = (
    "Rossler",
    "LorenzStenflo",
    "ChenLee",
    "Hopfield",
    "SprottB",
    "CircadianRhythm",
    "QiChen",
    "HyperYangChen",
    "Bouali",
    "SprottF",
    "Coullet",
    "JerkCircuit",
    "SprottR",
    "KawczynskiStrizhak",
    "HastingsPowell",
    "Duffing",
    "OscillatingFlow",
    "MacArthur",
    "DoublePendulum",
    "MackeyGlass",
)
assert set(GAP_SYSTEMS) == HELD_OUT and set(THREE_CHANNEL_SYSTEMS) <= HELD_OUT

GAP_LENGTHS = (10, 50, 100, 200)
GAP_ENDS = (0, 50, 250)
SCATTER_FRACTIONS = (0.05, 0.10, 0.20, 0.30)
NOISE_CHANNELS = (3, 6, 30)
STACKED_SYSTEMS = (2, 3, 5, 9, 13)
#: Most copies of one system side by side: a 4096-step trajectory holds 6 disjoint windows of 512 + 128 steps.
MAX_COPIES = 6
#: Missing-fraction bins of the gap suite's monotonicity check (left-closed; 0 is the clean case alone).
MISSING_BINS = (0.0, 1e-12, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0)
#: Floor of the "alone" error in the channel suite's ratio (context stds): the in-context experts forecast a
#: clean held-out system almost exactly (errors near 1e-5), where a ratio would blow up any harmless change.
ALONE_FLOOR = 0.01
#: Widening of the context's range, in ranges, that a forecast must stay inside.
BOUND_RANGES = 1.0
#: The founders cache that ``panda-fm evaluate --test founders`` builds (its default location and settings).
DEFAULT_CACHE = Path.home() / ".cache" / "panda_fm"


class Predictor(Protocol):
    """Anything with the pipeline's ``predict``: ``(B, T, C) -> (B, H, C)``, NaN marking a missing value."""

    def predict(self, context: np.ndarray, prediction_length: int) -> Any: ...


# --- cases ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapCase:
    """One way of removing context values.

    Attributes:
        kind: ``"clean"`` (nothing missing), ``"contiguous"`` or ``"scattered"``.
        channels: ``"one"`` (a channel drawn per window) or ``"all"``.
        length: steps of a contiguous gap.
        end: steps between a contiguous gap's last step and the context's end (0: the gap ends the context).
        fraction: probability that a scattered entry is missing.
    """

    kind: Literal["clean", "contiguous", "scattered"]
    channels: Literal["one", "all"] = "all"
    length: int = 0
    end: int = 0
    fraction: float = 0.0

    @property
    def name(self) -> str:
        if self.kind == "clean":
            return "clean"
        if self.kind == "contiguous":
            return f"gap{self.length}@end-{self.end}/{self.channels}"
        return f"scatter{round(100 * self.fraction)}%/{self.channels}"


@dataclass(frozen=True)
class ChannelCase:
    """What is put beside a system's channels.

    Attributes:
        kind: ``"alone"``, ``"noise"`` (white-noise channels) or ``"stack"`` (independent systems).
        count: noise channels, or systems side by side (the original included).
        source: for ``"stack"``: ``"others"`` (other held-out systems) or ``"copies"`` (the same system from
            other slots of its trajectory).
    """

    kind: Literal["alone", "noise", "stack"]
    count: int = 0
    source: Literal["", "others", "copies"] = ""

    @property
    def name(self) -> str:
        if self.kind == "alone":
            return "alone"
        if self.kind == "noise":
            return f"+{self.count} noise"
        return f"{self.count} stacked ({self.source})"

    def extra_channels(self, channels: int) -> int:
        """Channels added to a system of ``channels`` channels."""
        if self.kind == "noise":
            return self.count
        if self.kind == "stack":
            return channels * (self.count - 1)
        return 0


@dataclass(frozen=True)
class UnitCase:
    """Other units for some channels: ``x -> scale * (x + offset * sd)``, ``sd`` each channel's context std.

    Attributes:
        channels: ``"one"`` (a channel drawn per window) or ``"all"``.
        scale: the factor.
        offset: the shift, in the channel's context stds (before the factor).
    """

    channels: Literal["one", "all"]
    scale: float = 1.0
    offset: float = 0.0

    @property
    def name(self) -> str:
        parts = ([f"x{self.scale:g}"] if self.scale != 1 else []) + (
            [f"+{self.offset:g} sd"] if self.offset else []
        )
        return f"{' '.join(parts) or 'as given'}/{self.channels}"


def gap_cases(quick: bool = False) -> list[GapCase]:
    """The gap suite's cases, clean first.

    Args:
        quick: a subset (gaps of 50 and 200 steps ending 0 or 250 steps before the end, scattered 10 % and
            30 %), for tests and smoke runs.
    """
    lengths, ends, fractions = (
        ((50, 200), (0, 250), (0.1, 0.3)) if quick else (GAP_LENGTHS, GAP_ENDS, SCATTER_FRACTIONS)
    )
    cases = [GapCase("clean")]
    for channels in ("one", "all"):
        cases += [GapCase("contiguous", channels, length=n, end=e) for e in ends for n in lengths]
        cases += [GapCase("scattered", channels, fraction=p) for p in fractions]
    return cases


def channel_cases(quick: bool = False, copies: bool = True) -> list[ChannelCase]:
    """The channel suite's cases, ``alone`` first.

    Args:
        quick: a subset (3 and 6 noise channels, 2 and 3 systems stacked).
        copies: also stack copies of the same system (besides other systems), up to :data:`MAX_COPIES`.
    """
    noise, stacked = ((3, 6), (2, 3)) if quick else (NOISE_CHANNELS, STACKED_SYSTEMS)
    cases = [ChannelCase("alone")] + [ChannelCase("noise", n) for n in noise]
    cases += [ChannelCase("stack", n, "others") for n in stacked]
    if copies:
        cases += [ChannelCase("stack", n, "copies") for n in stacked if n <= MAX_COPIES]
    return cases


def unit_cases(quick: bool = False) -> list[UnitCase]:
    """The unit suite's cases: whole series in tiny or huge units or on a far offset, and one channel in units
    unlike the others' (``quick``: two of them)."""
    cases = [
        UnitCase("all", 1e-9),
        UnitCase("all", 1e4, 1e6),
        UnitCase("one", 1e-6),
        UnitCase("one", 1e6),
        UnitCase("one", 1.0, 1e7),
        UnitCase("one", 1e-3, 1e5),
    ]
    return [cases[0], cases[4]] if quick else cases


# --- trajectories and windows --------------------------------------------------------------------------


def load_trajectories(systems: Sequence[str], cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """One trajectory per held-out system, from the founders test-set cache (built where missing).

    Systems are read from ``CACHE/founders-4096x1`` (what ``panda-fm evaluate --test founders`` builds) when
    it holds them; the others are integrated once each into ``CACHE/held-out/NAME`` with the same settings
    (dysts ``make_trajectory``, 4096 points at 100 per period), which takes seconds to a minute per system
    without numba.

    Args:
        systems: held-out dysts flow names.
        cache_dir: the cache's root; default ``~/.cache/panda_fm``.

    Returns:
        ``{name: (N, D) float64}`` in the order of ``systems``.

    Raises:
        ValueError: a name that is not a held-out founder (training systems would not measure zero-shot
            forecasting).
    """
    from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
    from panda_fm.systems.store import open_dataset

    unknown = [s for s in systems if s not in HELD_OUT]
    if unknown:
        raise ValueError(
            f"{unknown} are not held-out founders; choose from panda_fm.systems.founders.HELD_OUT: "
            f"{sorted(HELD_OUT)}"
        )
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    full = FounderTestsetConfig()
    shared = root / f"founders-{full.n_steps}x{full.n_ics}"
    found: dict[str, np.ndarray] = {}
    if (shared / "manifest.jsonl").exists():
        dataset = open_dataset(shared)
        same = {k: v for k, v in dataset.metadata.items() if k not in ("systems", "kind")} == {
            k: v for k, v in asdict(full).items() if k != "systems"
        }
        if same:
            found = {
                s: np.asarray(dataset.load(s)[0], dtype=np.float64) for s in systems if s in dataset.ids()
            }
    for name in systems:
        if name not in found:
            single = founders_testset(root / "held-out" / name, FounderTestsetConfig(systems=(name,)))
            found[name] = np.asarray(open_dataset(single).load(name)[0], dtype=np.float64)
    return {s: found[s] for s in systems}


@dataclass(frozen=True)
class Window:
    """One window of a held-out system.

    Attributes:
        system: dysts flow name.
        slot: index of the window's slot in its trajectory (see :func:`slot_starts`).
        start: first step of the context in the trajectory.
        context: ``(T, C)`` clean context.
        truth: ``(H, C)`` its continuation.
    """

    system: str
    slot: int
    start: int
    context: np.ndarray = field(repr=False)
    truth: np.ndarray = field(repr=False)


def _seed(seed: int, *parts: str | int) -> list[int]:
    """A seed sequence from the run's seed and names or numbers: the same draw whatever else runs."""
    return [seed, *(zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts)]


def slot_starts(n_steps: int, window: int, seed: int, system: str) -> np.ndarray:
    """First steps of the disjoint slots of ``window`` steps in a trajectory of ``n_steps``, after an offset
    drawn from ``(seed, system)`` in the slack left over.

    Raises:
        ValueError: the trajectory is shorter than one window.
    """
    count = n_steps // window
    if count < 1:
        raise ValueError(f"{system}: a trajectory of {n_steps} steps holds no window of {window} steps")
    offset = int(np.random.default_rng(_seed(seed, system, 0)).integers(0, n_steps - count * window + 1))
    return offset + window * np.arange(count)


def _window(traj: np.ndarray, system: str, slot: int, starts: np.ndarray, T: int, H: int) -> Window:
    s = int(starts[slot])
    return Window(system, slot, s, traj[s : s + T], traj[s + T : s + T + H])


def draw_windows(
    trajectories: Mapping[str, np.ndarray],
    windows_per_system: int,
    context_length: int,
    prediction_length: int,
    seed: int = 0,
) -> list[Window]:
    """``windows_per_system`` windows of distinct slots per system, in the order of ``trajectories``.

    Args:
        trajectories: ``{name: (N, D)}`` from :func:`load_trajectories`.
        windows_per_system: windows per system.
        context_length: T, steps of context.
        prediction_length: H, steps of truth after the context.
        seed: seeds the slots' offset and which slots are used.

    Returns:
        The windows, system by system.

    Raises:
        ValueError: a trajectory has fewer slots than ``windows_per_system``; the error gives the most.
    """
    if windows_per_system < 1:
        raise ValueError(f"windows_per_system must be >= 1, got {windows_per_system}")
    out = []
    for name, traj in trajectories.items():
        starts = slot_starts(len(traj), context_length + prediction_length, seed, name)
        if len(starts) < windows_per_system:
            raise ValueError(
                f"{name}: {len(traj)} steps hold {len(starts)} windows of {context_length}+{prediction_length} "
                f"steps, fewer than windows_per_system={windows_per_system}; ask for at most {len(starts)}"
            )
        order = np.random.default_rng(_seed(seed, name, 1)).permutation(len(starts))[:windows_per_system]
        out += [_window(traj, name, int(k), starts, context_length, prediction_length) for k in order]
    return out


# --- scoring -------------------------------------------------------------------------------------------


def _scale(context: np.ndarray) -> np.ndarray:
    """Per-channel std of a clean context ``(T, C)`` -> ``(C,)``, 1 for a constant channel."""
    sd = context.std(axis=0)
    return np.where(sd > 0, sd, 1.0)


def _mae(truth: np.ndarray, forecast: np.ndarray, sd: np.ndarray) -> float:
    """MAE over steps and channels in units of ``sd`` (per channel); a non-finite forecast scores inf."""
    err = np.abs(forecast - truth) / sd
    return float(err.mean()) if np.isfinite(err).all() else math.inf


def _inside(context: np.ndarray, forecast: np.ndarray) -> bool:
    """Whether every forecast value lies in ``[min - r, max + r]`` of the context's observed values (per
    channel, ``r`` = :data:`BOUND_RANGES` times the channel's range, up to float32 rounding); False for a
    non-finite value."""
    lo, hi = np.nanmin(context, axis=0), np.nanmax(context, axis=0)
    # plus float32 rounding: a forecast clipped at the bound in float32 may pass the float64 bound by an ulp
    pad = BOUND_RANGES * (hi - lo) + 1e-6 * np.maximum(np.abs(lo), np.abs(hi))
    return bool(np.all((forecast >= lo - pad) & (forecast <= hi + pad)))


def _forecast(method: Predictor, contexts: np.ndarray, horizon: int) -> tuple[np.ndarray, bool]:
    """``(B, T, C)`` -> ``(B, H, C)`` float64, and whether the method warned about missing data."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = np.asarray(method.predict(contexts, horizon), dtype=np.float64)
    if out.shape != (contexts.shape[0], horizon, contexts.shape[2]):
        raise ValueError(
            f"predict returned shape {out.shape} for contexts {contexts.shape} and {horizon} steps; "
            "it must return (B, H, C)"
        )
    warned = any("missing" in type(w.message).__name__.lower() or "missing" in str(w.message) for w in caught)
    return out, warned


def _groups(windows: Sequence[Window]) -> dict[int, list[int]]:
    """Window indices grouped by channel count (one predict call per group)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, w in enumerate(windows):
        groups[w.context.shape[1]].append(i)
    return dict(groups)


def apply_gap(context: np.ndarray, case: GapCase, rng: np.random.Generator) -> tuple[np.ndarray, int | None]:
    """The context with the case's values set to NaN.

    Args:
        context: ``(T, C)`` clean context.
        case: what to remove.
        rng: draws the channel of a one-channel case and the scattered entries.

    Returns:
        The gapped copy ``(T, C)`` and the channel hit (None when all channels are).

    Raises:
        ValueError: a contiguous gap that does not fit in the context.
    """
    x = np.array(context, dtype=np.float64)
    T, C = x.shape
    channel = int(rng.integers(C)) if case.channels == "one" else None
    cols = slice(None) if channel is None else slice(channel, channel + 1)
    if case.kind == "contiguous":
        lo, hi = T - case.end - case.length, T - case.end
        if lo < 0 or case.length < 1:
            raise ValueError(
                f"{case.name}: a gap of {case.length} steps ending at {hi} does not fit in {T} steps"
            )
        x[lo:hi, cols] = np.nan
    elif case.kind == "scattered":
        block = x[:, cols]
        block[rng.random(block.shape) < case.fraction] = np.nan
        x[:, cols] = block
    return x, channel


# --- the suites ----------------------------------------------------------------------------------------


def _tick(progress: Callable[[str], None] | None, label: str) -> None:
    if progress is not None:
        progress(label)


def run_gap_suite(
    methods: Mapping[str, Predictor],
    windows: Sequence[Window],
    cases: Sequence[GapCase] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Forecast every window under every gap case with every method.

    Args:
        methods: ``{name: forecaster}``; each gets the same gapped contexts.
        windows: from :func:`draw_windows`; the horizon is the length of their truth.
        cases: default :func:`gap_cases`; the clean case is added first when missing (it gives
            ``clean_error``).
        seed: seeds the gaps (channel of one-channel cases, scattered entries), per case and window.
        progress: called with the case's name after each case (e.g. a tqdm bar's ``update``).

    Returns:
        One record per method, case and window: ``method, case, kind, channels, length, end, fraction,
        system, slot, channel, missing, error, mean_error, ratio, clean_error, inside, warned``.
    """
    cases = list(cases) if cases is not None else gap_cases()
    if not any(c.kind == "clean" for c in cases):
        cases.insert(0, GapCase("clean"))
    cases.sort(key=lambda c: c.kind != "clean")
    H = windows[0].truth.shape[0]
    groups = _groups(windows)
    records: list[dict[str, Any]] = []
    clean: dict[tuple[str, int], float] = {}
    for case in cases:
        gapped, hit = [], []
        for i, w in enumerate(windows):
            x, channel = apply_gap(
                w.context, case, np.random.default_rng(_seed(seed, case.name, w.system, w.slot, i))
            )
            gapped.append(x)
            hit.append(channel)
        for name, method in methods.items():
            for idx in groups.values():
                forecast, warned = _forecast(method, np.stack([gapped[i] for i in idx]), H)
                for f, i in zip(forecast, idx, strict=True):
                    w, x = windows[i], gapped[i]
                    sd = _scale(w.context)
                    err = _mae(w.truth, f, sd)
                    mean_err = _mae(w.truth, np.broadcast_to(np.nanmean(x, axis=0), w.truth.shape), sd)
                    if case.kind == "clean":
                        clean[name, i] = err
                    records.append(
                        {
                            "method": name,
                            "case": case.name,
                            "kind": case.kind,
                            "channels": case.channels if case.kind != "clean" else "",
                            "length": case.length,
                            "end": case.end,
                            "fraction": case.fraction,
                            "system": w.system,
                            "slot": w.slot,
                            "channel": hit[i],
                            "missing": float(np.isnan(x).mean()),
                            "error": err,
                            "mean_error": mean_err,
                            "ratio": err / mean_err if mean_err > 0 else math.inf,
                            "clean_error": clean[name, i],
                            "inside": _inside(x, f),
                            "warned": warned,
                        }
                    )
        _tick(progress, f"gaps: {case.name}")
    return records


def _partners(
    case: ChannelCase,
    base: Window,
    trajectories: Mapping[str, np.ndarray],
    T: int,
    H: int,
    seed: int,
    index: int,
) -> list[Window] | None:
    """The windows put beside ``base`` for a stacking case, or None when there are not enough."""
    need = case.count - 1
    rng = np.random.default_rng(_seed(seed, case.name, base.system, base.slot, index))
    if case.source == "copies":
        starts = slot_starts(len(trajectories[base.system]), T + H, seed, base.system)
        free = [k for k in rng.permutation(len(starts)) if k != base.slot]
        if len(free) < need:
            return None
        return [_window(trajectories[base.system], base.system, int(k), starts, T, H) for k in free[:need]]
    pool = [s for s in trajectories if s != base.system and trajectories[s].shape[1] == base.context.shape[1]]
    if len(pool) < need:
        return None
    out = []
    for k in rng.permutation(len(pool))[:need]:
        name = pool[k]
        starts = slot_starts(len(trajectories[name]), T + H, seed, name)
        out.append(_window(trajectories[name], name, int(rng.integers(len(starts))), starts, T, H))
    return out


def run_channel_suite(
    methods: Mapping[str, Predictor],
    windows: Sequence[Window],
    trajectories: Mapping[str, np.ndarray],
    cases: Sequence[ChannelCase] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Forecast every window alone and with extra channels, scoring only the window's own channels.

    Args:
        methods: ``{name: forecaster}``.
        windows: from :func:`draw_windows`, all with the same channel count.
        trajectories: the stacking pool ``{name: (N, D)}`` (the windows' systems and the others); systems
            of another channel count are not stacked.
        cases: default :func:`channel_cases`; ``alone`` is added first when missing.
        seed: seeds the noise channels and the choice of partners.
        progress: called with the case's name after each case.

    Returns:
        One record per method, case and window: ``method, case, kind, source, count, extra_channels,
        system, slot, partners, error, alone_error, ratio`` (both errors floored at ``ALONE_FLOOR``),
        ``raw_ratio`` (``error / alone_error``) and ``excess`` (``error - alone_error``). A stacking case for which a window has too few
        partners (too few systems in the pool, or too few free slots for copies) is left out for that window
        and listed in the logs.

    Raises:
        ValueError: windows of different channel counts.
    """
    cases = list(cases) if cases is not None else channel_cases()
    if not any(c.kind == "alone" for c in cases):
        cases.insert(0, ChannelCase("alone"))
    cases.sort(key=lambda c: c.kind != "alone")
    widths = {w.context.shape[1] for w in windows}
    if len(widths) != 1:
        raise ValueError(f"channel-suite windows must share a channel count, got {sorted(widths)}")
    C = widths.pop()
    T, H = windows[0].context.shape[0], windows[0].truth.shape[0]
    records: list[dict[str, Any]] = []
    alone: dict[tuple[str, int], float] = {}
    for case in cases:
        contexts, used, partners = [], [], []
        for i, w in enumerate(windows):
            if case.kind == "noise":
                rng = np.random.default_rng(_seed(seed, case.name, w.system, w.slot, i))
                contexts.append(np.concatenate([w.context, rng.standard_normal((T, case.count))], axis=1))
                names: list[str] = []
            elif case.kind == "stack":
                found = _partners(case, w, trajectories, T, H, seed, i)
                if found is None:
                    logger.info("%s: too few partners for %s; skipped", case.name, w.system)
                    continue
                contexts.append(np.concatenate([w.context, *(p.context for p in found)], axis=1))
                names = [f"{p.system}#{p.slot}" for p in found]
            else:
                contexts.append(np.array(w.context))
                names = []
            used.append(i)
            partners.append(names)
        if not used:
            logger.warning("channel case %s: no window has enough partners; skipped", case.name)
            _tick(progress, f"channels: {case.name}")
            continue
        batch = np.stack(contexts)
        for name, method in methods.items():
            forecast, _ = _forecast(method, batch, H)
            for f, i, names in zip(forecast, used, partners, strict=True):
                w = windows[i]
                err = _mae(w.truth, f[:, :C], _scale(w.context))
                if case.kind == "alone":
                    alone[name, i] = err
                base = alone[name, i]
                records.append(
                    {
                        "method": name,
                        "case": case.name,
                        "kind": case.kind,
                        "source": case.source,
                        "count": case.count,
                        "extra_channels": case.extra_channels(C),
                        "system": w.system,
                        "slot": w.slot,
                        "partners": names,
                        "error": err,
                        "alone_error": base,
                        "ratio": max(err, ALONE_FLOOR) / max(base, ALONE_FLOOR),
                        "raw_ratio": err / base if base > 0 else (1.0 if err == 0 else math.inf),
                        "excess": err - base,
                    }
                )
        _tick(progress, f"channels: {case.name}")
    return records


def run_unit_suite(
    methods: Mapping[str, Predictor],
    windows: Sequence[Window],
    cases: Sequence[UnitCase] | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Forecast every window in its own units and in the cases' units, the latter mapped back.

    Args:
        methods: ``{name: forecaster}``.
        windows: from :func:`draw_windows`.
        cases: default :func:`unit_cases`.
        seed: seeds the channel of one-channel cases, per case and window.
        progress: called with the case's name after each case.

    Returns:
        One record per method, case and window: ``method, case, channels, scale, offset, system, slot,
        channel, deviation`` (the largest difference from the forecast in the given units, in context stds),
        ``error`` and ``given_error`` (MAE against the truth, in context stds).
    """
    cases = list(cases) if cases is not None else unit_cases()
    H = windows[0].truth.shape[0]
    groups = _groups(windows)
    given = {
        (name, i): f
        for name, method in methods.items()
        for idx in groups.values()
        for f, i in zip(
            _forecast(method, np.stack([windows[i].context for i in idx]), H)[0], idx, strict=True
        )
    }
    records: list[dict[str, Any]] = []
    for case in cases:
        factors, shifts, hit = [], [], []
        for i, w in enumerate(windows):
            C = w.context.shape[1]
            channel = None
            if case.channels == "one":
                channel = int(np.random.default_rng(_seed(seed, case.name, w.system, w.slot, i)).integers(C))
            chosen = np.arange(C) == channel if channel is not None else np.ones(C, dtype=bool)
            factors.append(np.where(chosen, case.scale, 1.0))
            shifts.append(np.where(chosen, case.offset * _scale(w.context), 0.0))
            hit.append(channel)
        for name, method in methods.items():
            for idx in groups.values():
                moved = np.stack([factors[i] * (windows[i].context + shifts[i]) for i in idx])
                forecast, _ = _forecast(method, moved, H)
                for f, i in zip(forecast, idx, strict=True):
                    w, sd = windows[i], _scale(windows[i].context)
                    back = f / factors[i] - shifts[i]
                    deviation = np.abs(back - given[name, i]) / sd
                    records.append(
                        {
                            "method": name,
                            "case": case.name,
                            "channels": case.channels,
                            "scale": case.scale,
                            "offset": case.offset,
                            "system": w.system,
                            "slot": w.slot,
                            "channel": hit[i],
                            "deviation": float(deviation.max()) if np.isfinite(deviation).all() else math.inf,
                            "error": _mae(w.truth, back, sd),
                            "given_error": _mae(w.truth, given[name, i], sd),
                        }
                    )
        _tick(progress, f"units: {case.name}")
    return records


# --- summaries -----------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)) if len(v) else math.nan


def _by(records: Sequence[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[tuple(r[k] for k in keys)].append(r)
    return out


def summarise_gap_suite(records: Sequence[dict[str, Any]], ratio_limit: float = 1.1) -> dict[str, Any]:
    """Per method: per-case medians, the growth of the error with the amount missing, forecasts out of bounds.

    Args:
        records: from :func:`run_gap_suite`.
        ratio_limit: the largest acceptable median of error / mean-forecast error (issue 16: 1.1).

    Returns:
        ``{method: {"cases": [row per case], "bins": [...], "spearman": float, "monotone": bool,
        "out_of_bounds": int, "forecasts": int, "worst_case": str, "worst_median_ratio": float,
        "cases_over_limit": [names], "ratio_limit": float}}``. A case row holds ``case, kind, channels, length,
        end, fraction, windows, missing`` (median fraction of entries missing), ``median_error,
        median_mean_error, median_ratio, median_clean_error, out_of_bounds, warned`` (windows whose
        forecast call warned).
    """
    from scipy.stats import spearmanr

    out: dict[str, Any] = {}
    for (method,), rows in _by(records, "method").items():
        cases = []
        for (case,), rs in _by(rows, "case").items():
            r0 = rs[0]
            cases.append(
                {
                    "case": case,
                    **{k: r0[k] for k in ("kind", "channels", "length", "end", "fraction")},
                    "windows": len(rs),
                    "missing": _median([r["missing"] for r in rs]),
                    "median_error": _median([r["error"] for r in rs]),
                    "median_mean_error": _median([r["mean_error"] for r in rs]),
                    "median_ratio": _median([r["ratio"] for r in rs]),
                    "median_clean_error": _median([r["clean_error"] for r in rs]),
                    "out_of_bounds": sum(not r["inside"] for r in rs),
                    "warned": sum(bool(r["warned"]) for r in rs),
                }
            )
        missing = np.array([r["missing"] for r in rows])
        error = np.array([r["error"] for r in rows])
        bins = []
        for lo, hi in zip(MISSING_BINS[:-1], MISSING_BINS[1:], strict=True):
            sel = (missing >= lo) & (missing < hi)
            if sel.any():
                bins.append(
                    {"lo": lo, "hi": hi, "n": int(sel.sum()), "median_error": float(np.median(error[sel]))}
                )
        medians = [b["median_error"] for b in bins]
        finite = np.isfinite(error)
        rho = spearmanr(missing[finite], error[finite]).statistic if finite.sum() > 2 else math.nan
        gapped = [c for c in cases if c["kind"] != "clean"]
        worst = max(gapped, key=lambda c: c["median_ratio"]) if gapped else None
        out[method] = {
            "cases": cases,
            "bins": bins,
            "spearman": float(rho) if rho == rho else math.nan,
            "monotone": bool(all(b >= a for a, b in zip(medians, medians[1:], strict=False))),
            "out_of_bounds": sum(not r["inside"] for r in rows),
            "forecasts": len(rows),
            "worst_case": worst["case"] if worst else "",
            "worst_median_ratio": worst["median_ratio"] if worst else math.nan,
            "cases_over_limit": [c["case"] for c in gapped if c["median_ratio"] > ratio_limit],
            "ratio_limit": ratio_limit,
        }
    return out


def summarise_channel_suite(records: Sequence[dict[str, Any]], ratio_limit: float = 1.1) -> dict[str, Any]:
    """Per method and case: the median over windows of (error with extras / error alone), and median errors.

    Args:
        records: from :func:`run_channel_suite`.
        ratio_limit: the largest acceptable median ratio (issue 16: 1.1, i.e. at most 10 % worse).

    Returns:
        ``{method: {"cases": [row per case], "worst_case": str, "worst_median_ratio": float,
        "cases_over_limit": [names], "ratio_limit": float}}``; a row holds ``case, kind, source, count,
        extra_channels, windows, median_ratio, q75_ratio`` (of the floored ratio, see :func:`run_channel_suite`),
        ``median_raw_ratio, median_excess, median_error, median_alone_error, partners`` (the systems stacked
        beside the first window).
    """
    out: dict[str, Any] = {}
    for (method,), rows in _by(records, "method").items():
        cases = []
        for (case,), rs in _by(rows, "case").items():
            r0 = rs[0]
            ratios = np.array([r["ratio"] for r in rs])
            cases.append(
                {
                    "case": case,
                    **{k: r0[k] for k in ("kind", "source", "count", "extra_channels")},
                    "windows": len(rs),
                    "median_ratio": float(np.median(ratios)),
                    "q75_ratio": float(np.percentile(ratios, 75)),
                    "median_raw_ratio": _median([r["raw_ratio"] for r in rs]),
                    "median_excess": _median([r["excess"] for r in rs]),
                    "median_error": _median([r["error"] for r in rs]),
                    "median_alone_error": _median([r["alone_error"] for r in rs]),
                    "partners": sorted({p.split("#")[0] for p in r0["partners"]}),
                }
            )
        extras = [c for c in cases if c["kind"] != "alone"]
        worst = max(extras, key=lambda c: c["median_ratio"]) if extras else None
        out[method] = {
            "cases": cases,
            "worst_case": worst["case"] if worst else "",
            "worst_median_ratio": worst["median_ratio"] if worst else math.nan,
            "cases_over_limit": [c["case"] for c in extras if c["median_ratio"] > ratio_limit],
            "ratio_limit": ratio_limit,
        }
    return out


def summarise_unit_suite(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method and case: how far the forecasts in other units move from those in the given units.

    Returns:
        ``{method: {"cases": [row per case], "worst_case": str, "largest_deviation": float}}``; a row holds
        ``case, channels, scale, offset, windows, median_deviation, max_deviation`` (context stds),
        ``median_error, median_given_error``.
    """
    out: dict[str, Any] = {}
    for (method,), rows in _by(records, "method").items():
        cases = [
            {
                "case": case,
                **{k: rs[0][k] for k in ("channels", "scale", "offset")},
                "windows": len(rs),
                "median_deviation": _median([r["deviation"] for r in rs]),
                "max_deviation": max(r["deviation"] for r in rs),
                "median_error": _median([r["error"] for r in rs]),
                "median_given_error": _median([r["given_error"] for r in rs]),
            }
            for (case,), rs in _by(rows, "case").items()
        ]
        worst = max(cases, key=lambda c: c["max_deviation"])
        out[method] = {
            "cases": cases,
            "worst_case": worst["case"],
            "largest_deviation": worst["max_deviation"],
        }
    return out


# --- the whole benchmark -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealInputsConfig:
    """Settings of :func:`run_real_inputs`.

    Attributes:
        systems: systems per suite: the first of :data:`GAP_SYSTEMS` for the gap suite and of
            :data:`THREE_CHANNEL_SYSTEMS` for the channel suite (whose stacking pool is always all 13).
        windows_per_system: windows per system (at most 6 from a 4096-step trajectory).
        context_length: T; take the model's (``pipe.config.context_length``).
        prediction_length: H; take the model's (``pipe.config.prediction_length``).
        seed: seeds windows, gaps, noise and partners.
        quick: the case subsets of :func:`gap_cases` and :func:`channel_cases`.
        copies: also stack copies of the same system in the channel suite.
        cache_dir: the founders cache's root (default ``~/.cache/panda_fm``).
        ratio_limit: the acceptance limit reported for both suites.
    """

    systems: int = 8
    windows_per_system: int = 4
    context_length: int = 512
    prediction_length: int = 128
    seed: int = 0
    quick: bool = False
    copies: bool = True
    cache_dir: str | None = None
    ratio_limit: float = 1.1

    def __post_init__(self) -> None:
        if not 1 <= self.systems <= len(GAP_SYSTEMS):
            raise ValueError(f"systems must be between 1 and {len(GAP_SYSTEMS)}, got {self.systems}")
        if self.windows_per_system < 1 or self.context_length < 16 or self.prediction_length < 1:
            raise ValueError("need windows_per_system >= 1, context_length >= 16 and prediction_length >= 1")


def run_real_inputs(
    methods: Mapping[str, Predictor],
    config: RealInputsConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the three suites for every method and summarise them.

    Args:
        methods: ``{name: forecaster}``, e.g. the shipped pipeline and ``make_baselines(["nvar", "mean"])``.
        config: sizes and seed; default :class:`RealInputsConfig`.
        progress: a tqdm bar over cases.

    Returns:
        The summary (JSON-serialisable, no per-window records): ``config, methods, systems`` (per suite),
        ``windows`` (per suite), ``gap``, ``channel`` and ``units`` (per method, see :func:`summarise_gap_suite`,
        :func:`summarise_channel_suite` and :func:`summarise_unit_suite`), ``wall_s``.
    """
    from tqdm.auto import tqdm

    cfg = config or RealInputsConfig()
    T, H = cfg.context_length, cfg.prediction_length
    gap_systems = GAP_SYSTEMS[: cfg.systems]
    channel_systems = THREE_CHANNEL_SYSTEMS[: min(cfg.systems, len(THREE_CHANNEL_SYSTEMS))]
    g_cases, c_cases = gap_cases(cfg.quick), channel_cases(cfg.quick, cfg.copies)
    u_cases = unit_cases(cfg.quick)
    most = (
        max(c.count for c in c_cases if c.kind == "stack") if any(c.kind == "stack" for c in c_cases) else 1
    )
    pool_names = list(dict.fromkeys([*channel_systems, *THREE_CHANNEL_SYSTEMS]))
    pool_names = pool_names[: max(len(channel_systems), most)]
    trajectories = load_trajectories(list(dict.fromkeys([*gap_systems, *pool_names])), cfg.cache_dir)
    gap_windows = draw_windows(
        {s: trajectories[s] for s in gap_systems}, cfg.windows_per_system, T, H, cfg.seed
    )
    channel_windows = draw_windows(
        {s: trajectories[s] for s in channel_systems}, cfg.windows_per_system, T, H, cfg.seed
    )
    pool = {s: trajectories[s] for s in pool_names}
    bar = tqdm(
        total=len(g_cases) + len(c_cases) + len(u_cases), desc="real-input cases", disable=not progress
    )

    def tick(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        bar.update()

    t0 = time.perf_counter()
    gap_records = run_gap_suite(methods, gap_windows, g_cases, cfg.seed, tick)
    t1 = time.perf_counter()
    channel_records = run_channel_suite(methods, channel_windows, pool, c_cases, cfg.seed, tick)
    t2 = time.perf_counter()
    unit_records = run_unit_suite(methods, gap_windows, u_cases, cfg.seed, tick)
    t3 = time.perf_counter()
    bar.close()
    return {
        "config": asdict(cfg),
        "methods": list(methods),
        "systems": {"gap": list(gap_systems), "channel": list(channel_systems), "pool": pool_names},
        "windows": {"gap": len(gap_windows), "channel": len(channel_windows), "units": len(gap_windows)},
        "gap": summarise_gap_suite(gap_records, cfg.ratio_limit),
        "channel": summarise_channel_suite(channel_records, cfg.ratio_limit),
        "units": summarise_unit_suite(unit_records),
        "wall_s": {"gap": round(t1 - t0, 1), "channel": round(t2 - t1, 1), "units": round(t3 - t2, 1)},
    }


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def summary_markdown(summary: dict[str, Any], command: str | None = None) -> str:
    """The summary of :func:`run_real_inputs` as a short Markdown note: headline per method, then one table
    per suite (rows: cases; columns: per method)."""
    cfg, methods = summary["config"], summary["methods"]
    limit = cfg["ratio_limit"]
    lines = [
        "# Real inputs: gaps, extra channels and units",
        "",
        f"Held-out systems, context {cfg['context_length']}, horizon {cfg['prediction_length']}, "
        f"{cfg['windows_per_system']} windows per system, seed {cfg['seed']}"
        + (", quick case lists" if cfg["quick"] else "")
        + f". Gap suite: {summary['windows']['gap']} windows of {', '.join(summary['systems']['gap'])}. "
        f"Channel suite: {summary['windows']['channel']} windows of {', '.join(summary['systems']['channel'])}; "
        f"stacking pool {', '.join(summary['systems']['pool'])}. Errors: MAE over steps and channels in the "
        "clean context's per-channel stds; cells are medians over windows.",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        "## Headline",
        "",
        "| method | gap: worst median error/mean-forecast | gap: out of bounds | "
        "gap: Spearman(missing, error) | gap: bin medians monotone | channels: worst median ratio | "
        "units: largest deviation |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        g, c, u = summary["gap"][m], summary["channel"].get(m, {}), summary["units"][m]
        lines.append(
            f"| {m} | {_f(g['worst_median_ratio'])} ({g['worst_case']}) | {g['out_of_bounds']}/{g['forecasts']} | "
            f"{_f(g['spearman'])} | {'yes' if g['monotone'] else 'no'} | "
            f"{_f(c.get('worst_median_ratio', math.nan))} ({c.get('worst_case', '')}) | "
            f"{u['largest_deviation']:.2g} ({u['worst_case']}) |"
        )
    lines += [
        "",
        f"Acceptance (issue 16): gap ratio <= {limit:g}, no forecast out of bounds; channel ratio <= {limit:g}.",
        "",
    ]
    lines += [
        "## Gap suite",
        "",
        "Per method: median error / median mean-forecast error / median ratio; "
        "`oob`: forecasts out of [min - range, max + range].",
        "",
    ]
    head = ["case", "missing", *methods, "oob"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = {m: {c["case"]: c for c in summary["gap"][m]["cases"]} for m in methods}
    for case in rows[methods[0]]:
        cells = [case, f"{rows[methods[0]][case]['missing']:.3f}"]
        for m in methods:
            c = rows[m][case]
            cells.append(f"{_f(c['median_error'])} / {_f(c['median_mean_error'])} / {_f(c['median_ratio'])}")
        cells.append(", ".join(str(rows[m][case]["out_of_bounds"]) for m in methods))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Channel suite",
        "",
        "Per method: median ratio, error with extras / error alone, both floored at "
        f"{ALONE_FLOOR:g} context stds [75th percentile]; the raw ratio's median; the median error on the system's own "
        "channels (alone: the system's error).",
        "",
    ]
    head = ["case", "extra channels", *methods]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    crow = {m: {c["case"]: c for c in summary["channel"][m]["cases"]} for m in summary["channel"]}
    for case, c0 in crow[methods[0]].items():
        cells = [case, str(c0["extra_channels"])]
        for m in methods:
            c = crow[m][case]
            cells.append(
                f"{_f(c['median_ratio'])} [{_f(c['q75_ratio'])}], raw {c['median_raw_ratio']:.3g}, "
                f"err {c['median_error']:.2g}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Unit suite",
        "",
        "Per method: the median and largest difference, over windows, between the forecast in other units "
        "(mapped back) and the forecast in the units given, in context stds; the median error in other units "
        "(in the units given).",
        "",
    ]
    head = ["case", *methods]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    urow = {m: {c["case"]: c for c in summary["units"][m]["cases"]} for m in methods}
    for case in urow[methods[0]]:
        cells = [case]
        for m in methods:
            c = urow[m][case]
            cells.append(
                f"{c['median_deviation']:.2g} / {c['max_deviation']:.2g}; err {c['median_error']:.2g} "
                f"({c['median_given_error']:.2g})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    wall = summary["wall_s"]
    lines += [
        "",
        f"Wall time: gap suite {wall['gap']} s, channel suite {wall['channel']} s, unit suite {wall['units']} s.",
        "",
    ]
    return "\n".join(lines)


def plot_real_inputs(summary: dict[str, Any], path: str | Path) -> Path:
    """Two panels: gap suite, median error against the fraction missing (per case and method, the mean
    forecast dashed); channel suite, median error ratio against the number of extra channels.

    Returns:
        ``path`` (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from panda_fm.data.io import atomic_path

    methods = summary["methods"]
    cmap = plt.get_cmap("tab10")
    colour = {m: cmap(i % 10) for i, m in enumerate(methods)}
    marker = {
        ("contiguous", "one"): "o",
        ("contiguous", "all"): "s",
        ("scattered", "one"): "^",
        ("scattered", "all"): "v",
        ("clean", ""): "*",
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 6))
    for m in methods:
        cases = sorted(summary["gap"][m]["cases"], key=lambda c: c["missing"])
        for key, mk in marker.items():
            sel = [c for c in cases if (c["kind"], c["channels"]) == key]
            if sel:
                ax1.scatter(
                    [c["missing"] for c in sel],
                    [c["median_error"] for c in sel],
                    color=colour[m],
                    marker=mk,
                    s=22,
                    label=f"{m}" if key == ("clean", "") else None,
                )
        ax1.plot(
            [c["missing"] for c in cases],
            [c["median_mean_error"] for c in cases],
            color="0.6",
            lw=0.8,
            ls="--",
            label="context mean" if m == methods[0] else None,
        )
    for key, mk in marker.items():
        ax1.scatter([], [], color="0.3", marker=mk, s=22, label=" ".join(key).strip())
    ax1.set_xlabel("fraction of context entries missing (median over windows)")
    ax1.set_ylabel(f"median MAE at {summary['config']['prediction_length']} steps (context stds)")
    ax1.set_yscale("log")
    ax1.set_title("gap suite", fontsize=10)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    styles = {"noise": "-", "others": "--", "copies": ":"}
    for m in methods:
        cases = summary["channel"].get(m, {}).get("cases", [])
        for kind, ls in styles.items():
            sel = sorted(
                (c for c in cases if (c["kind"] == "noise" and kind == "noise") or c["source"] == kind),
                key=lambda c: c["extra_channels"],
            )
            if sel:
                ax2.plot(
                    [c["extra_channels"] for c in sel],
                    [c["median_ratio"] for c in sel],
                    ls=ls,
                    marker="o",
                    ms=3,
                    color=colour[m],
                    label=f"{m}, {'noise' if kind == 'noise' else 'stacked ' + kind}",
                )
    ax2.axhline(summary["config"]["ratio_limit"], color="0.4", lw=0.8, ls="-.", label="limit")
    ax2.axhline(1.0, color="0.7", lw=0.6)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    extras = sorted(
        {c["extra_channels"] for m in methods for c in summary["channel"].get(m, {}).get("cases", [])} - {0}
    )
    ax2.set_xticks(extras, [str(e) for e in extras])
    ax2.minorticks_off()
    ax2.set_xlabel("extra channels")
    ax2.set_ylabel(f"median error ratio, with extras / alone (floored at {ALONE_FLOOR:g})")
    ax2.set_title("channel suite", fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def write_real_inputs(
    summary: dict[str, Any], out_dir: str | Path, command: str | None = None
) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.json`` and ``real_inputs.png`` into ``out_dir`` (created), each atomically.

    Args:
        summary: from :func:`run_real_inputs`.
        out_dir: output folder.
        command: the command line, quoted in the Markdown.

    Returns:
        ``{"markdown": path, "json": path, "figure": path}``.
    """
    from panda_fm.data.io import atomic_path
    from panda_fm.eval.report import json_default

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "summary.md", "json": out / "summary.json", "figure": out / "real_inputs.png"}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=json_default, allow_nan=True))
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(summary_markdown(summary, command))
    plot_real_inputs(summary, paths["figure"])
    return paths
