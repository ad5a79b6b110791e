"""Building blocks shared by the encoder and the decoder: one attention function, RMSNorm, rotary embeddings.

Dtype policy: norms, RoPE tables and softmax run in float32 whatever the weights' dtype (SDPA upcasts its softmax
internally); matmuls run in the weights' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


CAUSAL = "causal"  # a mask value meaning "plain causal attention, no padding" (lets SDPA pick a faster kernel)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | str | None, scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention with grouped-query support.

    q: (B, H, T, Dh); k, v: (B, Hkv, S, Dh) with H a multiple of Hkv; mask: bool (B, 1, T, S), True = may attend,
    None for full attention, or CAUSAL for a causal mask with T == S; scale: the factor on q.k (default Dh^-0.5;
    1.0 when the caller scaled q already). Returns (B, H, T, Dh).
    """
    # Grouped-query attention: SDPA lets each key/value head serve H / Hkv query heads without copying k and v.
    gqa = q.shape[1] != k.shape[1]
    if isinstance(mask, str):
        assert mask == CAUSAL and q.shape[2] == k.shape[2], (mask, q.shape, k.shape)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa, scale=scale)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Qwen2): normalise in fp32, cast back, then scale."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_tables(
    positions: torch.Tensor, head_dim: int, theta: float | torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotate-half RoPE at the given positions.

    positions: (B, T) integer positions; theta: the base, or one base per row (B,) (dynamic NTK scaling). Returns
    cos, sin of shape (B, 1, T, Dh), computed in fp32 and cast to dtype (the reference computes the angles in fp32
    too, so bf16 models round the same way).
    """
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim  # (Dh/2,)
    if isinstance(theta, torch.Tensor):
        inv_freq = 1.0 / (theta.to(positions.device, torch.float32)[:, None, None] ** exponents)  # (B, 1, Dh/2)
    else:
        inv_freq = 1.0 / (theta ** exponents)
    angles = positions.float()[..., None] * inv_freq  # (B, T, Dh/2)
    emb = torch.cat([angles, angles], dim=-1)  # (B, T, Dh): the two halves share frequencies (NeoX layout)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, Dh) by the tables (B, 1, T, Dh)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
