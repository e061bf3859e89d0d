"""Checkpoint I/O: panda_fm's own format, the published reference format, hub downloads, model cards.

A checkpoint is a directory holding ``config.json``, ``model.safetensors``, a ``README.md`` model card and
``training_info.json``, as written by transformers' ``save_pretrained`` (so ``transformers.AutoModel`` reads it
too, once :mod:`panda_fm` is imported). Hub ids are fetched with ``huggingface_hub.snapshot_download``, which
honours ``HF_HUB_OFFLINE=1``, ``HF_ENDPOINT`` and the hub cache. No pickle is read or written anywhere.

Checkpoints shipped with the package have registered names (:data:`REGISTERED_CHECKPOINTS`, e.g.
``"panda-fm-small"``): their files are the package data of ``panda_fm.checkpoints``, which ``pyproject.toml``
maps onto the repository's top-level ``checkpoints/`` directory, so a name works after any ``pip install``,
from any directory, offline.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
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
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file

from panda_fm.config import PandaConfig
from panda_fm.forecasters.experts import ADAPTIVE_BACKTEST, CHANNEL_GROUPING, CONTEXT_UNITS, GAP_BACKTEST
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
        "expert_tokens",
        "experts_version",
        "expert_chooser",
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


# --- resolving a path, a registered name or a hub id -----------------------------------------------------

# Checkpoints shipped inside the package: registered name -> what it is. The files of name N lie in the
# repository's checkpoints/N/, installed as the package data panda_fm/checkpoints/N/ (pyproject.toml lists
# the files to ship). A local directory of the same name, relative to the current directory, wins over the
# registered name: a path the user can see is the least surprising reading.
REGISTERED_CHECKPOINTS: dict[str, str] = {
    "panda-fm-small": "4.8M parameters, trained on CPU on evolved chaotic systems; the default of `panda-fm demo`",
}
_REPOSITORY_DIR = "checkpoints"  # where the registered checkpoints lie in a clone of the repository


def registered_checkpoint(name: str) -> Path:
    """The installed directory of the shipped checkpoint registered as ``name``.

    Args:
        name: a key of :data:`REGISTERED_CHECKPOINTS`, e.g. ``"panda-fm-small"``.

    Returns:
        The directory holding the checkpoint's files inside the installed package.

    Raises:
        ValueError: ``name`` is not registered.
        FileNotFoundError: the installed package lacks the checkpoint's files (an install from before the
            checkpoint became package data, or files removed by hand).
    """
    if name not in REGISTERED_CHECKPOINTS:
        raise ValueError(f"{name!r} is not a registered checkpoint name; registered: {_registered_names()}")
    reinstall = "reinstall panda_fm (`pip install .`, or `pip install -e .` in a clone) to restore them"
    try:
        directory = Path(str(importlib.resources.files("panda_fm.checkpoints") / name))
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            f"the registered checkpoint {name!r} is not installed: this install of panda_fm has no "
            f"panda_fm.checkpoints package; {reinstall}"
        ) from err
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / filename).is_file():
            raise FileNotFoundError(
                f"the registered checkpoint {name!r} lacks {filename} in the installed package ({directory}); "
                f"{reinstall}"
            )
    return directory


def _registered_names() -> str:
    return ", ".join(repr(name) for name in REGISTERED_CHECKPOINTS)


def _why_local(name: str, given_as_path: bool) -> str | None:
    """Why ``name``, which is not an existing path, can only be meant as a local path; None if it may be a hub id.

    Decided from the text alone (and whether its parent directory exists), never from the network.
    """
    if given_as_path:
        return "it was passed as a path object"
    if name.startswith((".", "/", "~")):
        return "it starts like a path"
    if name.endswith(("/", "\\")):
        return "it ends with a path separator"
    if "\\" in name:  # the separator on Windows
        return "it contains a backslash, which no hub id has"
    if name.count("/") > 1:
        return "it has more than one '/', which no hub id has"
    if name.count("/") == 0:
        return "it is neither a registered name nor a hub id of the form 'org/name'"
    parent, last = name.split("/")
    if parent == _REPOSITORY_DIR and last in REGISTERED_CHECKPOINTS:
        return "it is the repository's path of a shipped checkpoint"
    if Path(parent).expanduser().is_dir():
        return f"{parent!r} is a directory here"
    try:
        validate_repo_id(name)
    except HFValidationError:
        return "it is not a valid hub id"
    return None


def _missing_path_message(name: str, reason: str) -> str:
    path = Path(name).expanduser()
    where = f"{path.absolute()}" if not path.is_absolute() else str(path)
    message = f"checkpoint directory {name!r} does not exist ({where}; current directory {Path.cwd()})"
    message += f"; it is read as a local path because {reason}"
    registered = difflib.get_close_matches(path.name, REGISTERED_CHECKPOINTS, n=1)
    if registered:
        return (
            f"{message}. The shipped checkpoint loads from anywhere by its registered name: {registered[0]!r}"
        )
    return (
        f"{message}. Pass an existing checkpoint directory (holding {CONFIG_NAME} and {WEIGHTS_NAME}), a "
        f"registered name ({_registered_names()}) or a hub id 'org/name'"
    )


def resolve_checkpoint(
    path_or_id: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None
) -> Path:
    """A local checkpoint directory for ``path_or_id``: a directory, a registered name, or a hub download.

    In this order: an existing directory is used as is (a directory named like a registered name wins); a
    registered name (:data:`REGISTERED_CHECKPOINTS`) is the checkpoint shipped in the package; anything that
    reads as a path (starts with ``.``, ``/`` or ``~``, ends with a separator, has a backslash or more than one
    ``/``, names an existing parent directory, or is a ``pathlib.Path``) and does not exist is an error at once,
    without any network call; only what remains, ``org/name``, is fetched (its checkpoint files only) with
    ``huggingface_hub.snapshot_download``.

    Args:
        path_or_id: a checkpoint directory, a registered name or a hub id ``org/name``.
        revision: hub revision (branch, tag or commit); ignored for local directories and registered names.
        cache_dir: hub cache directory.

    Returns:
        The directory holding the checkpoint's files.

    Raises:
        FileNotFoundError: a local path that does not exist or is a file (the message names it, the current
            directory and the registered names), a registered checkpoint missing from the install, or a hub
            repo without config.json or weights.
        OSError: the hub cannot be reached (network, HF_ENDPOINT), or offline the files are not cached.
    """
    given_as_path = isinstance(path_or_id, os.PathLike)
    name = os.fspath(path_or_id)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(
            f"checkpoint {name!r} is a file, not a checkpoint directory; pass the directory that holds "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    if name in REGISTERED_CHECKPOINTS:
        return registered_checkpoint(name)
    reason = _why_local(name, given_as_path)
    if reason is not None:
        raise FileNotFoundError(_missing_path_message(name, reason))
    not_local = (
        f"(no local directory {name!r} under {Path.cwd()} either; registered names: {_registered_names()})"
    )
    try:
        local = Path(
            huggingface_hub.snapshot_download(
                name, revision=revision, cache_dir=cache_dir, allow_patterns=list(HUB_FILES)
            )
        )
    except Exception as err:  # network, offline-mode, HTTP and incomplete-cache errors: one clear message
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            raise OSError(
                f"hub repo {name!r} is not cached and offline mode is on (HF_HUB_OFFLINE=1), so its "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} cannot be fetched: unset HF_HUB_OFFLINE to download them, or "
                f"pass a local checkpoint directory {not_local}"
            ) from err
        raise OSError(
            f"could not fetch {CONFIG_NAME} and {WEIGHTS_NAME} of hub repo {name!r} ({type(err).__name__}: "
            f"{err}). Check the network or HF_ENDPOINT; offline (HF_HUB_OFFLINE=1) they must already be cached "
            f"{not_local}"
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


def _chooser_note(cfg: PandaConfig) -> str:
    """The model card's words for an evidence chooser (``PandaConfig.expert_chooser``), if any."""
    if not cfg.expert_chooser:
        return ""
    return (
        f"; an evidence chooser (an MLP of width {cfg.expert_chooser}, fitted by `panda-fm fit-chooser` with the "
        "network frozen) adds logits from the backtest's error by lead and measurements of the forecasts"
    )


_FIELD_NOTE = (
    "; from 8 channels on, the NVARs forecast with one local model shared by all channels as sites of a ring "
    "(the field NVAR) where its backtest error on the context's last 64 steps is below a tenth of the joint fit's"
)


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
        "experts": f", version {cfg.experts_version} (classical forecasts {', '.join(cfg.experts)} of the context, "
        f"each backtested on its last {cfg.expert_backtest} steps"
        f"{' (a third of a shorter context)' if ADAPTIVE_BACKTEST[cfg.experts_version] else ''}"
        f"{' or from after a long gap at its start' if GAP_BACKTEST[cfg.experts_version] else ''}"
        f"{'; channels that do not interact are fitted apart' if CHANNEL_GROUPING[cfg.experts_version] else ''}"
        f"{_FIELD_NOTE if CONTEXT_UNITS[cfg.experts_version] else ''}"
        f"{'; each forecast enters the network as one token' if cfg.expert_tokens == 'pooled' else ''}; "
        "the network weighs them per "
        f"channel and forecasts with {'the highest-weighted one' if cfg.expert_combine == 'select' else 'their weighted mean'}"
        f"{_chooser_note(cfg)})",
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
