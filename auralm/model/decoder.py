"""The Qwen2 decoder LLM: RMSNorm, RoPE, grouped-query attention with q/k/v bias, SwiGLU.

Parameter names equal the Hugging Face checkpoint's (`model.embed_tokens`, `model.layers.{i}.self_attn.q_proj`, ...,
`lm_head`), so a `language_model.*` prefix rename is all loading needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from auralm.config import DecoderConfig
from auralm.model.kv_cache import KVCache, StaticStep
from auralm.model.layers import CAUSAL, RMSNorm, apply_rope, attention, rope_tables


def attention_mask_4d(key_valid: torch.Tensor, q_start: int, T: int) -> torch.Tensor:
    """Causal + key-padding mask.

    key_valid: bool (B, S), the keys that hold real tokens; queries sit at key indices [q_start, q_start + T).
    Returns bool (B, 1, T, S), True = may attend. A query with no valid key (a padding position) may attend to
    itself, so no softmax row is empty; its output is never used.
    """
    B, S = key_valid.shape
    q_idx = torch.arange(q_start, q_start + T, device=key_valid.device)[:, None]  # (T, 1)
    k_idx = torch.arange(S, device=key_valid.device)[None, :]  # (1, S)
    mask = (k_idx <= q_idx)[None] & key_valid[:, None, :]  # (B, T, S)
    mask = mask | (k_idx == q_idx)[None]
    return mask[:, None]


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted over real tokens only (pads get 0): left padding does not shift positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def ntk_alpha(length: int, trained_length: int) -> float:
    """Qwen v1's dynamic-NTK factor for a prompt of `length` tokens: 2^ceil(log2(length / trained) + 1) - 1, at
    least 1. So 1 up to the trained length, 3 up to twice it, 7 up to four times it (fact sheet 4.6)."""
    # math.log(x, 2) as the reference writes it (not log2), so any rounding at exact powers of two is the same.
    return max(2 ** math.ceil(math.log(length / trained_length, 2) + 1) - 1, 1)  # noqa: FURB163


def ntk_rope_bases(lengths: torch.Tensor, cfg: DecoderConfig) -> torch.Tensor:
    """Per-row RoPE base (B,) for prompts of `lengths` real tokens: theta * alpha^(Dh / (Dh - 2))."""
    d = cfg.head_dim
    bases = [cfg.rope_theta * ntk_alpha(max(int(n), 1), cfg.trained_length) ** (d / (d - 2)) for n in lengths.tolist()]
    return torch.tensor(bases, dtype=torch.float32, device=lengths.device)


def logn_scale(position_ids: torch.Tensor, trained_length: int, dtype: torch.dtype) -> torch.Tensor:
    """Qwen v1's log-n query scale at 0-based positions (B, T) -> (B, 1, T, 1): log(p + 1) / log(trained_length)
    past the trained length, else 1 (computed in float64 as the reference's Python list, then cast)."""
    n = position_ids.double() + 1
    scale = torch.where(n > trained_length, n.log() / math.log(trained_length), torch.ones_like(n))
    return scale.to(dtype)[:, None, :, None]


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
        cache: KVCache | None, layer_idx: int, q_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q_scale (B, 1, T, 1) multiplies the rotated queries (log-n attention), when given."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, Dh)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, Dh)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if q_scale is not None:
            q = q * q_scale
        if cache is not None:
            k, v = cache.write(layer_idx, k, v)  # (B, Hkv, S, Dh), S = positions written so far
        y = attention(q, k, v, mask)  # (B, H, T, Dh)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer_idx: int, q_scale=None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer_idx, q_scale)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen2Model(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.gradient_checkpointing = False

    def forward(
        self, inputs_embeds: torch.Tensor, key_valid: torch.Tensor, position_ids: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """inputs_embeds (B, T, D); key_valid bool (B, S) over every key this pass sees (S = T without a cache,
        cache.pos + T with one); position_ids (B, T). Returns the final-norm hidden states (B, T, D)."""
        B, T, _ = inputs_embeds.shape
        q_start = cache.pos if cache is not None else 0
        assert key_valid.shape == (B, q_start + T), (key_valid.shape, q_start, T)
        mask: torch.Tensor | str | None
        if bool(key_valid.all()) and T == 1:
            mask = None  # one new token may see every key
        elif bool(key_valid.all()) and q_start == 0:
            mask = CAUSAL  # no padding: SDPA's own causal kernel, no (B, 1, T, T) tensor
        else:
            mask = attention_mask_4d(key_valid, q_start, T)
        cos, sin = rope_tables(position_ids, self.cfg.head_dim, self._rope_base(key_valid, cache), inputs_embeds.dtype)
        q_scale = self._q_scale(position_ids, inputs_embeds.dtype)
        x = inputs_embeds
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, None, i, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache, i, q_scale)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def step_static(self, inputs_embeds: torch.Tensor, key_valid: torch.Tensor, position_ids: torch.Tensor,
                    step: StaticStep) -> torch.Tensor:
        """One decode position over full-capacity cache buffers (the compiled step, `auralm.infer.compiled`).

        inputs_embeds (B, 1, D); key_valid bool (B, S_max), the cached slots that hold real tokens; position_ids
        (B, 1). Returns the final-norm hidden states (B, 1, D); the new keys/values are left in `step`.
        """
        assert not self.cfg.rope_dynamic_ntk, "no per-row RoPE base here: CompiledDecodeStep refuses such models"
        own = torch.ones_like(key_valid[:, :1])
        mask = torch.cat([key_valid, own], dim=1)[:, None, None, :]  # (B, 1, 1, S_max + 1)
        cos, sin = rope_tables(position_ids, self.cfg.head_dim, self.cfg.rope_theta, inputs_embeds.dtype)
        q_scale = self._q_scale(position_ids, inputs_embeds.dtype)
        x = inputs_embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, step, i, q_scale)
        return self.norm(x)

    # ---- Qwen v1 long-context rules (inference only, as in the reference) --------------------------------------
    def _rope_base(self, key_valid: torch.Tensor, cache: KVCache | None) -> float | torch.Tensor:
        """The config's RoPE base, or with dynamic NTK one base per row, chosen from the prompt's real length at
        prefill (no cache, or an empty one) and read back from the cache for the tokens decoded after it."""
        if not self.cfg.rope_dynamic_ntk or self.training:
            return self.cfg.rope_theta
        if cache is not None and cache.pos > 0:
            assert cache.rope_base is not None, "a dynamic-NTK model's cache lost its per-row RoPE bases"
            return cache.rope_base
        bases = ntk_rope_bases(key_valid.sum(-1), self.cfg)  # (B,)
        if cache is not None:
            cache.rope_base = bases
        return bases

    def _q_scale(self, position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        if not self.cfg.logn_attention or self.training:
            return None
        return logn_scale(position_ids, self.cfg.trained_length, dtype)


class CausalLM(nn.Module):
    """Qwen2 decoder + output layer. `forward` returns logits; losses live in `auralm.train`."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Qwen2Model(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, V). Positions default to counting real tokens only."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        h = self.model(self.model.embed_tokens(input_ids), attention_mask.bool(), position_ids)
        return self.lm_head(h)
