"""A learned choice among the in-context experts from what their forecasts show (``PandaConfig.expert_chooser``).

The network's head weighs the experts from their tokens, and the prior from one number per expert, its backtest
error. :class:`EvidenceChooser` adds logits from a few more measurements that cost nothing beyond the forecasts
the model makes anyway (:func:`expert_evidence`): the backtest's error by lead (leads 1-16, 17-64, 65-128), how
far each expert's forecast strays from the experts' median, how much it moves, its largest value, its jump from
the end of the context, and, per window, how much of the context is observed, how rough it is (a noise index)
and how many channels it has. It is a small MLP trained
apart from the transformer on a pool of windows observed at random (:mod:`panda_fm.training.choice`); its last
layer starts at zero, so a model with an untrained chooser forecasts as without one.

Shape letters: B batch, T time, C channels, E experts, H horizon, F evidence, G window features.
"""

from __future__ import annotations

import torch
from torch import nn

#: per expert, in this order (logs of context stds; averaged over a system's channels); NaN where a backtest
#: is too short to reach a lead bracket
EVIDENCE = (
    "backtest",
    "backtest 1-16",
    "backtest 17-64",
    "backtest 65-128",
    "disagreement",
    "spread",
    "largest",
    "jump",
)
LEAD_BRACKETS = ((0, 16), (16, 64), (64, 128))
#: per window
WINDOW_FEATURES = ("observed span", "noise index", "log channels")
TAIL = 16  # steps at the end of the context whose mean the jump is measured from


def nanstd_over_time(z: torch.Tensor) -> torch.Tensor:
    """Std over time ignoring NaN: ``(B, T, C)`` -> ``(B, C)``."""
    centred = z - z.nanmean(dim=1, keepdim=True)
    return centred.pow(2).nanmean(dim=1).sqrt()


