"""PandaModel: patched encoder with temporal and channel attention, and a linear forecast head.

Options beyond the reference architecture (``PandaConfig.incontext``): ``"analogue"`` corrects an in-context
kernel-regression forecast patch by patch; ``"experts"`` weighs classical in-context forecasts (see
:mod:`panda_fm.model.experts`).

Shape letters: B batch, T time, C channels, N patches, P patch length, D model width, H horizon.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from copy import deepcopy
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from panda_fm.config import PandaConfig
from panda_fm.forecasters.tensor.gaps import fill_gaps
from panda_fm.model.choice import EvidenceChooser, expert_evidence
from panda_fm.model.experts import expert_forecasts
from panda_fm.model.incontext import AnalogueForecast
from panda_fm.model.layers import DynamicsEmbedding, EncoderLayer, LinearPatchEmbedding, rope_tables
from panda_fm.scaling import InstanceScale, fit_scale

#: the backtest prior's sharpness before training: logits ``-8 x log(backtest error)`` (``incontext="experts"``)
PRIOR_SHARPNESS = 8.0
#: with an evidence chooser, the network's log-weights are floored here before the chooser's logits are added,
#: so the chooser can overturn a choice the network made with near certainty (and learn to: softmax gradients
#: vanish at very unequal weights)
LOG_WEIGHT_FLOOR = 4.0
#: gradients of the experts' logits smaller than this are set to 0 in training (:func:`_flush_tiny_gradients`)
TINY_GRADIENT = 1e-20


def _flush_tiny_gradients(logits: torch.Tensor) -> torch.Tensor:
    """``logits``, whose gradient will have its entries below :data:`TINY_GRADIENT` in magnitude set to 0.

    The softmax over the experts gives an expert it all but rules out a weight like ``exp(-80)``, and the
    gradient of its logit is as small. Carried back through the network, such values become subnormal floats,
    which make a CPU's matrix products many times slower (the backward of a ``small-cpu`` training step took 10 s
    instead of 0.4 s on an Intel Xeon) while adding nothing to the update.
    """
    if logits.requires_grad:
        logits.register_hook(lambda grad: grad.masked_fill(grad.abs() < TINY_GRADIENT, 0.0))
    return logits


class PandaModel(PreTrainedModel):
    """Forecasts ``prediction_length`` steps of a multichannel series from its context.

    The same weights serve any number of channels: channels are independent sequences in temporal
    attention and a set (no positions) in channel attention.

    A :class:`transformers.PreTrainedModel`: after ``import panda_fm``, ``transformers.AutoModel`` loads a
    panda_fm checkpoint directory, strictly (a missing, unexpected or misshapen tensor is an error), and
    ``save_pretrained`` writes one that :meth:`panda_fm.PandaPipeline.from_pretrained` reads. The pipeline
    adds input validation, rollout, reference-format conversion and the model card.

    Args:
        config: the hyperparameters.
        seed: seeds the initial weights, polynomial index tuples and Fourier projection.
    """

    config_class = PandaConfig
    base_model_prefix = "panda"
    main_input_name = "context"

    def __init__(self, config: PandaConfig, seed: int = 0):
        super().__init__(config)
        # torch's layer constructors draw from the global RNG; fork it so that building a model
        # (e.g. at load time) leaves the caller's random state untouched.
        with torch.random.fork_rng(devices=[]):
            self._build(config, torch.Generator().manual_seed(seed))
        self.post_init()  # transformers' bookkeeping; _init_weights leaves the seeded weights as they are

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> PandaModel | tuple[PandaModel, dict[str, Any]]:
        """transformers' loader, made strict: a missing, unexpected or misshapen tensor is a ValueError naming it.

        Reads panda_fm-format checkpoints (``config.json`` with ``model_type`` ``"panda_fm"``); use
        :meth:`panda_fm.PandaPipeline.from_pretrained` for the reference format. Arguments are those of
        :meth:`transformers.PreTrainedModel.from_pretrained` (``ignore_mismatched_sizes`` is ignored).
        """
        want_info = kwargs.pop("output_loading_info", False)
        kwargs.pop("ignore_mismatched_sizes", None)
        # transformers then reports misshapen tensors instead of raising an error that does not name them
        model, info = super().from_pretrained(
            pretrained_model_name_or_path,
            *args,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **kwargs,
        )
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
        misshapen = [
            f"{key} {tuple(saved)} (the config implies {tuple(built)})"
            for key, saved, built in sorted(info["mismatched_keys"])
        ]
        if missing or unexpected or misshapen:
            raise ValueError(
                f"checkpoint {pretrained_model_name_or_path} does not match its config: missing tensors "
                f"{missing}, unexpected tensors {unexpected}, tensors of another shape {misshapen}"
            )
        return (model, info) if want_info else model

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' initialisation hook.

        Weights are drawn from the seed in ``__init__`` (and a checkpoint overwrites all of them), so nothing
        is redrawn here; only the rotary tables, which no checkpoint holds, are computed again, for
        transformers' loader, which builds the model on the meta device first.
        """
        if module is self:
            cos, sin = self._rope_buffers(self.config)
            with torch.no_grad():
                self.rope_cos.copy_(cos)
                self.rope_sin.copy_(sin)

    @staticmethod
    def _rope_buffers(config: PandaConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary tables ``(N + E * F, head_dim)`` of the context's and the future tokens' positions, on the CPU
        (``N + E`` for pooled expert tokens)."""
        cpu = torch.device("cpu")
        future = config.prediction_length // config.patch_length if config.incontext != "none" else 0
        positions = torch.arange(config.num_patches + future, device=cpu)
        if config.incontext == "experts":  # every expert's future patches take the same positions
            per_expert = positions[config.num_patches :]
            if config.expert_tokens == "pooled":  # one token per expert, at the first future patch's position
                per_expert = per_expert[:1]
            positions = torch.cat([positions[: config.num_patches], per_expert.repeat(len(config.experts))])
        cos, sin = rope_tables(config, config.num_patches + future, cpu)
        return cos[positions], sin[positions]

    def _build(self, config: PandaConfig, gen: torch.Generator) -> None:
        self.embedder = (
            DynamicsEmbedding(config, generator=gen)
            if config.use_dynamics_embedding
            else LinearPatchEmbedding(config)
        )
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        if config.incontext == "analogue":
            self.analogue = AnalogueForecast(
                config.analogue_delays,
                config.analogue_lag,
                config.prediction_length,
                config.analogue_sharpness,
            )
            self.head = nn.Linear(
                config.d_model, config.patch_length, bias=False
            )  # a correction per future patch
        elif config.incontext == "experts":
            # one learned vector per expert marks whose forecast a future token carries
            self.expert_embedding = nn.Parameter(
                torch.randn(len(config.experts), config.d_model, generator=gen) * config.init_std
            )
            # the log of an expert's backtest error, times this vector, marks its tokens too
            self.error_embedding = nn.Parameter(torch.randn(config.d_model, generator=gen) * config.init_std)
            # logits start at -sharpness x log(backtest error): the best-backtested expert wins
            self.log_backtest_sharpness = nn.Parameter(torch.tensor(math.log(PRIOR_SHARPNESS)))
            self.head = nn.Linear(config.d_model, 1, bias=False)  # an expert's pooled tokens -> its logit
            if config.expert_chooser:
                self.chooser = EvidenceChooser(len(config.experts), config.expert_chooser)
        else:
            self.head = nn.Linear(config.d_model, config.prediction_length, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                with torch.no_grad():
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * config.init_std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if config.incontext != "none":
            # training starts from the in-context forecast itself (analogue) or the backtest prior (experts)
            nn.init.zeros_(self.head.weight)
        if hasattr(self, "chooser"):
            self.chooser.switch_off()
        cos, sin = self._rope_buffers(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C) -> (B, C, N, P)``, patches aligned to the end of the context."""
        cfg = self.config
        T = x.shape[1]
        n = (T - cfg.patch_length) // cfg.patch_stride + 1
        start = T - ((n - 1) * cfg.patch_stride + cfg.patch_length)
        # (B, T, C) -> (B, C, T) -> unfold -> (B, C, N, P)
        return x[:, start:].transpose(1, 2).unfold(-1, cfg.patch_length, cfg.patch_stride)

    def forward_normalised(
        self,
        x: torch.Tensor,
        observed: torch.Tensor | None = None,
        horizon: int | None = None,
        units: InstanceScale | None = None,
    ) -> torch.Tensor:
        """Forecast in standardised units.

        Args:
            x: ``(B, context_length, C)`` standardised context; unobserved entries must be 0.
            observed: ``(B, context_length, C)`` bool, or None when every entry is observed.
            horizon: steps to forecast; only a model with ``incontext="experts"`` forecasts more than
                ``prediction_length`` in one pass (its experts forecast the whole horizon and the weights
                the network gives them, from their first ``prediction_length`` steps, combine them).
            units: the statistics ``x`` was standardised by, for experts that read the context in its own units
                (:func:`panda_fm.model.experts.expert_forecasts`); None: they read ``x``.

        Returns:
            ``(B, horizon, C)`` standardised forecast (``horizon`` defaults to ``prediction_length``).
        """
        cfg = self.config
        if horizon is not None and horizon != cfg.prediction_length and cfg.incontext != "experts":
            raise ValueError(
                f"this model forecasts {cfg.prediction_length} steps a pass; roll out for {horizon} "
                "(PandaPipeline.predict does)"
            )
        if cfg.incontext == "experts":
            forecasts, weights = self.expert_weights(x, observed, horizon, units)  # (B, E, H, C), (B, E, C)
            if cfg.expert_combine == "mix":
                return (forecasts * weights.unsqueeze(2)).sum(dim=1)
            best = weights.argmax(dim=1, keepdim=True)  # (B, 1, C)
            return forecasts.gather(1, best.unsqueeze(2).expand(-1, -1, forecasts.shape[2], -1)).squeeze(1)
        tokens, patch_mask = self._context_tokens(x, observed)
        if cfg.incontext == "analogue":
            proposal = self.analogue(x, observed)  # (B, H, C)
            # (B, H, C) -> (B, C, H/P, P) future patches, embedded like the context and appended after it
            future = proposal.to(tokens.dtype).transpose(1, 2).unflatten(-1, (-1, cfg.patch_length))
            tokens, patch_mask = self._append(tokens, patch_mask, self.embedder(future))
        rope = (self.rope_cos, self.rope_sin)
        for layer in self.layers:
            tokens = layer(tokens, rope, patch_mask)
        if cfg.incontext == "analogue":
            # (B, C, H/P, D) future tokens -> (B, C, H/P, P) corrections -> (B, H, C)
            correction = self.head(tokens[:, :, -future.shape[2] :]).flatten(2).transpose(1, 2)
            return proposal + correction.float()
        if cfg.pooling_type == "mean":
            if patch_mask is None:
                pooled = tokens.mean(dim=2)  # (B, C, D)
            else:
                w = patch_mask.unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * w).sum(dim=2) / w.sum(dim=2)
        else:
            if patch_mask is not None:
                tokens = tokens.masked_fill(~patch_mask.unsqueeze(-1), float("-inf"))
            pooled = tokens.amax(dim=2)
        out = self.head(pooled)  # (B, C, H)
        return out.transpose(1, 2).float()  # (B, H, C)

    def expert_weights(
        self,
        x: torch.Tensor,
        observed: torch.Tensor | None = None,
        horizon: int | None = None,
        units: InstanceScale | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The in-context experts' forecasts and the network's weights on them (``incontext="experts"``).

        Args:
            x, observed, horizon, units: as for :meth:`forward_normalised`.

        Returns:
            Forecasts ``(B, E, horizon, C)`` and weights ``(B, E, C)`` (softmax over experts), standardised.
        """
        forecasts, logits, evidence = self.expert_logits(
            x, observed, horizon, evidence=self.config.expert_chooser > 0, units=units
        )
        logits = _flush_tiny_gradients(logits)
        if evidence is not None:
            logits = _flush_tiny_gradients(self.floored_log_weights(logits) + self.chooser(*evidence))
        return forecasts, torch.softmax(logits, dim=-1).transpose(1, 2)

    @staticmethod
    def floored_log_weights(logits: torch.Tensor) -> torch.Tensor:
        """Log-softmax over the last (expert) axis, floored at ``-LOG_WEIGHT_FLOOR``: an evidence chooser's
        offset (the argmax is the network's own)."""
        return torch.log_softmax(logits, dim=-1).clamp_min(-LOG_WEIGHT_FLOOR)

    def expert_logits(
        self,
        x: torch.Tensor,
        observed: torch.Tensor | None = None,
        horizon: int | None = None,
        evidence: bool = False,
        units: InstanceScale | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The experts' forecasts ``(B, E, horizon, C)``, the network's logits on them ``(B, C, E)`` (its head
        and the backtest prior, before any evidence chooser) and, with ``evidence``, the chooser's inputs
        (:func:`panda_fm.model.choice.expert_evidence`, per channel: ``(B, C, E, F)``, ``(B, C, G)``)."""
        cfg = self.config
        assert cfg.incontext == "experts", "expert_logits needs a model with incontext='experts'"
        tokens, patch_mask = self._context_tokens(x, observed)
        H = cfg.prediction_length
        forecasts, errors, groups, *backtest = expert_forecasts(
            x,
            observed,
            cfg.experts,
            max(horizon or H, H),
            cfg.expert_backtest,
            version=cfg.experts_version,
            with_backtest=evidence,
            units=units,
        )  # (B, E, >= H, C), (B, E, C), (B, C) or None[, (B, E, V, C)]
        B, E, _, C = forecasts.shape
        F = H // cfg.patch_length
        log_error = errors.clamp_min(1e-6).log()  # (B, E, C)
        # (B, E, H, C) -> (B, C, E*F, P): each expert's forecast as F future patches, experts one after another
        future = (
            forecasts[:, :, :H].to(tokens.dtype).permute(0, 3, 1, 2).reshape(B, C, E * F, cfg.patch_length)
        )
        # which expert, and how well it forecast the context's last steps: (E, 1, D) + (B, C, E, 1, D)
        marks = (
            self.expert_embedding[:, None] + log_error.transpose(1, 2)[..., None, None] * self.error_embedding
        )
        embedded = self.embedder(future).unflatten(2, (E, F))  # (B, C, E, F, D)
        if cfg.expert_tokens == "pooled":
            embedded = embedded.mean(dim=3, keepdim=True)  # (B, C, E, 1, D): one token per expert
        marked = (embedded + marks.to(tokens.dtype)).flatten(2, 3)  # (B, C, E * F or E, D)
        tokens, patch_mask = self._append(tokens, patch_mask, marked)
        rope = (self.rope_cos, self.rope_sin)
        # channels of different groups (systems) do not attend to each other: each system reads as it would
        # alone (None: one group)
        same = None if groups is None else groups[:, :, None] == groups[:, None, :]  # (B, C, C)
        channel_mask = None if same is None or bool(same.all()) else same
        for layer in self.layers:
            tokens = layer(tokens, rope, patch_mask, channel_mask)
        pooled = tokens[:, :, -marked.shape[2] :].unflatten(2, (E, -1)).mean(dim=3)  # (B, C, E, D)
        # the prior: each expert's backtest, averaged over the channels of the system (the channel group)
        if channel_mask is None:
            share = None
            system_error = log_error.mean(dim=2, keepdim=True)  # (B, E, 1): all channels are one system
        else:
            share = channel_mask.to(log_error.dtype)  # (B, C, C), symmetric
            share = share / share.sum(dim=2, keepdim=True)
            system_error = log_error @ share  # (B, E, C)
        prior = -self.log_backtest_sharpness.exp() * system_error  # (B, E, 1 or C)
        logits = self.head(pooled).squeeze(-1).float() + prior.transpose(1, 2)  # (B, C, E)
        inputs = None
        if evidence:
            found, window = expert_evidence(x, observed, forecasts[:, :, :H], log_error, share, backtest[0])
            inputs = (found.transpose(1, 2), window)  # (B, C, E, F), (B, C, G)
        return forecasts[:, :, : horizon or H], logits, inputs

    def prior_only(self) -> PandaModel:
        """A copy whose choice among the experts is the untrained backtest prior (``incontext="experts"``).

        The network's learned parts, the head that reads the experts' tokens and any evidence chooser, are
        switched off and the prior's sharpness is reset to :data:`PRIOR_SHARPNESS`, so each channel forecasts
        with the expert that an untrained model would choose. Comparing a checkpoint with its ``prior_only``
        copy measures what training the network added.
        """
        if self.config.incontext != "experts":
            raise ValueError(
                f"prior_only needs a model with incontext='experts', not {self.config.incontext!r}"
            )
        copy = deepcopy(self)
        with torch.no_grad():
            copy.head.weight.zero_()
            copy.log_backtest_sharpness.fill_(math.log(PRIOR_SHARPNESS))
        if hasattr(copy, "chooser"):
            copy.chooser.switch_off()
        return copy

    def with_experts(self, added: Mapping[str, str], version: int) -> PandaModel:
        """A copy that reads more experts (``incontext="experts"``): ``added`` maps each new expert's name to the
        expert whose learned marker it starts from (the network was not trained on the new one's tokens),
        ``version`` is the experts' registry version that holds them all. The copy has no evidence chooser (its
        inputs name the experts); fit one anew (``panda-fm fit-chooser``).

        Raises:
            ValueError: for a model without experts, a name it already reads, a marker it does not have, or a
                version that lacks one of the experts.
        """
        cfg = self.config
        if cfg.incontext != "experts":
            raise ValueError(f"with_experts needs a model with incontext='experts', not {cfg.incontext!r}")
        names = list(cfg.experts)
        for name, like in added.items():
            if name in names or like not in names:
                raise ValueError(
                    f"with_experts adds a new expert {name!r} with the marker of one the model reads "
                    f"({', '.join(names)}); got {name!r} like {like!r}"
                )
        # PandaConfig checks that the version holds every expert
        config = type(cfg).from_dict(
            {**cfg.to_dict(), "experts": names + list(added), "experts_version": version, "expert_chooser": 0}
        )
        copy = type(self)(config)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("chooser.")}
        markers = self.expert_embedding.detach()
        state["expert_embedding"] = torch.cat([markers, markers[[names.index(v) for v in added.values()]]])
        copy.load_state_dict(state)
        return copy.to(device=markers.device, dtype=markers.dtype).train(self.training)

    def _context_tokens(
        self, x: torch.Tensor, observed: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedded context patches ``(B, C, N, D)`` and the mask of patches holding data (None: all)."""
        cfg = self.config
        T = x.shape[1]
        assert T == cfg.context_length, f"context of {T} steps, model expects {cfg.context_length}"
        tokens = self.embedder(self.patchify(x.to(self.head.weight.dtype)))  # (B, C, N, D)
        patch_mask = None
        if observed is not None and not bool(observed.all()):
            patch_mask = self.patchify(observed).any(dim=-1)  # (B, C, N): patches holding any data
        return tokens, patch_mask

    @staticmethod
    def _append(
        tokens: torch.Tensor, patch_mask: torch.Tensor | None, future: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Append future tokens ``(B, C, F, D)`` (always attended to) after the context's."""
        if patch_mask is not None:
            patch_mask = torch.cat([patch_mask, patch_mask.new_ones(future.shape[:3])], dim=2)
        return torch.cat([tokens, future], dim=2), patch_mask

    def forward(
        self, context: torch.Tensor, observed: torch.Tensor | None = None, horizon: int | None = None
    ) -> torch.Tensor:
        """Forecast in the context's units.

        Args:
            context: ``(B, T, C)``; NaN marks a missing value. Only the last ``context_length`` steps
                are read; a shorter context is left-padded as missing.
            observed: optional ``(B, T, C)`` bool; False marks further missing values.
            horizon: steps to forecast, as for :meth:`forward_normalised`.

        Returns:
            ``(B, horizon, C)`` float32 (``horizon`` defaults to ``prediction_length``), never outside the
            range of a channel's observed values widened by that range on each side.
        """
        assert context.dim() == 3, f"expected (B, T, C), got shape {tuple(context.shape)}"
        x, observed, stats, mask = self.prepare(context, observed)
        z = self.forward_normalised(x, observed, horizon, stats)  # (B, H, C)
        # within the observed range widened by its span on each side, as the experts' rollouts (whose denoising
        # filters can overshoot the data a little); a channel without observations is left as it is
        lo = x.masked_fill(~mask, torch.inf).amin(dim=1, keepdim=True)  # (B, 1, C)
        hi = x.masked_fill(~mask, -torch.inf).amax(dim=1, keepdim=True)
        seen = mask.any(dim=1, keepdim=True)
        lo, hi = torch.where(seen, lo, -torch.inf), torch.where(seen, hi, torch.inf)
        return stats.denormalise(torch.maximum(torch.minimum(z, 2 * hi - lo), 2 * lo - hi))

    def prepare(
        self, context: torch.Tensor, observed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, InstanceScale, torch.Tensor]:
        """The network's input from a context as :meth:`forward` takes it: the last ``context_length`` steps
        (a shorter context left-padded as missing), standardised by :meth:`standardise`.

        Returns:
            ``x`` and the observed mask after filling (None when complete) for :meth:`forward_normalised`, the
            statistics that undo the standardisation, and the mask of the entries observed in ``context``
            ``(B, context_length, C)``.
        """
        cfg = self.config
        mask = torch.isfinite(context)
        if observed is not None:
            mask &= observed.bool()
        context, mask = context[:, -cfg.context_length :], mask[:, -cfg.context_length :]
        pad = cfg.context_length - context.shape[1]
        if pad:
            B, _, C = context.shape
            context = torch.cat([context.new_zeros(B, pad, C), context], dim=1)
            mask = torch.cat([mask.new_zeros(B, pad, C), mask], dim=1)
        return *self.standardise(context, mask, cfg.scaling_eps), mask

    @staticmethod
    def standardise(
        context: torch.Tensor, observed: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor | None, InstanceScale]:
        """The network's input: the context standardised by its observed entries, short holes filled.

        Runs of at most :data:`panda_fm.forecasters.gaps.MAX_FILL` missing steps between observations are
        interpolated and count as observed (scattered dropouts then look like data to the network and the
        experts alike); longer gaps stay unobserved, as 0.

        Args:
            context: ``(B, context_length, C)``; entries where ``observed`` is False are ignored.
            observed: ``(B, context_length, C)`` bool.
            eps: added to the variance (``config.scaling_eps``).

        Returns:
            ``x`` ``(B, context_length, C)`` float32, the observed mask after filling (None when complete) and
            the statistics that undo the standardisation.
        """
        stats = fit_scale(context, observed, eps)
        x = stats.normalise(context.float())
        if bool(observed.all()):
            return x, None, stats
        x, trusted = fill_gaps(torch.where(observed, x, torch.nan))
        return torch.where(trusted, x, 0.0), trusted, stats
