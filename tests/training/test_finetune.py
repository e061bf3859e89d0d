"""Fine-tuning a checkpoint on user series: the run, the result's checkpoint, and bad input."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict, fields

import numpy as np
import pytest
import torch

from panda_fm import PandaPipeline
from panda_fm.cli import main
from panda_fm.data.series import load_series, longest_nan_run, split_series
from panda_fm.training import finetune, run, trainer
from panda_fm.training.config import TrainerConfig, load_config
from panda_fm.training.finetune import (
    FINETUNE_TRAINER,
    BestWeights,
    FineTuneConfig,
    FineTuneResult,
    resolve_trainer,
)
from panda_fm.training.module import masked_standardised_mse, standardised_mse
from tests.conftest import CONFIGS, REPO, TINY_CHECKPOINT, cli_env

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def series(T: int = 1200, C: int = 3, seed: int = 0) -> np.ndarray:
    """``(T, C)`` quasi-periodic signal with a little noise (raw units, offset and scaled per channel)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None] * 0.07
    freq = 1.0 + 0.37 * np.arange(C)[None, :]
    x = np.sin(freq * t) + 0.5 * np.sin(0.31 * freq * t + 1.0) + 0.05 * rng.standard_normal((T, C))
    return (3.0 * x + np.arange(C)[None, :]).astype(np.float32)


def fast_settings(**overrides: object) -> dict[str, object]:
    """Flat settings for a run of a few seconds on the tiny model."""
    base = dict(
        max_steps=40,
        lr=1e-2,  # high, so that the tiny random model learns something in seconds
        batch_size=8,
        val_windows=8,
        val_every_n_steps=20,
        torch_threads=1,
        progress_bar=False,
    )
    base.update(overrides)
    return base


def fast(**overrides: object) -> FineTuneConfig:
    return FineTuneConfig.from_settings(**fast_settings(**overrides))


def fine_tune(pipe: PandaPipeline, data: object, cfg: FineTuneConfig) -> FineTuneResult:
    """:func:`finetune.fine_tune` of a pipeline's model and info."""
    return finetune.fine_tune(pipe.model, pipe.info, data, cfg)


def as_pipeline(result: FineTuneResult) -> PandaPipeline:
    return PandaPipeline(result.model, result.info)


def with_loss(pipe: PandaPipeline, loss: str) -> PandaPipeline:
    """``pipe`` with a training record saying it was pretrained on ``loss``."""
    info = {**pipe.info, "config": {"trainer": {**asdict(TrainerConfig()), "loss": loss}}}
    return PandaPipeline(pipe.model, info)


@pytest.fixture(scope="module")
def base() -> PandaPipeline:
    return PandaPipeline.from_pretrained(TINY_CHECKPOINT)


@pytest.fixture(scope="module")
def tuned(base: PandaPipeline):
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    result = fine_tune(base, series(), fast())
    return result, before


# --- the run ---------------------------------------------------------------------------------------


def test_fine_tuning_lowers_the_loss(tuned) -> None:
    result, _ = tuned
    assert result.steps == 40 and result.stopped == "max_steps"
    assert result.train_loss_after < 0.9 * result.train_loss_before
    assert result.val_loss_after <= result.val_loss_before
    train = [h["train_loss"] for h in result.history if "train_loss" in h]
    assert len(train) == 40 and np.isfinite(train).all()
    assert [h["step"] for h in result.history if "val_loss" in h] == [20, 40]


