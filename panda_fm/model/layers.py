"""Building blocks: patch embeddings, RMSNorm, p-RoPE attention and the encoder layer.

Shape letters: B batch, C channels, N patches, P patch length, D model width, F feed-forward width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from panda_fm.config import PandaConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain, computed in float32."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(x.dtype)


class LinearPatchEmbedding(nn.Module):
    """A plain affine map of each patch: ``(..., P) -> (..., D)``."""

    def __init__(self, config: PandaConfig):
        super().__init__()
        self.input_embedding = nn.Linear(config.patch_length, config.d_model)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.input_embedding(patches)


class DynamicsEmbedding(nn.Module):
    """Patch features of the reference model, mapped to ``D`` by a bias-free linear layer.

    Features of a patch ``p`` (length P): ``[p, poly_2(p), ..., poly_{k+1}(p), sin(pW + b), cos(pW + b)]``
    where ``poly_d`` takes K products of d entries of ``p`` at fixed index tuples, and ``W, b`` are a
    frozen random Fourier projection. The index tuples and the projection are persistent buffers, so a
    checkpoint fixes them: nothing is drawn at load time.
    """

    def __init__(self, config: PandaConfig, generator: torch.Generator | None = None):
        super().__init__()
        P, K = config.patch_length, config.num_poly_feats
        self.degrees = list(range(2, 2 + config.poly_degrees))
        for d in self.degrees:
            self.register_buffer(f"poly_indices_{d}", torch.randint(0, P, (K, d), generator=generator))
        half = config.num_rff // 2
        self.register_buffer("freq_weights", torch.randn(P, half, generator=generator) * config.rff_scale)
        self.register_buffer("freq_biases", torch.rand(1, 1, 1, half, generator=generator) * 2 * math.pi)
        self.projection = nn.Linear(config.d_model, config.d_model, bias=False)

    def poly_indices(self) -> list[torch.Tensor]:
        """The index tuples, one ``(K, d)`` tensor per degree d."""
        return [getattr(self, f"poly_indices_{d}") for d in self.degrees]

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, C, N, P) -> (B, C, N, D)``."""
        feats = [patches]
        for idx in self.poly_indices():
            # (B, C, N, K, d) gathered entries -> product over the tuple -> (B, C, N, K)
            feats.append(patches[..., idx].prod(dim=-1))
        if self.freq_weights.shape[1]:
            z = patches @ self.freq_weights.to(patches.dtype) + self.freq_biases.to(patches.dtype)
            feats += [torch.sin(z), torch.cos(z)]
        return self.projection(torch.cat(feats, dim=-1))


