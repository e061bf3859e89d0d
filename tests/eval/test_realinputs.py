"""Real inputs (issue 16): the gap and channel suites' mechanics, and their thresholds for the shipped checkpoint.

The mechanics run on synthetic trajectories with classical forecasters (instant); the thresholds run the
shipped checkpoint on two held-out systems (Rossler, ChenLee) from the founders cache, with a subset of the
cases. Shape letters: T time, C channels, H horizon.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from panda_fm.eval import realinputs
from panda_fm.eval.realinputs import (
    ALONE_FLOOR,
    THREE_CHANNEL_SYSTEMS,
    ChannelCase,
    GapCase,
    RealInputsConfig,
    UnitCase,
    apply_gap,
    channel_cases,
    draw_windows,
    gap_cases,
    load_trajectories,
    run_channel_suite,
    run_gap_suite,
    run_real_inputs,
    run_unit_suite,
    summarise_channel_suite,
    summarise_gap_suite,
    summarise_unit_suite,
    unit_cases,
    write_real_inputs,
)
from panda_fm.forecasters import MeanForecaster, NaiveForecaster

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "panda-fm-small"
T, H = 512, 128
SYSTEMS = ("Rossler", "ChenLee")  # 3-channel held-out flows: both suites use them


def _synthetic(n: int = 4096, channels: int = 3, seed: int = 0) -> np.ndarray:
    """``(n, C)`` sums of sines: smooth, bounded, distinct per channel."""
    t = np.arange(n)[:, None] / 100.0
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, channels)
    return np.sin(2 * np.pi * t + phase) + 0.5 * np.sin(2 * np.pi * 0.37 * t + 2 * phase)


@pytest.fixture(scope="module")
def synthetic() -> dict[str, np.ndarray]:
    return {
        "A": _synthetic(seed=1),
        "B": _synthetic(seed=2),
        "C": _synthetic(seed=3),
        "D": _synthetic(seed=4),
    }


# --- mechanics -----------------------------------------------------------------------------------------


def test_case_lists() -> None:
    full = gap_cases()
    assert full[0].kind == "clean" and len(full) == 1 + 2 * (4 * 3 + 4)
    assert len({c.name for c in full}) == len(full)
    assert len(gap_cases(quick=True)) == 1 + 2 * (2 * 2 + 2)
    names = [c.name for c in channel_cases()]
    assert names[:4] == ["alone", "+3 noise", "+6 noise", "+30 noise"]
    assert (
        "13 stacked (others)" in names and "5 stacked (copies)" in names and "9 stacked (copies)" not in names
    )
    assert ChannelCase("stack", 13, "others").extra_channels(3) == 36
    names = [c.name for c in unit_cases()]
    assert names[:2] == ["x1e-09/all", "x10000 +1e+06 sd/all"] and len(set(names)) == len(names) == 6


def test_apply_gap_places_gaps_where_asked() -> None:
    x = np.arange(512 * 3, dtype=float).reshape(512, 3)
    rng = np.random.default_rng(0)
    g, channel = apply_gap(x, GapCase("contiguous", "all", length=50, end=250), rng)
    assert channel is None and np.isnan(g[212:262]).all() and not np.isnan(g[:212]).any()
    assert not np.isnan(g[262:]).any()
    g, channel = apply_gap(x, GapCase("contiguous", "one", length=10, end=0), rng)
    assert np.isnan(g[-10:, channel]).all() and np.isnan(g).sum() == 10
    g, channel = apply_gap(x, GapCase("scattered", "all", fraction=0.2), rng)
    assert 0.15 < np.isnan(g).mean() < 0.25
    assert not np.isnan(x).any()  # the input is left alone
    with pytest.raises(ValueError, match="does not fit"):
        apply_gap(x, GapCase("contiguous", "all", length=400, end=250), rng)


def test_windows_are_distinct_deterministic_and_bounded(synthetic: dict[str, np.ndarray]) -> None:
    a = draw_windows(synthetic, 4, T, H, seed=3)
    b = draw_windows(synthetic, 4, T, H, seed=3)
    assert [(w.system, w.start) for w in a] == [(w.system, w.start) for w in b]
    assert all(w.context.shape == (T, 3) and w.truth.shape == (H, 3) for w in a)
    for name in synthetic:
        starts = sorted(w.start for w in a if w.system == name)
        assert np.all(np.diff(starts) >= T + H)  # disjoint slots
    with pytest.raises(ValueError, match="ask for at most 6"):
        draw_windows(synthetic, 7, T, H)


def test_gap_suite_scores_the_mean_forecast_as_its_own_reference(synthetic: dict[str, np.ndarray]) -> None:
    windows = draw_windows(synthetic, 1, T, H)
    cases = [GapCase("contiguous", "all", length=100, end=0), GapCase("scattered", "one", fraction=0.3)]
    records = run_gap_suite({"mean": MeanForecaster(), "naive": NaiveForecaster()}, windows, cases, seed=1)
    assert len(records) == 2 * 3 * len(windows)  # the clean case is added
    for r in records:
        if r["method"] == "mean":
            assert r["ratio"] == pytest.approx(1.0) and r["inside"]
    gapped = [r for r in records if r["case"] == "gap100@end-0/all"]
    assert all(r["missing"] == pytest.approx(100 / 512) for r in gapped)
    assert all(r["warned"] is False for r in records if r["method"] == "mean")
    again = run_gap_suite({"naive": NaiveForecaster()}, windows, cases, seed=1)
    assert [r["error"] for r in again] == [r["error"] for r in records if r["method"] == "naive"]
    summary = summarise_gap_suite(records)
    assert summary["mean"]["worst_median_ratio"] == pytest.approx(1.0)
    assert summary["mean"]["out_of_bounds"] == 0 and summary["mean"]["forecasts"] == 3 * len(windows)
    assert [c["case"] for c in summary["naive"]["cases"]][0] == "clean"


def test_channel_suite_scores_only_the_original_channels(synthetic: dict[str, np.ndarray]) -> None:
    windows = draw_windows({"A": synthetic["A"]}, 2, T, H)
    cases = [ChannelCase("noise", 3), ChannelCase("stack", 3, "others"), ChannelCase("stack", 9, "others")]
    records = run_channel_suite({"mean": MeanForecaster()}, windows, synthetic, cases, seed=0)
    # per-channel mean: extras change nothing; 9 stacked needs 8 partners of 3 channels, the pool has 3
    assert {r["case"] for r in records} == {"alone", "+3 noise", "3 stacked (others)"}
    assert all(r["ratio"] == pytest.approx(1.0) and r["raw_ratio"] == pytest.approx(1.0) for r in records)
    stacked = [r for r in records if r["kind"] == "stack"]
    assert all(
        len(r["partners"]) == 2 and "A" not in {p.split("#")[0] for p in r["partners"]} for r in stacked
    )
    copies = run_channel_suite(
        {"mean": MeanForecaster()}, windows, synthetic, [ChannelCase("stack", 3, "copies")]
    )
    for r in (r for r in copies if r["kind"] == "stack"):
        assert {p.split("#")[0] for p in r["partners"]} == {"A"} and f"A#{r['slot']}" not in r["partners"]
    summary = summarise_channel_suite(records)["mean"]
    assert summary["worst_median_ratio"] == pytest.approx(1.0) and not summary["cases_over_limit"]


class _OffsetForecaster:
    """Forecasts the last value plus 1, in whatever units it is given: a forecaster whose units matter."""

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        return np.repeat(context[:, -1:] + 1.0, prediction_length, axis=1)


def test_unit_suite_maps_back_and_catches_a_forecaster_whose_units_matter(
    synthetic: dict[str, np.ndarray],
) -> None:
    windows = draw_windows(synthetic, 2, T, H, seed=0)
    cases = [UnitCase("all", 1e-3), UnitCase("one", 1.0, 10.0)]
    assert [c.name for c in cases] == ["x0.001/all", "+10 sd/one"]
    summary = summarise_unit_suite(
        run_unit_suite({"mean": MeanForecaster(), "offset": _OffsetForecaster()}, windows, cases, seed=0)
    )
    # the mean forecast moves with the units: mapped back, it is the same forecast
    assert summary["mean"]["largest_deviation"] < 1e-9
    rows = {c["case"]: c for c in summary["offset"]["cases"]}
    # x0.001: the +1 becomes +1000 after mapping back, 999 units off; a shift leaves the +1 as it was
    sd = np.array([realinputs._scale(w.context) for w in windows])
    assert rows["x0.001/all"]["max_deviation"] == pytest.approx(999 / sd.min())
    assert rows["+10 sd/one"]["max_deviation"] == pytest.approx(0.0, abs=1e-9)
    assert summary["offset"]["worst_case"] == "x0.001/all"


def test_summary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {s: _synthetic(seed=i) for i, s in enumerate(THREE_CHANNEL_SYSTEMS)}
    monkeypatch.setattr(
        realinputs, "load_trajectories", lambda systems, cache_dir=None: {s: fake[s] for s in systems}
    )
    summary = run_real_inputs(
        {"mean": MeanForecaster()},
        RealInputsConfig(systems=1, windows_per_system=1, quick=True),
        progress=False,
    )
    paths = write_real_inputs(summary, tmp_path / "out", command="python benchmarks/real_inputs.py --quick")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    data = json.loads(paths["json"].read_text())
    assert data["gap"]["mean"]["out_of_bounds"] == 0 and "records" not in data
    assert (
        "## Channel suite" in paths["markdown"].read_text()
        and "## Unit suite" in paths["markdown"].read_text()
    )
    assert data["units"]["mean"]["largest_deviation"] < 1e-6  # float64 rounding of the 1e7 shift
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic writes leave no temporary files


# --- the shipped checkpoint: issue 16's thresholds -------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():  # noqa: ANN201 - PandaPipeline, imported lazily
    torch = pytest.importorskip("torch")
    from panda_fm import PandaPipeline

    torch.set_num_threads(1)
    return PandaPipeline.from_pretrained(SHIPPED)


@pytest.fixture(scope="module")
def held_out() -> dict[str, np.ndarray]:
    """Rossler and ChenLee from the founders cache (integrated once, about 20 s each, where it is missing)."""
    return load_trajectories(SYSTEMS)


@pytest.fixture(scope="module")
def held_out_windows(pipe, held_out: dict[str, np.ndarray]) -> list:  # noqa: ANN001
    """Two windows of each system, at the model's context and prediction lengths."""
    return draw_windows(held_out, 2, pipe.config.context_length, pipe.config.prediction_length, seed=0)


