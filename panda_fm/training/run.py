"""One pretraining run: build the Lightning trainer, fit, validate, export a checkpoint directory.

Layout of the output directory ``OUT``::

    OUT/config.yaml                the resolved run config
    OUT/checkpoints/last.ckpt      Lightning checkpoint for --resume (plus step-numbered ones)
    OUT/csv/version_N/metrics.csv  CSV logs (one version per launch)
    OUT/tensorboard/version_N/     TensorBoard logs
    OUT/checkpoint/                the exported model, loadable by PandaPipeline.from_pretrained
    OUT/debug/                     window keys per rank (trainer.debug_window_log)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from panda_fm.data.augment import AugmentConfig
from panda_fm.hub import save_model
from panda_fm.training.config import PretrainConfig, save_config
from panda_fm.training.datamodule import PandaDataModule, check_dataset
from panda_fm.training.module import PandaLightningModule
from panda_fm.training.trainer import (
    SCHEDULE_GUESS,
    FitScheduleToBudget,
    build_trainer,
    describe_objective,
    hardware_description,
    setup_process,
)

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
EXPORT_DIR = "checkpoint"
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "SLURM_PROCID")


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive steps had a non-finite loss; a resumable checkpoint was saved."""


@dataclass
class PretrainResult:
    """What a finished run produced."""

    export_dir: Path  # the exported checkpoint directory
    steps: int  # optimizer steps taken, earlier resumed-from runs included
    windows_seen: int  # training windows consumed on all ranks, skipped steps included
    metrics: dict[str, float] = field(default_factory=dict)  # final validation losses
    info: dict[str, Any] = field(default_factory=dict)  # what the model card records
    rank: int = 0  # global rank of the process that returns this