def test_base_is_untouched_and_result_is_new(base: PandaPipeline, tuned) -> None:
    result, before = tuned
    for k, v in base.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert result.model is not base.model
    changed = [k for k, v in result.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    assert not result.model.training
    assert all(p.requires_grad for p in result.model.parameters())


def test_model_card_names_base_and_data(base: PandaPipeline, tuned) -> None:
    info = tuned[0].info
    name = base.info["name"]
    assert info["base_model"] == name and info["name"] == f"{name}-finetuned"
    assert "(1200, 3)" in info["training_data"] and name in info["training_data"]
    assert info["fine_tuning"]["data_shapes"] == [[1200, 3]]
    assert info["training"]["fine-tuning: optimizer steps"] == 40


def test_save_and_reload(tuned, tmp_path) -> None:
    new = as_pipeline(tuned[0])
    out = new.save_pretrained(tmp_path / "ft")
    again = PandaPipeline.from_pretrained(out)
    x = series(700, seed=1)
    torch.testing.assert_close(torch.as_tensor(again.predict(x)), torch.as_tensor(new.predict(x)))
    card = (out / "README.md").read_text()
    assert "finetuned" in card and "(1200, 3)" in card
    assert again.info["base_model"] == new.info["base_model"]


def test_pipeline_method_and_settings(base: PandaPipeline) -> None:
    new = base.fine_tune(
        [series(900), series(800, seed=2)], **fast_settings(max_steps=2, val_every_n_steps=1)
    )
    assert isinstance(new, PandaPipeline) and new.info["fine_tuning"]["data_shapes"] == [[900, 3], [800, 3]]
    with pytest.raises(ValueError, match="unknown fine-tuning setting"):
        base.fine_tune(series(), max_step=3)


def test_freezing_keeps_the_first_layers(base: PandaPipeline) -> None:
    result = fine_tune(base, series(), fast(max_steps=3, freeze_layers=1))
    new, old = result.model.state_dict(), base.model.state_dict()
    frozen = [k for k in new if k.startswith(("embedder.", "layers.0."))]
    assert frozen and all(torch.equal(new[k], old[k]) for k in frozen)
    assert not torch.equal(new["head.weight"], old["head.weight"])
    with pytest.raises(ValueError, match="encoder layers"):
        fine_tune(base, series(), fast(freeze_layers=9))


def test_time_budget_stops_the_run(base: PandaPipeline) -> None:
    result = fine_tune(base, series(), fast(max_steps=None, max_minutes=0.02, val_fraction=0.0))
    assert result.stopped == "max_minutes" and result.steps > 0
    assert result.val_loss_before is None and result.best_step == result.steps
    assert "(fitted to the time budget)" in result.info["training"]["fine-tuning: schedule"]


def test_best_weights_keep_the_base_when_nothing_improves(base: PandaPipeline) -> None:
    model = base.model
    state = {k: v.clone() for k, v in model.state_dict().items()}
    keeper = BestWeights(1.0, state, FineTuneConfig(patience=2))
    keeper.record(1.5, 10, model)
    keeper.record(1.2, 20, model)
    assert keeper.best_step == 0 and keeper.bad == 2 and keeper.best_state is state
    keeper.record(0.5, 30, model)
    assert keeper.best_step == 30 and keeper.bad == 0 and keeper.best == 0.5


# --- the objective: the base checkpoint's own ---------------------------------------------------------


def probe_loss(pipe: PandaPipeline, x: np.ndarray, kind: str, windows: int = 8) -> float:
    """Loss ``kind`` of ``pipe``'s model on the fixed training windows a default run probes."""
    c = pipe.config
    split = split_series([x], c.context_length, c.prediction_length, c.patch_length, val_fraction=0.2)
    w = split.train.evenly_spaced(windows)
    return float(masked_standardised_mse(pipe.model, w["context"], w["target"], c.scaling_eps, kind))


def test_the_loss_comes_from_the_base_checkpoints_record(base: PandaPipeline) -> None:
    mae_base = with_loss(base, "mae")
    result = fine_tune(mae_base, series(), fast(max_steps=2))
    assert result.loss == "mae" and result.loss_source == "the base checkpoint's training objective"
    # the module trained and scored with MAE: the probe loss before training is the base model's MAE
    assert result.train_loss_before == pytest.approx(probe_loss(base, series(), "mae"), rel=1e-5)
    assert result.train_loss_before != pytest.approx(probe_loss(base, series(), "mse"), rel=1e-3)
    info = result.info
    assert info["fine_tuning"]["loss"] == "mae" and info["config"]["trainer"]["loss"] == "mae"
    assert info["training"]["fine-tuning: objective"].startswith("MAE over 64 steps")
    assert "the base checkpoint's training objective" in info["training"]["fine-tuning: objective"]
    assert info["results"].startswith("Fine-tuning validation MAE")
    # the fine-tuned model's record passes the objective on to a later fine-tuning
    again = fine_tune(as_pipeline(result), series(), fast(max_steps=1))
    assert again.loss == "mae"


def test_the_loss_can_be_overridden(base: PandaPipeline) -> None:
    result = fine_tune(with_loss(base, "mae"), series(), fast(max_steps=2, loss="smape"))
    assert result.loss == "smape" and result.loss_source == "set for fine-tuning"
    assert result.train_loss_before == pytest.approx(probe_loss(base, series(), "smape"), rel=1e-5)
    assert result.info["fine_tuning"]["config"]["trainer"]["loss"] == "smape"
    keep = FineTuneConfig.from_settings(loss="smape", objective_from_base=True)
    assert resolve_trainer(keep, with_loss(base, "mae").info, base.config)[0].loss == "mae"


def test_without_a_record_the_default_loss_is_used_and_logged(base: PandaPipeline, caplog) -> None:
    assert "config" not in base.info  # the tiny fixture has no training record
    with caplog.at_level(logging.WARNING, logger="panda_fm"):
        tc, source = resolve_trainer(FineTuneConfig(), base.info, base.config)
    assert tc.loss == TrainerConfig().loss and source.startswith("the default")
    assert "records no training objective" in caplog.text


def test_the_shipped_checkpoint_fine_tunes_on_its_pretraining_loss(base: PandaPipeline) -> None:
    info = json.loads((REPO / "checkpoints" / "panda-fm-small" / "training_info.json").read_text())
    tc, _ = resolve_trainer(FineTuneConfig(), info, base.config)
    assert tc.loss == info["config"]["trainer"]["loss"] == "smape"


def test_a_loss_horizon_needs_a_model_with_experts(base: PandaPipeline) -> None:
    assert base.config.incontext != "experts"
    with pytest.raises(ValueError, match="only a model with in-context experts"):
        resolve_trainer(FineTuneConfig.from_settings(loss_horizon=128), base.info, base.config)


# --- settings: fine-tuning's own and the trainer's -----------------------------------------------------


def test_flat_keywords_go_into_the_nested_trainer(base: PandaPipeline, monkeypatch) -> None:
    cfg = FineTuneConfig.from_settings(
        max_minutes=5, lr=3e-4, freeze_layers=2, torch_threads=1, max_steps=100
    )
    assert (cfg.max_minutes, cfg.freeze_layers) == (5, 2)
    tc = cfg.trainer
    assert (tc.lr, tc.torch_threads, tc.max_steps) == (3e-4, 1, 100)
    assert tc.warmup_fraction == 0.05 and tc.min_lr_ratio == 0.1 and tc.val_every_n_steps == 25
    assert not tc.tensorboard and cfg.objective_from_base
    assert FineTuneConfig().trainer == TrainerConfig(**FINETUNE_TRAINER)
    own, shared = {f.name for f in fields(FineTuneConfig)}, {f.name for f in fields(TrainerConfig)}
    assert not own & shared  # no trainer field is declared again
    start = TrainerConfig(lr=5e-4, seed=3)
    assert FineTuneConfig.from_settings(trainer=start, seed=4).trainer == TrainerConfig(lr=5e-4, seed=4)

    seen: list[FineTuneConfig] = []

    def capture(model, info, data, config):
        seen.append(config)
        raise RuntimeError("captured")

    monkeypatch.setattr(finetune, "fine_tune", capture)
    with pytest.raises(RuntimeError, match="captured"):
        base.fine_tune(series(), max_minutes=5, lr=3e-4, freeze_layers=2, torch_threads=1, max_steps=100)
    assert seen == [cfg]


def test_unknown_keywords_and_bad_trainer_settings_are_errors() -> None:
    with pytest.raises(
        ValueError, match=r"unknown fine-tuning setting\(s\) \['lrate'\].*'freeze_layers'.*'lr'"
    ):
        FineTuneConfig.from_settings(lrate=1e-3)
    with pytest.raises(ValueError, match="trainer.lr must be positive"):
        FineTuneConfig.from_settings(lr=0)
    with pytest.raises(ValueError, match="one device"):
        FineTuneConfig.from_settings(devices=2)
    with pytest.raises(ValueError, match="must be a TrainerConfig"):
        FineTuneConfig(trainer={"lr": 1e-3})
    assert FineTuneConfig().step_budget == 500
    assert FineTuneConfig(max_minutes=1).step_budget is None
    assert FineTuneConfig.from_settings(max_minutes=1, max_steps=7).step_budget == 7


# --- one Lightning trainer for pretraining and fine-tuning ---------------------------------------------


class Built(Exception):
    """Raised by the build_trainer spy once it has recorded a call."""


def synthetic_dataset(root) -> str:
    from panda_fm.systems.store import DatasetWriter

    t = np.arange(400)[None, :, None] * 0.1
    with DatasetWriter(root, shard_size=4) as writer:
        for i, split in enumerate(("train", "train", "train", "test")):
            traj = (
                np.sin((1 + 0.2 * i) * t + np.arange(3)[None, None, :]).repeat(2, axis=0).astype(np.float32)
            )
            writer.add({"id": f"s{i}", "split": split, "dt": 0.1, "period": 6.0}, traj)
    return str(root)


def test_pretraining_and_fine_tuning_build_the_same_trainer(
    base: PandaPipeline, tmp_path, monkeypatch
) -> None:
    assert run.build_trainer is trainer.build_trainer and finetune.build_trainer is trainer.build_trainer
    calls: list[tuple[str, TrainerConfig, dict]] = []

    def spy(which: str):
        def build(config, out, **kwargs):
            calls.append((which, config, kwargs))
            raise Built

        return build

    monkeypatch.setattr(run, "build_trainer", spy("pretraining"))
    monkeypatch.setattr(finetune, "build_trainer", spy("fine-tuning"))
    cfg = load_config(
        CONFIGS / "tiny-cpu.yaml",
        {"data.path": synthetic_dataset(tmp_path / "data"), "trainer.out_dir": str(tmp_path / "run")},
    )
    with pytest.raises(Built):
        run.pretrain(cfg)
    with pytest.raises(Built):
        fine_tune(base, series(), fast(max_minutes=1))
    (_, pre, pre_kw), (_, ft, ft_kw) = calls
    assert [c[0] for c in calls] == ["pretraining", "fine-tuning"]
    assert pre is cfg.trainer and pre_kw["checkpoint_dir"] == tmp_path / "run" / "checkpoints"
    assert ft.lr == 1e-2 and ft_kw.get("checkpoint_dir") is None
    assert ft_kw["max_minutes"] == 1 and ft_kw["has_validation"]


def test_pretraining_refuses_a_run_without_a_step_limit(tmp_path) -> None:
    cfg = load_config(
        CONFIGS / "tiny-cpu.yaml", {"trainer.max_steps": "null", "trainer.out_dir": str(tmp_path)}
    )
    with pytest.raises(ValueError, match="no step limit.*--max-minutes"):
        run.pretrain(cfg)
    with pytest.raises(ValueError, match="max_minutes must be positive"):
        run.pretrain(cfg, max_minutes=0)


# --- short series, missing values ------------------------------------------------------------------


def test_short_series_are_left_padded(base: PandaPipeline) -> None:
    x = series(300)  # shorter than the model's context (512)
    split = split_series([x], 512, 64, 16, min_context=64, val_fraction=0.0)
    w = split.train.evenly_spaced(4)
    assert w["context"].shape == (4, 512, 3) and w["target"].shape == (4, 64, 3)
    assert torch.isnan(w["context"][:, :212]).all()  # at most 236 steps of history before a target
    result = fine_tune(base, x, fast(max_steps=2, min_context=64, val_fraction=0.0))
    assert np.isfinite(result.train_loss_after)


def test_nan_runs_are_masked_and_logged(base: PandaPipeline, caplog) -> None:
    x = series()
    x[200:260, 1] = np.nan
    x[500, :] = np.nan
    assert longest_nan_run(x) == 60
    with caplog.at_level(logging.WARNING, logger="panda_fm"):
        result = fine_tune(base, x, fast(max_steps=3))
    assert "63 of 3600 values are NaN (longest run 60 steps)" in caplog.text
    assert np.isfinite(result.train_loss_after) and np.isfinite(result.val_loss_after)


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "settings", "message"),
    [
        (
            series(200),
            {},
            r"has 200 steps; fine-tuning needs at least 256.*lower min_context.*val_fraction=0",
        ),
        (series(100), {"val_fraction": 0.0}, r"needs at least 192"),
        (series(900, 3).T, {}, r"has 3 steps.*time along axis 0"),
        (
            [series(900, 3), series(900, 4)],
            {},
            r"disagree in channel count \(recording 0: 3, recording 1: 4\)",
        ),
        (np.full((900, 2), np.inf, np.float32), {}, r"infinite values; replace them with NaN"),
        (series(900).astype(np.float64) * 1e300, {}, r"beyond \+-1e\+15; rescale"),
        (np.where(np.arange(3) == 1, np.nan, series(900)), {}, r"all-NaN channel\(s\) \[1\]"),
        (
            np.where(np.arange(900)[:, None] < 600, np.nan, series(900)),
            {},
            r"67% missing.*max_missing_fraction",
        ),
        (np.array([["a", "b"]] * 900), {}, r"dtype <U1; pass real numbers"),
        ([], {}, r"empty list"),
        (np.zeros((0, 3)), {}, r"empty"),
        ({"x": 1}, {}, r"numpy array \(T, C\), a list of them, or a .csv"),
    ],
)
def test_bad_input_is_a_clear_error(base: PandaPipeline, data, settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        fine_tune(base, data, fast(**settings))


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_minutes"):
        FineTuneConfig(max_minutes=0)
    with pytest.raises(ValueError, match="val_fraction"):
        FineTuneConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="min_context"):
        split_series([series()], 512, 64, 16, min_context=8)


