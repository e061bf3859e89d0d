"""The compiled single-member Dormand-Prince loop of :mod:`panda_fm.systems.compiled` (imports numba).

Each line mirrors a line of :func:`panda_fm.systems.integrate.integrate_batch` for one column of its
batch: the same operations in the same order, so the results agree bit for bit. Keep the two in step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from panda_fm.systems.tableau import A, C, E

_A_TABLE = np.zeros((7, 7))
for _s, _row in enumerate(A):
    _A_TABLE[_s, : len(_row)] = _row
_C_TABLE = np.asarray(C, dtype=float)
_E_TABLE = np.asarray(E, dtype=float)
_OK, _BLOWUP, _STALL, _TIMEOUT, _FINISHED_BAD = range(5)  # the order of compiled.OUTCOMES


@njit(cache=True)
def _minimum(a: float, b: float) -> float:
    """``np.minimum`` of two floats (NaN wins)."""
    if a != a:
        return a
    if b != b:
        return b
    return a if a <= b else b


@njit(cache=True)
def _maximum(a: float, b: float) -> float:
    """``np.maximum`` of two floats (NaN wins)."""
    if a != a:
        return a
    if b != b:
        return b
    return a if a >= b else b


@njit(cache=True)
def _field(leaves, leaf_info, p, nodes, coupling, strengths, t, y, out, out0):  # noqa: ANN001, ANN202
    """The genome field at ``(t, y)`` into ``out[out0 : out0 + D]``: each founder's field, then the skew
    nodes in post-order."""
    for i in range(len(leaves)):
        leaves[i](y, leaf_info[i, 0], t, p, leaf_info[i, 2], out, out0 + leaf_info[i, 0])
    for k in range(nodes.shape[0]):
        d0, r0, rb = out0 + nodes[k, 0], out0 + nodes[k, 2], nodes[k, 3]
        k_driver, k_response = strengths[k, 0], strengths[k, 1]
        for i in range(rb):
            c = coupling[k, i]
            forcing = out[d0 + c] if c >= 0 else 0.0
            out[r0 + i] = k_response * out[r0 + i] + k_driver * forcing


@njit(cache=True)
def _rms(q: np.ndarray) -> float:
    acc = q[0] * q[0]
    for i in range(1, q.shape[0]):
        acc = acc + q[i] * q[i]
    return math.sqrt(acc / q.shape[0])


@njit(cache=True)
def integrate_member(
    leaves,  # noqa: ANN001
    leaf_info,  # noqa: ANN001
    p,  # noqa: ANN001
    nodes,  # noqa: ANN001
    coupling,  # noqa: ANN001
    strengths,  # noqa: ANN001
    y0,  # noqa: ANN001
    dt_out,  # noqa: ANN001
    n_points,  # noqa: ANN001
    t_first,  # noqa: ANN001
    rtol,  # noqa: ANN001
    atol,  # noqa: ANN001
    max_value,  # noqa: ANN001
    min_step,  # noqa: ANN001
    max_steps,  # noqa: ANN001
    checked,  # noqa: ANN001
    out,  # noqa: ANN001
):  # noqa: ANN202
    """Integrate one member onto ``out`` ``(T, D)``; returns (outcome code, steps taken)."""
    dim = y0.shape[0]
    y = y0.copy()
    t = 0.0
    k_next = 0
    if t_first <= 0:
        out[0, :] = y0
        k_next = 1
    ks = np.empty(7 * dim)  # stage s at [s * dim, (s + 1) * dim)
    ys = np.empty(dim)
    q = np.empty(dim)
    y_prev = np.empty(dim)
    f_prev = np.empty(dim)
    fy = np.empty(dim)
    _field(leaves, leaf_info, p, nodes, coupling, strengths, t, y, fy, 0)
    for d in range(dim):
        q[d] = y[d] / (atol + rtol * abs(y[d]))
    d0 = _rms(q)
    for d in range(dim):
        q[d] = fy[d] / (atol + rtol * abs(y[d]))
    d1 = _rms(q)
    h = 0.01 * d0 / _maximum(d1, 1e-300) if (d0 > 1e-5) and (d1 > 1e-5) else 1e-6
    h = _minimum(h, dt_out)
    steps = 0
    while True:
        ks[:dim] = fy
        for s in range(1, 7):
            for d in range(dim):
                incr = _A_TABLE[s, 0] * ks[d]
                for j in range(1, s):
                    if _A_TABLE[s, j] != 0.0:
                        incr = incr + _A_TABLE[s, j] * ks[j * dim + d]
                ys[d] = y[d] + h * incr
            _field(leaves, leaf_info, p, nodes, coupling, strengths, t + _C_TABLE[s] * h, ys, ks, s * dim)
        for d in range(dim):
            err_d = _E_TABLE[0] * ks[d]
            for j in range(2, 7):
                err_d = err_d + _E_TABLE[j] * ks[j * dim + d]
            scale = atol + rtol * _maximum(abs(y[d]), abs(ys[d]))
            q[d] = h * err_d / scale
        err = _rms(q)
        if not math.isfinite(err):
            err = math.inf
        accept = err <= 1.0
        steps += 1
        fac = _minimum(_maximum(0.9 * _maximum(err, 1e-10) ** -0.2, 0.2), 10.0)
        if not accept:
            fac = _minimum(fac, 1.0)
        h_old = h
        t_old = t
        if accept:
            y_prev[:] = y
            f_prev[:] = fy
            t = t + h
            y[:] = ys
            fy[:] = ks[6 * dim :]
            g_time = t_first + k_next * dt_out
            if k_next < n_points and g_time <= t:
                th = (g_time - t_old) / h_old
                th2, th3 = th * th, th * th * th
                h00 = 2 * th3 - 3 * th2 + 1
                h10 = th3 - 2 * th2 + th
                h01 = -2 * th3 + 3 * th2
                h11 = th3 - th2
                for d in range(dim):
                    out[k_next, d] = (
                        h00 * y_prev[d] + h10 * h_old * f_prev[d] + h01 * y[d] + h11 * h_old * fy[d]
                    )
                k_next += 1
        h = _minimum(h * fac, dt_out)
        finished = k_next >= n_points
        bad_val = False
        for d in range(dim):
            if not math.isfinite(y[d]) or (checked[d] and abs(y[d]) > max_value):
                bad_val = True
        stalled = h < min_step
        over = steps > max_steps
        if finished or bad_val or stalled or over:
            if finished and not bad_val:
                return _OK, steps
            if bad_val and not finished:
                return _BLOWUP, steps
            if stalled and not finished:
                return _STALL, steps
            if over and not finished:
                return _TIMEOUT, steps
            return _FINISHED_BAD, steps
