"""Each attractor test on known cases: Lorenz passes; the case each test is meant for fails it."""

from __future__ import annotations

import numpy as np
import pytest

from panda_fm.systems import selection as S
from tests.systems.conftest import founder_trajectory


def test_lorenz_passes_every_test(lorenz):
    x, dt, period = lorenz
    failed, values = S.run_tests(x, dt, period)
    assert failed == ""
    assert 0.5 < values["lyapunov"] < 1.5  # dysts: 0.89
    assert S.is_bounded(x) and S.is_not_linear(x) and S.is_not_fixed_point(x)
    assert S.is_stationary(x, period / dt) and S.is_broadband(x)
    assert S.is_not_limit_cycle(x) and S.is_chaotic_01(x, period / dt)


def test_bounded_fails_diverging(diverging, lorenz):
    assert not S.is_bounded(diverging[0])
    assert not S.is_bounded(lorenz[0] * 1e4)  # |x| over the limit
    bad = lorenz[0].copy()
    bad[100, 0] = np.nan
    assert not S.is_bounded(bad)


def test_not_linear_fails_straight_line(straight_line):
    assert not S.is_not_linear(straight_line[0])


def test_not_fixed_point_fails_damped_oscillator(damped_oscillator):
    assert not S.is_not_fixed_point(damped_oscillator[0])


def test_stationary_fails_drift(straight_line, lorenz):
    assert not S.is_stationary(straight_line[0])
    x, dt, period = lorenz
    drift = x + np.linspace(0, 200, len(x))[:, None]
    assert not S.is_stationary(drift, period / dt)


def test_broadband_fails_damped_oscillator(damped_oscillator):
    assert not S.is_broadband(damped_oscillator[0])


def test_limit_cycle_fails_van_der_pol(van_der_pol):
    assert not S.is_not_limit_cycle(van_der_pol[0])
    assert S.return_distance(van_der_pol[0]) < 1e-4


def test_zero_one_fails_van_der_pol(van_der_pol, damped_oscillator):
    x, dt, period = van_der_pol
    assert not S.is_chaotic_01(x, period / dt)
    x, dt, period = damped_oscillator
    assert not S.is_chaotic_01(x, period / dt)


def test_lyapunov_near_zero_for_limit_cycle(van_der_pol):
    x, dt, period = van_der_pol
    assert S.lyapunov_rosenstein(x, dt, period / dt) * period < 0.02


def test_run_tests_reports_first_failure(van_der_pol, straight_line, diverging):
    assert S.run_tests(*van_der_pol)[0] == "not_limit_cycle"
    assert S.run_tests(*straight_line)[0] == "not_linear"
    assert S.run_tests(*diverging)[0] == "bounded"


def test_descriptor_is_finite_and_distinguishes(lorenz, van_der_pol):
    d1 = S.descriptor(*lorenz, lyapunov=0.9)
    d2 = S.descriptor(*van_der_pol, lyapunov=0.0)
    assert d1.shape == (7,) and np.isfinite(d1).all()
    assert np.linalg.norm(d1 - d2) > 0.1


def test_bad_input_raises():
    with pytest.raises(ValueError, match="trajectory must be"):
        S.is_bounded(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="transient_fraction"):
        S.SelectionConfig(transient_fraction=1.5)


def test_near_duplicates_are_recognised(lorenz, van_der_pol):
    # Two stretches of one attractor with a sharp spectral peak (Aizawa). Lorenz's broad low-frequency lobe
    # makes its dominant frequency jump between stretches (0.15 to 0.725 per period), whichever CPU integrates it.
    x, dt, period = founder_trajectory("Aizawa")
    d_full = S.descriptor(x, dt, period, lyapunov=0.9)
    d_half = S.descriptor(x[: len(x) // 2], dt, period, lyapunov=0.9)  # same system, other stretch
    d_vdp = S.descriptor(*van_der_pol, lyapunov=0.0)
    assert not S.is_near_duplicate(d_full, [], 0.05)
    assert S.is_near_duplicate(d_full, [d_vdp, d_full], 0.05)
    assert S.is_near_duplicate(d_half, [d_full], 0.2)
    assert not S.is_near_duplicate(d_vdp, [d_full], 0.2)