class NonFiniteStop(Callback):
    """Saves a resumable checkpoint and stops training once the module reports too many non-finite steps."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if getattr(pl_module, "stopped_nonfinite", False) and not trainer.should_stop:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def latest_checkpoint(out: Path) -> Path | None:
    """The newest resumable checkpoint of a run: ``checkpoints/last.ckpt`` or one Lightning saved on a
    SLURM signal before requeueing (``hpc_ckpt_N.ckpt``); None when there is none."""
    found = [p for p in (out / CHECKPOINT_DIR / LAST, *out.glob("hpc_ckpt_*.ckpt")) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def is_launching_process() -> bool:
    """True in the process a user started (not a rank that a launcher started alongside it)."""
    return all(os.environ.get(v, "0") == "0" for v in RANK_VARIABLES)


def pretrain(
    config: PretrainConfig, resume: bool = False, max_minutes: float | None = None
) -> PretrainResult:
    """Pretrain a model as ``config`` says and export it to ``OUT/checkpoint``.

    Args:
        config: the run.
        resume: continue from ``OUT/checkpoints/last.ckpt`` (step count, optimizer, scheduler, data stream).
        max_minutes: wall-clock budget of this launch's training; the warmup + cosine is fitted to the steps it
            allows (capped by ``trainer.max_steps``, which may then be null). None: ``trainer.max_steps`` alone.

    Raises:
        FileNotFoundError / ValueError: unusable dataset, missing checkpoint to resume, or an ``OUT`` that
            already holds a run and ``resume`` is False.
        NonFiniteLossError: too many consecutive non-finite losses (a resumable checkpoint was saved).
    """
    tc = config.trainer
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(
            f"max_minutes must be positive, got {max_minutes}; pass a budget in minutes, e.g. 60"
        )
    if tc.max_steps is None and max_minutes is None:
        raise ValueError(
            "trainer.max_steps is null (no step limit) and no time budget is given: set trainer.max_steps or "
            "--max-steps, or pass --max-minutes"
        )
    out = Path(tc.out_dir)
    dataset_info = check_dataset(config.data.path)
    last = out / CHECKPOINT_DIR / LAST
    resume_from = latest_checkpoint(out)
    if is_launching_process():
        if resume and resume_from is None:
            raise FileNotFoundError(
                f"cannot resume: {last} does not exist; run without --resume to start, or point --out at the run"
            )
        if not resume and resume_from is not None:
            raise ValueError(
                f"{out} already holds a run ({resume_from}); pass --resume to continue it, or choose another --out"
            )
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    setup_process(tc)

    # shortened contexts hold NaN (left padding), which the masked loss handles as the model's forward does
    shortened = config.data.augment.short_rate > 0
    module = PandaLightningModule(
        config.model, tc, debug_dir=out / "debug", mask_missing=shortened, schedule_steps=SCHEDULE_GUESS
    )
    datamodule = PandaDataModule(config.data, config.model.context_length, config.target_length, seed=tc.seed)
    datamodule.setup("fit")
    fitter = FitScheduleToBudget(max_minutes * 60, tc.max_steps, tc.warmup_fraction) if max_minutes else None
    trainer = build_trainer(
        tc,
        out,
        has_validation=bool(datamodule.val_names),
        callbacks=[NonFiniteStop(last), *([fitter] if fitter else [])],
        log_dir=out,
        checkpoint_dir=out / CHECKPOINT_DIR,
        max_minutes=max_minutes,
    )
    if resume and resume_from is not None:
        logger.info("resuming from %s", resume_from)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume and resume_from else None)
    if module.stopped_nonfinite:
        raise NonFiniteLossError(
            f"stopped after {module.nonfinite_in_row} non-finite losses in a row "
            f"(trainer.max_nonfinite_in_row = {tc.max_nonfinite_in_row}) at step {trainer.global_step}; "
            f"a resumable checkpoint is at {last}. Lower trainer.lr or check the data, then rerun with --resume"
        )

    metrics: dict[str, float] = {}
    if datamodule.val_names:
        for result in trainer.validate(module, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    windows_seen = module.batches_seen * config.data.batch_size * trainer.world_size
    info = export_info(config, trainer, module, dataset_info, datamodule, metrics, windows_seen, fitter)
    export_dir = out / EXPORT_DIR
    if trainer.is_global_zero:
        save_model(module.model, export_dir, info)
        logger.info("exported the trained model to %s", export_dir)
    trainer.strategy.barrier()
    return PretrainResult(export_dir, trainer.global_step, windows_seen, metrics, info, trainer.global_rank)


def augmentations(aug: AugmentConfig) -> str:
    """The augmentations in words, for the model card."""
    parts = [f"{', '.join(aug.kinds)} at rate {aug.rate:g}"] if aug.rate > 0 else []
    if aug.noise > 0 and aug.noise_rate > 0:
        parts.append(f"context noise U(0, {aug.noise:g}) x channel std on {aug.noise_rate:.0%} of windows")
    if aug.resample_rate > 0:
        parts.append(
            f"resampled to 1/{aug.max_resample:g}-{aug.max_resample:g}x the stored rate on "
            f"{aug.resample_rate:.0%} of windows"
        )
    if aug.short_rate > 0:
        parts.append(f"contexts cut to {aug.min_context}+ steps on {aug.short_rate:.0%} of windows")
    if aug.partial_rate > 0:
        parts.append(f"fewer channels on {aug.partial_rate:.0%} of batches")
    return "; ".join(parts) or "none"


def export_info(
    config: PretrainConfig,
    trainer: L.Trainer,
    module: PandaLightningModule,
    dataset: dict[str, Any],
    datamodule: PandaDataModule,
    metrics: dict[str, float],
    windows_seen: int,
    fitter: FitScheduleToBudget | None = None,
) -> dict[str, Any]:
    """The model card's record of a run (rendered by :func:`panda_fm.hub.model_card`); ``fitter``: the time
    budget's schedule, if the run had one."""
    tc, dc = config.trainer, config.data
    hardware = hardware_description(trainer)
    aug = dc.augment
    training = {
        "dataset manifest sha256": dataset["manifest_hash"],
        "optimizer steps": trainer.global_step,
        "windows seen": f"{windows_seen:,}",
        "global batch": f"{dc.batch_size * trainer.world_size} windows of {dc.num_channels} random channels",
        "objective": describe_objective(tc.loss, config.target_length, config.model),
        "optimizer": f"AdamW, lr {tc.lr:g}, weight decay {tc.weight_decay:g}, betas ({tc.beta1:g}, {tc.beta2:g})",
        "schedule": f"cosine to {tc.min_lr_ratio:g} x lr after {tc.warmup_fraction:.0%} linear warmup"
        + (f", fitted to a {fitter.budget_s / 60:g}-minute budget ({fitter.total} steps)" if fitter else ""),
        "gradient clipping": f"{tc.grad_clip:g} (global norm)" if tc.grad_clip > 0 else "none",
        "augmentations": augmentations(aug),
        "precision": tc.precision,
        "hardware": hardware,
        "wall time": f"{module.wall_time:.0f} s",
        "non-finite steps skipped": module.nonfinite_total,
        "seed": tc.seed,
    }
    names = {"val/heldout_loss": "held-out training systems", "val/test_loss": "test-split systems"}
    results = "; ".join(f"{names.get(k, k)}: {v:.4f}" for k, v in metrics.items())
    return {
        "name": config.name,
        "training_data": (
            f"{len(datamodule.train_ids)} training systems of dataset `{Path(dataset['path']).name}` "
            f"(manifest sha256 `{dataset['manifest_hash']}`); held out for validation only: "
            f"{len(datamodule.heldout_ids)} training-split and {len(datamodule.test_ids)} test-split systems."
        ),
        "dataset_path": str(dataset["path"]),
        "training": training,
        "results": f"Final validation loss ({config.trainer.loss}, standardised units, {dc.val_windows} fixed windows per set): {results}"
        if metrics
        else None,
        "dataset_manifest_hash": dataset["manifest_hash"],
        "steps": trainer.global_step,
        "windows_seen": windows_seen,
        "hardware": hardware,
        "wall_time_s": round(module.wall_time, 3),
        "val_losses": metrics,
        "nonfinite_skipped": module.nonfinite_total,
        "config": config.to_dict(),
    }
