"""Fine-tuning a pretrained checkpoint on a user's own series.

The same :class:`~panda_fm.training.module.PandaLightningModule` as pretraining (standardised MSE, AdamW,
warmup + cosine, clipping, non-finite step skipping) trains a copy of the pipeline's model on windows cut
from the user's recordings (:mod:`panda_fm.data.series`). Defaults that work without tuning:

- windows: the model's context (shorter near a recording's start, down to ``min_context`` steps, left-padded
  as missing) and horizon; all channels of the series;
- validation: the last ``val_fraction`` of each recording; targets there are never trained on (their
  contexts may reach back into the training part, as a forecast from the recording would);
- a small learning rate (1e-4) with a short warmup;
- early stopping when the validation loss has not improved for ``patience`` validations, and the weights
  of the best validation (the base model's own included) are kept;
- a step budget (``max_steps``) and/or a time budget (``max_minutes``); with a time budget the warmup and
  cosine are fitted to the steps the budget allows (estimated from the pace so far, every 10 steps).

Missing values (NaN) are masked, never filled: context NaNs are read as missing by the model, target NaNs
are left out of the loss, and windows without enough observed data are not drawn. Each recording's missing
count and longest NaN run are logged; a recording that is mostly missing, an all-NaN channel, infinite
values, too-short recordings and recordings with different channel counts are errors naming the fix.

Shape letters: B batch, T time, C channels, L context length, H horizon.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from panda_fm.data.series import SeriesInput, SeriesSplit, load_series, split_series
from panda_fm.model import PandaModel
from panda_fm.training.config import PRECISIONS, TrainerConfig
from panda_fm.training.datamodule import WindowSet, WindowStream
from panda_fm.training.module import PandaLightningModule, masked_standardised_mse

logger = logging.getLogger(__name__)

VAL_NAME = "tail"  # validation loss is logged as val/tail_loss
DEFAULT_STEPS = 500  # step budget when neither max_steps nor max_minutes is given
SCHEDULE_GUESS = 1000  # schedule length before the first estimate of a time budget's steps


@dataclass
class FineTuneConfig:
    """Settings of a fine-tuning run; the defaults are meant to work without tuning."""

    max_steps: int | None = None  # optimizer steps at most; None: 500, or unlimited when max_minutes is set
    max_minutes: float | None = None  # wall-clock budget of the training loop; None: steps only
    lr: float = 1e-4  # peak AdamW learning rate (pretraining uses 1e-3)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_fraction: float = 0.05  # fraction of the run's steps with a linear warmup from 0
    min_lr_ratio: float = 0.1  # learning rate at the end of the cosine, as a fraction of lr
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    batch_size: int = 16  # windows per optimizer step
    num_channels: int | None = None  # channels per window (a random subset); None: all of the series'
    min_context: int | None = None  # fewest context steps of a window; None: a quarter of the model's context
    val_fraction: float = 0.2  # fraction of each recording's end held out for validation; 0: none
    val_windows: int = 64  # validation windows (spread evenly over the held-out tails)
    val_every_n_steps: int = 25  # optimizer steps between validations
    patience: int = 4  # validations without improvement before stopping early; 0: never stop early
    freeze_layers: int = 0  # freeze the patch embedding and the first k encoder layers; 0: train all
    max_missing_fraction: float = 0.5  # a recording with a larger fraction of NaN values is an error
    accelerator: str = "auto"  # "cpu", "gpu" or "auto" (a GPU when there is one)
    precision: str = "32-true"  # Lightning precision, e.g. "bf16-mixed" on a GPU
    torch_threads: int | None = (
        None  # process-wide CPU threads; None: torch default (1: often fastest on a busy CPU)
    )
    seed: int = 0  # seeds the window stream and channel subsets
    progress_bar: bool = True  # show a progress bar over optimizer steps
    name: str | None = None  # name of the result's model card; None: "<base name>-finetuned"
    log_dir: str | None = None  # also write Lightning CSV logs here; None: no files

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        for key in ("batch_size", "val_windows", "val_every_n_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive or None, got {self.max_minutes}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for key in ("weight_decay", "grad_clip", "patience", "freeze_layers"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.max_missing_fraction < 1.0:
            raise ValueError(f"max_missing_fraction must lie in [0, 1), got {self.max_missing_fraction}")
        if self.num_channels is not None and self.num_channels < 1:
            raise ValueError(f"num_channels must be >= 1 or None, got {self.num_channels}")
        if self.min_context is not None and self.min_context < 1:
            raise ValueError(f"min_context must be >= 1 or None, got {self.min_context}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1 or None, got {self.torch_threads}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.accelerator not in ("cpu", "gpu", "cuda", "mps", "auto"):
            raise ValueError(f"accelerator must be cpu, gpu, cuda, mps or auto, got {self.accelerator!r}")

    @property
    def step_budget(self) -> int | None:
        """The step limit: ``max_steps``, else 500 without a time budget, else None (the time decides)."""
        if self.max_steps is not None:
            return self.max_steps
        return None if self.max_minutes is not None else DEFAULT_STEPS


@dataclass
class FineTuneResult:
    """What a fine-tuning run produced."""

    pipeline: Any  # the fine-tuned PandaPipeline (a new object; the base is untouched); set last
    steps: int  # optimizer steps taken
    best_step: int  # step whose weights were kept (0: the base model's)
    stopped: str  # why training ended: "max_steps", "max_minutes", "early stopping" or "non-finite losses"
    wall_time_s: float  # seconds in the training loop
    val_loss_before: float | None  # validation loss of the base model (None without validation)
    val_loss_after: float | None  # validation loss of the kept weights
    train_loss_before: float  # loss of the base model on fixed training windows
    train_loss_after: float  # loss of the kept weights on the same windows
    history: list[dict[str, float]] = field(
        default_factory=list
    )  # {"step", "train_loss"} / {"step", "val_loss"}


# --- Lightning pieces ------------------------------------------------------------------------------


class SeriesDataModule(L.LightningDataModule):
    """A stream of training windows from the user's series and one fixed validation set."""

    def __init__(self, split: SeriesSplit, cfg: FineTuneConfig):
        super().__init__()
        self.split = split
        self.cfg = cfg
        self.val_names = [VAL_NAME] if split.val is not None else []
        self.val_set = WindowSet(split.val.evenly_spaced(cfg.val_windows)) if split.val is not None else None

    def train_dataloader(self) -> DataLoader:
        stream = WindowStream(self.split.train, self.cfg.batch_size, self.cfg.seed)
        return DataLoader(stream, batch_size=None, num_workers=0)

    def val_dataloader(self) -> list[DataLoader]:
        if self.val_set is None:
            return []
        return [DataLoader(self.val_set, batch_size=self.cfg.batch_size * 4, shuffle=False)]


