"""Fine-tuning a pretrained checkpoint on a user's own series.

Fine-tuning is pretraining's machinery on other data: the same
:class:`~panda_fm.training.module.PandaLightningModule` (the standardised loss, AdamW, warmup + cosine,
clipping, non-finite step skipping), configured by the same :class:`~panda_fm.training.config.TrainerConfig`
and run by the same Lightning trainer (:func:`panda_fm.training.trainer.build_trainer`), trains a copy of a
model on windows cut from the user's recordings (:mod:`panda_fm.data.series`). Defaults that work without
tuning:

- the objective: the base checkpoint's own (``trainer.loss`` and ``trainer.loss_horizon`` from its training
  record, ``info["config"]["trainer"]``), unless set; the validation loss is the same objective;
- windows: the model's context (shorter near a recording's start, down to ``min_context`` steps, left-padded
  as missing) and the loss's horizon; all channels of the series;
- validation: the last ``val_fraction`` of each recording; targets there are never trained on (their
  contexts may reach back into the training part, as a forecast from the recording would);
- a small learning rate (1e-4) with a short warmup (:data:`FINETUNE_TRAINER`);
- early stopping when the validation loss has not improved for ``patience`` validations, and the weights
  of the best validation (the base model's own included) are kept;
- a step budget (``trainer.max_steps``) and/or a time budget (``max_minutes``); with a time budget the warmup
  and cosine are fitted to the steps the budget allows (estimated from the pace so far, every 10 steps).

Missing values (NaN): context NaNs are read as missing by the model (short holes interpolated, longer gaps
never used as data; :mod:`panda_fm.forecasters.gaps`), target NaNs are left out of the loss, and windows without enough observed data are not drawn. Each recording's missing
count and longest NaN run are logged; a recording that is mostly missing, an all-NaN channel, infinite
values, too-short recordings and recordings with different channel counts are errors naming the fix.

:func:`fine_tune` takes a model and its ``info`` (model card record) and returns the new ones with the run's
figures; :meth:`panda_fm.PandaPipeline.fine_tune` wraps it.

Shape letters: B batch, T time, C channels, L context length, H horizon.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from panda_fm.config import PandaConfig
from panda_fm.data.series import SeriesInput, SeriesSplit, load_series, split_series
from panda_fm.model import PandaModel
from panda_fm.training.config import TrainerConfig
from panda_fm.training.datamodule import WindowSet, WindowStream
from panda_fm.training.module import PandaLightningModule
from panda_fm.training.trainer import (
    LOSS_NAMES,
    SCHEDULE_GUESS,
    FitScheduleToBudget,
    build_trainer,
    describe_objective,
    hardware_description,
    setup_process,
)

logger = logging.getLogger(__name__)

VAL_NAME = "tail"  # validation loss is logged as val/tail_loss
DEFAULT_STEPS = 500  # step budget when neither trainer.max_steps nor max_minutes is given
OBJECTIVE_KEYS = ("loss", "loss_horizon")  # the TrainerConfig fields taken from the base checkpoint's record

# TrainerConfig fields whose fine-tuning default differs from pretraining's.
FINETUNE_TRAINER: dict[str, Any] = {
    "max_steps": None,  # DEFAULT_STEPS, or no step limit with a time budget (max_minutes)
    "lr": 1e-4,  # the weights are pretrained (pretraining uses 1e-3)
    "warmup_fraction": 0.05,  # a short warmup
    "min_lr_ratio": 0.1,  # the cosine ends at a tenth of lr
    "val_every_n_steps": 25,  # validations drive early stopping and the kept weights
    "log_every_n_steps": 10,  # runs are short
    "tensorboard": False,  # no files unless FineTuneConfig.log_dir
}


def finetune_trainer(**overrides: Any) -> TrainerConfig:
    """A :class:`TrainerConfig` with fine-tuning's defaults (:data:`FINETUNE_TRAINER`), then ``overrides``."""
    return TrainerConfig(**{**FINETUNE_TRAINER, **overrides})


