"""LightningModule: standardised error (MSE, MAE or sMAPE) over the horizon, AdamW, cosine schedule, clipping.

Optimisation is manual so that a non-finite loss (or gradient norm) skips the whole step on every rank
together: no backward, no optimizer or scheduler step, and the global step does not advance.
"""

from __future__ import annotations

import json
import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch

from panda_fm.config import PandaConfig
from panda_fm.model import PandaModel
from panda_fm.scaling import InstanceScale, fit_scale
from panda_fm.training.config import TrainerConfig

logger = logging.getLogger(__name__)


class WarmupCosine:
    """Learning-rate multiplier: linear warmup from 0, then a cosine down to ``min_ratio``.

    A callable object (not a closure) so that a scheduler holding it can be checkpointed.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, 1)
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _pointwise(pred: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Squared (``"mse"``), absolute (``"mae"``) or symmetric relative (``"smape"``, 0-100, the benchmark's
    sMAPE with 0/0 counted as 0) error, elementwise."""
    error = pred - y
    if kind == "mse":
        return error.pow(2)
    if kind == "mae":
        return error.abs()
    den = pred.abs() + y.abs()
    return 100.0 * torch.where(den > 0, error.abs() / torch.where(den > 0, den, 1.0), 0.0)


def _errors(
    model: PandaModel,
    x: torch.Tensor,
    observed: torch.Tensor | None,
    y: torch.Tensor,
    kind: str,
    units: InstanceScale | None = None,
) -> torch.Tensor:
    """Elementwise forecast error ``(B, H, C)`` in standardised units.

    A model that selects among in-context experts is scored by the expected error of its choice (the
    experts' errors weighted by the network's weights), which trains the weights to pick the best expert;
    ``y`` must be finite. ``units``: the statistics ``x`` was standardised by (for experts that read the context in
    its own units, as :meth:`PandaModel.forward` gives them).
    """
    horizon = y.shape[1]  # other than the model's prediction_length only for models with experts
    if model.config.incontext == "experts" and model.config.expert_combine == "select":
        forecasts, weights = model.expert_weights(x, observed, horizon, units)  # (B, E, H, C), (B, E, C)
        return (_pointwise(forecasts, y.unsqueeze(1), kind) * weights.unsqueeze(2)).sum(dim=1)
    pred = model.forward_normalised(x, observed, horizon, units).float()  # (B, H, C)
    assert pred.shape == y.shape, f"forecast {tuple(pred.shape)} vs target {tuple(y.shape)}"
    return _pointwise(pred, y, kind)


def standardised_mse(
    model: PandaModel, context: torch.Tensor, target: torch.Tensor, eps: float, kind: str = "mse"
) -> torch.Tensor:
    """MSE (or MAE) of the forecast in units standardised by the context's per-channel statistics.

    Args:
        model: the model.
        context: ``(B, context_length, C)`` raw units.
        target: ``(B, prediction_length, C)`` raw units.
        eps: added to the context variance.
        kind: ``"mse"``, ``"mae"`` or ``"smape"``.

    Returns:
        Scalar float32 loss.
    """
    stats = fit_scale(context, torch.ones_like(context, dtype=torch.bool), eps)
    return _errors(
        model, stats.normalise(context.float()), None, stats.normalise(target.float()), kind, stats
    ).mean()


