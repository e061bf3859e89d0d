"""Checkpoint I/O: panda_fm's own format, the published reference format, hub downloads, model cards.

A checkpoint is a directory holding ``config.json``, ``model.safetensors``, a ``README.md`` model card and
``training_info.json``, as written by transformers' ``save_pretrained`` (so ``transformers.AutoModel`` reads it
too, once :mod:`panda_fm` is imported). Hub ids are fetched with ``huggingface_hub.snapshot_download``, which
honours ``HF_HUB_OFFLINE=1``, ``HF_ENDPOINT`` and the hub cache. No pickle is read or written anywhere.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors import SafetensorError
from safetensors.torch import load_file

from panda_fm.config import PandaConfig
from panda_fm.model import PandaModel

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
TRAINING_INFO_NAME = "training_info.json"
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, TRAINING_INFO_NAME)
REFERENCE_DEFAULT_SEED = 99  # the reference's training seed when no training_info.json says otherwise

# PandaConfig fields that the reference format lacks; every other field is a reference key of the same name.
_PANDA_ONLY_KEYS = frozenset(
    {
        "scaling_eps",
        "incontext",
        "analogue_delays",
        "analogue_lag",
        "analogue_sharpness",
        "experts",
        "expert_combine",
        "expert_backtest",
        "experts_version",
    }
)
_REFERENCE_KEYS = tuple(name for name in PandaConfig.field_types() if name not in _PANDA_ONLY_KEYS)
# Reference settings the mapping does not support: key -> (supported value, what it would need).
_REFERENCE_REQUIRED = {
    "distribution_output": (None, "a distribution head"),
    "use_cls_token": (False, "a CLS token"),
    "pre_norm": (True, "post-norm layers"),
    "norm_type": ("rmsnorm", "another norm type"),
    "channel_rope": (False, "rotary positions in channel attention"),
    "scaling": ("std", "another instance scaling"),
    "share_embedding": (True, "a patch embedding per channel"),
    "share_projection": (True, "a forecast head per channel"),
    "activation_function": ("gelu", "another activation"),
    "mode": ("predict", "the masked-pretraining head"),
}


# --- resolving a path or hub id ----------------------------------------------------------------------


def resolve_checkpoint(
    path_or_id: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None
) -> Path:
    """A local checkpoint directory for ``path_or_id``, downloading from the hub if it is a hub id.

    A path that exists locally is used as is and never touches the network. Anything else of the form
    ``org/name`` is fetched (its checkpoint files only) with ``huggingface_hub.snapshot_download``.

    Raises:
        FileNotFoundError: neither a directory nor a hub id, or a hub repo without config.json or weights.
        OSError: the hub cannot be reached (network, HF_ENDPOINT), or offline the files are not cached.
    """
    path = Path(path_or_id)
    if path.is_dir():
        return path
    name = str(path_or_id)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/")):
        raise FileNotFoundError(
            f"{name!r} is neither a checkpoint directory nor a hub id of the form 'org/name'"
        )
    try:
        local = Path(
            huggingface_hub.snapshot_download(
                name, revision=revision, cache_dir=cache_dir, allow_patterns=list(HUB_FILES)
            )
        )
    except Exception as err:  # network, offline-mode, HTTP and incomplete-cache errors: one clear message
        raise OSError(
            f"could not fetch {CONFIG_NAME} and {WEIGHTS_NAME} of hub repo {name!r} ({type(err).__name__}: "
            f"{err}). Check the network or HF_ENDPOINT; offline (HF_HUB_OFFLINE=1) they must already be cached"
        ) from err
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        if (local / filename).is_file():
            continue
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise OSError(
                f"{filename} of hub repo {name!r} is not cached; offline (HF_HUB_OFFLINE=1) it cannot be fetched"
            )
        raise FileNotFoundError(f"hub repo {name!r} has no {filename}; it is not a panda_fm checkpoint")
    return local


# --- reading ----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path} is missing: a checkpoint directory needs {CONFIG_NAME}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the checkpoint is corrupt") from err


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: a checkpoint directory needs {WEIGHTS_NAME}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"{path} is corrupt or truncated ({err}); download or save it again") from err


def is_reference_config(config: dict[str, Any]) -> bool:
    return config.get("model_type") == "patchtst"


def reference_to_config(ref: dict[str, Any]) -> PandaConfig:
    """Map a reference (PatchTST-style) config onto :class:`PandaConfig`, refusing what is unsupported."""
    for key, (supported, feature) in _REFERENCE_REQUIRED.items():
        if key in ref and ref[key] != supported:
            raise ValueError(
                f"reference config has {key}={ref[key]!r} ({feature}); panda_fm supports only {key}={supported!r}"
            )
    if ref.get("pooling_type", "mean") not in ("mean", "max"):
        raise ValueError(
            f"reference config has pooling_type={ref['pooling_type']!r}; supported: 'mean', 'max'"
        )
    return PandaConfig(**{k: ref[k] for k in _REFERENCE_KEYS if k in ref})


def reconstruct_poly_indices(config: PandaConfig, seed: int) -> list[torch.Tensor]:
    """Redraw the index tuples the reference drew at training time from torch's global generator.

    The caller's global RNG state is restored afterwards.
    """
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return [
            torch.randint(high=config.patch_length, size=(config.num_poly_feats, d))
            for d in range(2, 2 + config.poly_degrees)
        ]
    finally:
        torch.random.set_rng_state(state)


def _reference_state_dict(
    directory: Path, config: PandaConfig, weights: dict[str, torch.Tensor], poly_indices: Sequence[Any] | None
) -> dict[str, torch.Tensor]:
    """Rename reference tensors to PandaModel's names and add the polynomial index tuples."""
    state = {}
    for key, value in weights.items():
        if key == "head.projection.weight":
            state["head.weight"] = value
        elif key.startswith("model.encoder."):
            state[key[len("model.encoder.") :]] = value
        else:
            raise ValueError(f"unexpected tensor {key!r} in reference checkpoint {directory}")
    if not config.channel_attention:  # a norm the reference may keep unused
        for key in [k for k in state if ".norm_sublayer2." in k]:
            del state[key]
    if config.use_dynamics_embedding:
        if poly_indices is None:
            info_path = directory / TRAINING_INFO_NAME
            seed = REFERENCE_DEFAULT_SEED
            if info_path.exists():
                seed = int(_read_json(info_path).get("train_config", {}).get("seed", seed))
            logger.warning(
                "reference checkpoint %s does not store its polynomial index tuples; reconstructing them "
                "from training seed %d. Pass poly_indices=[...] if you have the originals",
                directory,
                seed,
            )
            indices = reconstruct_poly_indices(config, seed)
        else:
            indices = [torch.as_tensor(i, dtype=torch.int64) for i in poly_indices]
        degrees = range(2, 2 + config.poly_degrees)
        if len(indices) != len(degrees):
            raise ValueError(
                f"poly_indices needs {len(degrees)} tensors (degrees {list(degrees)}), got {len(indices)}"
            )
        for d, idx in zip(degrees, indices, strict=True):
            if tuple(idx.shape) != (config.num_poly_feats, d):
                raise ValueError(
                    f"poly_indices for degree {d} must be ({config.num_poly_feats}, {d}), got {tuple(idx.shape)}"
                )
            if idx.min() < 0 or idx.max() >= config.patch_length:
                raise ValueError(f"poly_indices for degree {d} must lie in [0, {config.patch_length})")
            state[f"embedder.poly_indices_{d}"] = idx
    return state


