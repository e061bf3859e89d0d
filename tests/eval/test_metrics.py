"""Known-answer tests of the benchmark metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from panda_fm.eval import metrics


def test_smape_known_values() -> None:
    assert metrics.smape([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert metrics.smape([1.0], [-1.0]) == 100.0  # opposite signs
    assert metrics.smape([1.0, 0.0], [3.0, 0.0]) == pytest.approx(25.0)  # 2/4 and 0/0 := 0
    assert metrics.smape([2.0], [0.0]) == 100.0
    # (H, C) averages over steps and channels
    assert metrics.smape([[1.0, 1.0]], [[1.0, 3.0]]) == pytest.approx(25.0)


def test_smape_curve_is_per_step() -> None:
    curve = metrics.smape_curve([[1.0, 1.0], [1.0, 1.0]], [[1.0, 3.0], [-1.0, -1.0]])
    np.testing.assert_allclose(curve, [25.0, 100.0])


def test_mae_mse_known_values() -> None:
    y, f = np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[1.0, 1.0], [0.0, 3.0]])
    assert metrics.mae(y, f) == pytest.approx(0.75)
    assert metrics.mse(y, f) == pytest.approx(1.25)


def test_spearman_known_values() -> None:
    t = np.linspace(0, 1, 50)
    assert metrics.spearman(t, np.exp(3 * t)) == pytest.approx(1.0)  # any increasing map
    assert metrics.spearman(t, -(t**3)) == pytest.approx(-1.0)
    assert metrics.spearman(t, np.zeros_like(t)) == 0.0  # constant forecast: no rank information
    two = metrics.spearman(np.stack([t, t], 1), np.stack([t, -t], 1))
    assert two == pytest.approx(0.0)  # +1 and -1 averaged
    assert metrics.spearman([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)


def test_normalised_rmse_and_valid_prediction_time() -> None:
    truth = np.zeros((10, 2))
    pred = np.zeros((10, 2))
    pred[:, 0] = np.arange(10) * 0.2  # error of channel 0 grows 0.2 per step
    err = metrics.normalised_rmse(truth, pred, scale=1.0)
    np.testing.assert_allclose(err, np.arange(10) * 0.2 / np.sqrt(2))
    # first step whose RMSE exceeds 0.5: 0.2 * t / sqrt(2) > 0.5  <=>  t >= 4
    assert metrics.valid_prediction_time(truth, pred, threshold=0.5, scale=1.0) == 4
    assert metrics.valid_prediction_time(truth, pred, threshold=10.0, scale=1.0) == 10  # never exceeds
    assert metrics.valid_prediction_time(truth, pred, threshold=0.5, scale=2.0) == 8
    pred[2, 1] = np.nan
    assert (
        metrics.valid_prediction_time(truth, pred, threshold=0.5, scale=1.0) == 2
    )  # NaN counts as a failure


def test_valid_prediction_time_default_scale_is_truth_std() -> None:
    truth = np.stack([np.sin(np.linspace(0, 6, 100)) * 10.0], 1)
    sd = truth.std()
    pred = truth + 0.3 * sd
    assert metrics.valid_prediction_time(truth, pred, threshold=0.5) == 100
    assert metrics.valid_prediction_time(truth, truth + 0.6 * sd, threshold=0.5) == 0


def _circle(n: int, phase: float = 0.0, radius: float = 1.0, centre: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 8 * np.pi, n) + phase
    return np.stack([radius * np.cos(t) + centre, radius * np.sin(t)], 1)


def test_attractor_kl() -> None:
    a = _circle(800)
    assert metrics.attractor_kl(a, a) == pytest.approx(0.0, abs=1e-12)
    # the same attractor traced from another phase and for another length is close to 0
    assert metrics.attractor_kl(a, _circle(1200, phase=1.0)) < 0.05
    near, far = (
        metrics.attractor_kl(a, _circle(800, centre=0.5)),
        metrics.attractor_kl(a, _circle(800, centre=2.0)),
    )
    assert 0.1 < near < far
    collapsed = metrics.attractor_kl(a, np.zeros((800, 2)))  # a forecast that decays to a point
    assert collapsed > near
    assert metrics.attractor_kl(a, np.full((10, 2), np.nan)) == float("inf")
    with pytest.raises(ValueError, match="bandwidth"):
        metrics.attractor_kl(a, a, bandwidth=0)


def test_spectral_hellinger() -> None:
    t = np.arange(2048)
    slow, fast = np.sin(2 * np.pi * t / 64)[:, None], np.sin(2 * np.pi * t / 8)[:, None]
    assert metrics.spectral_hellinger(slow, slow) == pytest.approx(0.0, abs=1e-6)
    assert metrics.spectral_hellinger(slow, 5.0 * slow) == pytest.approx(0.0, abs=1e-6)  # shape, not power
    assert metrics.spectral_hellinger(slow, slow[:1000]) < 0.05  # lengths may differ
    assert metrics.spectral_hellinger(slow, fast) > 0.9
    assert metrics.spectral_hellinger(slow, np.zeros_like(slow)) > 0.5  # a constant forecast has no peak
    assert metrics.spectral_hellinger(slow, np.full_like(slow, np.inf)) == 1.0


def test_shape_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.smape(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="channel counts differ"):
        metrics.mae(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="threshold"):
        metrics.valid_prediction_time(np.zeros(3), np.zeros(3), threshold=0)
    with pytest.raises(ValueError, match="empty"):
        metrics.mse(np.zeros((0, 1)), np.zeros((0, 1)))


finite = arrays(np.float64, (12, 2), elements=st.floats(-1e3, 1e3, allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(finite, finite)
def test_point_metric_properties(y: np.ndarray, f: np.ndarray) -> None:
    s = metrics.smape(y, f)
    assert 0.0 <= s <= 100.0
    assert s == pytest.approx(metrics.smape(f, y))  # symmetric
    assert metrics.smape(y, y) == 0.0
    assert metrics.mse(y, f) >= metrics.mae(y, f) ** 2 - 1e-9  # Jensen
    assert -1.0 - 1e-9 <= metrics.spearman(y, f) <= 1.0 + 1e-9


# --- probabilistic scores ------------------------------------------------------------------------


def _gaussian_crps(mu: float, sigma: float, y: float) -> float:
    """Closed form: sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)], z = (y - mu) / sigma."""
    from scipy.stats import norm

    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))


@pytest.mark.parametrize(("mu", "sigma", "y"), [(0.0, 1.0, 0.3), (1.0, 2.0, -2.5), (0.0, 0.5, 0.0)])
def test_crps_of_a_gaussian_matches_its_closed_form(mu: float, sigma: float, y: float) -> None:
    from scipy.stats import norm

    exact = _gaussian_crps(mu, sigma, y)
    samples = norm.ppf((np.arange(20000) + 0.5) / 20000, loc=mu, scale=sigma)  # an even ensemble
    assert metrics.crps_samples([[y]], samples[None, None]) == pytest.approx(exact, rel=1e-3)
    levels = (np.arange(199) + 1) / 200
    quantiles = norm.ppf(levels, loc=mu, scale=sigma)[None, None]
    assert metrics.crps_quantiles([[y]], quantiles, levels) == pytest.approx(exact, rel=0.02)


def test_crps_of_a_point_mass_is_the_absolute_error() -> None:
    assert metrics.crps_samples([1.0, 2.0], np.array([[3.0, 3.0], [2.0, 2.0]])) == pytest.approx(1.0)


def test_pinball_quantile_loss_and_coverage_by_hand() -> None:
    y = np.array([[1.0], [3.0]])
    q = np.array([[[0.0, 2.0]], [[0.0, 2.0]]])  # (H, C, Q) levels 0.1 and 0.9: both truths at or above q
    # level 0.1: 0.1 * (1 + 3) / 2; level 0.9: (0.1 * 1 + 0.9 * 1) / 2
    np.testing.assert_allclose(metrics.pinball_loss(y, q, [0.1, 0.9]), [0.2, 0.5])
    assert metrics.crps_quantiles(y, q, [0.1, 0.9]) == pytest.approx(0.7)
    assert metrics.weighted_quantile_loss(y, q, [0.1, 0.9]) == pytest.approx(0.7 / 2.0)
    assert metrics.interval_coverage(y, q[..., 0], q[..., 1]) == 0.5
    assert metrics.interval_coverage([[1.0, 2.0]], [[1.0, 2.5]], [[1.0, 3.0]]) == 0.5  # ends count as inside
    with pytest.raises(ValueError, match="lower exceeds upper"):
        metrics.interval_coverage(y, q[..., 1], q[..., 0])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        metrics.crps_quantiles(y, q, [0.0, 0.9])
    with pytest.raises(ValueError, match=r"\(H, C, Q\)"):
        metrics.crps_quantiles(y, q, [0.1, 0.5, 0.9])


def test_horizon_correlation_is_a_rank_correlation() -> None:
    assert metrics.horizon_correlation([1, 5, 9, 20], [2, 3, 50, 51]) == pytest.approx(1.0)
    assert metrics.horizon_correlation([1, 5, 9, 20], [51, 50, 3, 2]) == pytest.approx(-1.0)
    assert metrics.horizon_correlation([4, 4, 4], [1, 2, 3]) == 0.0