# --- CSV and the command line ------------------------------------------------------------------------


def write_csv(path, x: np.ndarray, extra: str | None = None) -> None:
    header = ["time", *[f"x{i}" for i in range(x.shape[1])]] + ([extra] if extra else [])
    lines = [",".join(header)]
    for i, row in enumerate(x):
        cells = [f"{i * 0.01:g}", *("" if np.isnan(v) else f"{v:.6g}" for v in row)]
        lines.append(",".join(cells + (["label"] if extra else [])))
    path.write_text("\n".join(lines) + "\n")


def test_csv_input(base: PandaPipeline, tmp_path) -> None:
    x = series(900)
    x[10:20, 2] = np.nan
    write_csv(tmp_path / "data.csv", x)
    loaded = load_series(tmp_path / "data.csv")
    assert len(loaded) == 1 and loaded[0].shape == (900, 3) and np.isnan(loaded[0]).sum() == 10
    result = fine_tune(base, str(tmp_path / "data.csv"), fast(max_steps=2))
    assert result.info["fine_tuning"]["data_shapes"] == [[900, 3]]
    write_csv(tmp_path / "bad.csv", x, extra="kind")
    with pytest.raises(ValueError, match=r"column 'kind': 'label' is not a number"):
        fine_tune(base, tmp_path / "bad.csv", fast())


