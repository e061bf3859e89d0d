"""The benchmark harness: windows, noise, scoring against an oracle and the mean, report, plots, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from panda_fm.cli import main
from panda_fm.eval.baselines import PipelineForecaster, checkpoint_forecasters
from panda_fm.eval.report import read_report
from panda_fm.eval.runner import (
    EvalConfig,
    draw_windows,
    evaluate,
    noisy_batches,
    observed_truths,
    system_windows,
)
from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset
from panda_fm.forecasters import MeanForecaster, NaiveForecaster
from panda_fm.systems.store import DatasetWriter, open_dataset

CFG = EvalConfig(horizons=(16, 32), context_length=128, windows_per_system=3, rollout=160, batch_size=2)


def _trajectory(name: str, n: int, ic_shift: float = 0.0) -> np.ndarray:
    import dysts.flows

    model = getattr(dysts.flows, name)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.make_trajectory(
            n, pts_per_period=40, init_cond=model.ic + ic_shift, rtol=1e-8, atol=1e-9
        )


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lorenz (2 trajectories) and Rossler in the test split, a too-short test system, a train system."""
    root = tmp_path_factory.mktemp("tiny")
    lorenz = np.stack([_trajectory("Lorenz", 400), _trajectory("Lorenz", 400, ic_shift=0.5)])
    rossler = _trajectory("Rossler", 300)[None]
    with DatasetWriter(root, shard_size=2) as w:
        w.add({"id": "Lorenz", "split": "test", "dt": 0.01, "period": 1.5}, lorenz)
        w.add({"id": "train-only", "split": "train", "dt": 0.01, "period": 1.5}, lorenz)
        w.add({"id": "Rossler", "split": "test", "dt": 0.01, "period": 6.0}, rossler)
        w.add({"id": "too-short", "split": "test", "dt": 0.01, "period": 6.0}, rossler[:, :150])
    return root


class Oracle:
    """Knows every trajectory; finds the context in them and returns what really followed."""

    name = "oracle"

    def __init__(self, root: Path):
        ds = open_dataset(root)
        self.trajs = [np.asarray(ds.load(i), dtype=np.float64) for i in ds.ids()]

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        out = []
        for ctx in context:  # (T, C)
            for traj in self.trajs:  # (K, T', D)
                if traj.shape[2] != ctx.shape[1]:
                    continue
                k, t = np.nonzero((traj == ctx[-1]).all(axis=2))
                if k.size:
                    future = traj[k[0], t[0] + 1 : t[0] + 1 + prediction_length]
                    pad = np.repeat(future[-1:], prediction_length - len(future), axis=0)
                    out.append(np.concatenate([future, pad]))
                    break
            else:
                raise AssertionError("the oracle was handed a context that is in no trajectory")
        return np.stack(out)


class Recorder(NaiveForecaster):
    """Naive forecaster that keeps every context it is handed."""

    def __init__(self, name: str):
        self.name = name
        self.seen: list[np.ndarray] = []

    def predict(self, context: np.ndarray, prediction_length: int) -> np.ndarray:
        self.seen.append(np.array(context))
        return super().predict(context, prediction_length)


def test_windows_are_deterministic_in_bounds_and_distinct(dataset_dir: Path) -> None:
    ds = open_dataset(dataset_dir)
    wins = draw_windows(ds, CFG)
    assert {w.system for w in wins} == {"Lorenz", "Rossler"}  # no train split, too-short one skipped
    assert len(wins) == 6
    for w in wins:
        traj = np.asarray(ds.load(w.system))[w.ic]
        assert w.start >= CFG.context_length and w.start + max(CFG.horizons) <= traj.shape[0]
        np.testing.assert_array_equal(w.context, traj[w.start - CFG.context_length : w.start])
        np.testing.assert_array_equal(w.truth, traj[w.start : w.start + w.truth.shape[0]])
    lorenz = [(w.ic, w.start) for w in wins if w.system == "Lorenz"]
    assert len(set(lorenz)) == len(lorenz)
    assert all(w.truth.shape[0] == CFG.forecast_length for w in wins if w.system == "Lorenz")  # long enough
    assert [(w.ic, w.start) for w in draw_windows(ds, CFG)] == [(w.ic, w.start) for w in wins]
    other = draw_windows(ds, EvalConfig(**{**CFG.__dict__, "seed": 1}))
    assert [(w.ic, w.start) for w in other] != [(w.ic, w.start) for w in wins]
    one = draw_windows(ds, EvalConfig(**{**CFG.__dict__, "max_systems": 1}))
    assert [(w.ic, w.start) for w in one] == lorenz  # a system's windows do not depend on the others


