"""Typed configuration of a pretraining run, read from YAML with dotted overrides.

A run config has three sections, each a dataclass validated on construction::

    name: small-cpu
    model:   {...}   # PandaConfig fields
    data:    {...}   # DataConfig fields (augment: AugmentConfig fields)
    trainer: {...}   # TrainerConfig fields

Values are coerced to the field's type (YAML reads ``1e-3`` as a string; it becomes a float here).
Unknown keys are errors that list the known ones.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from panda_fm.config import PandaConfig
from panda_fm.data.augment import AugmentConfig

PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "64-true")


@dataclass
class DataConfig:
    """Where training windows come from and how they are batched."""

    path: str | None = None  # dataset directory written by `panda-fm generate` (or --data)
    num_channels: int = 3  # channels per training window (the reference's 3)
    batch_size: int = 32  # windows per optimizer step on each device
    num_workers: int = 0  # dataloader worker processes per device
    val_fraction: float = 0.1  # fraction of train-split systems held out for validation
    val_windows: int = 256  # fixed windows per validation set (held-out and test)
    val_batch_size: int = 64  # windows per validation batch
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("num_channels", "batch_size", "val_windows", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must lie in [0, 1), got {self.val_fraction}")


@dataclass
class TrainerConfig:
    """Optimisation, hardware, logging and checkpointing of pretraining, and of fine-tuning
    (``FineTuneConfig.trainer``)."""

    out_dir: str = "runs/pretrain"  # logs, Lightning checkpoints and the exported checkpoint (or --out)
    accelerator: str = "auto"  # "cpu", "gpu" or "auto"
    devices: int = 1  # devices per node (or --devices)
    num_nodes: int = 1  # nodes; the launcher (srun, torchrun) must start devices * num_nodes processes
    strategy: str = "auto"  # Lightning strategy; "auto" means DDP when more than one process
    precision: str = "32-true"  # Lightning precision, e.g. "bf16-mixed" on GPUs
    torch_threads: int | None = (
        None  # intra-op threads per process; None: torch's (DDP on CPU: cores / processes)
    )
    float32_matmul_precision: str = "highest"  # torch matmul precision ("high" allows TF32 on GPUs)
    # optimizer steps (or --max-steps); skipped non-finite steps do not count. None: no step limit (refused by
    # pretraining; fine-tuning then stops at its time budget, FineTuneConfig.max_minutes, or after 500 steps)
    max_steps: int | None = 1000
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.999  # AdamW second-moment decay
    warmup_fraction: float = 0.1  # fraction of max_steps with a linear warmup from 0
    min_lr_ratio: float = 0.0  # learning rate at the end of the cosine, as a fraction of lr
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    val_every_n_steps: int = 500  # optimizer steps between validations
    checkpoint_every_n_steps: int = 500  # optimizer steps between Lightning checkpoints
    log_every_n_steps: int = 50  # steps between logged training metrics
    max_nonfinite_in_row: int = 5  # consecutive non-finite losses that stop the run
    loss: str = "mse"  # "mse" (the reference), "mae" or "smape", in units standardised by the context
    # steps the loss covers (None: model.prediction_length); longer needs model.incontext "experts", whose one
    # pass forecasts any horizon, so the weights are trained on the long forecast they combine
    loss_horizon: int | None = None
    seed: int = 0  # seeds the model initialisation, the validation split and the window stream
    progress_bar: bool = True  # show a progress bar
    tensorboard: bool = True  # also log to TensorBoard (falls back to CSV alone if unavailable)
    debug_window_log: bool = False  # each rank appends the keys of its windows to OUT/debug/
    debug_nonfinite_batches: list[int] = field(default_factory=list)  # batch indices whose loss is set to NaN
    debug_nonfinite_rank: int | None = None  # the rank those NaNs hit; None means every rank

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"trainer.max_steps must be >= 1 or null, got {self.max_steps}")
        positive = (
            "devices",
            "num_nodes",
            "val_every_n_steps",
            "checkpoint_every_n_steps",
            "log_every_n_steps",
            "max_nonfinite_in_row",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"trainer.torch_threads must be >= 1 or null, got {self.torch_threads}")
        if self.lr <= 0:
            raise ValueError(f"trainer.lr must be positive, got {self.lr}")
        if self.loss not in ("mse", "mae", "smape"):
            raise ValueError(f"trainer.loss must be 'mse', 'mae' or 'smape', got {self.loss!r}")
        if self.loss_horizon is not None and self.loss_horizon < 1:
            raise ValueError(f"trainer.loss_horizon must be >= 1 or null, got {self.loss_horizon}")
        if self.weight_decay < 0:
            raise ValueError(f"trainer.weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"trainer.{name} must lie in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"trainer.warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"trainer.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"trainer.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.accelerator not in ("cpu", "gpu", "cuda", "mps", "auto"):
            raise ValueError(
                f"trainer.accelerator must be cpu, gpu, cuda, mps or auto, got {self.accelerator!r}"
            )
        if self.float32_matmul_precision not in ("highest", "high", "medium"):
            raise ValueError(
                "trainer.float32_matmul_precision must be highest, high or medium, "
                f"got {self.float32_matmul_precision!r}"
            )

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


@dataclass
class PretrainConfig:
    """A whole pretraining run."""

    name: str = "panda-fm"  # run name, shown in the model card
    model: PandaConfig = field(default_factory=PandaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        h, H = self.trainer.loss_horizon, self.model.prediction_length
        if h is not None and h != H and self.model.incontext != "experts":
            raise ValueError(
                f"trainer.loss_horizon ({h}) differs from model.prediction_length ({H}): only a model with "
                "model.incontext 'experts' forecasts another horizon in one pass; drop loss_horizon"
            )

    @property
    def target_length(self) -> int:
        """Steps of target per training window."""
        return self.trainer.loss_horizon or self.model.prediction_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"model": self.model.hyperparameters()}


# --- building dataclasses from plain data ---------------------------------------------------------------


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` to the type ``hint`` or raise a ValueError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.lower() in ("null", "none"))
        ):
            return None
        rest = [a for a in args if a is not type(None)]
        return _coerce(value, rest[0], key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping of {_type_name(hint)} fields, got {value!r}")
        return build_dataclass(hint, value, key)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, (str, float)) and number.is_integer():
            return int(number)
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a dict, coercing each value to its field's type.

    Raises:
        ValueError: for an unknown key (the message lists the known keys) or a value of the wrong type.
    """
    hints = _field_types(cls)
    fields = set(hints)
    where = f"section {prefix!r}" if prefix else "the top level"
    unknown = sorted(set(data) - fields)
    if cls is PandaConfig:
        unknown = [k for k in unknown if k not in ("model_type", "panda_fm_version")]
    if unknown:
        raise ValueError(
            f"unknown config key(s) {[_join(prefix, k) for k in unknown]} in {where}; "
            f"known keys there: {sorted(fields)}"
        )
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in data.items() if k in fields}
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _field_types(cls: type) -> dict[str, Any]:
    """The fields of dataclass ``cls`` a config file may set, and their types.

    For :class:`PandaConfig` its own fields only: transformers' base fields (``dtype``, ``id2label``, ...) are
    not hyperparameters of the model.
    """
    if cls is PandaConfig:
        return PandaConfig.field_types()
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def override_keys(cls: type = PretrainConfig, prefix: str = "") -> list[str]:
    """Every dotted key a command-line override may set, e.g. ``model.d_model``, ``data.augment.rate``."""
    keys = []
    for name, hint in _field_types(cls).items():
        if dataclasses.is_dataclass(hint):
            keys += override_keys(hint, _join(prefix, name))
        else:
            keys.append(_join(prefix, name))
    return keys


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); strings are read as YAML scalars first."""
    known = set(override_keys())
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"unknown config key {key!r}; run `panda-fm pretrain --help` to list the keys")
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else value
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise ValueError(f"config section {p!r} must be a mapping, got {child!r}")
            node = child
        node[leaf] = value
    return out


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """Read a YAML run config (or start from defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"config file {path} does not exist; pass one of train/configs/*.yaml to --config"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping with sections model, data, trainer")
    data = apply_overrides(data, overrides or {})
    return build_dataclass(PretrainConfig, data)


def save_config(config: PretrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
