"""In-context analogue forecasting inside the model: kernel regression over delay-embedded context windows.

The most recent delay vector of the (standardised) context is compared with every earlier delay vector
whose continuation of ``H`` steps lies inside the context; the forecast is the softmax-weighted mean of
those continuations (an analogue / empirical-dynamic-modelling forecast written as one attention head
with a fixed, learned-sharpness kernel). Distances sum over channels, so any number of channels works.

Shape letters: B batch, T time, C channels, S candidate windows, M delays, H horizon.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AnalogueForecast(nn.Module):
    """Differentiable nearest-neighbour forecast from the context alone.

    Args:
        delays: entries per delay vector (M).
        lag: steps between delay entries.
        horizon: steps forecast (H).
        sharpness: initial inverse temperature of the kernel, relative to the median distance.
    """

    def __init__(self, delays: int, lag: int, horizon: int, sharpness: float = 8.0):
        super().__init__()
        self.delays, self.lag, self.horizon = delays, lag, horizon
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(sharpness)))

    @property
    def window(self) -> int:
        """Steps spanned by one delay vector."""
        return (self.delays - 1) * self.lag + 1

    def forward(self, x: torch.Tensor, observed: torch.Tensor | None = None) -> torch.Tensor:
        """Forecast from the context.

        Args:
            x: ``(B, T, C)`` standardised context.
            observed: ``(B, T, C)`` bool or None; windows touching a missing entry are not candidates.

        Returns:
            ``(B, H, C)``; zeros (the context mean) where no candidate window is complete.
        """
        B, T, C = x.shape
        H, w = self.horizon, self.window
        S = T - H - w + 1  # windows ending at t = w-1 .. T-1-H, whose H-step continuation is in the context
        assert S > 0, f"context of {T} steps is too short for analogue windows of {w} steps and horizon {H}"
        xc = x.float().transpose(1, 2)  # (B, C, T)
        emb = xc.unfold(-1, w, 1)[..., :: self.lag]  # (B, C, T-w+1, M): delay vector ending at each t
        query = emb[:, :, -1:]  # (B, C, 1, M): the latest state
        dist = (emb[:, :, :S] - query).pow(2).sum(dim=(1, 3))  # (B, S)
        if observed is not None and not bool(observed.all()):
            # a candidate needs its window and its continuation observed in every channel: steps t-w+1 .. t+H
            missing = (~observed).any(dim=2).float()  # (B, T)
            valid = missing.unfold(-1, w + H, 1)[:, :S].sum(-1) == 0  # (B, S)
        else:
            valid = torch.ones_like(dist, dtype=torch.bool)
        # Kernel width: the median distance over valid candidates. No NaN or inf enters the graph, so
        # gradients stay finite when part of the context is missing.
        count = valid.sum(dim=1, keepdim=True)  # (B, 1)
        ordered = torch.where(valid, dist, torch.finfo(dist.dtype).max).sort(dim=1).values
        median = ordered.gather(1, (count - 1).clamp_min(0) // 2)
        scale = torch.where(count > 0, median, 1.0).clamp_min(1e-6)  # (B, 1)
        logits = (-self.log_sharpness.exp() * dist / scale).masked_fill(~valid, float("-inf"))
        logits = torch.where(count > 0, logits, 0.0)  # rows without a candidate: finite, zeroed below
        weights = torch.softmax(logits, dim=1) * (count > 0)  # (B, S)
        cont = xc[:, :, w:].unfold(-1, H, 1)[:, :, :S]  # (B, C, S, H): the H steps after each window
        return torch.einsum("bs,bcsh->bhc", weights, cont)
