"""A batched adaptive integrator: many systems of one structure advance together.

Dormand-Prince 5(4) with a step size per member: every member of a batch keeps its own time, step and
error control, so a member's trajectory does not depend on which other members share its batch (a system
integrated alone reproduces its trajectory from a batch). One call of the vector field per stage serves
the whole batch, which is what makes the integrator fast in numpy: the per-call overhead of Python is
shared by all members.

Output lies on a uniform grid per member: ``n_points`` samples spaced ``sample_dt`` apart, starting after a
transient of ``transient`` time units. Steps never exceed the sample spacing, so each accepted step
contains at most one output time, which is filled by cubic Hermite interpolation.

Members that blow up (a coordinate over ``max_value`` or not finite), stall (step below ``min_step``),
run over ``max_steps`` steps or over the wall-clock budget are dropped and counted; they never raise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from panda_fm.systems.compiled import compile_field, integrate_compiled
from panda_fm.systems.tableau import A, C, E

logger = logging.getLogger(__name__)

DROP_REASONS = ("blowup", "stall", "timeout")


class BatchField(Protocol):
    """A vector field evaluated for a batch: ``f(t (A,), y (D, A)) -> (D, A)``."""

    dim: int

    def __call__(self, t: np.ndarray, y: np.ndarray) -> np.ndarray: ...

    def subset(self, index: np.ndarray) -> BatchField:
        """The same field restricted to the members ``index`` (positions in this batch)."""
        ...


@dataclass(frozen=True)
class IntegratorConfig:
    """Tolerances and limits of :func:`integrate_batch`."""

    rtol: float = 1e-9  # relative tolerance per step
    atol: float = 1e-10  # absolute tolerance per step
    max_value: float = 1e4  # a member with |y| above this is dropped as a blow-up
    min_step: float = 1e-10  # a member whose step falls below this (time units) is dropped as stalled
    # Step budget per member, as a multiple of its output length: smooth founders need 2-10 steps per
    # sample at 100 samples per period; stiff members (which explicit steps crawl through) are dropped.
    max_steps_per_point: int = 10
    # Wall-clock budget of one batch (members still running are dropped). A safety net only: it depends
    # on the machine, so a run that hits it is no longer reproducible from its seed; the step budget is.
    time_budget_s: float = 300.0
    # Stragglers: once half the batch has completed, a member still running after this many times the
    # median step count of the completed ones is dropped (as a timeout). A batch otherwise runs as long
    # as its slowest member. Deterministic: it depends on the batch, not on the machine. None: off.
    straggler_factor: float | None = 3.0

    def __post_init__(self) -> None:
        if not (0 < self.rtol < 1 and self.atol > 0):
            raise ValueError(f"need 0 < rtol < 1 and atol > 0, got rtol={self.rtol}, atol={self.atol}")
        if self.max_value <= 0 or self.min_step <= 0:
            raise ValueError("max_value and min_step must be positive")
        if self.straggler_factor is not None and self.straggler_factor < 1:
            raise ValueError(f"straggler_factor must be >= 1 or None, got {self.straggler_factor}")
        if self.max_steps_per_point < 1 or self.time_budget_s <= 0:
            raise ValueError("max_steps_per_point must be >= 1 and time_budget_s > 0")


@dataclass
class BatchResult:
    """Output of :func:`integrate_batch`.

    Attributes:
        trajectories: ``(B, T, D)`` samples; rows of dropped members are NaN.
        ok: ``(B,)`` True for members that completed.
        reason: ``(B,)`` empty string for completed members, else one of ``DROP_REASONS``.
        steps: ``(B,)`` accepted plus rejected steps taken per member.
        wall_s: wall-clock seconds spent.
    """

    trajectories: np.ndarray
    ok: np.ndarray
    reason: np.ndarray
    steps: np.ndarray
    wall_s: float
    counts: dict[str, int] = field(default_factory=dict)


def _rms_over_rows(q: np.ndarray) -> np.ndarray:
    """RMS over axis 0 of ``(D, A)``, summed row by row: numpy's reductions change their summation
    order with the array's shape (pairwise, 8 accumulators for 8+ contiguous values), which would make
    a member's step control, hence its chaotic trajectory, depend on the size of its batch."""
    acc = q[0] * q[0]
    for row in q[1:]:
        acc = acc + row * row
    return np.sqrt(acc / q.shape[0])


