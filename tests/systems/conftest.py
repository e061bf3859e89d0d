"""Shared fixtures: short trajectories of known systems (a real dysts Lorenz; textbook ODEs via scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from panda_fm.systems.founders import load_founders
from panda_fm.systems.integrate import integrate_batch
from panda_fm.systems.skew import founder_genome, genome_field, postprocess_genome

N_POINTS = 4096
PERIODS = 40


def founder_trajectory(
    name: str, n: int = N_POINTS, periods: float = PERIODS
) -> tuple[np.ndarray, float, float]:
    """(T, D) trajectory of a founder at its curated parameters, its sample spacing and period."""
    f = load_founders()[name]
    g = founder_genome(name)
    dt = f.period * periods / n
    res = integrate_batch(genome_field([g]), np.array(f.ic)[None], dt, n, transient=4 * f.period)
    assert res.ok[0]
    return postprocess_genome(g, res.trajectories[0]), dt, f.period


def ode_trajectory(
    rhs, y0, period: float, periods: float = PERIODS, n: int = N_POINTS
) -> tuple[np.ndarray, float, float]:
    t = np.linspace(0, period * periods, n)
    sol = solve_ivp(rhs, (0, t[-1]), y0, t_eval=t, rtol=1e-9, atol=1e-10, method="DOP853")
    return sol.y.T, float(t[1]), period


@pytest.fixture(scope="session")
def lorenz():
    return founder_trajectory("Lorenz")


@pytest.fixture(scope="session")
def van_der_pol():
    return ode_trajectory(lambda t, y: [y[1], 2 * (1 - y[0] ** 2) * y[1] - y[0]], [2.0, 0.0], 7.63)


@pytest.fixture(scope="session")
def damped_oscillator():
    return ode_trajectory(lambda t, y: [y[1], -0.1 * y[1] - y[0]], [1.0, 0.0], 2 * np.pi)


@pytest.fixture(scope="session")
def diverging():
    """An unstable focus: an outward spiral whose amplitude grows e-fold every 3.3 time units."""
    return ode_trajectory(
        lambda t, y: [0.3 * y[0] - y[1], y[0] + 0.3 * y[1]], [1.0, 0.0], 2 * np.pi, periods=10
    )


@pytest.fixture(scope="session")
def straight_line():
    t = np.linspace(0, 1, N_POINTS)
    return np.outer(t, [1.0, 2.0, 3.0]) + 0.5, 0.01, N_POINTS * 0.01 / PERIODS