@dataclass
class FineTuneConfig:
    """Settings of a fine-tuning run; the defaults are meant to work without tuning.

    Optimisation, hardware, the step budget and the loss are pretraining's settings, in ``trainer`` (with
    fine-tuning's defaults: :func:`finetune_trainer`); the other fields are fine-tuning's own. Of ``trainer``,
    fine-tuning does not use ``out_dir`` (see ``log_dir``), ``checkpoint_every_n_steps`` (the best weights are
    kept in memory) or ``debug_window_log``, and runs on one device. :meth:`from_settings` builds one from
    flat keywords, e.g. ``FineTuneConfig.from_settings(max_minutes=5, lr=3e-4, freeze_layers=2)``.
    """

    trainer: TrainerConfig = field(default_factory=finetune_trainer)  # optimisation, hardware, steps, loss
    max_minutes: float | None = None  # wall-clock budget of the training loop; None: steps only
    batch_size: int = 16  # windows per optimizer step
    num_channels: int | None = None  # channels per window (a random subset); None: all of the series'
    min_context: int | None = None  # fewest context steps of a window; None: a quarter of the model's context
    val_fraction: float = 0.2  # fraction of each recording's end held out for validation; 0: none
    val_windows: int = 64  # validation windows (spread evenly over the held-out tails)
    patience: int = 4  # validations without improvement before stopping early; 0: never stop early
    freeze_layers: int = 0  # freeze the patch embedding and the first k encoder layers; 0: train all
    max_missing_fraction: float = 0.5  # a recording with a larger fraction of NaN values is an error
    # trainer.loss and trainer.loss_horizon are the base checkpoint's (its training record) when it has one;
    # False: trainer's as set
    objective_from_base: bool = True
    name: str | None = None  # name of the result's model card; None: "<base name>-finetuned"
    # also write Lightning logs here (csv/version_N; tensorboard/ with trainer.tensorboard); None: no files
    log_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.trainer, TrainerConfig):
            raise ValueError(
                f"trainer must be a TrainerConfig, got {type(self.trainer).__name__}; build it with "
                "finetune_trainer(...) or pass its fields as keywords to FineTuneConfig.from_settings"
            )
        if self.trainer.world_size != 1:
            raise ValueError(
                f"fine-tuning runs on one device, got trainer.devices={self.trainer.devices} and "
                f"trainer.num_nodes={self.trainer.num_nodes}; set both to 1"
            )
        for key in ("batch_size", "val_windows"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive or None, got {self.max_minutes}")
        for key in ("patience", "freeze_layers"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.max_missing_fraction < 1.0:
            raise ValueError(f"max_missing_fraction must lie in [0, 1), got {self.max_missing_fraction}")
        if self.num_channels is not None and self.num_channels < 1:
            raise ValueError(f"num_channels must be >= 1 or None, got {self.num_channels}")
        if self.min_context is not None and self.min_context < 1:
            raise ValueError(f"min_context must be >= 1 or None, got {self.min_context}")

    @classmethod
    def from_settings(cls, **settings: Any) -> FineTuneConfig:
        """Build from flat keywords: this class's fields and :class:`TrainerConfig`'s, which go into
        ``trainer`` (over :func:`finetune_trainer`'s defaults, or over a ``trainer=`` given too).

        Naming ``loss`` or ``loss_horizon`` chooses the objective: ``objective_from_base`` becomes False
        unless it is given as well.

        Raises:
            ValueError: an unknown keyword (the message lists the known ones) or a bad value.
        """
        own = {f.name for f in fields(cls)}
        trainer_keys = {f.name for f in fields(TrainerConfig)}
        unknown = sorted(set(settings) - own - trainer_keys)
        if unknown:
            raise ValueError(
                f"unknown fine-tuning setting(s) {unknown}; known: fine-tuning's own {sorted(own)} and the "
                f"trainer's {sorted(trainer_keys)}"
            )
        kwargs = {k: v for k, v in settings.items() if k in own}
        flat = {k: v for k, v in settings.items() if k in trainer_keys}
        base = kwargs.pop("trainer", None)
        kwargs["trainer"] = replace(base, **flat) if base is not None else finetune_trainer(**flat)
        if set(OBJECTIVE_KEYS) & set(flat):
            kwargs.setdefault("objective_from_base", False)
        return cls(**kwargs)

    @property
    def step_budget(self) -> int | None:
        """The step limit: ``trainer.max_steps``, else 500 without a time budget, else None (the time decides)."""
        if self.trainer.max_steps is not None:
            return self.trainer.max_steps
        return None if self.max_minutes is not None else DEFAULT_STEPS


@dataclass
class FineTuneResult:
    """What a fine-tuning run produced: the new model with its model card record, and the run's figures."""

    model: PandaModel  # the fine-tuned model (a new object on the base's device and dtype; the base is untouched)
    info: dict[str, Any]  # its model card record (``PandaPipeline(model, info)``); set last
    steps: int  # optimizer steps taken
    best_step: int  # step whose weights were kept (0: the base model's)
    stopped: str  # why training ended: "max_steps", "max_minutes", "early stopping" or "non-finite losses"
    wall_time_s: float  # seconds in the training loop
    loss: str  # the objective trained and validated on (trainer.loss: "mse", "mae" or "smape")
    loss_source: str  # where the objective came from, in words (the base checkpoint's record, set, default)
    val_loss_before: float | None  # validation loss of the base model (None without validation)
    val_loss_after: float | None  # validation loss of the kept weights
    train_loss_before: float  # loss of the base model on fixed training windows
    train_loss_after: float  # loss of the kept weights on the same windows
    history: list[dict[str, float]] = field(
        default_factory=list
    )  # {"step", "train_loss"} / {"step", "val_loss"}


def resolve_trainer(
    cfg: FineTuneConfig, info: dict[str, Any], model: PandaConfig
) -> tuple[TrainerConfig, str]:
    """The trainer settings of a run, and where its objective came from (for the model card).

    ``max_steps`` becomes the step budget (:attr:`FineTuneConfig.step_budget`). With
    ``cfg.objective_from_base``, ``loss`` and ``loss_horizon`` become those of the base checkpoint's training
    record (``info["config"]["trainer"]``, written by pretraining and by fine-tuning); without a record they
    stay ``cfg.trainer``'s, which is logged.

    Args:
        cfg: the settings.
        info: the base model's ``info`` (its ``training_info.json``).
        model: the base model's config.

    Raises:
        ValueError: a loss horizon other than the model's own for a model without in-context experts.
    """
    tc = replace(cfg.trainer, max_steps=cfg.step_budget)
    record = info.get("config") if isinstance(info.get("config"), dict) else {}
    record = record.get("trainer") if isinstance(record.get("trainer"), dict) else {}
    if not cfg.objective_from_base:
        source = "set for fine-tuning"
    elif "loss" in record:
        tc = replace(tc, **{k: record.get(k) for k in OBJECTIVE_KEYS})
        source = "the base checkpoint's training objective"
    else:
        source = "the default: the base checkpoint records no training objective"
        logger.warning(
            "%s records no training objective (training_info.json: config.trainer.loss): fine-tuning with "
            "loss %r; set loss (e.g. pipe.fine_tune(..., loss='smape')) to choose one",
            info.get("name", "the base checkpoint"),
            tc.loss,
        )
    horizon = tc.loss_horizon or model.prediction_length
    if horizon != model.prediction_length and model.incontext != "experts":
        raise ValueError(
            f"trainer.loss_horizon ({horizon}) differs from the model's prediction_length "
            f"({model.prediction_length}): only a model with in-context experts forecasts another horizon in "
            "one pass; drop loss_horizon"
        )
    return tc, source


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
        stream = WindowStream(self.split.train, self.cfg.batch_size, self.cfg.trainer.seed)
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
            total=self.cfg.step_budget,
            desc="fine-tuning",
            unit="step",
            disable=not self.cfg.trainer.progress_bar,
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


def window_loss(
    module: PandaLightningModule, windows: dict[str, torch.Tensor], batch_size: int = 64
) -> float:
    """Mean loss of ``module.model`` over ``windows`` (``context (B, L, C)``, ``target (B, H, C)``) by the
    run's objective (``module.loss_fn``), weighting each batch by its size as Lightning's validation does."""
    model = module.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows["context"]), batch_size):
            ctx = windows["context"][i : i + batch_size].to(device)
            tgt = windows["target"][i : i + batch_size].to(device)
            total += float(module.loss_fn(model, ctx, tgt, model.config.scaling_eps)) * len(ctx)
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


