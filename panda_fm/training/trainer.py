"""What pretraining (:mod:`panda_fm.training.run`) and fine-tuning (:mod:`panda_fm.training.finetune`) share:
the process set-up, the Lightning ``Trainer`` and the words a model card uses for a run.

Both build their trainer with :func:`build_trainer` from a :class:`TrainerConfig`; what differs between
them (their callbacks, where logs and checkpoints go, a time budget) is passed in.
"""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from panda_fm.config import PandaConfig
from panda_fm.training.config import TrainerConfig

logger = logging.getLogger(__name__)

SCHEDULE_GUESS = 1000  # schedule length of a time-budgeted run until its first projection of the steps
LOSS_NAMES = {"mse": "MSE", "mae": "MAE", "smape": "sMAPE"}  # trainer.loss -> its name in model cards


def quiet_lightning() -> None:
    """Silence Lightning messages that do not apply here, and its duplicate log handler."""
    # Our checkpoints are meant to hold the state after the optimizer step.
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than the logging")
    # Validation sets are split evenly over ranks when val_windows is a multiple of the world size.
    warnings.filterwarnings(
        "ignore", message="Using `DistributedSampler` with the dataloaders. During `trainer.validate"
    )
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        log = logging.getLogger(name)
        if log.handlers and logging.getLogger().handlers:
            log.propagate = False


def setup_process(config: TrainerConfig) -> None:
    """Process-wide settings of a run: float32 matmul precision, CPU threads, quiet Lightning."""
    torch.set_float32_matmul_precision(config.float32_matmul_precision)
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
        if config.world_size > 1:
            os.environ["OMP_NUM_THREADS"] = str(
                config.torch_threads
            )  # for launched ranks; Lightning keeps it
    quiet_lightning()


def make_loggers(out: Path, tensorboard: bool) -> list[Logger]:
    """A CSV logger under ``out/csv`` and, when ``tensorboard`` and it is installed, TensorBoard's."""
    loggers: list[Logger] = [CSVLogger(out, name="csv")]
    if tensorboard:
        try:
            import tensorboard as _  # noqa: F401
        except ImportError:
            try:
                import tensorboardX as _  # noqa: F401
            except ImportError:
                warnings.warn(
                    "TensorBoard is not installed: logging to CSV only (pip install tensorboard)",
                    stacklevel=2,
                )
                return loggers
        loggers.append(TensorBoardLogger(out, name="tensorboard", default_hp_metric=False))
    return loggers


class FitScheduleToBudget(Callback):
    """With a time budget, fits the warmup + cosine to the steps the budget allows.

    Every ``every`` steps, the run's total is projected from the mean wall time per step of this launch so far
    (validation included; a resumed run counts from the step it resumed at) and capped by the step budget; the
    schedule's length becomes that total and its warmup ``warmup_fraction`` of it. Under DDP rank 0's
    projection is broadcast, so every rank follows one schedule.
    """

    def __init__(self, budget_s: float, max_steps: int | None, warmup_fraction: float, every: int = 10):
        self.budget_s = budget_s
        self.max_steps = max_steps
        self.warmup_fraction = warmup_fraction
        self.every = every
        self.total: int | None = None  # the latest projection
        self._start = 0.0
        self._first = 0  # the step this launch started at
        self._last = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._first = self._last = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == self._first or step % self.every or step == self._last:
            return
        self._last = step
        elapsed = max(time.perf_counter() - self._start, 1e-6)
        total = self._first + int((step - self._first) * self.budget_s / elapsed)
        total = trainer.strategy.broadcast(max(total, step + 1), src=0)
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        self.total = total
        for fn in pl_module.lr_schedulers().lr_lambdas:
            fn.total_steps = total
            fn.warmup_steps = int(self.warmup_fraction * total)


def build_trainer(
    config: TrainerConfig,
    out: Path,
    *,
    has_validation: bool,
    callbacks: Sequence[Callback] = (),
    log_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    max_minutes: float | None = None,
    progress_bar: bool | None = None,
) -> L.Trainer:
    """The Lightning trainer of a run (pretraining or fine-tuning).

    Args:
        config: hardware, strategy, precision, step budget (None: no step limit), validation and logging
            intervals.
        out: Lightning's root directory.
        has_validation: validate every ``config.val_every_n_steps`` steps; False: never.
        callbacks: the run's own callbacks.
        log_dir: write CSV logs here (and TensorBoard's with ``config.tensorboard``); None: no logs.
        checkpoint_dir: keep a resumable ``last.ckpt`` here, rewritten every ``config.checkpoint_every_n_steps``
            steps; None: no checkpoints.
        max_minutes: wall-clock limit of the fit; None: none.
        progress_bar: Lightning's progress bar; None: ``config.progress_bar``.
    """
    strategy = config.strategy
    if strategy == "auto" and config.world_size > 1:
        strategy = "ddp"
    own: list[Callback] = []
    if checkpoint_dir is not None:
        own.append(
            ModelCheckpoint(
                dirpath=checkpoint_dir,
                filename="step{step:07d}",
                auto_insert_metric_name=False,
                every_n_train_steps=config.checkpoint_every_n_steps,
                save_top_k=0,  # only last.ckpt, rewritten every checkpoint_every_n_steps
                save_last=True,
                enable_version_counter=False,
            )
        )
    return L.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=strategy,
        precision=config.precision,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        max_epochs=-1,
        max_time={"seconds": max_minutes * 60} if max_minutes is not None else None,
        val_check_interval=config.val_every_n_steps if has_validation else None,
        check_val_every_n_epoch=None,
        limit_val_batches=None if has_validation else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=config.log_every_n_steps,
        logger=make_loggers(log_dir, config.tensorboard) if log_dir is not None else False,
        callbacks=[*own, *callbacks],
        enable_checkpointing=checkpoint_dir is not None,
        enable_progress_bar=config.progress_bar if progress_bar is None else progress_bar,
        enable_model_summary=False,
        default_root_dir=out,
    )


def hardware_description(trainer: L.Trainer) -> str:
    """E.g. ``"1 node x 2 x CPU (Intel Xeon ..., 2 cores)"`` or ``"2 nodes x 8 x NVIDIA H100"``."""
    if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
        name = torch.cuda.get_device_name(trainer.strategy.root_device)
    else:
        model = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name = f"CPU ({model}, {os.cpu_count()} cores)"
    nodes = trainer.num_nodes
    return f"{nodes} node{'s' if nodes > 1 else ''} x {trainer.num_devices} x {name}"


def describe_objective(loss: str, horizon: int, model: PandaConfig) -> str:
    """The training objective in words, for a model card.

    Args:
        loss: ``trainer.loss``.
        horizon: steps the loss covers.
        model: the trained model's config (a model that selects an expert is scored by its expected loss).
    """
    units = f"over {horizon} steps, in units standardised by the context's per-channel statistics"
    if model.incontext == "experts" and model.expert_combine == "select":
        return f"expected {LOSS_NAMES[loss]} of the expert the network weighs, {units}"
    return f"{LOSS_NAMES[loss]} {units}"
