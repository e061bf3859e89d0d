"""The stress suite: held-out data unlike the training data, as a user would bring it.

Every set is drawn from systems never used in training, with fixed seeds, and is written once as an ordinary
dataset directory (split ``"test"``) under a cache root, so :func:`panda_fm.eval.runner.evaluate` reads it
like any test split. Each set may also change how the windows are read (:class:`StressSet`: the context
length, observation noise).

| set | what | systems |
|---|---|---|
| ``clean`` | no stress: the reference condition, fully observed, 512-step contexts | held-out founders |
| ``observed-x0`` | the first coordinate only | held-out founders |
| ``projected`` | a random linear projection of the standardised state to 1 or 2 channels | held-out founders |
| ``coarse-4x`` | every 4th sample: 25 per dominant period | held-out founders |
| ``fine-4x`` | 400 samples per dominant period | held-out founders |
| ``context-128``, ``-192``, ``-256`` | contexts of 128, 192, 256 steps | held-out founders |
| ``noise-10``, ``noise-20`` | observation noise of 10%, 20% of each channel's context std | held-out founders |
| ``spatiotemporal`` | Lorenz-96 (32 sites, F = 8) and Kuramoto-Sivashinsky (L = 22, 32 grid points) | integrated here |
| ``spatiotemporal-sites`` | the same fields at every 4th site (8 channels) | integrated here |
| ``nonpolynomial`` | held-out founders with trigonometric, exponential or rational terms, and the Mackey-Glass delay equation | both |
| ``recordings`` | real recordings: monthly sunspot numbers, half-hourly electricity demand, weekly CO2 at Mauna Loa, a share's daily open/high/low/close prices, a spiking neuron's membrane potential | the example data shipped with ``pmdarima``, ``statsmodels`` (``pip install "panda-fm[recordings]"``) and ``matplotlib`` |

The held-out founders (:data:`panda_fm.systems.founders.HELD_OUT`, those in the founder catalogue) are
integrated with panda_fm's integrator at dysts' curated parameters and initial conditions (100 samples per
dominant period unless the set says otherwise, 4096 samples after a 4-period transient).

Shape letters: K trajectories, T time, D state dimension, C channels.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from panda_fm.eval.testsets import _exclusive
from panda_fm.systems.founders import HELD_OUT, load_founders
from panda_fm.systems.store import DatasetWriter, open_dataset

if TYPE_CHECKING:
    from panda_fm.eval.runner import EvalConfig

logger = logging.getLogger(__name__)

VERSION = 1  # bump when a set's data changes: the cache folder is named after it
N_STEPS = 4096
# the held-out founders whose vector fields are not polynomial (trigonometric, exponential, rational terms)
NONPOLYNOMIAL = ("ChenLee", "DoublePendulum", "Duffing", "HastingsPowell", "JerkCircuit", "OscillatingFlow")

# the packages whose example data the recordings set reads (besides matplotlib, a dependency)
RECORDINGS_REQUIRE = ("pmdarima", "statsmodels")

Trajectories = dict[str, tuple[np.ndarray, float]]  # system id -> ((K, T, C) trajectories, sample spacing)


@dataclass(frozen=True)
class StressSet:
    """One set of the suite.

    Attributes:
        name: the set's name.
        description: one line for reports.
        build: ``() -> {system id: ((K, T, C), dt)}``, deterministic.
        context_length: the context each method sees.
        noise: observation noise, a fraction of each channel's context std.
        windows_scale: windows per system, as a multiple of the run's setting (for sets of few systems).
        data: the folder of the trajectories, shared by sets that read the same ones (default: ``name``).
        requires: optional packages the set's data come from (:func:`missing_requirements`).
    """

    name: str
    description: str
    build: Callable[[], Trajectories]
    context_length: int = 512
    noise: float = 0.0
    windows_scale: int = 1
    data: str = ""  # the dataset folder, when sets share trajectories (default: the set's name)
    requires: tuple[str, ...] = ()


# --- trajectories ------------------------------------------------------------------------------------


def held_out_founders() -> list[str]:
    """The held-out founders that the founder catalogue holds (those panda_fm's integrator runs)."""
    catalogue = load_founders()
    return sorted(name for name in HELD_OUT if name in catalogue)


@cache  # the founder sets read the same trajectories (not modified by anyone: treat as read-only)
def founder_trajectories(
    names: tuple[str, ...] | None = None,
    pts_per_period: float = 100.0,
    n_steps: int = N_STEPS,
    every: int = 1,
) -> Trajectories:
    """Held-out founders at their curated parameters and initial conditions, one trajectory each.

    Args:
        names: founders (default: :func:`held_out_founders`).
        pts_per_period: samples per dominant period of the integration.
        n_steps: samples kept (after taking every ``every``-th).
        every: keep every ``every``-th sample (coarser sampling).
    """
    from panda_fm.systems.integrate import IntegratorConfig, integrate_batch
    from panda_fm.systems.skew import founder_genome, genome_field, postprocess_genome, wrapped_mask

    catalogue = load_founders()
    out: Trajectories = {}
    for name in names or held_out_founders():
        founder, genome = catalogue[name], founder_genome(name)
        dt = founder.period / pts_per_period
        res = integrate_batch(
            genome_field([genome]),
            np.asarray(founder.ic, dtype=float)[None],
            dt,
            n_steps * every,
            transient=4 * founder.period,
            config=IntegratorConfig(rtol=1e-9, atol=1e-10, straggler_factor=None),
            checked=~wrapped_mask(genome),
            max_steps=10**8,
        )
        if not res.ok[0]:
            logger.warning("%s did not integrate (%s); left out of the stress suite", name, res.reason[0])
            continue
        traj = postprocess_genome(genome, res.trajectories[0])[::every]
        out[name] = (traj[None], dt * every)
    return out


def _observed(
    build: Callable[[], Trajectories], operator: Callable[[str, np.ndarray], np.ndarray]
) -> Trajectories:
    return {sid: (operator(sid, traj), dt) for sid, (traj, dt) in build().items()}


def _first_coordinate(sid: str, traj: np.ndarray) -> np.ndarray:
    return traj[..., :1]


def _alternate(sid: str, traj: np.ndarray) -> np.ndarray:
    return traj[..., ::2]


def _projection(sid: str, traj: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """A random projection, drawn from the system's name, of the state standardised per coordinate to 1 or 2
    channels (2 for every other system of ``names`` in alphabetical order, default the held-out founders: the
    set holds both)."""
    rng = np.random.default_rng([VERSION, *map(ord, sid)])
    names = sorted(names) if names is not None else held_out_founders()
    channels = 1 + (names.index(sid) % 2 if sid in names else 0)
    z = (traj - traj.mean(axis=1, keepdims=True)) / traj.std(axis=1, keepdims=True)
    w = rng.standard_normal((traj.shape[-1], channels))
    return z @ (w / np.linalg.norm(w, axis=0))


def lorenz96(
    n_sites: int = 32,
    forcing: float = 8.0,
    n_ics: int = 2,
    n_steps: int = N_STEPS,
    dt: float = 0.01,
    every: int = 1,
) -> np.ndarray:
    """Lorenz-96 ``dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`` on a ring, RK4 steps of ``dt``,
    sampled every ``every`` steps after 2000 transient steps: ``(K, T, n_sites)``."""
    rng = np.random.default_rng([VERSION, 96])
    x = forcing + rng.standard_normal((n_ics, n_sites))

    def field(x: np.ndarray) -> np.ndarray:
        return (np.roll(x, -1, -1) - np.roll(x, 2, -1)) * np.roll(x, 1, -1) - x + forcing

    out = np.empty((n_ics, n_steps, n_sites))
    for i in range(2000 + n_steps * every):
        k1 = field(x)
        k2 = field(x + 0.5 * dt * k1)
        k3 = field(x + 0.5 * dt * k2)
        k4 = field(x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        j = i - 2000
        if j >= 0 and j % every == 0:
            out[:, j // every] = x
    return out


def kuramoto_sivashinsky(
    length: float = 22.0,
    n_grid: int = 64,
    n_ics: int = 2,
    n_steps: int = N_STEPS,
    dt: float = 0.25,
    every: int = 1,
) -> np.ndarray:
    """Kuramoto-Sivashinsky ``u_t = -u u_x - u_xx - u_xxxx`` on a periodic domain of ``length``, pseudo-spectral
    on ``n_grid`` points with exponential time differencing (ETDRK4, the coefficients by contour integrals),
    sampled every ``every`` steps after 1000 time units: ``(K, T, n_grid / 2)`` (every other grid point)."""
    rng = np.random.default_rng([VERSION, 4])
    k = 2 * np.pi / length * np.fft.rfftfreq(n_grid, d=1.0 / n_grid)  # (n_grid / 2 + 1,)
    lin = k**2 - k**4
    e, e2 = np.exp(dt * lin), np.exp(dt * lin / 2)
    roots = np.exp(1j * np.pi * (np.arange(1, 17) - 0.5) / 16)  # contour points around each dt * lin
    lr = dt * lin[:, None] + roots[None, :]
    q = dt * np.real(np.mean((np.exp(lr / 2) - 1) / lr, axis=1))
    f1 = dt * np.real(np.mean((-4 - lr + np.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3, axis=1))
    f2 = dt * np.real(np.mean((2 + lr + np.exp(lr) * (-2 + lr)) / lr**3, axis=1))
    f3 = dt * np.real(np.mean((-4 - 3 * lr - lr**2 + np.exp(lr) * (4 - lr)) / lr**3, axis=1))
    g = -0.5j * k

    def nonlinear(v: np.ndarray) -> np.ndarray:
        return g * np.fft.rfft(np.fft.irfft(v, n=n_grid) ** 2)

    x = np.linspace(0, length, n_grid, endpoint=False)
    phases = rng.uniform(0, 2 * np.pi, (n_ics, 1))
    u = 0.1 * np.cos(2 * np.pi * x / length + phases) * (1 + np.sin(4 * np.pi * x / length + phases))
    v = np.fft.rfft(u)
    burn = int(round(1000 / dt))
    out = np.empty((n_ics, n_steps, n_grid // 2))
    for i in range(burn + n_steps * every):
        nv = nonlinear(v)
        a = e2 * v + q * nv
        na = nonlinear(a)
        b = e2 * v + q * na
        nb = nonlinear(b)
        c = e2 * a + q * (2 * nb - nv)
        nc = nonlinear(c)
        v = e * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3
        j = i - burn
        if j >= 0 and j % every == 0:
            out[:, j // every] = np.fft.irfft(v, n=n_grid)[:, ::2]
    return out


def mackey_glass(
    n_ics: int = 2, n_steps: int = N_STEPS, tau: float = 17.0, dt: float = 0.05, every: int = 5
) -> np.ndarray:
    """The Mackey-Glass delay equation ``x' = 0.2 x(t - tau) / (1 + x(t - tau)^10) - 0.1 x`` from constant
    histories, RK4 with the delayed value interpolated linearly at half steps, sampled every ``every`` steps
    after 2000 time units: ``(K, T, 1)``."""
    lag = int(round(tau / dt))
    burn = int(round(2000 / dt))
    total = burn + n_steps * every
    x = np.empty((n_ics, lag + total + 1))
    x[:, : lag + 1] = np.linspace(0.8, 1.2, n_ics)[:, None]

    def field(now: np.ndarray, delayed: np.ndarray) -> np.ndarray:
        return 0.2 * delayed / (1 + delayed**10) - 0.1 * now

    for i in range(lag, lag + total):
        d0, d1 = x[:, i - lag], x[:, i - lag + 1]
        dh = 0.5 * (d0 + d1)
        k1 = field(x[:, i], d0)
        k2 = field(x[:, i] + 0.5 * dt * k1, dh)
        k3 = field(x[:, i] + 0.5 * dt * k2, dh)
        k4 = field(x[:, i] + dt * k3, d1)
        x[:, i + 1] = x[:, i] + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x[:, lag + burn + 1 :: every][:, :n_steps, None]


def _spatiotemporal(sites: bool) -> Trajectories:
    """Lorenz-96 (32 sites, F = 8, dt 0.01) and Kuramoto-Sivashinsky (L = 22, 32 points, dt 0.25): the full
    fields, or every 4th site."""
    out = {}
    for name, make, dt in (
        ("Lorenz96-32", lorenz96, 0.01),
        ("KuramotoSivashinsky-22", kuramoto_sivashinsky, 0.25),
    ):
        traj = make()
        out[name + ("-sites" if sites else "")] = (traj[..., ::4] if sites else traj, dt)
    return out


def _nonpolynomial() -> Trajectories:
    out = founder_trajectories(tuple(n for n in NONPOLYNOMIAL if n in held_out_founders()))
    out["MackeyGlass-delay"] = (mackey_glass(), 0.25)
    return out


def _recordings() -> Trajectories:
    """Real recordings from the example data of ``pmdarima``, ``statsmodels`` and ``matplotlib`` (shipped inside
    the packages, read offline), one trajectory each, in sample units (``dt`` 1): monthly mean sunspot numbers
    (1749-1983, 2820 months), half-hourly electricity demand (Taylor's, 12 weeks: 4032), weekly CO2 at Mauna Loa
    (1958-2001, 2284 weeks; its 59 missing weeks filled linearly), Microsoft's daily open, high, low and close
    prices (1986-2017, 7983 days, 4 channels) and a neuron's membrane potential while a current step drives it
    to spike (matplotlib's ``membrane.dat``: the 10000 samples with the current on)."""
    absent = missing_requirements(RECORDINGS_REQUIRE)
    if absent:
        raise ImportError(
            f"the recordings set reads the example data of {', '.join(absent)}: "
            'pip install "panda-fm[recordings]"'
        )
    import matplotlib.cbook
    import pmdarima.datasets as pm
    import statsmodels.api as sm

    co2 = sm.datasets.co2.load_pandas().data["co2"].interpolate(limit_direction="both").to_numpy()
    membrane = np.fromfile(
        matplotlib.cbook.get_sample_data("membrane.dat", asfileobj=False), dtype=np.float32
    )
    series = {
        "sunspots-monthly": pm.load_sunspots()[:, None],
        "electricity-halfhourly": pm.load_taylor()[:, None],
        "co2-weekly": co2[:, None],
        "msft-daily-ohlc": pm.load_msft()[["Open", "High", "Low", "Close"]].to_numpy(),
        "neuron-membrane": membrane[1000:11000, None],
    }
    return {name: (np.asarray(x, dtype=np.float64)[None], 1.0) for name, x in series.items()}


def missing_requirements(packages: Iterable[str]) -> list[str]:
    """Those of ``packages`` that cannot be imported here."""
    import importlib.util

    return [name for name in packages if importlib.util.find_spec(name) is None]


def dominant_period(traj: np.ndarray, dt: float) -> float:
    """The period of the largest peak of the first channel's periodogram (first trajectory), in time units."""
    x = traj[0, :, 0] - traj[0, :, 0].mean()
    power = np.abs(np.fft.rfft(x)) ** 2
    freq = np.fft.rfftfreq(len(x), d=dt)
    return float(1.0 / freq[1 + np.argmax(power[1:])])


#: Partial observations a dataset may be seen through (:func:`observed_dataset`): ``first`` and ``projection`` as
#: the stress sets ``observed-x0`` and ``projected`` see the held-out founders; ``alternate`` every other coordinate
#: of the systems of six or more, three channels or more of a state at least twice as large.
OBSERVATIONS = ("first", "projection", "alternate")
#: the fewest state coordinates a system needs to be seen through ``alternate``
ALTERNATE_MIN_DIM = 6


def observed_dataset(source: str | Path, out: str | Path, how: str) -> Path:
    """Build (or reuse) at ``out`` a copy of the dataset ``source`` seen partially: ``"first"`` keeps each
    system's first coordinate, ``"projection"`` a random projection of its standardised state to 1 or 2 channels
    (2 for every other system in alphabetical order), ``"alternate"`` the coordinates 0, 2, 4, ... of each system
    of at least :data:`ALTERNATE_MIN_DIM` coordinates (the smaller systems are left out, and the count logged).
    Records and splits are kept; written whole or not at all. Used to calibrate on partially observed systems of a
    calibration split (``benchmarks/probabilistic.py --observe``)."""
    if how not in OBSERVATIONS:
        raise ValueError(f"unknown observation {how!r}; choose from {', '.join(OBSERVATIONS)}")
    data = open_dataset(source)
    records = list(data)
    if how == "alternate":  # a smaller system would leave a view of one or two channels
        large = [r for r in records if r["shape"][-1] >= ALTERNATE_MIN_DIM]
        if not large:
            raise ValueError(
                f"no system of {source} has {ALTERNATE_MIN_DIM} or more coordinates, and 'alternate' sees only "
                "such systems (through every other coordinate); pass a dataset with larger systems, such as a "
                "generated one"
            )
        if len(large) < len(records):
            logger.info(
                "%d systems of fewer than %d coordinates left out of %r",
                len(records) - len(large),
                ALTERNATE_MIN_DIM,
                how,
            )
        records = large
    operator = {
        "first": _first_coordinate,
        "projection": partial(_projection, names=data.ids()),
        "alternate": _alternate,
    }[how]

    def systems() -> Iterator[tuple[dict, np.ndarray]]:
        for record in records:
            sid = record["id"]
            traj = np.asarray(data.load(sid), dtype=float)
            yield (
                {k: v for k, v in record.items() if k not in ("shard", "offset", "shape")},
                operator(sid, traj),
            )

    meta = {"kind": "observed dataset", "source": str(source), "observe": how, "version": VERSION}
    return _build_once(Path(out), meta, systems)


def _build_once(root: Path, metadata: dict, systems: Callable[[], Iterable[tuple[dict, np.ndarray]]]) -> Path:
    """Write the dataset ``root`` from ``systems()`` (records and trajectories) unless it is there: under a lock,
    into a temporary folder renamed when whole."""
    with _exclusive(root):
        if (root / "manifest.jsonl").exists():
            return root
        tmp = root.with_name(root.name + ".tmp")
        if tmp.exists():  # left by an interrupted build
            shutil.rmtree(tmp)
        with DatasetWriter(tmp, metadata=metadata) as writer:
            for record, traj in systems():
                writer.add(record, traj)
        tmp.rename(root)  # whole or not at all
    return root


def stress_sets() -> dict[str, StressSet]:
    """Every set of the suite, by name, in report order."""
    base = partial(founder_trajectories)
    sets = [
        StressSet("clean", "as integrated (the reference condition)", base, data="founders"),
        StressSet("observed-x0", "first coordinate only", partial(_observed, base, _first_coordinate)),
        StressSet("projected", "random projection to 1-2 channels", partial(_observed, base, _projection)),
        StressSet("coarse-4x", "25 samples per period", partial(founder_trajectories, every=4)),
        StressSet("fine-4x", "400 samples per period", partial(founder_trajectories, pts_per_period=400.0)),
        *(
            StressSet(f"context-{n}", f"{n}-step contexts", base, context_length=n, data="founders")
            for n in (128, 192, 256)
        ),
        *(
            StressSet(f"noise-{p}", f"{p}% observation noise", base, noise=p / 100, data="founders")
            for p in (10, 20)
        ),
        StressSet(
            "spatiotemporal",
            "Lorenz-96 and Kuramoto-Sivashinsky, 32 channels",
            partial(_spatiotemporal, False),
            windows_scale=10,
        ),
        StressSet(
            "spatiotemporal-sites",
            "the same, 8 of the 32 sites",
            partial(_spatiotemporal, True),
            windows_scale=10,
        ),
        StressSet("nonpolynomial", "non-polynomial flows and a delay equation", _nonpolynomial),
        StressSet(
            "recordings",
            "real recordings: sunspots, electricity demand, CO2, share prices, a neuron",
            _recordings,
            windows_scale=10,
            requires=RECORDINGS_REQUIRE,
        ),
    ]
    return {s.name: s for s in sets}


def available_sets() -> list[str]:
    """The sets whose data can be read here (their :attr:`StressSet.requires` importable), in report order; the
    others are named in a warning."""
    names = []
    for name, spec in stress_sets().items():
        absent = missing_requirements(spec.requires)
        if absent:
            logger.warning("stress set %s left out: it needs %s", name, ", ".join(absent))
        else:
            names.append(name)
    return names


def stress_dataset(name: str, cache_dir: str | Path) -> Path:
    """Build (or reuse) the dataset directory of the set ``name`` under ``cache_dir``.

    Sets that read the same trajectories differently (the context and noise sets) share one directory.
    """
    sets = stress_sets()
    if name not in sets:
        raise ValueError(f"unknown stress set {name!r}; choose from {', '.join(sets)}")
    build, data_name = sets[name].build, sets[name].data or name

    def systems() -> Iterator[tuple[dict, np.ndarray]]:
        for sid, (traj, dt) in build().items():
            record = {"id": sid, "split": "test", "dt": float(dt), "period": dominant_period(traj, dt)}
            yield {**record, "founders": [sid]}, traj

    meta = {"kind": "stress set", "set": data_name, "version": VERSION}
    return _build_once(Path(cache_dir) / f"stress-v{VERSION}" / data_name, meta, systems)


# --- evaluation ----------------------------------------------------------------------------------------

HORIZONS = (64, 128, 256)
SUMMARY_METRICS = ("smape@64", "smape@128", "smape@256", "mae@128", "vpt")
PAIRED_METRIC = "smape@128"  # kept per window, for paired comparisons (paired_ratio_ci)
# the margin a model is asked for: a median sMAPE@128 at least 10% below the best classical baseline's
TARGET_RATIO = 0.9
NEGLIGIBLE = 1.0  # sMAPE below which two medians are both near-perfect and their ratio is not judged


def bootstrap_median_ci(values: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the median of ``values`` (windows resampled with
    replacement, ``n_resamples`` times, with a fixed seed)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    medians = np.median(v[rng.integers(0, v.size, (n_resamples, v.size))], axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return float(lo), float(hi)


def paired_ratio_ci(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """``median(a) / median(b)`` of two methods scored on the same windows, and its 95% paired-bootstrap
    interval (the windows resampled with replacement, both methods' values of a window kept together).

    Pairing removes the spread between windows that both methods share (an easy system is easy for both), so
    the interval is narrower than two separate intervals of the medians suggest. Windows where either value
    is not finite are left out; NaNs where nothing is left.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same windows, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size == 0 or np.median(b) <= 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, (n_resamples, a.size))
    den = np.median(b[idx], axis=1)
    ratios = np.median(a[idx], axis=1) / np.where(den > 0, den, np.nan)
    lo, hi = np.nanpercentile(ratios, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


def stress_config(spec: StressSet, windows_per_system: int, seed: int, batch_size: int = 32) -> EvalConfig:
    """How the windows of a set are drawn and read (its context length and noise; horizons 64, 128, 256):
    every benchmark of the suite draws the same windows from it for the same ``windows_per_system`` and ``seed``."""
    from panda_fm.eval.runner import EvalConfig

    return EvalConfig(
        horizons=HORIZONS,
        context_length=spec.context_length,
        windows_per_system=windows_per_system * spec.windows_scale,
        noise=(spec.noise,),
        rollout=0,
        seed=seed,
        batch_size=batch_size,
    )


def evaluate_stress(
    methods: list,
    set_names: list[str] | None = None,
    cache_dir: str | Path | None = None,
    windows_per_system: int = 5,
    seed: int = 0,
    batch_size: int = 32,
) -> dict:
    """Score ``methods`` (forecasters with distinct names) on the sets ``set_names`` of the suite (default: those
    whose data can be read here, :func:`available_sets`).

    Each set is evaluated by :func:`panda_fm.eval.runner.evaluate` at horizons 64, 128 and 256 with its own
    context length and noise; a method that refuses a context as too short is scored as the mean forecast
    there and counted.

    Returns:
        ``{"settings": ..., "methods": [...], "sets": {name: {"description", "systems", "windows", "refused",
        "metrics": {method: {metric: {"median", "q25", "q75", "ci95"}}},
        "paired": {method: [sMAPE@128 per window, the same windows in the same order for every method]}}}}``.
    """
    from panda_fm.eval.runner import evaluate
    from panda_fm.systems.store import open_dataset

    sets = stress_sets()
    chosen = available_sets() if set_names is None else list(set_names)
    unknown = [n for n in chosen if n not in sets]
    if unknown:
        raise ValueError(f"unknown stress sets {unknown}; choose from {', '.join(sets)}")
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "panda_fm"
    names = [m.name for m in methods]
    report: dict = {
        "settings": {"windows_per_system": windows_per_system, "seed": seed, "horizons": list(HORIZONS)},
        "methods": names,
        "sets": {},
    }
    for name in chosen:
        spec = sets[name]
        config = stress_config(spec, windows_per_system, seed, batch_size)
        logger.info("stress set %s", name)
        result = evaluate(methods, open_dataset(stress_dataset(name, cache)), config).report
        rows = result["per_window"]
        per_method, paired = {}, {}
        for method in names:
            mine = [r["metrics"] for r in rows if r["method"] == method]
            paired[method] = [round(float(m[PAIRED_METRIC]), 4) for m in mine]
            per_method[method] = {}
            for metric in SUMMARY_METRICS:
                values = np.array([m[metric] for m in mine], dtype=float)
                q25, q50, q75 = np.nanpercentile(values, [25, 50, 75])
                per_method[method][metric] = {
                    "median": float(q50),
                    "q25": float(q25),
                    "q75": float(q75),
                    "ci95": bootstrap_median_ci(values, seed=seed),
                }
        report["sets"][name] = {
            "description": spec.description,
            "context_length": spec.context_length,
            "noise": spec.noise,
            "systems": result["dataset"]["systems"],
            "windows": result["dataset"]["windows"],
            "refused": result["refused"][str(float(spec.noise))],
            "metrics": per_method,
            "paired": paired,
        }
    return report


def stress_markdown(report: dict, metric: str = "smape@128") -> str:
    """The summary table (set x method: median ``metric`` and its bootstrap 95% interval; the best method
    of each set in bold), then one table per set (every summary metric, median [25th, 75th percentile])."""
    methods = report["methods"]
    lines = [
        f"## Summary: median {metric} [bootstrap 95% interval of the median]",
        "",
        "| set | windows | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for name, s in report["sets"].items():
        medians = {m: s["metrics"][m][metric]["median"] for m in methods}
        best = min(medians, key=lambda m: medians[m] if np.isfinite(medians[m]) else np.inf)
        cells = []
        for m in methods:
            r = s["metrics"][m][metric]
            cell = f"{r['median']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]"
            cells.append(f"**{cell}**" if m == best else cell)
        lines.append(f"| {name} | {s['windows']} | " + " | ".join(cells) + " |")
    for name, s in report["sets"].items():
        lines += [
            "",
            f"### {name}: {s['description']} ({s['systems']} systems, {s['windows']} windows, context "
            f"{s['context_length']})",
            "",
            "| method | " + " | ".join(SUMMARY_METRICS) + " | refused |",
            "|---|" + "---|" * (len(SUMMARY_METRICS) + 1),
        ]
        for m in methods:
            r = s["metrics"][m]
            cells = [f"{r[k]['median']:.2f} [{r[k]['q25']:.2f}, {r[k]['q75']:.2f}]" for k in SUMMARY_METRICS]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {s['refused'].get(m, 0)} |")
    return "\n".join(lines) + "\n"


def comparison_markdown(report: dict, method: str, baselines: list[str], seed: int = 0) -> str:
    """A table per set of ``method`` against the best of ``baselines`` (lowest median sMAPE@128): the ratio of
    their medians with its paired-bootstrap 95% interval (:func:`paired_ratio_ci`), and whether the ratio is
    at most :data:`TARGET_RATIO` (not judged where both medians are below :data:`NEGLIGIBLE`)."""
    missing = [m for m in [method, *baselines] if m not in report["methods"]]
    if missing:
        raise ValueError(f"methods {missing} are not in the report (it has {report['methods']})")
    lines = [
        f"## {method} against the best baseline: ratio of median {PAIRED_METRIC} [paired bootstrap 95% interval]",
        "",
        f"| set | {method} | best baseline | ratio | {1 - TARGET_RATIO:.0%} lower |",
        "|---|---|---|---|---|",
    ]
    for name, s in report["sets"].items():
        medians = {m: s["metrics"][m][PAIRED_METRIC]["median"] for m in baselines}
        best = min(medians, key=lambda m: medians[m] if np.isfinite(medians[m]) else np.inf)
        ratio, lo, hi = paired_ratio_ci(s["paired"][method], s["paired"][best], seed=seed)
        mine = s["metrics"][method][PAIRED_METRIC]["median"]
        verdict = "yes" if ratio <= TARGET_RATIO else "no"
        if max(mine, medians[best]) < NEGLIGIBLE:
            verdict = f"both below {NEGLIGIBLE:g}"  # a ratio of near-perfect forecasts says nothing
        lines.append(
            f"| {name} | {mine:.1f} | {medians[best]:.1f} ({best}) | "
            f"{ratio:.2f} [{lo:.2f}, {hi:.2f}] | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def merge_stress_reports(parts: list[dict]) -> dict:
    """One report from reports of the same methods and settings on different sets (a run split over
    processes), its sets in the suite's order; the parts' wall times add up."""
    first = parts[0]
    for part in parts[1:]:
        for key in ("methods", "settings"):
            if part[key] != first[key]:
                raise ValueError(
                    f"reports differ in {key}: {first[key]} and {part[key]}; merge runs of one command"
                )
    sets: dict = {}
    for part in parts:
        twice = set(sets) & set(part["sets"])
        if twice:
            raise ValueError(f"sets {sorted(twice)} are in more than one report")
        sets.update(part["sets"])
    suite = list(stress_sets())
    order = [name for name in suite if name in sets] + [name for name in sets if name not in suite]
    merged = {"settings": first["settings"], "methods": first["methods"], "sets": {k: sets[k] for k in order}}
    if all("wall_s" in part for part in parts):
        merged["wall_s"] = sum(part["wall_s"] for part in parts)
    return merged


def write_stress_report(
    report: dict,
    out: str | Path,
    command: str | None = None,
    notes: str = "",
    compare: tuple[str, list[str]] | None = None,
) -> Path:
    """``stress.md`` (:func:`stress_markdown`, headed by the command, with ``compare = (method, baselines)``
    :func:`comparison_markdown` before the summary, followed by ``notes``) and ``stress.json`` in ``out``,
    each written whole; returns the markdown's path."""
    import json

    from panda_fm.data.io import atomic_path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "stress.json") as tmp:
        tmp.write_text(json.dumps({**report, "command": command, "compare": compare}, indent=2) + "\n")
    head = "# Stress suite\n\n" + (f"`{command}`\n\n" if command else "")
    if compare is not None:
        head += comparison_markdown(report, *compare, seed=report["settings"]["seed"]) + "\n"
    with atomic_path(out / "stress.md") as tmp:
        tmp.write_text(head + stress_markdown(report) + (f"\n{notes}" if notes else ""))
    return out / "stress.md"