def rope_tables(
    config: PandaConfig, num_positions: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of p-RoPE for positions ``0..num_positions-1``, each ``(N, head_dim)``.

    Pair j rotates entries ``(j, j + head_dim/2)`` with timescale ``max_wavelength ** (2j / head_dim)``;
    only the first ``int(rope_percent * head_dim) // 2`` pairs rotate, the rest keep angle 0.
    """
    hd = config.head_dim
    rotating = int((config.rope_percent * hd) // 2)
    fraction = 2.0 * torch.arange(hd // 2, device=device, dtype=torch.float64) / hd
    inv_timescale = config.max_wavelength**-fraction  # (hd/2,)
    inv_timescale[rotating:] = 0.0
    angles = torch.arange(num_positions, device=device, dtype=torch.float64)[:, None] * inv_timescale
    angles = torch.cat([angles, angles], dim=-1)  # (N, hd)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the last axis of ``x`` (``hd``) by tables that broadcast against it."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention along the patch axis or the channel axis of ``(B, C, N, D)`` tokens.

    q, k and v come from one matrix product (the three weights concatenated); rotary positions are applied in
    the contiguous ``(B, C, N, h, hd)`` layout, and each axis is folded into a 4-D batch for torch's fused
    attention kernel (strided or 5-D inputs fall back to a much slower path on CPU).
    """

    def __init__(self, config: PandaConfig):
        super().__init__()
        D = config.d_model
        self.heads = config.num_attention_heads
        self.q_proj = nn.Linear(D, D, bias=config.bias)
        self.k_proj = nn.Linear(D, D, bias=config.bias)
        self.v_proj = nn.Linear(D, D, bias=config.bias)
        self.out_proj = nn.Linear(D, D, bias=config.bias)

    def forward(
        self,
        x: torch.Tensor,
        over_channels: bool,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        patch_mask: torch.Tensor | None = None,
        channel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend along one axis.

        Args:
            x: ``(B, C, N, D)``.
            over_channels: attend across channels at each patch, else across patches of each channel.
            rope: cosine and sine tables ``(N, hd)`` for attention across patches, or None.
            patch_mask: ``(B, C, N)`` bool, False for patches without data (attention across patches only).
            channel_mask: ``(B, C, C)`` bool, True where a channel may attend to another (attention across
                channels only; every channel must attend to itself).

        Returns:
            ``(B, C, N, D)``.
        """
        B, C, N, D = x.shape
        h = self.heads
        projections = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight for p in projections])  # (3D, D)
        bias = None if self.q_proj.bias is None else torch.cat([p.bias for p in projections])
        q, k, v = F.linear(x, weight, bias).view(B, C, N, 3, h, D // h).unbind(3)  # each (B, C, N, h, hd)
        if rope is not None:
            cos, sin = rope[0][:, None], rope[1][:, None]  # (N, 1, hd): broadcast over heads
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if over_channels:
            # (B, C, N, h, hd) -> (B, N, h, C, hd) -> (B*N, h, C, hd)
            q, k, v = (t.permute(0, 2, 3, 1, 4).reshape(B * N, h, C, -1) for t in (q, k, v))
            mask = None
            if channel_mask is not None:  # (B, C, C) -> (B*N, 1, C, C)
                mask = channel_mask[:, None, None].expand(B, N, 1, C, C).reshape(B * N, 1, C, C)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            out = out.view(B, N, h, C, -1).permute(0, 3, 1, 2, 4)  # (B, C, N, h, hd)
        else:
            # (B, C, N, h, hd) -> (B, C, h, N, hd) -> (B*C, h, N, hd)
            q, k, v = (t.transpose(2, 3).reshape(B * C, h, N, -1) for t in (q, k, v))
            mask = None if patch_mask is None else patch_mask.reshape(B * C, 1, 1, N)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            out = out.view(B, C, h, N, -1).transpose(2, 3)  # (B, C, N, h, hd)
        return self.out_proj(out.reshape(B, C, N, D))


class EncoderLayer(nn.Module):
    """Pre-norm layer: attention over patches, attention across channels, feed-forward; each residual."""

    def __init__(self, config: PandaConfig):
        super().__init__()
        D = config.d_model
        self.norm_sublayer1 = RMSNorm(D, config.norm_eps)
        self.temporal_self_attn = Attention(config)
        self.channel_attention = config.channel_attention
        if config.channel_attention:
            self.norm_sublayer2 = RMSNorm(D, config.norm_eps)
            self.channel_self_attn = Attention(config)
        self.norm_sublayer3 = RMSNorm(D, config.norm_eps)
        self.ff = nn.Sequential(
            nn.Linear(D, config.ffn_dim, bias=config.bias),
            nn.GELU(),
            nn.Identity(),  # keeps the reference's parameter names ff.0 / ff.3
            nn.Linear(config.ffn_dim, D, bias=config.bias),
        )

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        patch_mask: torch.Tensor | None,
        channel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, C, N, D) -> (B, C, N, D)``; ``patch_mask`` ``(B, C, N)`` marks patches with data and
        ``channel_mask`` ``(B, C, C)`` the channels each channel attends to (None: all)."""
        x = x + self.temporal_self_attn(self.norm_sublayer1(x), False, rope, patch_mask)
        if self.channel_attention:
            x = x + self.channel_self_attn(self.norm_sublayer2(x), True, channel_mask=channel_mask)
        return x + self.ff(self.norm_sublayer3(x))
