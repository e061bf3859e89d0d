"""The batched integrator's arithmetic compiled with numba, one member at a time.

:func:`panda_fm.systems.integrate.integrate_batch` advances a batch in lockstep with numpy: one vector-field
call per stage serves every member, but each of the ~80 array operations of a step costs microseconds of
Python and numpy overhead whatever the batch size, so small batches (a skew product's few members) and even
batches of hundreds spend most of their time there. Here every member runs its own Dormand-Prince loop in
compiled code, calling its founders' vector fields (dysts compiles them with numba) directly.

Every operation is the numpy integrator's, in the same order, on the same float64 values, so a member's
trajectory is the same whichever path integrates it (``tests/systems/test_compiled.py``): to the last bit where
numpy's elementary functions round as the C library's do, and within rounding where numpy uses its own SIMD
routines (its AVX-512 code for powers and sines: 1e-13 after 600 steps of Aizawa, grown by chaos to 1e-8 of the
range after 500 of wildly mutated Lorenz systems).
The batch-level rules are reproduced too: the straggler rule is applied afterwards from each member's
step count, and the wall-clock budget, a safety net only, is checked between members.

Fields that cannot be compiled (dysts flows whose vector field is a Python method, or which have array
parameters) return None from :func:`compile_field`, and their batches stay on the numpy path.

Shape letters: A members, D state dimension, T output samples, L founder leaves, K skew nodes.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Member outcomes of the kernel's integrate_member (index into the names; "" is a completed member).
OUTCOMES = ("", "blowup", "stall", "timeout", "finished_bad")
_OK, _BLOWUP, _STALL, _TIMEOUT, _FINISHED_BAD = range(len(OUTCOMES))


def _numba() -> Any | None:
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; without it the numpy path runs
        return None
    return numba


_LEAF_SOURCE = """
def leaf(y, y0, t, p, p0, out, out0):
    r = rhs({args})
{stores}
"""


@cache
def leaf_function(name: str, dim: int, n_params: int) -> Any | None:
    """The dysts flow ``name``'s vector field as a compiled ``leaf(y, y0, t, p, p0, out, out0)`` of one
    fixed signature, or None when it does not compile: it reads the state ``y[y0 : y0 + dim]`` and the
    parameters ``p[p0 : p0 + n_params]`` (sorted by name, as dysts' ``_rhs`` takes them) and writes the
    derivative to ``out[out0 : out0 + dim]`` (offsets, not slices: a slice costs more than the call).

    Compiled once per process (about half a second): numba's disk cache is not used here, because a leaf
    loaded from it runs about 20 times slower when called as a first-class function (numba 0.68).
    """
    numba = _numba()
    if numba is None:
        return None
    import dysts.flows as flows
    from numba import types

    args = ", ".join([f"y[y0 + {i}]" for i in range(dim)] + ["t"] + [f"p[p0 + {j}]" for j in range(n_params)])
    stores = "\n".join(f"    out[out0 + {i}] = r[{i}]" for i in range(dim))
    namespace = {"rhs": getattr(flows, name)._rhs}
    try:
        exec(_LEAF_SOURCE.format(args=args, stores=stores), namespace)  # noqa: S102 - our own template
        array = types.float64[:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", numba.NumbaWarning)
            index = types.int64
            signature = types.void(array, index, types.float64, array, index, array, index)
            return numba.njit(signature)(namespace["leaf"])
    except Exception as err:  # a flow numba cannot compile for scalars: the numpy path integrates it
        logger.info(
            "%s does not compile (%s: %s); it is integrated with numpy", name, type(err).__name__, err
        )
        return None


@dataclass(frozen=True)
class CompiledField:
    """A batched genome field in the compiled integrator's terms.

    Attributes:
        leaves: the founders' compiled vector fields, in state order (``L``).
        leaf_info: ``(L, 4)`` int64: state offset, state dimension, parameter offset, parameter count.
        params: ``(A, P)`` float64, every leaf's parameters of each member, sorted by name within a leaf.
        nodes: ``(K, 4)`` int64 skew nodes in post-order (children first): driver offset, driver dimension,
            response offset, response dimension.
        coupling: ``(A, K, Dmax)`` int64, the driver component forcing each response component (-1: none).
        strengths: ``(A, K, 2)`` float64: ``k_driver``, ``k_response`` of each node.
    """

    leaves: tuple
    leaf_info: np.ndarray
    params: np.ndarray
    nodes: np.ndarray
    coupling: np.ndarray
    strengths: np.ndarray


def compile_field(f: Any, n_members: int) -> CompiledField | None:
    """:class:`CompiledField` of a :class:`~panda_fm.systems.founders.LeafField` or
    :class:`~panda_fm.systems.skew.SkewField` (any nesting), or None when a leaf does not compile."""
    leaves, info, params, nodes, couplings, strengths = [], [], [], [], [], []

    def walk(g: Any, offset: int) -> bool:
        if hasattr(g, "driver"):  # SkewField
            if not (walk(g.driver, offset) and walk(g.response, offset + g.dim_a)):
                return False
            nodes.append((offset, g.dim_a, offset + g.dim_a, g.response.dim))
            couplings.append(np.asarray(g.coupling, dtype=np.int64).T)  # (A, D_b)
            strengths.append(np.stack([g.k_driver, g.k_response], axis=1).astype(float))  # (A, 2)
            return True
        if getattr(g, "mode", None) != "static":  # a Python-method field, or not a LeafField
            return False
        keys = sorted(g.params)
        values = [np.asarray(g.params[k], dtype=float) for k in keys]
        if any(v.ndim != 1 for v in values):  # an array parameter: no fixed scalar signature
            return False
        fn = leaf_function(g.name, g.dim, len(keys))
        if fn is None:
            return False
        p0 = len(params)  # parameters (one (A,) array each) of the leaves before this one
        leaves.append(fn)
        info.append((offset, g.dim, p0, len(keys)))
        params.extend(values)
        return True

    if not walk(f, 0):
        return None
    n = n_members
    width = max((c.shape[1] for c in couplings), default=1)
    coupling = np.full((n, max(len(nodes), 1), width), -1, dtype=np.int64)  # (A, K, Dmax)
    strength = np.ones((n, max(len(nodes), 1), 2))  # (A, K, 2)
    for k, (c, s) in enumerate(zip(couplings, strengths, strict=True)):
        coupling[:, k, : c.shape[1]] = c
        strength[:, k] = s
    return CompiledField(
        leaves=tuple(leaves),
        leaf_info=np.array(info, dtype=np.int64),
        params=np.ascontiguousarray(np.stack(params, axis=1)) if params else np.zeros((n, 0)),  # (A, P)
        nodes=np.array(nodes, dtype=np.int64).reshape(-1, 4),
        coupling=coupling,
        strengths=strength,
    )


@cache
def _kernel() -> Any:
    """The compiled single-member integrator (compiled on first use; numba caches it on disk)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's note that first-class function types are experimental
        from panda_fm.systems._compiled_kernel import integrate_member
    return integrate_member


def integrate_compiled(
    cf: CompiledField,
    y0: np.ndarray,
    dt_out: np.ndarray,
    n_points: int,
    t_first: np.ndarray,
    config: Any,
    checked: np.ndarray,
    max_steps: np.ndarray,
    progress: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integrate each member of ``cf`` with the compiled kernel; the arguments are those of
    :func:`~panda_fm.systems.integrate.integrate_batch`, broadcast to ``(A,)``.

    Returns:
        ``(A, T, D)`` trajectories (NaN rows for members that did not complete), ``(A,)`` outcome names
        (``""`` for completed members), ``(A,)`` steps taken, ``(A,)`` completed.
    """
    kernel = _kernel()
    n, dim = y0.shape
    out = np.full((n, n_points, dim), np.nan)
    codes = np.full(n, _TIMEOUT, dtype=np.int64)
    steps = np.zeros(n, dtype=np.int64)
    start = time.perf_counter()
    chk = np.ascontiguousarray(checked, dtype=np.bool_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in range(n):
            if time.perf_counter() - start > config.time_budget_s:
                break  # the rest stay timeouts (the numpy path's safety net, checked between members)
            codes[m], steps[m] = kernel(
                cf.leaves,
                cf.leaf_info,
                cf.params[m],
                cf.nodes,
                cf.coupling[m],
                cf.strengths[m],
                np.ascontiguousarray(y0[m], dtype=float),
                float(dt_out[m]),
                n_points,
                float(t_first[m]),
                config.rtol,
                config.atol,
                config.max_value,
                config.min_step,
                int(max_steps[m]),
                chk,
                out[m],
            )
            if progress is not None:
                progress(1)
    if config.straggler_factor is not None:
        codes, steps = apply_straggler_rule(codes, steps, config.straggler_factor)
    reason = np.array([OUTCOMES[c] if c != _FINISHED_BAD else "" for c in codes], dtype=object)
    ok = codes == _OK
    out[~ok] = np.nan
    return out, reason, steps, ok


def apply_straggler_rule(
    codes: np.ndarray, steps: np.ndarray, factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """The lockstep integrator's straggler rule, from each member's outcome and step count.

    In lockstep every running member has taken the same number of steps. Once half the batch has completed
    (at the step count of the ``ceil(A/2)``-th completion), the limit is ``factor`` times the median step
    count of the members completed by then; from the next step on, a member still running past the limit
    is dropped as a timeout. A member whose own end falls on the step it would be dropped keeps its outcome
    (completion, blow-up and stall come before the timeout there, as in the lockstep loop).
    """
    n = len(codes)
    done = np.sort(steps[codes == _OK])
    need = math.ceil(n / 2)
    if len(done) < need:
        return codes, steps
    trigger = done[need - 1]
    limit = factor * np.median(done[done <= trigger])
    drop_at = max(trigger + 1, math.floor(limit) + 1)
    late = steps > drop_at
    codes, steps = codes.copy(), steps.copy()
    codes[late] = _TIMEOUT
    steps[late] = drop_at
    return codes, steps