def expert_evidence(
    x: torch.Tensor,
    observed: torch.Tensor | None,
    forecasts: torch.Tensor,
    log_error: torch.Tensor,
    share: torch.Tensor | None,
    backtest: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the experts' forecasts show, per expert and per window.

    Args:
        x: ``(B, T, C)`` standardised context (unobserved entries arbitrary).
        observed: ``(B, T, C)`` bool or None (all observed).
        forecasts: ``(B, E, H, C)`` the experts' forecasts, standardised.
        log_error: ``(B, E, C)`` log backtest errors.
        share: ``(B, C, C)`` row-normalised weights of the channels of each channel's system, or None when all
            channels are one system.
        backtest: ``(B, E, V, C)`` the backtest's forecasts of the context's last ``V`` steps.

    Returns:
        Evidence ``(B, E, C, F)`` in :data:`EVIDENCE`'s order and window features ``(B, C, G)``, each averaged
        over the channels of a channel's system.
    """
    B, T, C = x.shape
    obs = torch.ones_like(x, dtype=torch.bool) if observed is None else observed
    median = forecasts.median(dim=1, keepdim=True).values
    z = torch.where(obs, x, torch.nan)
    last = z[:, -TAIL:].nanmean(dim=1).nan_to_num(0.0)  # (B, C): where the context ends
    V = backtest.shape[2]
    misses = (backtest - x[:, -V:].unsqueeze(1)).abs()  # (B, E, V, C)
    seen = obs[:, -V:].unsqueeze(1)  # (B, 1, V, C)
    pad = torch.isnan(backtest[:, 0, :, 0]).sum(dim=1)  # (B,) steps before a shorter backtest's origin
    if bool(pad.any()):  # backtests of several lengths: each window's leads counted from its own origin
        steps = torch.arange(V, device=x.device)[None, :]  # (1, V): the lead, minus 1
        index = (pad[:, None] + steps).clamp_max(V - 1)[:, None, :, None]  # (B, 1, V, 1)
        misses = misses.gather(2, index.expand_as(misses))
        valid = (steps < V - pad[:, None])[:, None, :, None]  # (B, 1, V, 1): within the window's backtest
        seen = seen.gather(2, index.expand_as(seen)) & valid
    seen = seen.float()
    by_lead = []
    for lo, hi in LEAD_BRACKETS:  # mean absolute error over the bracket's observed steps; NaN if none
        count = seen[:, :, lo:hi].sum(dim=2)  # (B, 1, C)
        total = (misses[:, :, lo:hi] * seen[:, :, lo:hi]).sum(dim=2)
        by_lead.append(torch.where(count > 0, total / count.clamp_min(1), torch.nan).clamp_min(1e-6).log())
    per_channel = torch.stack(
        [
            log_error,
            *by_lead,
            (forecasts - median).abs().mean(dim=2).clamp_min(1e-6).log(),
            forecasts.std(dim=2).clamp_min(1e-6).log(),
            forecasts.abs().amax(dim=2).clamp(max=1e3).log1p(),
            (forecasts[:, :, 0] - last.unsqueeze(1)).abs().log1p(),
        ],
        dim=-1,
    )  # (B, E, C, F)
    first = obs.any(dim=2).float().argmax(dim=1)  # (B,) the first observed step
    d1 = z.diff(dim=1)
    noise = (nanstd_over_time(d1.diff(dim=1)) / nanstd_over_time(d1).clamp_min(1e-6)).nan_to_num(
        1.0
    )  # (B, C)
    window = torch.stack(
        [
            ((T - first).float() / T)[:, None].expand(B, C),
            noise.clamp_min(1e-3).log(),
            torch.full((B, C), float(C), device=x.device).log(),
        ],
        dim=-1,
    )  # (B, C, G)
    return _system_mean(per_channel, share, dim=2), _system_mean(window, share, dim=1)


def _system_mean(v: torch.Tensor, share: torch.Tensor | None, dim: int) -> torch.Tensor:
    """``v`` averaged over the channels (axis ``dim``) of each channel's system, skipping NaN (NaN where a
    system has no value)."""
    known = ~torch.isnan(v)
    values = v.nan_to_num(0.0)
    if share is None:  # one system
        total = values.sum(dim=dim, keepdim=True).expand_as(v)
        count = known.sum(dim=dim, keepdim=True).expand_as(v).to(v.dtype)
    else:
        letters = "bexf" if dim == 2 else "bxg"
        source = letters.replace("x", "y")
        total = torch.einsum(f"bxy,{source}->{letters}", share, values)
        count = torch.einsum(f"bxy,{source}->{letters}", share, known.to(v.dtype))
    return torch.where(count > 0, total / count.clamp_min(1e-12), torch.nan)


class EvidenceChooser(nn.Module):
    """Logits over the experts from their evidence: one MLP scores each expert from its evidence, its evidence
    less the experts' mean, which of it is missing (NaN, read as 0), the window's features and which expert it
    is.

    Args:
        num_experts: E.
        width: hidden width.
        num_evidence, num_window: F and G (the model's: those of :data:`EVIDENCE` and :data:`WINDOW_FEATURES`).
    """

    def __init__(
        self,
        num_experts: int,
        width: int,
        num_evidence: int = len(EVIDENCE),
        num_window: int = len(WINDOW_FEATURES),
    ):
        super().__init__()
        F, G = num_evidence, num_window
        self.num_experts = num_experts
        self.net = nn.Sequential(
            nn.Linear(3 * F + G + num_experts, width),
            nn.GELU(),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Linear(width, 1),
        )
        self.switch_off()

    @torch.no_grad()
    def switch_off(self) -> None:
        """Zero the last layer: logits 0, no change to the model's choice (until trained)."""
        self.net[-1].weight.zero_()
        self.net[-1].bias.zero_()

    def forward(self, evidence: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """``(..., E, F)`` evidence and ``(..., G)`` window features -> logits ``(..., E)``."""
        E = evidence.shape[-2]
        missing = torch.isnan(evidence)
        evidence = evidence.nan_to_num(0.0)
        relative = evidence - evidence.mean(dim=-2, keepdim=True)
        which = torch.eye(E, dtype=evidence.dtype, device=evidence.device).expand(*evidence.shape[:-2], E, E)
        context = window.unsqueeze(-2).expand(*evidence.shape[:-1], -1)
        inputs = torch.cat([evidence, relative, missing.to(evidence.dtype), context, which], dim=-1)
        return self.net(inputs).squeeze(-1)
