"""PandaConfig: every hyperparameter of the model, validated on construction.

A :class:`transformers.PreTrainedConfig` (``model_type = "panda_fm"``), so ``AutoConfig`` reads a checkpoint's
``config.json`` once :mod:`panda_fm` is imported, and ``save_pretrained``/``from_pretrained`` write and read it.
Our own fields are listed by :meth:`PandaConfig.field_types`; transformers' base fields (``dtype``,
``id2label``, ...) are not hyperparameters of the model.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import field
from typing import Any

from transformers import PreTrainedConfig

from panda_fm.forecasters import EXPERT_VERSIONS

POOLING_TYPES = ("mean", "max")
INCONTEXT_TYPES = ("none", "analogue", "experts")
# the default in-context experts: the five of the default experts_version (versions 1-3 share them); a
# config that wants a later version's additions (version 4's analogue_auto) names them
EXPERT_NAMES = tuple(EXPERT_VERSIONS[1])
MODEL_TYPE = "panda_fm"
# Keys that are not fields but that transformers writes into config.json (to_dict) or passes when it loads one
# (from_pretrained); "panda_fm_version" was written by earlier panda_fm versions. Any other key is an error.
TRANSFORMERS_KEYS = frozenset(
    {
        "model_type",
        "_name_or_path",
        "name_or_path",
        "torch_dtype",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "num_labels",
        "_commit_hash",
        "panda_fm_version",
    }
)


class PandaConfig(PreTrainedConfig):
    """Hyperparameters of :class:`panda_fm.PandaModel`.

    Names follow the published reference model (a PatchTST variant) where one exists.
    Defaults are the reference's 21M configuration. Fields are keyword-only (transformers makes every config
    class a keyword-only dataclass).
    """

    model_type = MODEL_TYPE

    context_length: int = 512  # steps of history the model reads
    prediction_length: int = 128  # steps forecast by one forward pass
    patch_length: int = 16  # steps per patch (P)
    patch_stride: int = 16  # steps between patch starts; patches are taken from the end of the context
    d_model: int = 512  # width of every token (D)
    num_hidden_layers: int = 8  # encoder layers
    num_attention_heads: int = 8  # heads in both temporal and channel attention
    ffn_dim: int = 512  # hidden width of the feed-forward block
    use_dynamics_embedding: bool = True  # polynomial + random Fourier patch features, else a linear map
    num_poly_feats: int = 120  # products of patch entries per degree (K)
    poly_degrees: int = 2  # number of product degrees, starting at 2 (2 means degrees 2 and 3)
    num_rff: int = 256  # random Fourier features, sin and cos counted together
    rff_scale: float = 1.0  # std of the random Fourier frequencies at initialisation
    rope_percent: float = 0.75  # fraction of rotary frequency pairs that rotate (p-RoPE)
    max_wavelength: float = 500.0  # longest rotary timescale, in patches
    channel_attention: bool = True  # attend across channels at each patch
    pooling_type: str = "mean"  # how patch tokens are pooled before the head: "mean" or "max"
    norm_eps: float = 1e-5  # epsilon of RMSNorm
    scaling_eps: float = 1e-5  # added to the variance in instance scaling: scale = sqrt(var + eps)
    bias: bool = True  # biases in attention projections and the feed-forward block
    init_std: float = 0.02  # std of the normal initialisation of linear weights
    # In-context forecaster computed inside the model (not in the reference architecture). With "analogue",
    # a kernel-regression forecast over delay-embedded context windows is appended as future patch tokens
    # and the network predicts a correction to it, patch by patch (see panda_fm/model/incontext.py).
    incontext: str = "none"
    analogue_delays: int = 12  # entries per delay vector
    analogue_lag: int = 2  # steps between delay entries
    analogue_sharpness: float = 128.0  # initial inverse kernel temperature, relative to the median distance
    # With "experts", classical forecasters (panda_fm/model/experts.py) run on the context and are backtested
    # on its last expert_backtest steps; each forecast is appended as future patch tokens, and the network
    # weighs them per channel, starting from the smallest backtest error: "select" forecasts with the
    # highest-weighted one, "mix" with the weighted mean.
    experts: list[str] = field(default_factory=lambda: list(EXPERT_NAMES))
    expert_combine: str = "select"
    expert_backtest: int = 128
    # how an expert's forecast enters the network: "patches", one token per forecast patch (prediction_length /
    # patch_length tokens per expert and channel), or "pooled", the mean of those patches' embeddings as one
    # token (the network then reads E tokens instead of E x F next to the context's, about half the work)
    expert_tokens: str = "patches"
    # the version of panda_fm.forecasters.EXPERT_VERSIONS the experts come from (their frozen settings)
    experts_version: int = 1
    # hidden width of the evidence chooser (panda_fm/model/choice.py) that adds logits from what the experts'
    # forecasts show; 0: none. Fitted apart from the network (panda-fm fit-chooser).
    expert_chooser: int = 0

    def __post_init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - TRANSFORMERS_KEYS)
        if unknown:
            raise ValueError(
                f"unknown PandaConfig keys {unknown}; known keys are {sorted(self.field_types())}"
            )
        model_type = kwargs.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"model_type is {model_type!r}, PandaConfig reads {MODEL_TYPE!r} configs; load other formats "
                "with panda_fm.PandaPipeline.from_pretrained, which converts the reference's"
            )
        kwargs.pop("panda_fm_version", None)
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        positive = (
            "context_length",
            "prediction_length",
            "patch_length",
            "patch_stride",
            "d_model",
            "num_hidden_layers",
            "num_attention_heads",
            "ffn_dim",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.patch_length > self.context_length:
            raise ValueError(
                f"patch_length ({self.patch_length}) exceeds context_length ({self.context_length}); "
                "lower patch_length or raise context_length"
            )
        if self.patch_stride > self.patch_length:
            raise ValueError(
                f"patch_stride ({self.patch_stride}) > patch_length ({self.patch_length}) would skip "
                "steps; use patch_stride <= patch_length"
            )
        if self.d_model % self.num_attention_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); change one of them"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head size d_model / num_attention_heads = {self.head_dim} must be even for rotary "
                "embeddings; change d_model or num_attention_heads"
            )
        if not 0.0 <= self.rope_percent <= 1.0:
            raise ValueError(f"rope_percent must lie in [0, 1], got {self.rope_percent}")
        if self.max_wavelength <= 1.0:
            raise ValueError(f"max_wavelength must exceed 1, got {self.max_wavelength}")
        if self.pooling_type not in POOLING_TYPES:
            raise ValueError(f"pooling_type must be one of {POOLING_TYPES}, got {self.pooling_type!r}")
        if self.incontext not in INCONTEXT_TYPES:
            raise ValueError(f"incontext must be one of {INCONTEXT_TYPES}, got {self.incontext!r}")
        if self.incontext in ("analogue", "experts"):
            if self.prediction_length % self.patch_length:
                raise ValueError(
                    f"incontext={self.incontext!r} forecasts whole patches: prediction_length "
                    f"({self.prediction_length}) must be a multiple of patch_length ({self.patch_length})"
                )
        if self.incontext == "analogue":
            window = (self.analogue_delays - 1) * self.analogue_lag + 1
            if (
                self.analogue_delays < 1
                or self.analogue_lag < 1
                or window + self.prediction_length >= self.context_length
            ):
                raise ValueError(
                    "analogue windows need analogue_delays, analogue_lag >= 1 and "
                    "(analogue_delays - 1) * analogue_lag + 1 + prediction_length < context_length"
                )
        if isinstance(self.experts_version, bool) or self.experts_version not in EXPERT_VERSIONS:
            raise ValueError(
                f"experts_version must be one of {sorted(EXPERT_VERSIONS)} (panda_fm.forecasters.EXPERT_VERSIONS), "
                f"got {self.experts_version!r}; a newer panda_fm may know it"
            )
        if self.incontext == "experts":
            names = list(EXPERT_VERSIONS[self.experts_version])
            unknown = sorted(set(self.experts) - set(names))
            if unknown or not self.experts or len(set(self.experts)) != len(self.experts):
                raise ValueError(f"experts must be distinct names from {names}, got {self.experts!r}")
            if isinstance(self.expert_chooser, bool) or self.expert_chooser < 0:
                raise ValueError(
                    f"expert_chooser is a hidden width >= 0 (0: none), got {self.expert_chooser!r}"
                )
            if self.expert_tokens not in ("patches", "pooled"):
                raise ValueError(f"expert_tokens must be 'patches' or 'pooled', got {self.expert_tokens!r}")
            if self.expert_combine not in ("select", "mix"):
                raise ValueError(f"expert_combine must be 'select' or 'mix', got {self.expert_combine!r}")
            if self.expert_backtest < 1 or self.context_length < self.expert_backtest + 80:
                raise ValueError(
                    "incontext='experts' fits its forecasters on the context before its last expert_backtest "
                    f"steps: need expert_backtest >= 1 and context_length >= expert_backtest + 80, got "
                    f"{self.expert_backtest} and {self.context_length}"
                )
        for name in ("norm_eps", "scaling_eps", "init_std"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.use_dynamics_embedding:
            if self.num_poly_feats < 0 or self.poly_degrees < 0:
                raise ValueError("num_poly_feats and poly_degrees must be >= 0")
            if self.num_rff < 0 or self.num_rff % 2:
                raise ValueError(f"num_rff counts sin and cos together and must be even, got {self.num_rff}")
            width = self.patch_length + self.poly_degrees * self.num_poly_feats + self.num_rff
            if width != self.d_model:
                raise ValueError(
                    "with use_dynamics_embedding the feature widths must add up to d_model: "
                    f"patch_length ({self.patch_length}) + poly_degrees ({self.poly_degrees}) * "
                    f"num_poly_feats ({self.num_poly_feats}) + num_rff ({self.num_rff}) = {width}, "
                    f"but d_model = {self.d_model}; change num_rff to "
                    f"{self.d_model - self.patch_length - self.poly_degrees * self.num_poly_feats}"
                )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_attention_heads

    @property
    def num_patches(self) -> int:
        """Patches cut from a full context (N)."""
        return (self.context_length - self.patch_length) // self.patch_stride + 1

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Our own fields (the hyperparameters, not transformers' base fields) and their types, in order."""
        return inspect.get_annotations(PandaConfig, eval_str=True)

    def hyperparameters(self) -> dict[str, Any]:
        """Our own fields and their values: what defines the model. ``to_dict()`` adds transformers' fields."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self.field_types()}

    def __eq__(self, other: object) -> bool:
        """Configs are equal when their hyperparameters are (transformers' bookkeeping fields are ignored)."""
        if not isinstance(other, PandaConfig):
            return NotImplemented
        return self.hyperparameters() == other.hyperparameters()

    __hash__ = None  # mutable, like every dataclass with an __eq__
