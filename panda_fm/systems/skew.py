"""Genomes (recipes of systems), the mutation and skew-product operators, and batched genome fields.

A genome is a tree: a :class:`Flow` leaf is a dysts founder with parameters; a :class:`Skew` node is a
skew product in which a driver ``x' = f_a(x)`` forces a response ``y' = k_b f_b(y) + k_a P f_a(x)``.
``P`` maps driver components onto response components (``coupling[i]`` is the driver component that
drives response component ``i``, or -1 for none) and ``k_a, k_b`` are the reciprocal RMS of each parent's
vector field along a reference trajectory. The child's state is the driver's followed by the response's.

Genomes of one *structure* (same tree shape and founders; parameters and couplings may differ) are
integrated together: :func:`genome_field` stacks their numbers into one batched vector field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from panda_fm.systems.founders import LeafField, load_founders, postprocess


@dataclass(frozen=True)
class Flow:
    """A dysts founder with (possibly mutated) parameters."""

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Skew:
    """A skew product: ``driver`` forces ``response`` through ``coupling`` (see the module docstring)."""

    driver: Genome
    response: Genome
    coupling: tuple[int, ...]
    k_driver: float
    k_response: float

    def __post_init__(self) -> None:
        if len(self.coupling) != dimension(self.response):
            raise ValueError(
                f"coupling has {len(self.coupling)} entries, response dimension is {dimension(self.response)}"
            )
        if any(c < -1 or c >= dimension(self.driver) for c in self.coupling):
            raise ValueError(
                f"coupling entries must lie in [-1, {dimension(self.driver)}), got {self.coupling}"
            )
        if not (self.k_driver > 0 and self.k_response > 0):
            raise ValueError("coupling strengths k_driver and k_response must be positive")


Genome = Flow | Skew


def dimension(g: Genome) -> int:
    """State dimension D of a genome."""
    if isinstance(g, Flow):
        return load_founders()[g.name].dim
    return dimension(g.driver) + dimension(g.response)


def leaves(g: Genome) -> list[Flow]:
    """The founder leaves in state order (driver before response)."""
    return [g] if isinstance(g, Flow) else leaves(g.driver) + leaves(g.response)


def founders_of(g: Genome) -> list[str]:
    """Founder names in state order."""
    return [leaf.name for leaf in leaves(g)]


def structure(g: Genome) -> str:
    """A key shared by genomes that can be integrated in one batch."""
    if isinstance(g, Flow):
        return g.name
    return f"skew({structure(g.driver)},{structure(g.response)})"


def split_of(g: Genome) -> str:
    """ "test" if any founder of the genome is held out, else "train"."""
    table = load_founders()
    return "test" if any(table[n].split == "test" for n in founders_of(g)) else "train"


def wrapped_mask(g: Genome) -> np.ndarray:
    """``(D,)`` bool, True for coordinates that dysts wraps (exempt from the blow-up limit)."""
    table = load_founders()
    parts = []
    for leaf in leaves(g):
        m = np.zeros(table[leaf.name].dim, dtype=bool)
        m[list(table[leaf.name].wrapped)] = True
        parts.append(m)
    return np.concatenate(parts)


def postprocess_genome(g: Genome, traj: np.ndarray) -> np.ndarray:
    """Apply each leaf's coordinate wrapping to its slice of a raw ``(T, D)`` trajectory."""
    out, start = [], 0
    for leaf in leaves(g):
        d = load_founders()[leaf.name].dim
        out.append(postprocess(leaf.name, leaf.params, traj[:, start : start + d]))
        start += d
    return np.concatenate(out, axis=1)


def to_dict(g: Genome) -> dict[str, Any]:
    """JSON-ready form of a genome (inverse of :func:`from_dict`)."""
    if isinstance(g, Flow):
        return {"flow": g.name, "params": g.params}
    return {
        "driver": to_dict(g.driver),
        "response": to_dict(g.response),
        "coupling": list(g.coupling),
        "k_driver": g.k_driver,
        "k_response": g.k_response,
    }


def from_dict(d: dict[str, Any]) -> Genome:
    """Rebuild a genome from :func:`to_dict` output."""
    if "flow" in d:
        if d["flow"] not in load_founders():
            raise ValueError(f"unknown founder {d['flow']!r} in recipe")
        return Flow(d["flow"], dict(d["params"]))
    return Skew(
        from_dict(d["driver"]),
        from_dict(d["response"]),
        tuple(int(c) for c in d["coupling"]),
        float(d["k_driver"]),
        float(d["k_response"]),
    )


def founder_genome(name: str) -> Flow:
    """The genome of a founder at its curated parameters."""
    return Flow(name, dict(load_founders()[name].params))


# --- operators -------------------------------------------------------------------------------------