def masked_standardised_mse(
    model: PandaModel, context: torch.Tensor, target: torch.Tensor, eps: float, kind: str = "mse"
) -> torch.Tensor:
    """:func:`standardised_mse` for windows with missing values (NaN), as in users' series.

    Missing context entries are handled as in the model's ``forward`` (:meth:`PandaModel.standardise`) and
    missing target entries are left out of the mean. On windows without NaN it equals
    :func:`standardised_mse`.

    Args:
        model: the model.
        context: ``(B, context_length, C)`` raw units, NaN for missing (e.g. left padding).
        target: ``(B, prediction_length, C)`` raw units, NaN for missing.
        eps: added to the context variance.
        kind: ``"mse"``, ``"mae"`` or ``"smape"``.

    Returns:
        Scalar float32 loss (NaN when no target entry is observed).
    """
    x, observed, stats = model.standardise(context, torch.isfinite(context), eps)  # short holes filled
    y = stats.normalise(target.float())
    valid = torch.isfinite(y)  # (B, H, C)
    return (
        torch.where(valid, _errors(model, x, observed, torch.where(valid, y, 0.0), kind, stats), 0.0).sum()
        / valid.sum()
    )


class PandaLightningModule(L.LightningModule):
    """Pretrains a :class:`PandaModel` on batches ``{"context", "target", "key"}``.

    Args:
        model_config: the model's hyperparameters.
        trainer_config: optimiser and robustness settings.
        debug_dir: where ranks log the keys of their windows when ``trainer_config.debug_window_log``.
        model: train this (pretrained) model instead of a fresh one (fine-tuning); its parameters with
            ``requires_grad=False`` stay frozen. Its config must equal ``model_config``.
        mask_missing: windows may hold NaN (missing values): use :func:`masked_standardised_mse`.
        schedule_steps: length of the warmup + cosine when ``trainer_config.max_steps`` is None (a run with
            a time budget, whose callback refits it); else ignored.
    """

    def __init__(
        self,
        model_config: PandaConfig,
        trainer_config: TrainerConfig,
        debug_dir: str | Path | None = None,
        model: PandaModel | None = None,
        mask_missing: bool = False,
        schedule_steps: int | None = None,
    ):
        super().__init__()
        if model is not None and model.config != model_config:
            raise ValueError("model_config differs from the config of the model passed in")
        if trainer_config.max_steps is None and schedule_steps is None:
            raise ValueError("trainer_config.max_steps is None: pass schedule_steps, the schedule's length")
        self.schedule_steps = trainer_config.max_steps or schedule_steps
        self.model = model if model is not None else PandaModel(model_config, seed=trainer_config.seed)
        self.loss_fn = partial(
            masked_standardised_mse if mask_missing else standardised_mse, kind=trainer_config.loss
        )
        self.cfg = trainer_config
        self.debug_dir = Path(debug_dir) if debug_dir is not None else None
        self.automatic_optimization = False
        # Counters kept in checkpoints (see on_save_checkpoint).
        self.batches_seen = 0  # training batches consumed by this rank, skipped ones included
        self.nonfinite_total = 0  # steps skipped for a non-finite loss or gradient norm
        self.nonfinite_in_row = 0
        self.wall_time_before = 0.0  # seconds of training in earlier (resumed-from) runs
        self.stopped_nonfinite = False
        self._started: float | None = None

    # --- optimisation ------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.cfg
        # Weight decay on matrices only, not on biases and norm gains.
        # Frozen parameters (fine-tuning) are left out.
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def schedule(self) -> WarmupCosine:
        """The learning-rate multiplier for the configured ``max_steps`` (or ``schedule_steps``)."""
        cfg, total = self.cfg, self.schedule_steps
        return WarmupCosine(int(cfg.warmup_fraction * total), total, cfg.min_lr_ratio)

    def _sync_schedule(self) -> None:
        """Make the schedule follow this run's ``lr`` and ``max_steps``.

        A resumed scheduler carries the peak lr and the multiplier's settings of the run that saved it;
        a resumed run that raises ``max_steps`` (or lowers ``lr``) means the new values, from the restored
        step on. Without a change this is a no-op.
        """
        scheduler = self.lr_schedulers()
        fn = self.schedule()
        groups = scheduler.optimizer.param_groups
        scheduler.lr_lambdas = [fn] * len(groups)
        scheduler.base_lrs = [self.cfg.lr] * len(groups)
        for group in groups:
            group["lr"] = self.cfg.lr * fn(scheduler.last_epoch)
            group["initial_lr"] = self.cfg.lr

    def _any_rank(self, flag: bool) -> bool:
        """True when ``flag`` is True on any rank (every rank gets the same answer)."""
        return bool(self.trainer.strategy.reduce_boolean_decision(flag, all=False))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        context, target = batch["context"], batch["target"]
        self._log_windows(batch["key"])
        index = self.batches_seen
        self.batches_seen += 1
        loss = self.loss_fn(self.model, context, target, self.model.config.scaling_eps)
        if index in self.cfg.debug_nonfinite_batches and self.cfg.debug_nonfinite_rank in (
            None,
            self.global_rank,
        ):
            loss = loss * float("nan")
        if self._any_rank(not bool(torch.isfinite(loss))):
            return self._skip("loss")
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)  # after DDP's all-reduce
        if self._any_rank(not bool(torch.isfinite(grad_norm))):
            optimizer.zero_grad(set_to_none=True)
            return self._skip("gradient norm")
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        self.lr_schedulers().step()
        self.nonfinite_in_row = 0
        windows = context.shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=windows)
        self.log("train/grad_norm", grad_norm.detach(), batch_size=windows)
        self.log("train/lr", lr, batch_size=windows)
        self.log("train/nonfinite_total", float(self.nonfinite_total), batch_size=windows)
        return loss.detach()

    def _skip(self, what: str) -> None:
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        logger.warning(
            "non-finite %s at batch %d (step %d): step skipped (%d in a row, %d in all)",
            what,
            self.batches_seen - 1,
            self.global_step,
            self.nonfinite_in_row,
            self.nonfinite_total,
        )
        self.log("train/nonfinite_total", float(self.nonfinite_total), batch_size=1)
        if self.nonfinite_in_row >= self.cfg.max_nonfinite_in_row:
            self.stopped_nonfinite = True
        return None

    def _log_windows(self, keys: torch.Tensor) -> None:
        """Append this rank's window keys ``(B, 3)`` to ``debug_dir/windows-rank{r}.jsonl``."""
        if not self.cfg.debug_window_log or self.debug_dir is None:
            return
        self.debug_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"batch": self.batches_seen, "keys": keys.cpu().tolist()})
        with open(self.debug_dir / f"windows-rank{self.global_rank}.jsonl", "a") as fh:
            fh.write(line + "\n")

    # --- validation ----------------------------------------------------------------------------------

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        names = self.trainer.datamodule.val_names
        loss = self.loss_fn(self.model, batch["context"], batch["target"], self.model.config.scaling_eps)
        self.log(
            f"val/{names[dataloader_idx]}_loss",
            loss,
            batch_size=batch["context"].shape[0],
            sync_dist=True,
            add_dataloader_idx=False,
            prog_bar=True,
        )

    # --- bookkeeping ---------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        self._started = time.perf_counter()
        self._sync_schedule()

    @property
    def wall_time(self) -> float:
        """Seconds of training, earlier resumed-from runs included."""
        now = 0.0 if self._started is None else time.perf_counter() - self._started
        return self.wall_time_before + now

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["panda_fm"] = {
            "batches_seen": self.batches_seen,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_in_row": self.nonfinite_in_row,
            "wall_time": self.wall_time,
            "model_config": self.model.config.hyperparameters(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("panda_fm", {})
        saved = state.get("model_config")
        if saved is not None:
            # a setting added to PandaConfig since the checkpoint was written had its default then
            saved = PandaConfig().hyperparameters() | saved
            current = self.model.config.hyperparameters()
            diff = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
            if diff:
                raise ValueError(
                    f"the checkpoint was trained with other model settings ({diff}); resume with the run's "
                    "original config or start a new run in another --out directory"
                )
        self.batches_seen = int(state.get("batches_seen", 0))
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.nonfinite_in_row = 0
        self.wall_time_before = float(state.get("wall_time", 0.0))