class BestWeights(Callback):
    """Keeps the weights of the best validation loss, stops after ``patience`` validations without
    improvement, records the loss history and shows a progress bar over optimizer steps."""

    def __init__(self, base_loss: float | None, base_state: dict[str, torch.Tensor], cfg: FineTuneConfig):
        self.best = math.inf if base_loss is None else base_loss
        self.best_state = base_state
        self.best_step = 0
        self.bad = 0
        self.cfg = cfg
        self.early_stopped = False
        self.history: list[dict[str, float]] = []
        self.bar: tqdm | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bar = tqdm(
            total=self.cfg.step_budget, desc="fine-tuning", unit="step", disable=not self.cfg.progress_bar
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        if isinstance(outputs, dict):
            outputs = outputs.get("loss")
        loss = float(outputs) if isinstance(outputs, torch.Tensor) else None  # None: a skipped step
        if loss is not None:
            self.history.append({"step": trainer.global_step, "train_loss": loss})
        if self.bar is not None:
            self.bar.update(trainer.global_step - self.bar.n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", best_val=f"{self.best:.4f}", refresh=False)
        if getattr(pl_module, "stopped_nonfinite", False):
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(f"val/{VAL_NAME}_loss")
        if value is None:
            return
        self.record(float(value), trainer.global_step, pl_module.model)
        if self.cfg.patience and self.bad >= self.cfg.patience:
            self.early_stopped = True
            trainer.should_stop = True

    def record(self, loss: float, step: int, model: PandaModel) -> None:
        """Note a validation loss of ``model`` at ``step``; keep its weights when it is the best."""
        self.history.append({"step": step, "val_loss": loss})
        if loss < self.best:
            self.best, self.best_step, self.bad = loss, step, 0
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()


class FitScheduleToBudget(Callback):
    """With a time budget, fits the warmup + cosine to the steps the budget allows.

    Every ``every`` steps, the run's total is projected from the mean wall time per step so far (validation
    included) and capped by the step budget; the schedule's length becomes that total and its warmup
    ``warmup_fraction`` of it.
    """

    def __init__(self, budget_s: float, max_steps: int | None, warmup_fraction: float, every: int = 10):
        self.budget_s = budget_s
        self.max_steps = max_steps
        self.warmup_fraction = warmup_fraction
        self.every = every
        self.total: int | None = None  # the latest projection
        self._start = 0.0
        self._last = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every or step == self._last:
            return
        self._last = step
        elapsed = max(time.perf_counter() - self._start, 1e-6)
        total = max(int(step * self.budget_s / elapsed), step + 1)
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        self.total = total
        for fn in pl_module.lr_schedulers().lr_lambdas:
            fn.total_steps = total
            fn.warmup_steps = int(self.warmup_fraction * total)


def window_loss(model: PandaModel, windows: dict[str, torch.Tensor], batch_size: int = 64) -> float:
    """Mean masked standardised MSE of ``model`` over ``windows`` (``context (B, L, C)``, ``target (B, H, C)``),
    weighting each batch by its size as Lightning's validation does."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows["context"]), batch_size):
            ctx = windows["context"][i : i + batch_size].to(device)
            tgt = windows["target"][i : i + batch_size].to(device)
            total += float(masked_standardised_mse(model, ctx, tgt, model.config.scaling_eps)) * len(ctx)
            count += len(ctx)
    model.train(was_training)
    return total / count


def freeze(model: PandaModel, layers: int) -> int:
    """Freeze the patch embedding and the first ``layers`` encoder layers; returns the trainable count."""
    n = model.config.num_hidden_layers
    if layers > n:
        raise ValueError(f"freeze_layers={layers} but the model has {n} encoder layers; pass 0 to {n}")
    if layers:
        for module in (model.embedder, *model.layers[:layers]):
            for p in module.parameters():
                p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- the run ---------------------------------------------------------------------------------------


def fine_tune(pipeline: Any, series: SeriesInput, config: FineTuneConfig | None = None) -> FineTuneResult:
    """Fine-tune a copy of ``pipeline``'s model on ``series``.

    Args:
        pipeline: a :class:`panda_fm.PandaPipeline`; left untouched.
        series: a ``(T, C)`` array (numpy or torch; ``(T,)`` is one channel), a list of them (several
            recordings of the same channels), a ``(K, T, C)`` array (K recordings), or a ``.csv``/``.npy`` path.
        config: settings; defaults to :class:`FineTuneConfig`.

    Returns:
        The result, with the new pipeline (same device and dtype as the base) under ``.pipeline``.

    Raises:
        ValueError: unusable input, naming the fix (see :func:`load_series` and :func:`split_series`).
    """
    from panda_fm.pipeline import PandaPipeline
    from panda_fm.training.run import hardware_description, quiet_lightning

    cfg = config or FineTuneConfig()
    mc = pipeline.config
    data = load_series(series)
    split = split_series(
        data,
        mc.context_length,
        mc.prediction_length,
        mc.patch_length,
        min_context=cfg.min_context,
        num_channels=cfg.num_channels,
        val_fraction=cfg.val_fraction,
        max_missing_fraction=cfg.max_missing_fraction,
    )
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    quiet_lightning()

    model = copy.deepcopy(pipeline.model).to(dtype=torch.float32).train()  # on the base's device
    trainable = freeze(model, cfg.freeze_layers)
    datamodule = SeriesDataModule(split, cfg)
    probe = split.train.evenly_spaced(cfg.val_windows)  # fixed training windows: loss before and after
    train_before = window_loss(model, probe)
    val_before = window_loss(model, datamodule.val_set.windows) if datamodule.val_set is not None else None
    state0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    monitor = BestWeights(val_before, state0, cfg)
    logger.info(
        "fine-tuning %s (%s of %s parameters trainable) on %s Loss before: train %.4f, validation %s",
        pipeline.info.get("name", "the model"),
        f"{trainable:,}",
        f"{model.num_parameters:,}",
        split.description,
        train_before,
        "n/a" if val_before is None else f"{val_before:.4f}",
    )

    tc = TrainerConfig(
        out_dir=cfg.log_dir or "unused",
        accelerator=cfg.accelerator,
        precision=cfg.precision,
        max_steps=cfg.step_budget or SCHEDULE_GUESS,  # the schedule's length (refitted to a time budget)
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_fraction=cfg.warmup_fraction,
        min_lr_ratio=cfg.min_lr_ratio,
        grad_clip=cfg.grad_clip,
        val_every_n_steps=cfg.val_every_n_steps,
        seed=cfg.seed,
        progress_bar=cfg.progress_bar,
        tensorboard=False,
    )
    module = PandaLightningModule(mc, tc, model=model, mask_missing=True)
    has_val = datamodule.val_set is not None
    callbacks: list[Callback] = [monitor]
    fitter = None
    if cfg.max_minutes is not None:
        fitter = FitScheduleToBudget(cfg.max_minutes * 60, cfg.step_budget, cfg.warmup_fraction)
        callbacks.append(fitter)
    with tempfile.TemporaryDirectory(prefix="panda-finetune-") as tmp:
        trainer = L.Trainer(
            accelerator=cfg.accelerator,
            devices=1,
            precision=cfg.precision,
            max_steps=cfg.step_budget or -1,
            max_epochs=-1,
            max_time={"seconds": cfg.max_minutes * 60} if cfg.max_minutes is not None else None,
            val_check_interval=cfg.val_every_n_steps if has_val else None,
            check_val_every_n_epoch=None,
            limit_val_batches=None if has_val else 0,
            num_sanity_val_steps=0,
            logger=CSVLogger(cfg.log_dir, name="finetune") if cfg.log_dir else False,
            log_every_n_steps=10,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp,
        )
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        wall = time.perf_counter() - started
    model = module.model.cpu()
    steps = trainer.global_step
    if has_val and (
        not monitor.history
        or monitor.history[-1].get("step") != steps
        or "val_loss" not in monitor.history[-1]
    ):
        monitor.record(window_loss(model, datamodule.val_set.windows), steps, model)  # the final weights
    if has_val:
        model.load_state_dict(monitor.best_state)
        best_step, val_after = monitor.best_step, monitor.best
    else:
        best_step, val_after = steps, None
    train_after = window_loss(model, probe)
    if module.stopped_nonfinite:
        stopped = "non-finite losses"
    elif monitor.early_stopped:
        stopped = "early stopping"
    elif cfg.step_budget is not None and steps >= cfg.step_budget:
        stopped = "max_steps"
    else:
        stopped = "max_minutes"
    for p in model.parameters():
        p.requires_grad_(True)
    model = model.to(device=pipeline.device, dtype=pipeline.dtype).eval()

    if module.stopped_nonfinite:
        logger.warning("fine-tuning stopped after repeated non-finite losses: lower lr or check the data")
    result = FineTuneResult(
        pipeline=None,
        steps=steps,
        best_step=best_step,
        stopped=stopped,
        wall_time_s=wall,
        val_loss_before=val_before,
        val_loss_after=val_after,
        train_loss_before=train_before,
        train_loss_after=train_after,
        history=monitor.history,
    )
    run = {
        "schedule": f"cosine to {cfg.min_lr_ratio:g} x lr over "
        f"{fitter.total if fitter and fitter.total else tc.max_steps} steps after {cfg.warmup_fraction:.0%} warmup"
        + (" (fitted to the time budget)" if fitter else ""),
        "hardware": hardware_description(trainer),
        "non-finite steps skipped": module.nonfinite_total,
        "validation windows": len(datamodule.val_set) if datamodule.val_set is not None else 0,
    }
    result.pipeline = PandaPipeline(model, card_info(pipeline.info, cfg, split, data, result, run))
    logger.info(
        "fine-tuned for %d steps in %.0f s (%s); kept step %d; validation %s -> %s",
        steps,
        wall,
        stopped,
        best_step,
        "n/a" if val_before is None else f"{val_before:.4f}",
        "n/a" if val_after is None else f"{val_after:.4f}",
    )
    return result


def card_info(
    base: dict[str, Any],
    cfg: FineTuneConfig,
    split: SeriesSplit,
    data: list[np.ndarray],
    result: FineTuneResult,
    run: dict[str, Any],
) -> dict[str, Any]:
    """The fine-tuned model's ``info`` (its model card): the base model, the data and the run.

    Args:
        base: the base pipeline's ``info``.
        cfg: the settings.
        split: the windows trained and validated on.
        data: the recordings ``(T_i, C)``.
        result: the run's figures.
        run: ``schedule``, ``hardware``, ``non-finite steps skipped`` and ``validation windows``.
    """
    base_name = base.get("name", "unnamed checkpoint")
    r = result
    record = {
        "base model": base_name,
        "data": split.description,
        "optimizer steps": r.steps,
        "kept weights": f"step {r.best_step}"
        + (" (the base model's: fine-tuning did not improve validation)" if r.best_step == 0 else ""),
        "stopped by": r.stopped,
        "optimizer": f"AdamW, lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}",
        "schedule": run["schedule"],
        "batch": f"{cfg.batch_size} windows, context {split.min_context} to {split.train.spec.context_length} "
        f"steps, horizon {split.train.spec.prediction_length}",
        "frozen": f"patch embedding and first {cfg.freeze_layers} encoder layer(s)"
        if cfg.freeze_layers
        else "nothing",
        "hardware": run["hardware"],
        "wall time": f"{r.wall_time_s:.0f} s",
        "non-finite steps skipped": run["non-finite steps skipped"],
        "seed": cfg.seed,
    }
    training = {
        **{f"pretraining: {k}": v for k, v in (base.get("training") or {}).items()},
        **{f"fine-tuning: {k}": v for k, v in record.items()},
    }
    if r.val_loss_before is not None:
        results = (
            f"Fine-tuning validation MSE (standardised units, {run['validation windows']} windows of the held-out "
            f"tails): base {r.val_loss_before:.4f}, fine-tuned {r.val_loss_after:.4f}. "
            f"Training windows: {r.train_loss_before:.4f} -> {r.train_loss_after:.4f}."
        )
    else:
        results = (
            f"Training-window MSE (standardised units): {r.train_loss_before:.4f} -> {r.train_loss_after:.4f} "
            "(no validation split)."
        )
    return {
        "name": cfg.name or f"{base_name}-finetuned",
        "base_model": base_name,
        "training_data": (
            f"Fine-tuned from `{base_name}` on the user's data: {split.description} "
            f"Base model's training data: {base.get('training_data', 'not recorded')}"
        ),
        "training": training,
        "results": results,
        "fine_tuning": {
            "config": asdict(cfg),
            "data_shapes": [list(s.shape) for s in data],
            "steps": r.steps,
            "best_step": r.best_step,
            "stopped": r.stopped,
            "wall_time_s": round(r.wall_time_s, 3),
            "val_loss_before": r.val_loss_before,
            "val_loss_after": r.val_loss_after,
            "train_loss_before": r.train_loss_before,
            "train_loss_after": r.train_loss_after,
        },
        "base_info": {k: v for k, v in base.items() if k != "config"},
    }