def test_oracle_scores_perfectly_and_mean_as_expected(dataset_dir: Path) -> None:
    result = evaluate([Oracle(dataset_dir), MeanForecaster()], open_dataset(dataset_dir), CFG)
    summary = result.report["summary"]["0.0"]
    for h in CFG.horizons:
        assert summary["oracle"][f"smape@{h}"]["median"] == 0.0
        assert summary["oracle"][f"mae@{h}"]["q75"] == 0.0
        assert summary["oracle"][f"spearman@{h}"]["median"] == pytest.approx(1.0)
        # standardised by the context, the mean forecast is 0: |y - 0| / (|y| + 0) = 1 everywhere
        assert summary["mean"][f"smape@{h}"]["median"] == pytest.approx(100.0)
        assert summary["mean"][f"spearman@{h}"]["median"] == 0.0
    assert summary["oracle"]["vpt"]["q25"] == max(CFG.horizons)
    assert summary["oracle"]["kl"]["median"] == pytest.approx(0.0, abs=1e-9)
    assert summary["oracle"]["hellinger"]["median"] == pytest.approx(0.0, abs=1e-6)
    # the mean's MAE equals the mean |standardised truth| of each window
    wins = draw_windows(open_dataset(dataset_dir), CFG)
    rows = [r for r in result.report["per_window"] if r["method"] == "mean"]
    for w, r in zip(wins, rows, strict=True):
        y = (w.truth[:16] - w.context.mean(0)) / w.context.std(0)
        assert r["metrics"]["mae@16"] == pytest.approx(np.abs(y).mean())
        assert r["metrics"]["mse@16"] == pytest.approx((y**2).mean())


def test_every_method_sees_the_same_noisy_windows_scored_against_clean_truth(dataset_dir: Path) -> None:
    a, b = Recorder("a"), Recorder("b")
    cfg = EvalConfig(**{**CFG.__dict__, "noise": (0.5,)})
    result = evaluate([a, b], open_dataset(dataset_dir), cfg)
    np.testing.assert_array_equal(np.concatenate(a.seen), np.concatenate(b.seen))
    wins = draw_windows(open_dataset(dataset_dir), cfg)
    seen = np.concatenate(a.seen)  # (N, T, C), in window order
    clean = np.stack([w.context for w in wins])  # (N, T, C)
    ratio = (seen - clean).std(axis=1) / clean.std(axis=1)  # (N, C): noise std in channel stds
    assert np.allclose(ratio, 0.5, atol=0.1)
    # scored against the clean truth, standardised by the clean context
    rows = [r for r in result.report["per_window"] if r["method"] == "a"]
    for w, noisy, r in zip(wins, seen, rows, strict=True):
        mu, sd = w.context.mean(0), w.context.std(0)
        y, f = (w.truth[:16] - mu) / sd, (noisy[-1] - mu) / sd
        assert r["metrics"]["mae@16"] == pytest.approx(np.abs(y - f).mean())


def test_missing_entries_are_drawn_per_system_the_same_for_every_method(dataset_dir: Path) -> None:
    cfg = EvalConfig(**{**CFG.__dict__, "noise": (0.0, 0.1), "missing": 0.2})
    data = open_dataset(dataset_dir)
    sid = data.ids("test")[0]
    wins = system_windows(data, sid, cfg)
    first = list(noisy_batches(sid, wins, cfg))
    again = list(noisy_batches(sid, wins, cfg))
    complete = list(noisy_batches(sid, wins, EvalConfig(**{**cfg.__dict__, "missing": 0.0})))
    for (sigma, _, batch, seen), (_, _, _, seen2), (_, _, _, full) in zip(
        first, again, complete, strict=True
    ):
        np.testing.assert_array_equal(seen, seen2)  # the same entries, the same noise
        gone = np.isnan(seen)
        assert 0.1 < gone.mean() < 0.3 and not np.isnan(full).any()
        np.testing.assert_array_equal(seen[~gone], full[~gone])  # the rest as without missing entries
        if sigma == 0:
            np.testing.assert_array_equal(full, np.stack([w.context for w in batch]))
    with pytest.raises(ValueError, match="missing must be a fraction"):
        EvalConfig(missing=1.0)