def read_poly_indices(path: str | os.PathLike) -> list[torch.Tensor]:
    """Index tuples from a safetensors file whose tensor names end in ``degree2``, ``degree3``, ..."""
    tensors = _read_weights(Path(path))
    by_degree = {}
    for name, value in tensors.items():
        digits = name.rsplit("degree", 1)[-1]
        if "degree" not in name or not digits.isdigit():
            raise ValueError(
                f"{path}: tensor {name!r} is not named ...degree<d>; name them e.g. poly_indices_degree2"
            )
        by_degree[int(digits)] = value
    return [by_degree[d] for d in sorted(by_degree)]


def load_model(
    path_or_id: str | os.PathLike,
    *,
    poly_indices: Sequence[Any] | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> tuple[PandaModel, dict[str, Any]]:
    """Load a checkpoint of either format; returns the model (float32, CPU) and its card metadata."""
    directory = resolve_checkpoint(path_or_id, revision=revision, cache_dir=cache_dir)
    raw = _read_json(directory / CONFIG_NAME)
    weights = _read_weights(directory / WEIGHTS_NAME)
    if is_reference_config(raw):
        config = reference_to_config(raw)
        state = _reference_state_dict(directory, config, weights, poly_indices)
    else:
        if poly_indices is not None:
            raise ValueError(
                "poly_indices applies to reference checkpoints only; panda_fm checkpoints store them"
            )
        config = PandaConfig.from_dict(raw)
        state = weights
    model = PandaModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not match its config: missing tensors {missing}, "
            f"unexpected tensors {unexpected}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"tensor {key!r} in {directory} has shape {tuple(value.shape)}, "
                f"the config implies {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    info_path = directory / TRAINING_INFO_NAME
    meta = _read_json(info_path) if info_path.exists() and not is_reference_config(raw) else {}
    return model.eval(), meta


# --- writing ----------------------------------------------------------------------------------------


def save_model(model: PandaModel, directory: str | os.PathLike, info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a checkpoint directory (config, float32 safetensors weights, model card, training info).

    transformers' ``save_pretrained`` writes the config and weights into a temporary sibling directory, which
    then replaces ``directory``, so a crash never leaves a half-written checkpoint.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        # checkpoints hold float32 weights whatever dtype the model runs in
        saved = model if model.dtype == torch.float32 else copy.deepcopy(model).float()
        saved.save_pretrained(tmp)
        info = dict(info or {})
        (tmp / TRAINING_INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        model_card(model, info).save(tmp / CARD_NAME)
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes private files; a checkpoint is for sharing
            path.chmod(0o755 if path.is_dir() else 0o644)
        if directory.exists():
            backup = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            directory.rename(backup)
            tmp.rename(directory)
            shutil.rmtree(backup)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def model_card(model: PandaModel, info: dict[str, Any]) -> ModelCard:
    """A hub model card: metadata (library, pipeline tag, tags), architecture, size, training data and results."""
    cfg = model.config
    embedding = (
        f"dynamics embedding ({cfg.poly_degrees} degrees x {cfg.num_poly_feats} products, {cfg.num_rff} Fourier features)"
        if cfg.use_dynamics_embedding
        else "linear patch embedding"
    )
    incontext = {
        "analogue": f" (kernel regression over delay windows of {cfg.analogue_delays} x lag {cfg.analogue_lag}, "
        "corrected patch by patch by the network)",
        "experts": f" (classical forecasts {', '.join(cfg.experts)} of the context, each backtested on its last "
        f"{cfg.expert_backtest} steps; the network weighs them per "
        f"channel and forecasts with {'the highest-weighted one' if cfg.expert_combine == 'select' else 'their weighted mean'})",
    }
    metadata = ModelCardData(
        library_name="panda_fm",
        pipeline_tag="time-series-forecasting",
        tags=["chaos", "dynamical-systems", "forecasting", "panda_fm"],
    )
    lines = [
        "---",
        metadata.to_yaml(),
        "---",
        "",
        f"# {info.get('name', 'panda_fm checkpoint')}",
        "",
        "A patched cross-channel attention model for forecasting chaotic dynamical systems zero-shot.",
        "Load it with `panda_fm.PandaPipeline.from_pretrained(path_or_hub_id)`.",
        "",
        "## Architecture",
        "",
        f"- parameters: {model.num_parameters():,}",
        f"- context {cfg.context_length} steps, horizon {cfg.prediction_length} per pass "
        + (
            "(any horizon in one pass: the experts roll out)"
            if cfg.incontext == "experts"
            else "(longer by rollout)"
        ),
        f"- patches of {cfg.patch_length} (stride {cfg.patch_stride}), {embedding}",
        f"- {cfg.num_hidden_layers} layers, width {cfg.d_model}, {cfg.num_attention_heads} heads, FFN {cfg.ffn_dim}, "
        f"p-RoPE ({cfg.rope_percent:.0%} of pairs, max wavelength {cfg.max_wavelength:g})",
        f"- channel attention: {'yes' if cfg.channel_attention else 'no'}; pooling: {cfg.pooling_type}",
        f"- in-context forecaster: {cfg.incontext}{incontext.get(cfg.incontext, '')}",
        "",
        "## Training data",
        "",
        str(info.get("training_data", "Not recorded (untrained or converted weights).")),
        "",
        "## Training",
        "",
    ]
    training = info.get("training", {})
    lines += [f"- {k}: {v}" for k, v in training.items()] or ["Not recorded."]
    lines += ["", "## Measured results", ""]
    results = info.get("results")
    lines.append(str(results) if results else "None recorded yet.")
    return ModelCard("\n".join(lines) + "\n")
