"""The stress suite: its sets' data, the refusal of too-short contexts, the bootstrap interval, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from panda_fm.eval import stress
from panda_fm.eval.runner import EvalConfig, evaluate
from panda_fm.eval.stress import (
    NONPOLYNOMIAL,
    StressSet,
    available_sets,
    bootstrap_median_ci,
    comparison_markdown,
    evaluate_stress,
    held_out_founders,
    kuramoto_sivashinsky,
    lorenz96,
    mackey_glass,
    merge_stress_reports,
    missing_requirements,
    observed_dataset,
    paired_ratio_ci,
    stress_dataset,
    stress_markdown,
    stress_sets,
)
from panda_fm.forecasters import MeanForecaster, NaiveForecaster
from panda_fm.systems.founders import HELD_OUT
from panda_fm.systems.store import DatasetWriter, open_dataset
from tests.conftest import TINY_CHECKPOINT


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: the founders' sets are integrated once."""
    return tmp_path_factory.mktemp("stress-cache")


def test_the_suite_holds_the_sets_the_issue_names():
    sets = stress_sets()
    for name in ("clean", "observed-x0", "projected", "coarse-4x", "fine-4x", "noise-10", "noise-20"):
        assert name in sets
    assert sets["clean"].noise == 0 and sets["clean"].context_length == 512
    assert [sets[f"context-{n}"].context_length for n in (128, 192, 256)] == [128, 192, 256]
    assert sets["noise-20"].noise == 0.2
    assert set(held_out_founders()) <= HELD_OUT and set(NONPOLYNOMIAL) <= HELD_OUT


def test_sets_whose_packages_are_missing_are_left_out_by_default_and_named(monkeypatch, caplog):
    assert missing_requirements(["numpy", "no_such_package_for_panda_fm"]) == ["no_such_package_for_panda_fm"]
    sets = {
        "plain": StressSet("plain", "needs nothing", dict),
        "extra": StressSet("extra", "needs a package", dict, requires=("no_such_package_for_panda_fm",)),
    }
    monkeypatch.setattr(stress, "stress_sets", lambda: sets)
    with caplog.at_level("WARNING"):
        assert available_sets() == ["plain"]
    assert "extra left out: it needs no_such_package_for_panda_fm" in caplog.text


def test_the_recordings_set_says_how_to_install_its_data(monkeypatch):
    spec = stress_sets()["recordings"]
    assert set(spec.requires) == {"pmdarima", "statsmodels"}
    monkeypatch.setattr(stress, "missing_requirements", lambda packages: ["pmdarima"])
    with pytest.raises(ImportError, match=r'pmdarima.*pip install "panda-fm\[recordings\]"'):
        spec.build()


def test_the_recordings_are_real_series_of_their_documented_sizes():
    pytest.importorskip("pmdarima")
    pytest.importorskip("statsmodels")
    sizes = {
        "sunspots-monthly": (2820, 1),
        "electricity-halfhourly": (4032, 1),
        "co2-weekly": (2284, 1),
        "msft-daily-ohlc": (7983, 4),
        "neuron-membrane": (10000, 1),
    }
    data = stress_sets()["recordings"].build()
    assert {k: v[0].shape[1:] for k, v in data.items()} == sizes
    for traj, dt in data.values():
        assert dt == 1.0 and np.isfinite(traj).all() and (traj.std(axis=1) > 0).all()
    high, low = data["msft-daily-ohlc"][0][0, :, 1], data["msft-daily-ohlc"][0][0, :, 2]
    assert (high >= low).all()  # the channels are open, high, low, close in that order


