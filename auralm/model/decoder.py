"""The Qwen2 decoder LLM: RMSNorm, RoPE, grouped-query attention with q/k/v bias, SwiGLU.

Parameter names equal the Hugging Face checkpoint's (`model.embed_tokens`, `model.layers.{i}.self_attn.q_proj`, ...,
`lm_head`), so a `language_model.*` prefix rename is all loading needs.
"""

from __future__ import annotations

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
        cache: KVCache | None, layer_idx: int,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, Dh)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, Dh)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
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

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer_idx: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer_idx)
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
        cos, sin = rope_tables(position_ids, self.cfg.head_dim, self.cfg.rope_theta, inputs_embeds.dtype)
        x = inputs_embeds
        for i, layer in enumerate(self.layers):
            if self.gradient_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, None, i, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, cache, i)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def step_static(self, inputs_embeds: torch.Tensor, key_valid: torch.Tensor, position_ids: torch.Tensor,
                    step: StaticStep) -> torch.Tensor:
        """One decode position over full-capacity cache buffers (the compiled step, `auralm.infer.compiled`).

        inputs_embeds (B, 1, D); key_valid bool (B, S_max), the cached slots that hold real tokens; position_ids
        (B, 1). Returns the final-norm hidden states (B, 1, D); the new keys/values are left in `step`.
        """
        own = torch.ones_like(key_valid[:, :1])
        mask = torch.cat([key_valid, own], dim=1)[:, None, None, :]  # (B, 1, 1, S_max + 1)
        cos, sin = rope_tables(position_ids, self.cfg.head_dim, self.cfg.rope_theta, inputs_embeds.dtype)
        x = inputs_embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, step, i)
        return self.norm(x)


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
