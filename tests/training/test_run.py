"""End-to-end pretraining runs of the tiny config: overfitting, export, robustness, resume, DDP."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from panda_fm import PandaPipeline
from panda_fm.systems.store import open_dataset
from panda_fm.training.config import PretrainConfig, load_config
from panda_fm.training.module import WarmupCosine
from panda_fm.training.run import NonFiniteLossError, pretrain
from tests.conftest import CONFIGS, cli, cli_env, write_dataset

TINY = CONFIGS / "tiny-cpu.yaml"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """In-process runs use one thread, like the CLI subprocesses (OMP_NUM_THREADS=1): fast and comparable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(data: Path, out: Path, **overrides: object) -> PretrainConfig:
    values = {"data.path": str(data), "trainer.out_dir": str(out), "trainer.tensorboard": "false"}
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(TINY, values)


def train_losses(out: Path) -> list[float]:
    rows = []
    for path in sorted((out / "csv").glob("version_*/metrics.csv")):
        with open(path) as fh:
            rows += [float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")]
    return rows


@pytest.fixture(scope="session")
def one_system(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "lorenz", ("Lorenz",), ())


def test_loss_falls_on_a_tiny_overfit_run_and_the_export_loads(one_system: Path, tmp_path: Path):
    out = tmp_path / "run"
    cfg = tiny(
        one_system,
        out,
        trainer__max_steps=150,
        trainer__lr=1e-2,
        data__augment__rate=0,
        data__batch_size=16,
        data__val_fraction=0,
        trainer__tensorboard="true",
    )
    result = pretrain(cfg)
    losses = train_losses(out)
    assert len(losses) == 150
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.65 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"

    assert result.steps == 150 and result.windows_seen == 150 * 16
    assert list((out / "tensorboard").glob("version_*/events.out.tfevents.*"))
    pipe = PandaPipeline.from_pretrained(out / "checkpoint")
    weights = load_file(out / "checkpoint" / "model.safetensors")
    lightning = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for key, value in weights.items():
        torch.testing.assert_close(value, lightning[f"model.{key}"])
    context = np.array(open_dataset(one_system).load("Lorenz")[0, :64], dtype=np.float32)
    assert pipe.predict(context, prediction_length=16).shape == (16, 3)
    card = (out / "checkpoint" / "README.md").read_text()
    info = json.loads((out / "checkpoint" / "training_info.json").read_text())
    manifest = open_dataset(one_system).manifest_hash
    assert manifest in card and info["dataset_manifest_hash"] == manifest
    for field in ("optimizer steps: 150", "windows seen: 2,400", "hardware:", "wall time:"):
        assert field in card
    assert info["steps"] == 150 and info["windows_seen"] == 2400 and info["wall_time_s"] > 0


def test_a_time_budget_fits_the_schedule_and_stops_the_run(one_system: Path, tmp_path: Path):
    out = tmp_path / "run"
    cfg = tiny(one_system, out, trainer__max_steps="null", data__val_fraction=0, data__batch_size=4)
    result = pretrain(cfg, max_minutes=0.1)
    info = json.loads((out / "checkpoint" / "training_info.json").read_text())
    projected = int(info["training"]["schedule"].split("(")[1].split()[0])
    assert result.steps > 20 and abs(projected - result.steps) <= 0.25 * result.steps, (
        projected,
        result.steps,
    )
    assert "fitted to a 0.1-minute budget" in (out / "checkpoint" / "README.md").read_text()
    # the warmup + cosine ran its course in the budget: the last learning rate is near the cosine's end
    schedule = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["lr_schedulers"][0]
    assert schedule["_last_lr"][0] < 0.1 * cfg.trainer.lr


def test_bad_datasets_are_clear_errors(tmp_path: Path, tiny_dataset: Path):
    with pytest.raises(FileNotFoundError, match="not a panda_fm dataset"):
        pretrain(tiny(tmp_path / "missing", tmp_path / "a"))
    only_test = write_dataset(tmp_path / "only-test", (), ("Rossler",))
    with pytest.raises(ValueError, match="no systems in the train split"):
        pretrain(tiny(only_test, tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        pretrain(tiny(tiny_dataset, tmp_path / "c"), resume=True)


def test_nonfinite_losses_are_skipped_then_stop_the_run_resumably(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "run"
    nan_at = "[2, 5, 6, 7]"  # one isolated, then three in a row
    cfg = tiny(tiny_dataset, out, trainer__debug_nonfinite_batches=nan_at, trainer__max_nonfinite_in_row=3)
    with pytest.raises(NonFiniteLossError, match=r"3 non-finite losses in a row.*--resume"):
        pretrain(cfg)
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 4  # batches 0, 1, 3, 4 stepped
    assert state["panda_fm"]["batches_seen"] == 8 and state["panda_fm"]["nonfinite_total"] == 4
    with pytest.raises(ValueError, match="already holds a run"):
        pretrain(cfg)
    # resume with the fix the message suggests (a lower lr) and a shorter schedule: both apply from step 4 on
    result = pretrain(tiny(tiny_dataset, out, trainer__max_steps=10, trainer__lr=5e-4), resume=True)
    assert result.steps == 10 and result.info["nonfinite_skipped"] == 4
    assert result.windows_seen == (8 + 10 - 4) * 8
    with open(sorted((out / "csv").glob("version_*/metrics.csv"))[-1]) as fh:
        lrs = [float(r["train/lr"]) for r in csv.DictReader(fh) if r.get("train/lr")]
    schedule = WarmupCosine(warmup_steps=1, total_steps=10)
    assert lrs == pytest.approx([5e-4 * schedule(step) for step in range(4, 10)])


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(tiny_dataset: Path, tmp_path: Path):
    steps = "300"
    common = {
        "trainer__max_steps": steps,
        "trainer__checkpoint_every_n_steps": "25",
        "trainer__val_every_n_steps": "100",
    }
    reference = pretrain(tiny(tiny_dataset, tmp_path / "ref", **common))

    out = tmp_path / "killed"
    args = ["pretrain", "--config", str(TINY), "--data", str(tiny_dataset), "--out", str(out)]
    args += [
        "--max-steps",
        steps,
        "--trainer.checkpoint_every_n_steps",
        "25",
        "--trainer.val_every_n_steps",
        "100",
    ]
    args += ["--trainer.tensorboard", "false"]
    proc = subprocess.Popen(cli(*args), env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert last.exists(), err.decode()[-3000:]
    assert not (out / "checkpoint").exists(), "the run finished before it was killed; raise max_steps"
    killed_at = torch.load(last, weights_only=False)["global_step"]
    assert 0 < killed_at < int(steps)

    resumed = pretrain(tiny(tiny_dataset, out, **common), resume=True)
    assert resumed.steps == reference.steps == int(steps)
    assert resumed.windows_seen == reference.windows_seen
    a = load_file(tmp_path / "ref" / "checkpoint" / "model.safetensors")
    b = load_file(out / "checkpoint" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert resumed.metrics == pytest.approx(reference.metrics, rel=1e-3)


@pytest.mark.slow
def test_two_process_ddp_run_exports_one_checkpoint_from_disjoint_windows(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    steps = 12
    args = [
        "pretrain",
        "--config",
        str(TINY),
        "--data",
        str(tiny_dataset),
        "--out",
        str(out),
        "--devices",
        "2",
    ]
    args += ["--max-steps", str(steps), "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    args += ["--trainer.debug_window_log", "true", "--trainer.tensorboard", "false"]
    args += ["--trainer.debug_nonfinite_batches", "[4]", "--trainer.debug_nonfinite_rank", "1"]
    proc = subprocess.run(cli(*args), env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr

    exports = sorted(p.parent for p in out.rglob("model.safetensors"))
    assert exports == [out / "checkpoint"]
    assert len(list(out.rglob("config.json"))) == 1
    info = json.loads((out / "checkpoint" / "training_info.json").read_text())
    # a NaN on rank 1 alone skips the step on both ranks, so 13 batches give 12 steps
    assert info["steps"] == steps and info["nonfinite_skipped"] == 1
    assert info["windows_seen"] == (steps + 1) * 8 * 2
    assert set(info["val_losses"]) == {"val/heldout_loss", "val/test_loss"}
    assert "2 x CPU" in info["hardware"]

    keys = []
    for rank in (0, 1):
        lines = (out / "debug" / f"windows-rank{rank}.jsonl").read_text().splitlines()
        assert len(lines) == steps + 1
        keys.append({tuple(k) for line in lines for k in json.loads(line)["keys"]})
    assert len(keys[0]) > 50 and len(keys[1]) > 50
    assert not keys[0] & keys[1], "the two ranks saw the same windows"
    PandaPipeline.from_pretrained(out / "checkpoint")
