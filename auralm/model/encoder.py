"""The Whisper-style audio encoder of Qwen2-Audio.

log-mel (B, M, F) -> conv k3 -> GELU -> conv k3 stride 2 -> GELU -> + learned positions -> pre-LN Transformer blocks
-> average pool (2, 2) -> LayerNorm -> (B, F/4, D): one embedding per 40 ms of audio.

Unlike the reference, which only accepts exactly 3000 mel frames (30 s), this encoder runs on any length up to the
position table, so a 3 s clip costs 3 s of work. Padded frames are masked as keys, exactly as the reference masks
them, so the outputs on valid frames are the same (given features whose padding holds the reference's values, see
`auralm.audio.features`). Parameter names equal the Hugging Face checkpoint's `audio_tower.*` names. The valid
output counts are `auralm.audio.geometry`'s formulas, which the processor and the datasets count tokens with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from auralm.audio.geometry import conv_output_lengths, num_audio_tokens
from auralm.config import EncoderConfig
from auralm.model.layers import attention


class EncoderAttention(nn.Module):
    """Bidirectional multi-head attention; Whisper's key projection has no bias."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, A, D = x.shape
        # Whisper scales the query projection before the product (the reference keeps that order, and SDPA then
        # multiplies by 1.0): in bfloat16 the other order rounds differently and the encoder drifts by ~1%.
        q = self.q_proj(x) * (D // self.n_heads) ** -0.5
        # (B, A, D) -> (B, H, A, Dh)
        q, k, v = (t.view(B, A, self.n_heads, -1).transpose(1, 2) for t in (q, self.k_proj(x), self.v_proj(x)))
        y = attention(q, k, v, mask, scale=1.0)  # (B, H, A, Dh)
        return self.out_proj(y.transpose(1, 2).reshape(B, A, D))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.self_attn = EncoderAttention(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class AudioEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        # Learned (for Whisper: sinusoidal values stored in the checkpoint) and never trained.
        self.embed_positions = nn.Embedding(cfg.max_positions, cfg.d_model)
        self.embed_positions.weight.requires_grad_(False)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.gradient_checkpointing = False

    def run_blocks(self, features: torch.Tensor, frame_lengths: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """The conv stem and the Transformer blocks (the first `stop` of them; None: all), before pooling.

        features: (B, M, F) log-mel; frame_lengths: (B,) valid mel frames per clip. Returns (B, A, D) with
        A = (F - 1) // 2 + 1; rows past a clip's `conv_output_lengths` are padding and must be ignored.
        """
        B, M, Fr = features.shape
        if M != self.cfg.n_mels:
            raise ValueError(f"encoder expects {self.cfg.n_mels} mel bins, got features with {M}")
        if Fr > self.cfg.max_mel_frames:
            raise ValueError(
                f"{Fr} mel frames exceed the encoder window of {self.cfg.max_mel_frames} (30 s); "
                "split long audio into windows (the processor does this)"
            )
        x = features.to(self.conv1.weight.dtype)
        x = F.gelu(self.conv1(x))  # (B, D, F)
        x = F.gelu(self.conv2(x))  # (B, D, A)
        A = x.shape[-1]
        x = x.transpose(1, 2) + self.embed_positions.weight[:A]  # (B, A, D)
        return self.run_upper_blocks(x, frame_lengths, 0, stop)

    def run_upper_blocks(self, x: torch.Tensor, frame_lengths: torch.Tensor, start: int,
                         stop: int | None = None) -> torch.Tensor:
        """Blocks start..stop (None: to the last) on (B, A, D) hidden states of clips with `frame_lengths` mel
        frames: `run_blocks(f, n, stop=k)` then `run_upper_blocks(., n, k)` equals `run_blocks(f, n)` (a frozen
        lower part can be computed once while the upper blocks train)."""
        A = x.shape[1]
        valid = torch.arange(A, device=x.device)[None, :] < conv_output_lengths(frame_lengths.to(x.device))[:, None]
        # Padded frames are masked as keys only (as in the reference); their own rows are computed and discarded.
        mask = None if bool(valid.all()) else valid[:, None, None, :]  # (B, 1, 1, A)
        for layer in self.layers[start:stop]:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return x

    def pool(self, x: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block outputs (B, A, D) -> embeddings (B, A // 2, D) and their valid counts (B,)."""
        # Pool pairs of frames (40 ms each), then normalise: Qwen2-Audio moves Whisper's final norm after the pool.
        x = F.avg_pool1d(x.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2)  # (B, A // 2, D)
        return self.layer_norm(x), num_audio_tokens(frame_lengths.to(x.device))

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, M, F), frame_lengths (B,) -> embeddings (B, A // 2, D) and their valid counts (B,)."""
        return self.pool(self.run_blocks(features, frame_lengths), frame_lengths)