def test_a_gap_removes_one_contiguous_run_of_steps_in_every_channel(dataset_dir: Path) -> None:
    cfg = EvalConfig(**{**CFG.__dict__, "noise": (0.0, 0.1), "gap": 10})
    data = open_dataset(dataset_dir)
    sid = data.ids("test")[0]
    wins = system_windows(data, sid, cfg)
    complete = list(noisy_batches(sid, wins, EvalConfig(**{**cfg.__dict__, "gap": 0})))
    for (_, _, _, seen), (_, _, _, full) in zip(noisy_batches(sid, wins, cfg), complete, strict=True):
        gone = np.isnan(seen)
        assert (gone == gone[..., :1]).all()  # whole steps: every channel at once
        for steps in gone[..., 0]:
            where = np.flatnonzero(steps)
            assert len(where) == 10 and (np.diff(where) == 1).all()  # one run of 10 steps
        np.testing.assert_array_equal(seen[~gone], full[~gone])
    with pytest.raises(ValueError, match="gap must be in"):
        EvalConfig(gap=512)


def test_observed_truths_carry_new_noise_of_the_windows_level(dataset_dir: Path) -> None:
    cfg = EvalConfig(**{**CFG.__dict__, "noise": (0.0, 0.2), "noisy_truth": True, "batch_size": 8})
    data = open_dataset(dataset_dir)
    sid = data.ids("test")[0]
    wins = system_windows(data, sid, cfg)
    truth = np.stack([w.truth[:64] for w in wins])
    np.testing.assert_array_equal(observed_truths(sid, 0, 0, wins, 64, cfg), truth)  # clean: the truth
    state = EvalConfig(**{**cfg.__dict__, "noisy_truth": False})
    np.testing.assert_array_equal(observed_truths(sid, 1, 0, wins, 64, state), truth)  # not asked for
    observed = observed_truths(sid, 1, 0, wins, 64, cfg)
    assert observed.shape == truth.shape
    np.testing.assert_array_equal(observed, observed_truths(sid, 1, 0, wins, 64, cfg))  # seeded
    std = np.stack([w.context for w in wins]).std(axis=1)  # (B, C)
    ratio = (observed - truth).std(axis=1) / std  # (B, C): 0.2 of each window's context std
    np.testing.assert_allclose(ratio, 0.2, rtol=0.3)
    (_, _, _, seen), *_ = noisy_batches(sid, wins, EvalConfig(**{**cfg.__dict__, "noise": (0.2,)}))
    context_noise = seen - np.stack([w.context for w in wins])
    assert abs(np.corrcoef(context_noise[:, -64:].ravel(), (observed - truth).ravel())[0, 1]) < 0.1  # apart


def test_bad_settings_raise_clear_errors(dataset_dir: Path) -> None:
    with pytest.raises(ValueError, match="noise"):
        EvalConfig(noise=(-0.1,))
    with pytest.raises(ValueError, match="horizons"):
        EvalConfig(horizons=())
    with pytest.raises(ValueError, match="distinct names"):
        evaluate([MeanForecaster(), MeanForecaster()], open_dataset(dataset_dir), CFG)
    with pytest.raises(ValueError, match="long enough"):
        draw_windows(open_dataset(dataset_dir), EvalConfig(context_length=512, horizons=(512,)))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        PipelineForecaster(dataset_dir / "nope")
    (dataset_dir.parent / "a" / "final").mkdir(parents=True)
    (dataset_dir.parent / "b" / "final").mkdir(parents=True)
    names = [
        f.name
        for f in checkpoint_forecasters(
            [dataset_dir.parent / "a" / "final", dataset_dir.parent / "b" / "final"]
        )
    ]
    assert names == ["a/final", "b/final"]


