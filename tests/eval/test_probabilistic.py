"""The probabilistic benchmark: its baselines on known cases, and one small run end to end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from panda_fm.eval.metrics import horizon_correlation
from panda_fm.eval.plots import plot_fan, plot_reliability
from panda_fm.eval.probabilistic import (
    LEVELS,
    AnalogueEnsemble,
    BootstrapQuantiles,
    Climatology,
    ModelQuantiles,
    default_baselines,
    evaluate_quantiles,
    markdown_table,
    summarise,
    system_bootstrap_mean_ci,
    system_bootstrap_spearman_ci,
)
from panda_fm.eval.runner import EvalConfig
from panda_fm.forecasters import NVARForecaster
from panda_fm.systems.store import open_dataset
from panda_fm.uncertainty import context_lags, lagged_spread, lead_corrected, lead_offset, noise_corrected
from tests.conftest import integrate


def test_analogue_ensemble_continues_a_periodic_signal_exactly() -> None:
    t = np.arange(400)
    x = np.stack([np.sin(2 * np.pi * t / 50), np.cos(2 * np.pi * t / 50)], axis=-1)[None]  # (1, T, 2)
    truth = np.stack(
        [
            np.sin(2 * np.pi * (t[-1] + 1 + np.arange(120)) / 50),
            np.cos(2 * np.pi * (t[-1] + 1 + np.arange(120)) / 50),
        ],
        -1,
    )
    q, spread, point, paths = AnalogueEnsemble(k=4).forecast(x, 120, np.asarray(LEVELS))["analogue-ens"]
    assert q.shape == (1, 120, 2, len(LEVELS)) and point is None and paths.shape == (1, 4, 120, 2)
    np.testing.assert_allclose(q[0, ..., 9], truth, atol=1e-6)  # every member is the same phase
    assert spread.max() < 1e-6


@pytest.mark.parametrize("steps", [128, 512])
def test_the_bootstrap_backtests_from_origins_its_context_and_forecaster_allow(steps: int) -> None:
    """A short context backtests from the short origins, each with the forecaster's fewest steps before it."""
    x = integrate("Lorenz", steps, 2, periods=steps / 30)[0]  # (2, steps, 3)
    seen = []

    class Recording(NVARForecaster):
        def predict(self, context, prediction_length):
            seen.append(np.asarray(context).shape[-2])
            return super().predict(context, prediction_length)

    method = BootstrapQuantiles(Recording(), "nvar+bootstrap")
    q, spread, point, _ = method.forecast(x, 64, np.asarray(LEVELS))["nvar+bootstrap"]
    assert q.shape == (2, 64, 3, len(LEVELS)) and np.isfinite(q).all() and np.all(np.diff(q, axis=-1) >= 0)
    offsets, least = method.config.origins(steps)
    least = max(least, method.forecaster.min_context)
    assert sorted(seen[:-1]) == sorted(steps - o for o in offsets if steps - o >= least)  # then the forecast
    assert seen[-1] == steps


def test_climatology_is_the_context_distribution() -> None:
    x = np.random.default_rng(0).standard_normal((2, 1000, 3))
    q, spread, _, _ = Climatology().forecast(x, 10, np.array([0.5]))["climatology"]
    np.testing.assert_allclose(q[:, 3, :, 0], np.median(x, axis=1))
    assert np.allclose(spread, np.sqrt(2))