@pytest.mark.parametrize(
    "make, channels", [(lorenz96, 32), (kuramoto_sivashinsky, 32), (mackey_glass, 1)], ids=["l96", "ks", "mg"]
)
def test_the_systems_integrated_here_are_chaotic_fields(make, channels):
    traj = make(n_ics=2, n_steps=1500)
    assert traj.shape == (2, 1500, channels) and np.isfinite(traj).all()
    assert (traj.std(axis=1) > 0.05).all()  # not a fixed point
    # two nearby starts part: the ICs differ, and the second half of each is not a copy of the other
    assert np.abs(traj[0, 750:] - traj[1, 750:]).mean() > 0.2 * traj.std()
    # aperiodic enough: the first channel's autocorrelation falls below 0.5 within 100 samples and stays
    # below 0.9 afterwards (a limit cycle would return near 1)
    x = traj[0, :, 0] - traj[0, :, 0].mean()
    ac = np.correlate(x, x, "full")[len(x) - 1 :] / (x @ x)
    first = int(np.argmax(ac < 0.5))
    assert 0 < first < 100
    assert ac[first : len(x) // 2].max() < 0.9


def test_observed_sets_are_the_founders_seen_through_an_operator(cache):
    x0 = open_dataset(stress_dataset("observed-x0", cache))
    projected = open_dataset(stress_dataset("projected", cache))
    founders = open_dataset(stress_dataset("context-128", cache))  # the plain founders (shared)
    assert x0.ids("test") == founders.ids("test") == held_out_founders()
    name = x0.ids("test")[0]
    np.testing.assert_array_equal(x0.load(name), founders.load(name)[..., :1])
    widths = {projected.load(n).shape[-1] for n in projected.ids("test")}
    assert widths == {1, 2}
    # reused, not rebuilt: the same directory
    assert stress_dataset("noise-10", cache) == stress_dataset("context-192", cache)


def test_observed_dataset_sees_any_dataset_as_the_observed_sets_see_the_founders(cache, tmp_path):
    founders = stress_dataset("context-128", cache)
    x0 = open_dataset(stress_dataset("observed-x0", cache))
    projected = open_dataset(stress_dataset("projected", cache))
    first = open_dataset(observed_dataset(founders, tmp_path / "first", "first"))
    seen = open_dataset(observed_dataset(founders, tmp_path / "projection", "projection"))
    assert first.ids("test") == seen.ids("test") == x0.ids("test")
    for name in x0.ids("test"):
        np.testing.assert_array_equal(first.load(name), x0.load(name))
        np.testing.assert_allclose(seen.load(name), projected.load(name), rtol=1e-4, atol=1e-4)
        assert first.record(name)["dt"] == x0.record(name)["dt"]
    # reused as built; an unknown observation is refused before anything is written
    assert observed_dataset(founders, tmp_path / "first", "first") == tmp_path / "first"
    with pytest.raises(ValueError, match="unknown observation 'last'"):
        observed_dataset(founders, tmp_path / "last", "last")
    assert not (tmp_path / "last").exists()


def test_alternate_observation_keeps_every_other_coordinate_of_the_larger_systems(tmp_path):
    rng = np.random.default_rng(0)
    six, three = rng.standard_normal((2, 300, 6)), rng.standard_normal((1, 300, 3))
    with DatasetWriter(tmp_path / "source", shard_size=2) as writer:
        writer.add({"id": "skew", "split": "train", "dt": 0.01, "period": 1.0}, six)
        writer.add({"id": "small", "split": "train", "dt": 0.02, "period": 1.0}, three)
    seen = open_dataset(observed_dataset(tmp_path / "source", tmp_path / "alternate", "alternate"))
    assert seen.ids("train") == ["skew"]  # three coordinates would leave a 1-2 channel view: left out
    np.testing.assert_array_equal(seen.load("skew"), six[..., ::2].astype(np.float32))  # stored as float32
    assert seen.record("skew")["dt"] == 0.01
    # a dataset without any system that large is refused before anything is written
    view = tmp_path / "alternate"  # its one system has 3 channels
    with pytest.raises(ValueError, match="6 or more coordinates"):
        observed_dataset(view, tmp_path / "none", "alternate")
    assert not (tmp_path / "none").exists()


class _Picky(NaiveForecaster):
    """The last value, but only from contexts of 200 steps or more."""

    min_context = 200


def test_a_method_that_refuses_short_contexts_is_scored_as_the_mean_and_counted(cache):
    root = stress_dataset("context-128", cache)
    config = EvalConfig(horizons=(64,), context_length=128, windows_per_system=2, rollout=0, max_systems=3)
    report = evaluate([_Picky(name="picky"), MeanForecaster()], open_dataset(root), config).report
    assert report["refused"]["0.0"] == {"picky": 6, "mean": 0}
    picky = [r["metrics"]["smape@64"] for r in report["per_window"] if r["method"] == "picky"]
    mean = [r["metrics"]["smape@64"] for r in report["per_window"] if r["method"] == "mean"]
    assert picky == mean


def test_bootstrap_interval_of_the_median():
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 1.0, 400)
    lo, hi = bootstrap_median_ci(values)
    assert lo < np.median(values) < hi
    # the median's standard error for a normal sample is about 1.2533 sigma / sqrt(n): the interval is near
    # +-1.96 of it
    width = 2 * 1.96 * 1.2533 / np.sqrt(400)
    assert 0.7 * width < hi - lo < 1.3 * width
    assert bootstrap_median_ci([3.0] * 10) == (3.0, 3.0)