def test_cli_finetune(tmp_path, caplog, capsys) -> None:
    write_csv(tmp_path / "data.csv", series(900))
    out = tmp_path / "ft"
    args = ["--checkpoint", str(TINY_CHECKPOINT), "--out", str(out), "--threads", "1", "--no-progress"]
    with caplog.at_level(logging.INFO, logger="panda_fm"):
        rc = main(
            ["finetune", "--data", str(tmp_path / "data.csv"), "--max-steps", "3", "--loss", "mae", *args]
        )
    assert rc == 0 and "done: 3 steps" in caplog.text
    info = PandaPipeline.from_pretrained(out).info["fine_tuning"]
    assert info["steps"] == 3 and info["loss"] == "mae" and info["config"]["trainer"]["torch_threads"] == 1
    write_csv(tmp_path / "short.csv", series(100))
    with caplog.at_level(logging.INFO, logger="panda_fm"):
        rc = main(["finetune", "--data", str(tmp_path / "short.csv"), *args])
    assert rc == 2 and "has 100 steps; fine-tuning needs at least" in capsys.readouterr().err


@pytest.mark.slow
def test_import_stays_light_and_cli_help() -> None:
    code = (
        "import sys, panda_fm; panda_fm.PandaPipeline.fine_tune; assert 'lightning' not in sys.modules; "
        "from panda_fm.cli import main; main(['finetune', '--help'])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "--max-minutes" in run.stdout and "--freeze-layers" in run.stdout


def test_masked_loss_equals_the_pretraining_loss_without_nan(base: PandaPipeline) -> None:
    x = torch.from_numpy(series(576)).reshape(1, 576, 3).repeat(2, 1, 1)
    context, target = x[:, :512], x[:, 512:]
    eps = base.config.scaling_eps
    torch.testing.assert_close(
        masked_standardised_mse(base.model, context, target, eps),
        standardised_mse(base.model, context, target, eps),
    )
    target = target.clone()
    target[0, :10, 0] = float("nan")
    assert torch.isfinite(masked_standardised_mse(base.model, context, target, eps))