def test_cli_writes_report_and_plots(dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["evaluate", "--test", str(dataset_dir), "--out", str(out), "--horizons", "16", "32"]
    argv += [
        "--context-length",
        "128",
        "--windows-per-system",
        "2",
        "--noise",
        "0",
        "0.05",
        "--rollout",
        "160",
    ]
    assert main(argv + ["--baselines", "mean", "naive", "nvar"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "per_window" not in summary and "per_system" not in summary  # the summary stays small
    assert set(json.loads((out / "windows.json").read_text())) == {"per_system", "per_window"}
    report = read_report(out)
    assert set(report) == set(summary) | {"per_system", "per_window"}
    assert read_report(out, details=False) == summary
    assert report["methods"] == ["mean", "naive", "nvar"]
    assert len(report["per_window"]) == 2 * 2 * 3 * 2  # systems x windows x methods x noise levels
    assert set(report["summary"]) == {"0.0", "0.05"}
    assert (
        report["summary"]["0.0"]["nvar"]["smape@16"]["median"]
        < report["summary"]["0.0"]["naive"]["smape@16"]["median"]
    )
    wall = report["wall_time_s"]["0.0"]
    assert set(wall) == {"mean", "naive", "nvar"}
    assert wall["nvar"] > wall["mean"] > 0  # fitting a cubic NVAR costs more than averaging
    table = (out / "report.md").read_text()
    assert "| 0.05 | nvar |" in table and "sMAPE@32" in table
    assert "## Median smape@16 per system" in table and "| 0.05 | Rossler |" in table
    assert "`summary.json`" in table and "`windows.json`" in table
    assert not (out / "report.json").exists()
    for png in ("error_vs_horizon.png", "sample_forecasts.png", "rollouts.png"):
        assert (out / png).stat().st_size > 10_000
    assert main(argv + ["--baselines", "none"]) == 2  # nothing to evaluate: a clear error, not a crash
    assert main(argv + ["--baselines", "prophet"]) == 2


@pytest.mark.slow
def test_founders_testset_builds_once(tmp_path: Path) -> None:
    cfg = FounderTestsetConfig(systems=("Rossler",), n_steps=200, pts_per_period=20, n_ics=2)
    root = founders_testset(tmp_path / "f", cfg)
    ds = open_dataset(root)
    assert ds.ids("test") == ["Rossler"] and ds.load("Rossler").shape == (2, 200, 3)
    assert ds.record("Rossler")["founders"] == ["Rossler"]
    before = (root / "manifest.jsonl").read_bytes()
    founders_testset(tmp_path / "f", cfg)  # cached: nothing is integrated or written again
    assert (root / "manifest.jsonl").read_bytes() == before
    with pytest.raises(ValueError, match="other settings"):
        founders_testset(tmp_path / "f", FounderTestsetConfig(systems=("Rossler",), n_steps=300))
    with pytest.raises(ValueError, match="not a dysts flow"):
        founders_testset(tmp_path / "g", FounderTestsetConfig(systems=("NoSuchFlow",)))


@pytest.mark.slow
def test_concurrent_builds_of_one_founders_cache_take_turns(tmp_path: Path) -> None:
    code = (
        "import sys; from panda_fm.eval.testsets import FounderTestsetConfig, founders_testset; "
        "founders_testset(sys.argv[1], FounderTestsetConfig(systems=('Rossler', 'SprottB'), n_steps=200, "
        "pts_per_period=20))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "f")], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sorted(open_dataset(tmp_path / "f").ids("test")) == ["Rossler", "SprottB"]


def test_checkpoint_and_baselines_share_the_harness(dataset_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import TINY_CHECKPOINT

    out = tmp_path / "ckpt"
    argv = [
        "evaluate",
        "--checkpoint",
        str(TINY_CHECKPOINT),
        "--baselines",
        "naive",
        "--test",
        str(dataset_dir),
    ]
    argv += ["--out", str(out), "--horizons", "16", "32", "--context-length", "128", "--rollout", "160"]
    assert main(argv + ["--windows-per-system", "2"]) == 0
    report = read_report(out)
    assert report["methods"] == ["tiny_panda", "naive"]
    assert report["nonfinite"]["0.0"]["tiny_panda"] == 0
    rows = [r for r in report["per_window"] if r["method"] == "tiny_panda"]
    assert len(rows) == 4 and all(np.isfinite(list(r["metrics"].values())).all() for r in rows)
    mine = [(r["system"], r["ic"], r["start"]) for r in rows]
    assert mine == [
        (r["system"], r["ic"], r["start"]) for r in report["per_window"] if r["method"] == "naive"
    ]


def test_a_checkpoints_prior_is_its_experts_chosen_by_the_untrained_backtest():
    import torch

    from panda_fm import PandaPipeline

    path = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_experts"
    context = _trajectory("Lorenz", 600)[None, :520]  # (1, T, 3)
    trained, prior = PipelineForecaster(path), PipelineForecaster(path, name="prior", prior=True)
    pipe = PandaPipeline.from_pretrained(path)
    x = torch.randn(1, 512, 3, generator=torch.Generator().manual_seed(0)).cumsum(1) / 10
    with torch.no_grad():
        _, weights = pipe.model.expert_weights(x)
        _, prior_weights = pipe.model.prior_only().expert_weights(x)
    assert not torch.allclose(weights, prior_weights)  # the fixture's network is trained
    pipe.model = pipe.model.prior_only()
    np.testing.assert_array_equal(prior.predict(context, 64), pipe.predict(context, 64))
    assert prior.name == "prior" and trained.predict(context, 64).shape == (1, 64, 3)