@pytest.fixture(scope="module")
def gap_summary(pipe, held_out_windows: list) -> dict:  # noqa: ANN001
    records = run_gap_suite({"model": pipe}, held_out_windows, gap_cases(quick=True), seed=0)
    return summarise_gap_suite(records)["model"]


def test_gap_suite_forecasts_stay_inside_the_context_bounds(gap_summary: dict) -> None:
    bad = [(c["case"], c["out_of_bounds"]) for c in gap_summary["cases"] if c["out_of_bounds"]]
    assert gap_summary["out_of_bounds"] == 0, f"forecasts out of [min - range, max + range]: {bad}"


def test_gap_suite_median_error_within_limit_of_the_mean_forecast(gap_summary: dict) -> None:
    ratios = {c["case"]: round(c["median_ratio"], 3) for c in gap_summary["cases"]}
    assert not gap_summary["cases_over_limit"], f"median error / mean-forecast error > 1.1: {ratios}"


@pytest.mark.parametrize(
    "case", [ChannelCase("noise", 3), ChannelCase("stack", 2, "others")], ids=lambda c: c.name
)
def test_channel_suite_extra_channels_cost_at_most_ten_percent(
    pipe,  # noqa: ANN001
    held_out: dict[str, np.ndarray],
    held_out_windows: list,
    case: ChannelCase,
) -> None:
    records = run_channel_suite({"model": pipe}, held_out_windows, held_out, [case], seed=0)
    row = next(c for c in summarise_channel_suite(records)["model"]["cases"] if c["case"] == case.name)
    assert row["median_ratio"] <= 1.1, (
        f"{case.name}: error on the system's channels {row['median_error']:.3g} vs "
        f"{row['median_alone_error']:.3g} alone (ratio {row['median_ratio']:.2f}, floor {ALONE_FLOOR})"
    )


def test_a_channel_in_other_units_does_not_move_the_forecast(pipe, held_out_windows: list) -> None:  # noqa: ANN001
    summary = summarise_unit_suite(run_unit_suite({"model": pipe}, held_out_windows, unit_cases(), seed=0))
    deviations = {c["case"]: f"{c['max_deviation']:.2g}" for c in summary["model"]["cases"]}
    assert summary["model"]["largest_deviation"] < 1e-2, f"largest difference in context stds: {deviations}"
