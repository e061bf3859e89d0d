from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from panda_fm.training.module import WarmupCosine
from panda_fm.training.run import latest_checkpoint
from panda_fm.training.trainer import make_loggers


def test_tensorboard_falls_back_to_csv_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert [type(x) for x in make_loggers(tmp_path, True)] == [CSVLogger, TensorBoardLogger]
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.warns(UserWarning, match="CSV only"):
        loggers = make_loggers(tmp_path, True)
    assert [type(x) for x in loggers] == [CSVLogger]


def test_latest_checkpoint_prefers_the_newest(tmp_path: Path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == last
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"x")
    os.utime(last, (1, 1))
    assert latest_checkpoint(tmp_path) == hpc


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup_steps=10, total_steps=100, min_ratio=0.1)
    assert f(0) < f(5) < f(9) <= 1.0
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.55)
    assert f(100) == pytest.approx(0.1) and f(1000) == pytest.approx(0.1)


def test_datamodule_remembers_its_dataset(tiny_dataset: Path, caplog: pytest.LogCaptureFixture):
    from panda_fm.training.config import DataConfig
    from panda_fm.training.datamodule import PandaDataModule

    dm = PandaDataModule(DataConfig(path=str(tiny_dataset), val_windows=4), 64, 16)
    dm.setup("fit")
    assert dm.val_names == ["heldout", "test"]
    dm.load_state_dict(dm.state_dict())
    assert "different dataset" not in caplog.text
    dm.load_state_dict({"manifest_hash": "0" * 64})
    assert "different dataset" in caplog.text


@pytest.mark.slow
def test_ship_checkpoint_puts_the_reports_in_the_model_card(tmp_path: Path):
    import shutil
    import subprocess

    from panda_fm import PandaPipeline
    from tests.conftest import TINY_CHECKPOINT

    run = tmp_path / "run" / "checkpoint"
    shutil.copytree(TINY_CHECKPOINT, run)
    report = tmp_path / "report.md"
    report.write_text(
        "# Zero-shot benchmark\n\n20 systems, 100 windows (held-out founders), context 512, seed 0.\n\n"
        "Command: `panda-fm evaluate --checkpoint run/checkpoint --test founders`\n\n"
        "| noise | method | sMAPE@128 |\n|---|---|---|\n| 0 | checkpoint | 12.5 |\n| 0 | nvar | 0.1 |\n\n"
        "## Per system\n\n| noise | system | checkpoint |\n|---|---|---|\n| 0 | Lorenz | not copied |\n"
    )
    stress = tmp_path / "stress.md"
    stress.write_text(
        "# Stress suite\n\n`python benchmarks/stress.py --checkpoint x`\n\n"
        "## Summary: median smape@128 [bootstrap 95% interval of the median]\n\n"
        "| set | windows | x |\n|---|---|---|\n| noise-10 | 54 | 29.1 [23.7, 32.5] |\n\n"
        "### noise-10: per metric\n\n| method | smape@64 |\n|---|---|\n| x | not copied either |\n"
    )
    out = tmp_path / "shipped"
    cmd = [sys.executable, "train/ship_checkpoint.py", "--run", str(run), "--name", "panda-fm-x"]
    cmd += ["--report", str(report), "--stress", str(stress)]
    cmd += ["--command", "panda-fm pretrain ...", "--out", str(out)]
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(cmd, cwd=repo, check=True, env={**os.environ, "PYTHONPATH": str(repo)})
    card = (out / "README.md").read_text()
    assert "| 0 | panda-fm-x | 12.5 |" in card and "| 0 | nvar | 0.1 |" in card
    assert "20 systems, 100 windows" in card and "Command: `panda-fm evaluate" in card
    assert "not copied" not in card and "panda-fm pretrain ..." in card
    assert (
        "| noise-10 | 54 | 29.1 [23.7, 32.5] |" in card
        and "`python benchmarks/stress.py --checkpoint x`" in card
    )
    assert PandaPipeline.from_pretrained(out).info["name"] == "panda-fm-x"
    missing = subprocess.run(
        [*cmd[:-4], "--report", str(tmp_path / "nope.md"), *cmd[-4:]],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "does not exist" in missing.stderr

    # shipped again with only --rename: results and command kept, the path rewritten, the weights' bytes unchanged
    again = tmp_path / "again"
    rename = [sys.executable, "train/ship_checkpoint.py", "--run", str(out), "--name", "panda-fm-x"]
    rename += ["--rename", "run/checkpoint=RUN-DIR", "--out", str(again)]
    subprocess.run(rename, cwd=repo, check=True, env={**os.environ, "PYTHONPATH": str(repo)})
    card = (again / "README.md").read_text()
    assert "--checkpoint RUN-DIR --test founders" in card and "run/checkpoint" not in card
    assert "| 0 | panda-fm-x | 12.5 |" in card and "panda-fm pretrain ..." in card
    weights = "model.safetensors"
    assert (again / weights).read_bytes() == (out / weights).read_bytes()
    bad = subprocess.run(
        [*rename[:-2], "--rename", "no-equals", *rename[-2:]], cwd=repo, capture_output=True, text=True
    )
    assert bad.returncode != 0 and "OLD=NEW" in bad.stderr
