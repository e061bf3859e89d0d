"""Founders: the continuous, non-delay chaotic flows of ``dysts``, and their batched vector fields.

The equations stay in dysts; this module only calls them on arrays. A founder's curated numbers (its
parameters, a point on its attractor, period, step, the RMS of its vector field) live in
``data/founders.json``, built once by :func:`build_catalogue` (``python -m panda_fm.systems.founders``).

Two calling conventions exist in dysts: most flows define a static ``_rhs(x, y, z, t, *params)`` with
parameters in sorted-name order; some override ``rhs(self, X, t)`` and read parameters from attributes.
Both accept arrays: coordinates of shape ``(A,)`` and scalar parameters of shape ``(A,)`` give the field of
``A`` members at once. Array-valued parameters are shared by all members of a batch (never mutated).
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

CATALOGUE = Path(__file__).with_name("data") / "founders.json"

#: Held-out founders (those of the published reference, docs/method.md): they and all their descendants form the test split.
HELD_OUT = frozenset(
    {
        "Bouali",
        "ChenLee",
        "CircadianRhythm",
        "Coullet",
        "DoublePendulum",
        "Duffing",
        "HastingsPowell",
        "Hopfield",
        "HyperYangChen",
        "JerkCircuit",
        "KawczynskiStrizhak",
        "LorenzStenflo",
        "MacArthur",
        "MackeyGlass",
        "OscillatingFlow",
        "QiChen",
        "Rossler",
        "SprottB",
        "SprottF",
        "SprottR",
    }
)


@dataclass(frozen=True)
class Founder:
    """One dysts flow with its curated numbers.

    Attributes:
        name: dysts class name.
        dim: state dimension D.
        params: curated parameters (scalars, or lists for array-valued ones).
        ic: a point on the attractor at the curated parameters, ``(D,)`` raw (unwrapped) coordinates.
        period: dominant period (time units), from dysts.
        dt: dysts' integration step (time units), informative only.
        split: "test" for held-out founders, else "train".
        mode: "static" (``_rhs`` static method) or "method" (``rhs`` reads attributes).
        wrapped: coordinates that dysts maps to a bounded range after integration (angles, time).
        rms: RMS of the vector field along a trajectory at the curated parameters.
        lyapunov: dysts' estimate of the largest Lyapunov exponent (1 / time unit), if any.
        points: further raw points on the attractor, ``(M, D)``, initial conditions of children.
    """

    name: str
    dim: int
    params: dict[str, Any]
    ic: tuple[float, ...]
    period: float
    dt: float
    split: str
    mode: str
    wrapped: tuple[int, ...]
    rms: float
    lyapunov: float | None
    points: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.ic) != self.dim:
            raise ValueError(f"{self.name}: ic has {len(self.ic)} entries, dimension is {self.dim}")
        if self.mode not in ("static", "method"):
            raise ValueError(f"{self.name}: mode must be 'static' or 'method', got {self.mode!r}")
        if self.split not in ("train", "test") or self.period <= 0 or self.rms <= 0:
            raise ValueError(f"{self.name}: invalid split, period or rms")

    @property
    def scalar_params(self) -> list[str]:
        """Names of the scalar parameters (the ones mutation perturbs), sorted."""
        return sorted(k for k, v in self.params.items() if np.ndim(v) == 0)


def dysts_class(name: str) -> type:
    """The dysts flow class called ``name``."""
    import dysts.flows as flows

    cls = getattr(flows, name, None)
    if cls is None or not inspect.isclass(cls):
        raise ValueError(f"{name!r} is not a dysts flow; see panda_fm.systems.founders.load_founders()")
    return cls


@cache
def _prototype(name: str) -> Any:
    """One dysts instance per class (loading metadata reads a JSON file; do it once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dysts_class(name)()


class LeafField:
    """Batched vector field of one dysts flow: ``f(t (A,), y (D, A)) -> (D, A)``.

    Args:
        name: dysts class name.
        params: parameter name -> ``(A,)`` array for scalar parameters, or the shared array value.
        mode: "static" or "method" (see :class:`Founder`).
    """

    def __init__(self, name: str, params: dict[str, Any], mode: str):
        self.name = name
        self.mode = mode
        self.params = params
        proto = _prototype(name)
        self.dim = int(proto.dimension)
        self._keys = sorted(params)
        self._batched = frozenset(k for k in params if np.ndim(proto.params[k]) == 0)
        if mode == "static":
            self._rhs = type(proto)._rhs
            self._args = [params[k] for k in self._keys]
        else:
            inst = copy.copy(proto)
            for k, v in params.items():
                setattr(inst, k, v)
            self._rhs = inst.rhs

    def __call__(self, t: np.ndarray, y: np.ndarray) -> np.ndarray:
        res = self._rhs(*y, t, *self._args) if self.mode == "static" else self._rhs(y, t)
        if isinstance(res, np.ndarray) and res.shape == y.shape:
            return res
        out = np.empty_like(y)
        for i, v in enumerate(res):
            out[i] = v  # components may be scalars (e.g. dt/dt = 1)
        return out

    def subset(self, index: np.ndarray) -> LeafField:
        params = {k: (v[index] if k in self._batched else v) for k, v in self.params.items()}
        return LeafField(self.name, params, self.mode)


def batch_params(founder: Founder, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the scalar parameters of ``members`` into ``(A,)`` arrays; array parameters are shared."""
    out: dict[str, Any] = {}
    for k, v in founder.params.items():
        if np.ndim(v) == 0:
            out[k] = np.array([float(m[k]) for m in members], dtype=float)
        else:
            out[k] = np.asarray(v)
    return out


def postprocess(name: str, params: dict[str, Any], traj: np.ndarray) -> np.ndarray:
    """Apply dysts' coordinate wrapping (angles, time) to a raw ``(T, D)`` trajectory of one member."""
    proto = _prototype(name)
    if not hasattr(proto, "_postprocessing"):
        return traj
    inst = copy.copy(proto)
    for k, v in params.items():
        setattr(inst, k, np.asarray(v) if np.ndim(v) else float(v))
    res = inst._postprocessing(*traj.T)
    return np.stack([np.broadcast_to(np.asarray(c, dtype=float), traj.shape[:1]) for c in res], axis=1)


@lru_cache(maxsize=1)
def load_founders() -> dict[str, Founder]:
    """All founders of the catalogue, by name (train and test)."""
    if not CATALOGUE.exists():
        raise FileNotFoundError(
            f"{CATALOGUE} is missing; build it with `python -m panda_fm.systems.founders`"
        )
    data = json.loads(CATALOGUE.read_text())
    return {
        name: Founder(
            **{
                **rec,
                "ic": tuple(rec["ic"]),
                "wrapped": tuple(rec["wrapped"]),
                "points": tuple(tuple(p) for p in rec.get("points", ())),
            }
        )
        for name, rec in data["founders"].items()
    }


def founder_split(name: str) -> str:
    """ "test" for held-out founders, else "train"."""
    return "test" if name in HELD_OUT else "train"


# --- building the catalogue (run once; the result is committed) -----------------------------------


def _vectorises(name: str, mode: str, rng: np.random.Generator) -> str:
    """Empty string when the batched call equals member-by-member calls, else the reason."""
    proto = _prototype(name)
    params = dict(proto.params)
    n = 4
    y = np.asarray(proto.ic, dtype=float)[:, None] * (1 + 0.01 * rng.standard_normal((proto.dimension, n)))
    members = [
        {
            k: (float(v) * (1 + 0.01 * rng.standard_normal()) if np.ndim(v) == 0 else v)
            for k, v in params.items()
        }
        for _ in range(n)
    ]
    t = np.full(n, 0.3)
    try:
        batched = LeafField(name, {k: _stack(members, k) for k in params}, mode)(t, y)
        single = np.stack(
            [
                LeafField(
                    name, {k: np.asarray([m[k]]) if np.ndim(m[k]) == 0 else m[k] for k in params}, mode
                )(t[i : i + 1], y[:, i : i + 1])[:, 0]
                for i, m in enumerate(members)
            ],
            axis=1,
        )
    except Exception as err:  # a dysts equation that does not take arrays
        return f"not vectorisable: {type(err).__name__}: {err}"
    if batched.shape != y.shape or not np.allclose(batched, single, rtol=1e-12, atol=1e-12, equal_nan=True):
        return "batched call differs from member-by-member calls"
    return ""


def _stack(members: list[dict[str, Any]], key: str) -> Any:
    v = members[0][key]
    return np.array([m[key] for m in members], dtype=float) if np.ndim(v) == 0 else np.asarray(v)


def build_catalogue(path: Path = CATALOGUE, periods: float = 30.0) -> dict[str, Any]:
    """Probe every continuous non-delay dysts flow and write the founder catalogue to ``path``.

    For each flow: the calling convention, a check that batched calls equal single calls, the wrapped
    coordinates, a point on the attractor (end of a run of ``periods`` periods from dysts' initial
    condition) and the RMS of the vector field along that run.
    """
    import dysts.flows as flows
    from dysts.base import DynSys

    from panda_fm.systems.integrate import IntegratorConfig, integrate_batch

    rng = np.random.default_rng(0)
    founders: dict[str, Any] = {}
    excluded: dict[str, str] = {}
    names = sorted(
        n
        for n, c in inspect.getmembers(flows, inspect.isclass)
        if issubclass(c, DynSys) and c.__module__ == flows.__name__
    )
    for name in names:
        proto = _prototype(name)
        cls = type(proto)
        mode = "static" if cls.rhs is DynSys.rhs else "method"
        reason = _vectorises(name, mode, rng)
        if reason:
            excluded[name] = reason
            logger.info("excluding %s: %s", name, reason)
            continue
        params = {
            k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in proto.params.items()
        }
        dim = int(proto.dimension)
        y0 = np.asarray(proto.ic, dtype=float)
        probe = y0 + 0.1 + np.arange(dim)
        wrapped = ()
        if hasattr(proto, "_postprocessing"):
            pp = postprocess(name, params, probe[None, :])[0]
            wrapped = tuple(int(i) for i in np.nonzero(~np.isclose(pp, probe))[0])
        leaf = LeafField(
            name, {k: (np.array([v]) if np.ndim(v) == 0 else np.asarray(v)) for k, v in params.items()}, mode
        )
        period = float(proto.period)
        checked = np.ones(dim, dtype=bool)
        checked[list(wrapped)] = False
        res = integrate_batch(
            leaf,
            y0[None, :],
            sample_dt=period / 50,
            n_points=int(periods * 50),
            config=IntegratorConfig(rtol=1e-8, atol=1e-9, time_budget_s=60.0),
            checked=checked,
            max_steps=10**7,
        )
        if not res.ok[0]:
            excluded[name] = f"integration failed at curated parameters ({res.reason[0]})"
            logger.info("excluding %s: %s", name, excluded[name])
            continue
        traj = res.trajectories[0]  # (T, D)
        fvals = leaf(np.zeros(traj.shape[0]), traj.T)
        rms = float(np.sqrt(np.mean(fvals**2)))
        lyap = getattr(proto, "maximum_lyapunov_estimated", None)
        founders[name] = asdict(
            Founder(
                name=name,
                dim=dim,
                params=params,
                ic=tuple(float(v) for v in traj[-1]),
                period=period,
                dt=float(proto.dt),
                split=founder_split(name),
                mode=mode,
                wrapped=wrapped,
                rms=rms,
                lyapunov=None if lyap is None else float(lyap),
                points=tuple(
                    tuple(float(v) for v in traj[i])
                    for i in np.linspace(len(traj) // 2, len(traj) - 1, 8, dtype=int)
                ),
            )
        )
        logger.info("%s: D=%d mode=%s steps=%d rms=%.3g", name, dim, mode, res.steps[0], rms)
    data = {"dysts_version": _dysts_version(), "founders": founders, "excluded": excluded}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    load_founders.cache_clear()
    return data


def _dysts_version() -> str:
    from importlib.metadata import version

    return version("dysts")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = build_catalogue()
    print(f"{len(built['founders'])} founders, {len(built['excluded'])} excluded")  # noqa: T201