def test_paired_interval_of_a_ratio_of_medians_is_narrower_than_unpaired_ones():
    rng = np.random.default_rng(1)
    difficulty = rng.lognormal(3.0, 1.0, 60)  # windows differ a lot; both methods share it
    a = difficulty * 0.8 * rng.lognormal(0.0, 0.05, 60)  # a is 20% better on every window, give or take 5%
    b = difficulty
    ratio, lo, hi = paired_ratio_ci(a, b)
    assert ratio == pytest.approx(np.median(a) / np.median(b))
    assert lo < ratio < hi and 0.7 < lo and hi < 0.9  # paired: clearly 10% lower
    a_lo, a_hi = bootstrap_median_ci(a)
    b_lo, b_hi = bootstrap_median_ci(b)
    assert a_hi > b_lo  # the separate intervals of the medians overlap, so they could not tell
    assert np.isnan(paired_ratio_ci([np.nan, 1.0], [1.0, np.nan])[0])  # no window with both values
    with pytest.raises(ValueError, match="same windows"):
        paired_ratio_ci([1.0, 2.0], [1.0])


def test_reports_of_a_run_split_by_sets_merge_into_one():
    def part(sets, wall):
        return {
            "settings": {"seed": 0},
            "methods": ["a", "b"],
            "sets": {s: {"windows": 1} for s in sets},
            "wall_s": wall,
        }

    merged = merge_stress_reports([part(["noise-10", "noise-20"], 5.0), part(["clean"], 10.0)])
    assert list(merged["sets"]) == ["clean", "noise-10", "noise-20"] and merged["wall_s"] == 15.0
    with pytest.raises(ValueError, match="more than one report"):
        merge_stress_reports([part(["clean"], 1.0), part(["clean"], 1.0)])
    other = part(["noise-10"], 1.0) | {"methods": ["a"]}
    with pytest.raises(ValueError, match="differ in methods"):
        merge_stress_reports([part(["clean"], 1.0), other])


def test_evaluate_stress_reports_every_set_and_method(cache):
    report = evaluate_stress(
        [NaiveForecaster(), MeanForecaster()], ["observed-x0"], cache, windows_per_system=1
    )
    row = report["sets"]["observed-x0"]
    assert row["windows"] == len(held_out_founders())
    assert row["metrics"]["mean"]["smape@128"]["median"] == pytest.approx(100.0)
    naive = row["metrics"]["naive"]["smape@128"]
    assert naive["ci95"][0] <= naive["median"] <= naive["ci95"][1]
    text = stress_markdown(report)
    assert "| observed-x0 |" in text and "**" in text  # the best method of the set is marked
    assert len(row["paired"]["naive"]) == row["windows"] == len(row["paired"]["mean"])
    table = comparison_markdown(report, "naive", ["mean"])
    ratio = naive["median"] / 100.0
    assert f"| observed-x0 | {naive['median']:.1f} | 100.0 (mean) | {ratio:.2f} [" in table
    assert table.rstrip().endswith("yes |" if ratio <= 0.9 else "no |")
    with pytest.raises(ValueError, match="not in the report"):
        comparison_markdown(report, "naive", ["nvar"])
    with pytest.raises(ValueError, match="unknown stress sets"):
        evaluate_stress([MeanForecaster()], ["nope"], cache)


def test_cli_evaluate_test_stress_writes_the_report(cache, tmp_path, capsys):
    from panda_fm.cli import main

    out = tmp_path / "report"
    argv = ["evaluate", "--test", "stress", "--stress-sets", "observed-x0", "--baselines", "naive", "mean"]
    argv += ["--windows-per-system", "1", "--founders-cache", str(cache), "--out", str(out)]
    assert main(argv) == 0
    text = (out / "stress.md").read_text()
    assert "| observed-x0 |" in text and "naive" in text
    assert "against the best baseline" not in text  # no checkpoint: nothing to compare with the baselines
    assert "observed-x0" in capsys.readouterr().out
    assert set(json.loads((out / "stress.json").read_text())["sets"]) == {"observed-x0"}
    # with a checkpoint, the report opens with it against each set's best baseline
    assert main([*argv, "--checkpoint", str(TINY_CHECKPOINT)]) == 0
    text = (out / "stress.md").read_text()
    assert f"## {TINY_CHECKPOINT.name} against the best baseline" in text