def test_a_small_probabilistic_run_scores_every_method(
    tiny_pipeline, tiny_dataset: Path, tmp_path: Path
) -> None:
    config = EvalConfig(
        horizons=(16, 32), context_length=200, windows_per_system=2, noise=(0.0, 0.05), rollout=0
    )
    methods = [ModelQuantiles(tiny_pipeline, "tiny"), *default_baselines()]
    report = evaluate_quantiles(methods, open_dataset(tiny_dataset), config)
    names = ["tiny", "nvar+bootstrap", "analogue-ens", "climatology"]
    assert report["methods"] == names and set(report["summary"]) == {"0.0", "0.05"}
    for stats in report["summary"]["0.05"].values():
        assert stats["windows"] == 4  # 2 test systems x 2 windows
        assert 0 <= stats["cov50@32"] <= stats["cov80@32"] <= 1 and stats["crps@32"] > 0
        assert -1 <= stats["horizon_spearman"] <= 1
    assert "smape_point@16" in report["summary"]["0.0"]["tiny"]
    for name in ("tiny", "analogue-ens"):  # the methods that draw paths get the sample-based CRPS too
        stats = report["summary"]["0.0"][name]
        assert stats["crps_samples@32"] == pytest.approx(stats["crps@32"], rel=0.25)
    assert "crps_samples@32" not in report["summary"]["0.0"]["climatology"]
    assert "| climatology |" in markdown_table(report)
    lo, hi = report["summary"]["0.05"]["tiny"]["cov50@32_ci95"]
    assert lo <= report["summary"]["0.05"]["tiny"]["cov50@32"] <= hi
    assert plot_reliability(report, tmp_path / "r.png").stat().st_size > 10_000
    first = report["samples"][0]
    assert plot_fan(
        first["context"], first["quantiles"], LEVELS, tmp_path / "f.png", truth=first["truth"]
    ).exists()


def test_a_noisy_truth_scores_the_noisy_levels_against_observations(tiny_dataset: Path) -> None:
    config = EvalConfig(
        horizons=(16, 32), context_length=200, windows_per_system=2, noise=(0.0, 0.05), rollout=0
    )
    state = evaluate_quantiles([Climatology()], open_dataset(tiny_dataset), config)
    observed = evaluate_quantiles(
        [Climatology()], open_dataset(tiny_dataset), replace(config, noisy_truth=True)
    )
    assert observed["summary"]["0.0"] == state["summary"]["0.0"]  # clean: nothing to observe
    assert (
        observed["summary"]["0.05"]["climatology"]["crps@32"]
        != state["summary"]["0.05"]["climatology"]["crps@32"]
    )
    assert observed["config"]["noisy_truth"] and not state["config"]["noisy_truth"]


def test_the_summary_gives_the_crps_median_beside_its_mean() -> None:
    """One window whose truth leaves the context's range by orders of magnitude rules the mean CRPS."""
    crps = [0.5, 0.6, 1000.0]
    rows = [
        {
            "noise": 0.0,
            "method": "m",
            "system": str(i),
            "metrics": {"crps@8": c, "cov50@8": 0.5, "predicted_horizon": i, "vpt": i},
        }
        for i, c in enumerate(crps)
    ]
    stats = summarise(rows, ["m"], [0.0])["0.0"]["m"]
    assert stats["crps@8"] == pytest.approx(np.mean(crps)) and stats["crps@8_median"] == 0.6
    assert "cov50@8_median" not in stats


def test_the_summary_of_one_system_gives_no_interval_over_systems() -> None:
    def rows(systems: list[str]) -> list[dict]:
        return [
            {
                "noise": 0.0,
                "method": "m",
                "system": sid,
                "metrics": {
                    "cov50@8": c,
                    "cov80@8": c,
                    "crps@8": 0.1,
                    "smape_median@8": 1.0,
                    "predicted_horizon": i,
                    "vpt": i,
                },
            }
            for i, (sid, c) in enumerate(zip(systems, [1.0, 0.0, 1.0], strict=True))
        ]

    alone = summarise(rows(["a", "a", "a"]), ["m"], [0.0])["0.0"]["m"]
    assert alone["cov50@8"] == pytest.approx(2 / 3) and alone["horizon_spearman"] == pytest.approx(1.0)
    assert "cov50@8_ci95" not in alone and "horizon_spearman_ci95" not in alone
    several = summarise(rows(["a", "b", "c"]), ["m"], [0.0])["0.0"]["m"]
    assert "cov50@8_ci95" in several and "horizon_spearman_ci95" in several
    table = markdown_table({"config": {"horizons": [8]}, "summary": {"0.0": {"m": alone}}})
    assert "| m | 0.100 | 0.67 | 0.67 | 1.0 | - | 1.00 |" in table