def integrate_batch(
    f: BatchField,
    y0: np.ndarray,
    sample_dt: np.ndarray | float,
    n_points: int,
    transient: np.ndarray | float = 0.0,
    config: IntegratorConfig | None = None,
    checked: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    max_steps: np.ndarray | int | None = None,
    compiled: bool = True,
) -> BatchResult:
    """Integrate a batch of members of one structure onto uniform output grids.

    Args:
        f: batched vector field; member ``i`` of the batch is column ``i``.
        y0: ``(B, D)`` initial states.
        sample_dt: output spacing, scalar or ``(B,)`` (time units).
        n_points: samples per member (T).
        transient: time integrated before the first sample, scalar or ``(B,)``.
        config: tolerances and limits.
        checked: ``(D,)`` bool, coordinates subject to the blow-up limit (default all); angles that
            dysts wraps after integration are exempt.
        progress: optional callback receiving the number of members finished since the last call.
        max_steps: step budget per member, scalar or ``(B,)``; default ``config.max_steps_per_point``
            times the number of sample spacings integrated.
        compiled: integrate a field that compiles (dysts flows whose vector fields numba compiles, with
            scalar parameters, and skew products of them) one member at a time in compiled code
            (:mod:`panda_fm.systems.compiled`): the same trajectories, steps and drop reasons to the bit,
            several times faster. False, or a field that does not compile: the numpy lockstep loop.

    Returns:
        A :class:`BatchResult` with ``(B, T, D)`` trajectories.
    """
    cfg = config or IntegratorConfig()
    y0 = np.asarray(y0, dtype=float)
    if y0.ndim != 2 or y0.shape[1] != f.dim:
        raise ValueError(f"y0 must be (B, {f.dim}), got shape {y0.shape}")
    n_batch, dim = y0.shape
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    dt_out = np.broadcast_to(np.asarray(sample_dt, dtype=float), (n_batch,)).copy()
    t_first = np.broadcast_to(np.asarray(transient, dtype=float), (n_batch,)).copy()
    if np.any(dt_out <= 0) or np.any(t_first < 0):
        raise ValueError("sample_dt must be positive and transient non-negative")
    chk = np.ones(dim, dtype=bool) if checked is None else np.asarray(checked, dtype=bool)

    if max_steps is None:
        t_end = t_first + (n_points - 1) * dt_out
        max_steps_member = np.ceil(cfg.max_steps_per_point * (t_end / dt_out + 1)).astype(np.int64)
    else:
        max_steps_member = np.broadcast_to(np.asarray(max_steps, dtype=np.int64), (n_batch,)).copy()
    start = time.perf_counter()
    field = compile_field(f, n_batch) if compiled else None
    if field is not None:
        out, reason, steps_all, ok = integrate_compiled(
            field, y0, dt_out, n_points, t_first, cfg, chk, max_steps_member, progress
        )
        counts = {r: int((reason == r).sum()) for r in DROP_REASONS}
        wall = time.perf_counter() - start
        logger.debug("integrated %d members (compiled) in %.2fs: %s", n_batch, wall, counts)
        return BatchResult(out, ok, reason.astype(str), steps_all, wall, counts)

    out = np.full((n_batch, n_points, dim), np.nan)
    reason = np.full(n_batch, "", dtype=object)
    steps_all = np.zeros(n_batch, dtype=np.int64)
    done = np.zeros(n_batch, dtype=bool)

    # State of the active members (columns), compacted whenever members leave.
    idx = np.arange(n_batch)
    y = y0.T.copy()  # (D, A)
    t = np.zeros(n_batch)
    k_next = np.zeros(n_batch, dtype=np.int64)  # next output sample to fill
    # Samples at t = 0 (no transient).
    at0 = t_first <= 0
    out[at0, 0, :] = y0[at0]
    k_next[at0] = 1
    fy = f(t, y)
    scale = cfg.atol + cfg.rtol * np.abs(y)
    d0 = _rms_over_rows(y / scale)
    d1 = _rms_over_rows(fy / scale)
    h = np.where((d0 > 1e-5) & (d1 > 1e-5), 0.01 * d0 / np.maximum(d1, 1e-300), 1e-6)
    h = np.minimum(h, dt_out)
    steps = np.zeros(n_batch, dtype=np.int64)
    cur_f = f
    straggler_limit: float | None = None
    iteration = 0
    while idx.size:
        iteration += 1
        hh = h[None, :]
        # Stage sums written out element-wise (not as a matrix product), so that a member's arithmetic
        # is the same whatever the batch: a system integrated alone reproduces its batch trajectory.
        ks = [fy]
        for s in range(1, 7):
            a = A[s]
            incr = a[0] * ks[0]
            for j in range(1, s):
                if a[j] != 0.0:
                    incr = incr + a[j] * ks[j]
            ys = y + hh * incr
            ks.append(cur_f(t + C[s] * h, ys))
        y_new = ys  # the 7th stage is evaluated at the 5th-order solution (FSAL)
        err_vec = E[0] * ks[0]
        for j in (2, 3, 4, 5, 6):
            err_vec = err_vec + E[j] * ks[j]
        scale = cfg.atol + cfg.rtol * np.maximum(np.abs(y), np.abs(y_new))
        err = _rms_over_rows(hh * err_vec / scale)
        err = np.where(np.isfinite(err), err, np.inf)
        accept = err <= 1.0
        all_accepted = bool(accept.all())
        steps += 1
        # Step size update (standard controller with safety 0.9, growth in [0.2, 10]).
        fac = np.clip(0.9 * np.maximum(err, 1e-10) ** -0.2, 0.2, 10.0)
        if not all_accepted:
            fac = np.where(accept, fac, np.minimum(fac, 1.0))
        h_old = h
        t_old = t
        if all_accepted or accept.any():
            y_prev, f_prev = y, fy
            if all_accepted:
                t, y, fy = t + h, y_new, ks[6]
            else:
                t = np.where(accept, t + h, t)
                y = np.where(accept[None, :], y_new, y)
                fy = np.where(accept[None, :], ks[6], fy)
            # Fill the output sample that fell inside (t_old, t] of accepted members.
            g_time = t_first + k_next * dt_out
            hit = accept & (k_next < n_points) & (g_time <= t)
            if hit.any():
                cols = np.nonzero(hit)[0]
                th = (g_time[cols] - t_old[cols]) / h_old[cols]
                hc = h_old[cols]
                y_a, y_b = y_prev[:, cols], y[:, cols]
                f_a, f_b = f_prev[:, cols], fy[:, cols]
                th2, th3 = th * th, th * th * th
                h00 = 2 * th3 - 3 * th2 + 1
                h10 = th3 - 2 * th2 + th
                h01 = -2 * th3 + 3 * th2
                h11 = th3 - th2
                val = h00 * y_a + h10 * hc * f_a + h01 * y_b + h11 * hc * f_b
                out[idx[cols], k_next[cols], :] = val.T
                k_next[cols] += 1
        h = np.minimum(h * fac, dt_out)
        # Members leave: finished, blown up, stalled, over budget.
        finished = k_next >= n_points
        bad_val = ~np.isfinite(y).all(axis=0) | (np.abs(y[chk]) > cfg.max_value).any(axis=0)
        stalled = h < cfg.min_step
        over = steps > max_steps_member
        if straggler_limit is not None:
            over |= steps > straggler_limit
        if iteration % 64 == 0 and time.perf_counter() - start > cfg.time_budget_s:
            over = np.ones_like(over)
        leave = finished | bad_val | stalled | over
        if leave.any():
            gone = idx[leave]
            reason[idx[bad_val & ~finished]] = "blowup"
            reason[idx[stalled & ~finished & ~bad_val]] = "stall"
            reason[idx[over & ~finished & ~bad_val & ~stalled]] = "timeout"
            done[idx[finished & ~bad_val]] = True
            steps_all[gone] = steps[leave]
            if cfg.straggler_factor is not None and straggler_limit is None and done.sum() >= n_batch / 2:
                straggler_limit = cfg.straggler_factor * np.median(steps_all[done])
            if progress is not None:
                progress(int(leave.sum()))
            keep = ~leave
            idx, y, fy, t, h = idx[keep], y[:, keep], fy[:, keep], t[keep], h[keep]
            k_next, steps, dt_out = k_next[keep], steps[keep], dt_out[keep]
            t_first, max_steps_member = t_first[keep], max_steps_member[keep]
            if idx.size:
                cur_f = cur_f.subset(np.nonzero(keep)[0])
    ok = done & (reason == "")
    out[~ok] = np.nan
    counts = {r: int((reason == r).sum()) for r in DROP_REASONS}
    wall = time.perf_counter() - start
    logger.debug("integrated %d members in %.2fs: %s", n_batch, wall, counts)
    return BatchResult(out, ok, reason.astype(str), steps_all, wall, counts)