def fine_tune(
    model: PandaModel, info: dict[str, Any], series: SeriesInput, config: FineTuneConfig | None = None
) -> FineTuneResult:
    """Fine-tune a copy of ``model`` on ``series``.

    Args:
        model: the base model; left untouched.
        info: its model card record (``PandaPipeline.info``): names the base in the new card, and its
            training record (``info["config"]["trainer"]``) gives the objective (see :func:`resolve_trainer`).
        series: a ``(T, C)`` array (numpy or torch; ``(T,)`` is one channel), a list of them (several
            recordings of the same channels), a ``(K, T, C)`` array (K recordings), or a ``.csv``/``.npy`` path.
        config: settings; defaults to :class:`FineTuneConfig`.

    Returns:
        The result: the new model (same device and dtype as the base) and its ``info``, the losses and the
        history. ``PandaPipeline(result.model, result.info)`` forecasts with it.

    Raises:
        ValueError: unusable input or settings, naming the fix (see :func:`load_series` and
            :func:`split_series`).
    """
    cfg = config or FineTuneConfig()
    mc = model.config
    tc, loss_source = resolve_trainer(cfg, info, mc)
    horizon = tc.loss_horizon or mc.prediction_length
    data = load_series(series)
    split = split_series(
        data,
        mc.context_length,
        horizon,
        mc.patch_length,
        min_context=cfg.min_context,
        num_channels=cfg.num_channels,
        val_fraction=cfg.val_fraction,
        max_missing_fraction=cfg.max_missing_fraction,
    )
    setup_process(tc)

    base_weight = next(model.parameters())
    work = copy.deepcopy(model).to(dtype=torch.float32).train()  # on the base's device
    trainable = freeze(work, cfg.freeze_layers)
    module = PandaLightningModule(mc, tc, model=work, mask_missing=True, schedule_steps=SCHEDULE_GUESS)
    datamodule = SeriesDataModule(split, cfg)
    probe = split.train.evenly_spaced(cfg.val_windows)  # fixed training windows: loss before and after
    train_before = window_loss(module, probe)
    val_before = window_loss(module, datamodule.val_set.windows) if datamodule.val_set is not None else None
    state0 = {k: v.detach().clone() for k, v in work.state_dict().items()}
    monitor = BestWeights(val_before, state0, cfg)
    logger.info(
        "fine-tuning %s (%s of %s parameters trainable) on %s Loss (%s, %s) before: train %.4f, validation %s",
        info.get("name", "the model"),
        f"{trainable:,}",
        f"{work.num_parameters():,}",
        split.description,
        LOSS_NAMES[tc.loss],
        loss_source,
        train_before,
        "n/a" if val_before is None else f"{val_before:.4f}",
    )

    has_val = datamodule.val_set is not None
    callbacks: list[Callback] = [monitor]
    fitter = None
    if cfg.max_minutes is not None:
        fitter = FitScheduleToBudget(cfg.max_minutes * 60, cfg.step_budget, tc.warmup_fraction)
        callbacks.append(fitter)
    with tempfile.TemporaryDirectory(prefix="panda-finetune-") as tmp:
        trainer = build_trainer(
            tc,
            Path(tmp),
            has_validation=has_val,
            callbacks=callbacks,
            log_dir=Path(cfg.log_dir) if cfg.log_dir else None,
            max_minutes=cfg.max_minutes,
            progress_bar=False,  # BestWeights shows one over optimizer steps
        )
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        wall = time.perf_counter() - started
    work = module.model.cpu()
    steps = trainer.global_step
    if has_val and (
        not monitor.history
        or monitor.history[-1].get("step") != steps
        or "val_loss" not in monitor.history[-1]
    ):
        monitor.record(window_loss(module, datamodule.val_set.windows), steps, work)  # the final weights
    if has_val:
        work.load_state_dict(monitor.best_state)
        best_step, val_after = monitor.best_step, monitor.best
    else:
        best_step, val_after = steps, None
    train_after = window_loss(module, probe)
    if module.stopped_nonfinite:
        stopped = "non-finite losses"
    elif monitor.early_stopped:
        stopped = "early stopping"
    elif cfg.step_budget is not None and steps >= cfg.step_budget:
        stopped = "max_steps"
    else:
        stopped = "max_minutes"
    for p in work.parameters():
        p.requires_grad_(True)
    work = work.to(device=base_weight.device, dtype=base_weight.dtype).eval()

    if module.stopped_nonfinite:
        logger.warning("fine-tuning stopped after repeated non-finite losses: lower lr or check the data")
    result = FineTuneResult(
        model=work,
        info={},
        steps=steps,
        best_step=best_step,
        stopped=stopped,
        wall_time_s=wall,
        loss=tc.loss,
        loss_source=loss_source,
        val_loss_before=val_before,
        val_loss_after=val_after,
        train_loss_before=train_before,
        train_loss_after=train_after,
        history=monitor.history,
    )
    run = {
        "objective": describe_objective(tc.loss, horizon, mc),
        "schedule": f"cosine to {tc.min_lr_ratio:g} x lr over "
        f"{fitter.total if fitter and fitter.total else module.schedule_steps} steps after "
        f"{tc.warmup_fraction:.0%} warmup" + (" (fitted to the time budget)" if fitter else ""),
        "hardware": hardware_description(trainer),
        "non-finite steps skipped": module.nonfinite_total,
        "validation windows": len(datamodule.val_set) if datamodule.val_set is not None else 0,
    }
    result.info = card_info(info, cfg, tc, split, data, result, run)
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
    tc: TrainerConfig,
    split: SeriesSplit,
    data: list[np.ndarray],
    result: FineTuneResult,
    run: dict[str, Any],
) -> dict[str, Any]:
    """The fine-tuned model's ``info`` (its model card): the base model, the data and the run.

    Args:
        base: the base model's ``info``.
        cfg: the settings.
        tc: the trainer settings the run used (:func:`resolve_trainer`).
        split: the windows trained and validated on.
        data: the recordings ``(T_i, C)``.
        result: the run's figures.
        run: ``objective``, ``schedule``, ``hardware``, ``non-finite steps skipped`` and ``validation windows``.
    """
    base_name = base.get("name", "unnamed checkpoint")
    r = result
    loss = LOSS_NAMES[tc.loss]
    record = {
        "base model": base_name,
        "data": split.description,
        "objective": f"{run['objective']} ({r.loss_source})",
        "optimizer steps": r.steps,
        "kept weights": f"step {r.best_step}"
        + (" (the base model's: fine-tuning did not improve validation)" if r.best_step == 0 else ""),
        "stopped by": r.stopped,
        "optimizer": f"AdamW, lr {tc.lr:g}, weight decay {tc.weight_decay:g}",
        "schedule": run["schedule"],
        "batch": f"{cfg.batch_size} windows, context {split.min_context} to {split.train.spec.context_length} "
        f"steps, horizon {split.train.spec.prediction_length}",
        "frozen": f"patch embedding and first {cfg.freeze_layers} encoder layer(s)"
        if cfg.freeze_layers
        else "nothing",
        "hardware": run["hardware"],
        "wall time": f"{r.wall_time_s:.0f} s",
        "non-finite steps skipped": run["non-finite steps skipped"],
        "seed": tc.seed,
    }
    training = {
        **{f"pretraining: {k}": v for k, v in (base.get("training") or {}).items()},
        **{f"fine-tuning: {k}": v for k, v in record.items()},
    }
    if r.val_loss_before is not None:
        results = (
            f"Fine-tuning validation {loss} (standardised units, {run['validation windows']} windows of the "
            f"held-out tails): base {r.val_loss_before:.4f}, fine-tuned {r.val_loss_after:.4f}. "
            f"Training windows: {r.train_loss_before:.4f} -> {r.train_loss_after:.4f}."
        )
    else:
        results = (
            f"Training-window {loss} (standardised units): {r.train_loss_before:.4f} -> "
            f"{r.train_loss_after:.4f} (no validation split)."
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
            "config": asdict(replace(cfg, trainer=tc)),
            "loss": tc.loss,
            "loss_source": r.loss_source,
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
        "config": {"trainer": asdict(tc)},  # the training record: a later fine-tuning takes its objective
        "base_info": {k: v for k, v in base.items() if k != "config"},
    }