def test_coverage_intervals_resample_whole_systems() -> None:
    # every window of a system covers or none does: the mean is 0.5, and resampling the two systems gives means
    # of 0, 0.5 and 1 with probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 1]
    values = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert system_bootstrap_mean_ci(values, ["a", "a", "a", "b", "b", "b"]) == (0.0, 1.0)
    # one system: no spread at all, whatever the windows
    assert system_bootstrap_mean_ci(values, ["a"] * 6) == (0.5, 0.5)
    # many independent systems: close to the normal interval of a proportion
    rng = np.random.default_rng(1)
    covered = (rng.random(400) < 0.8).astype(float)
    lo, hi = system_bootstrap_mean_ci(covered, [str(i) for i in range(400)])
    half = 1.96 * np.sqrt(covered.mean() * (1 - covered.mean()) / 400)
    assert lo == pytest.approx(covered.mean() - half, abs=0.01) and hi == pytest.approx(
        covered.mean() + half, abs=0.01
    )


def test_the_horizon_correlation_has_an_interval_over_systems() -> None:
    horizon = np.arange(12.0)
    systems = [str(i // 3) for i in range(12)]  # four systems of three windows
    assert system_bootstrap_spearman_ci(horizon, 2 * horizon + 1, systems) == (1.0, 1.0)  # same ranks
    assert system_bootstrap_spearman_ci(horizon, -horizon, systems) == (-1.0, -1.0)
    # one system: every resample is the same windows
    rho = horizon_correlation(horizon[:3], [2.0, 1.0, 3.0])
    assert system_bootstrap_spearman_ci(horizon[:3], [2.0, 1.0, 3.0], ["a"] * 3) == (rho, rho)
    # noisy pairs: the interval holds the correlation and narrows with more systems
    rng = np.random.default_rng(0)
    x = rng.standard_normal(400)
    y = x + rng.standard_normal(400)
    few = system_bootstrap_spearman_ci(x[:40], y[:40], [str(i) for i in range(40)])
    many = system_bootstrap_spearman_ci(x, y, [str(i) for i in range(400)])
    assert few[0] < horizon_correlation(x[:40], y[:40]) < few[1]
    assert many[0] < horizon_correlation(x, y) < many[1] and many[1] - many[0] < few[1] - few[0]


def test_methods_need_distinct_names(tiny_dataset: Path) -> None:
    with pytest.raises(ValueError, match="distinct names"):
        evaluate_quantiles([Climatology(), Climatology()], open_dataset(tiny_dataset), EvalConfig(rollout=0))


def test_cli_evaluate_with_quantiles_writes_the_probabilistic_report(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from panda_fm.cli import main
    from tests.conftest import TINY_CHECKPOINT

    out = tmp_path / "report"
    args = ["evaluate", "--test", str(tiny_dataset), "--checkpoint", str(TINY_CHECKPOINT), "--out", str(out)]
    settings = ["--baselines", "mean", "--context-length", "200", "--horizons", "16", "32", "--rollout", "0"]
    assert main([*args, *settings, "--windows-per-system", "1", "--quantiles"]) == 0
    table = (out / "probabilistic.md").read_text()
    assert "| tiny_panda |" in table and "| analogue-ens |" in table and "CRPS@32" in table
    assert (out / "reliability.png").stat().st_size > 10_000 and (out / "fan.png").exists()


def test_the_model_reports_each_variants_horizon_spread(tiny_pipeline) -> None:
    contexts = integrate("Lorenz", 300, 2, periods=10.0)[0]  # (2, 300, 3)
    cal = tiny_pipeline.calibration
    assert cal.horizon == "lagged"
    variants = {"tiny/spread": ("mixture", replace(cal, horizon="spread"))}
    out = ModelQuantiles(tiny_pipeline, "tiny", variants, batch_size=4).forecast(
        contexts, 24, np.array([0.1, 0.9])
    )
    (q, spread, point, _), (q_s, spread_s, _, _) = out["tiny"], out["tiny/spread"]
    np.testing.assert_array_equal(q, q_s)  # the horizon does not change the distribution
    dist, loc, scale = tiny_pipeline.forecast_distribution(
        contexts, 24, calibration=replace(cal, horizon="spread", lagged_blend=0.0)
    )
    np.testing.assert_allclose(spread_s, dist.spread)  # the in-context spread, before the lagged blend
    T = contexts.shape[1]
    members = np.stack(
        [tiny_pipeline.predict(contexts[:, : T - g].astype(np.float32), 24 + g)[:, g:] for g in cal.lags],
        axis=1,
    )  # (B, K, H, C), by hand
    expected = lagged_spread((members - loc[:, None]) / scale[:, None], (point - loc) / scale)
    expected = noise_corrected(expected, dist.context, cal)  # divided by sqrt(1 + nu^2 / (nu^2 + c^2))
    expected = lead_corrected(expected, dist.context, cal, lead_offset(cal, 24))  # the members' longer leads
    np.testing.assert_allclose(spread, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(spread, spread_s)


def test_stretched_lags_are_each_series_own(tiny_pipeline) -> None:
    """With a lag time scale the members are cut each series' own stretched lags, the same in the pipeline and in
    the evaluation's ModelQuantiles, and the lead correction reads those lags."""
    contexts = integrate("Lorenz", 300, 2, periods=10.0)[0]  # (2, 300, 3)
    cal = replace(tiny_pipeline.calibration, lag_timescale=2.0)
    out = ModelQuantiles(tiny_pipeline, "tiny", {"tiny/stretched": ("mixture", cal)}, batch_size=4).forecast(
        contexts, 24, np.array([0.1, 0.9])
    )
    dist, loc, scale = tiny_pipeline.forecast_distribution(contexts, 24, calibration=cal)
    lags = context_lags(cal, dist.context)  # (B, K)
    assert (lags > np.asarray(cal.lags)).all()
    T, point = contexts.shape[1], out["tiny"][2]
    members = np.stack(
        [
            np.stack([tiny_pipeline.predict(c[: T - g].astype(np.float32), 24 + g)[g:] for g in own])
            for c, own in zip(contexts, lags, strict=True)
        ]
    )  # (B, K, H, C), by hand
    expected = lagged_spread((members - loc[:, None]) / scale[:, None], (point - loc) / scale)
    expected = noise_corrected(expected, dist.context, cal)
    expected = lead_corrected(expected, dist.context, cal, lead_offset(cal, 24, lags=lags))
    np.testing.assert_allclose(out["tiny/stretched"][1], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dist.horizon_spread, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(out["tiny"][1], expected)  # the shipped lags, in steps, differ


def test_variants_with_other_origins_read_their_own_in_context_errors(tiny_pipeline) -> None:
    contexts = integrate("Lorenz", 300, 2, periods=10.0)[0]  # (2, 300, 3)
    cal = tiny_pipeline.calibration
    near = replace(cal, offsets=(128, 64, 32))  # other origins than the pipeline's default
    levels = np.array([0.1, 0.9])
    out = ModelQuantiles(tiny_pipeline, "tiny", {"tiny/near": ("mixture", near)}, batch_size=4).forecast(
        contexts, 24, levels
    )
    for name, config in (("tiny", cal), ("tiny/near", near)):
        expected, _ = tiny_pipeline.predict_quantiles(
            contexts.astype(np.float32), 24, levels, calibration=config
        )
        np.testing.assert_allclose(out[name][0], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(out["tiny"][0], out["tiny/near"][0])