def mutate(g: Genome, rng: np.random.Generator, scale: float, keep_sign: float) -> Genome:
    """Perturb every scalar parameter: ``theta + eps``, ``eps ~ N(0, (scale |theta|)^2 + 1e-6)``.

    With probability ``keep_sign`` a parameter keeps the sign it had. Couplings stay as they are.
    """
    if isinstance(g, Skew):
        return Skew(
            mutate(g.driver, rng, scale, keep_sign),
            mutate(g.response, rng, scale, keep_sign),
            g.coupling,
            g.k_driver,
            g.k_response,
        )
    params = {}
    for k in sorted(g.params):
        v = g.params[k]
        if np.ndim(v) != 0:
            params[k] = v
            continue
        v = float(v)
        new = v + rng.normal(0.0, np.sqrt((scale * abs(v)) ** 2 + 1e-6))
        if rng.random() < keep_sign and v != 0 and np.sign(new) != np.sign(v):
            new = -new
        params[k] = float(new)
    return Flow(g.name, params)


def random_coupling(d_driver: int, d_response: int, rng: np.random.Generator) -> tuple[int, ...]:
    """A random selection/permutation of driver components onto response components, zero-padded."""
    if d_driver >= d_response:
        return tuple(int(c) for c in rng.permutation(d_driver)[:d_response])
    slots = np.full(d_response, -1)
    slots[rng.permutation(d_response)[:d_driver]] = rng.permutation(d_driver)
    return tuple(int(c) for c in slots)


def skew_product(
    driver: Genome, response: Genome, rms_driver: float, rms_response: float, rng: np.random.Generator
) -> Skew:
    """A skew product with a random coupling and RMS-normalised strengths."""
    if rms_driver <= 0 or rms_response <= 0:
        raise ValueError("parent RMS values must be positive")
    coupling = random_coupling(dimension(driver), dimension(response), rng)
    return Skew(driver, response, coupling, 1.0 / rms_driver, 1.0 / rms_response)


# --- batched fields --------------------------------------------------------------------------------


class SkewField:
    """Batched field of skew products of one structure."""

    def __init__(
        self, driver: Any, response: Any, coupling: np.ndarray, k_driver: np.ndarray, k_response: np.ndarray
    ):
        self.driver, self.response = driver, response
        self.coupling = coupling  # (D_b, A) int, -1 = no forcing (mapped to a zero row)
        self.k_driver, self.k_response = k_driver, k_response  # (A,)
        self.dim_a = driver.dim
        self.dim = driver.dim + response.dim
        # Flat indices into the zero-padded driver field (D_a + 1, A): row coupling[i, m] of column m.
        rows = np.where(coupling < 0, driver.dim, coupling)
        self._flat = rows * coupling.shape[1] + np.arange(coupling.shape[1])[None, :]
        self._rows = rows[:, 0] if coupling.shape[1] == 1 else None

    def __call__(self, t: np.ndarray, y: np.ndarray) -> np.ndarray:
        fa = self.driver(t, y[: self.dim_a])
        fb = self.response(t, y[self.dim_a :])
        n = fa.shape[1]
        padded = np.zeros((self.dim_a + 1, n))
        padded[: self.dim_a] = fa
        # One member broadcast over many states (field_rms) gathers rows; a batch gathers per column.
        forcing = padded[self._rows] if self._rows is not None else padded.reshape(-1)[self._flat]
        out = np.empty((self.dim, n))
        out[: self.dim_a] = fa
        out[self.dim_a :] = self.k_response * fb + self.k_driver * forcing
        return out

    def subset(self, index: np.ndarray) -> SkewField:
        return SkewField(
            self.driver.subset(index),
            self.response.subset(index),
            self.coupling[:, index],
            self.k_driver[index],
            self.k_response[index],
        )


def genome_field(genomes: list[Genome]) -> LeafField | SkewField:
    """One batched field for genomes of a common :func:`structure`; member ``i`` is ``genomes[i]``."""
    if not genomes:
        raise ValueError("need at least one genome")
    key = structure(genomes[0])
    if any(structure(g) != key for g in genomes):
        raise ValueError("genomes of a batch must share one structure (same founders and tree shape)")
    g0 = genomes[0]
    if isinstance(g0, Flow):
        founder = load_founders()[g0.name]
        params: dict[str, Any] = {}
        for k, v in founder.params.items():
            if np.ndim(v) == 0:
                params[k] = np.array([float(g.params[k]) for g in genomes])
            else:
                params[k] = np.asarray(v)
        return LeafField(g0.name, params, founder.mode)
    return SkewField(
        genome_field([g.driver for g in genomes]),
        genome_field([g.response for g in genomes]),
        np.array([g.coupling for g in genomes], dtype=np.int64).T,
        np.array([g.k_driver for g in genomes]),
        np.array([g.k_response for g in genomes]),
    )


def field_rms(g: Genome, raw: np.ndarray) -> float:
    """RMS of the genome's vector field along a raw ``(T, D)`` trajectory (the skew normaliser)."""
    f = genome_field([g])
    vals = f(np.zeros(raw.shape[0]), np.ascontiguousarray(raw.T))
    return float(np.sqrt(np.mean(vals**2)))
