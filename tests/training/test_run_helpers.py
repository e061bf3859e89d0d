from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from panda_fm.training.module import WarmupCosine
from panda_fm.training.run import latest_checkpoint, make_loggers


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
