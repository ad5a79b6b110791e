"""AudioLM: audio encoder + projector + Qwen2 decoder, with audio embeddings in place of `<|AUDIO|>` tokens.

The module tree mirrors the Hugging Face Qwen2-Audio checkpoint (`audio_tower`, `multi_modal_projector.linear`,
`language_model.model`, `language_model.lm_head`), so `state_dict()` keys are the checkpoint's keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from auralm.config import AudioLMConfig
from auralm.model.decoder import CausalLM, positions_from_mask
from auralm.model.encoder import AudioEncoder
from auralm.model.kv_cache import KVCache


@dataclass
class AudioLMOutput:
    logits: torch.Tensor | None  # (B, T, V), or (B, k, V) with logits_to_keep=k, or None with return_hidden
    hidden_states: torch.Tensor | None = None  # (B, T, D) final-norm hidden states when return_hidden=True


class Projector(nn.Module):
    """One linear layer from the encoder width to the LLM width (no activation), as released."""

    def __init__(self, cfg: AudioLMConfig):
        super().__init__()
        self.linear = nn.Linear(cfg.encoder.d_model, cfg.decoder.d_model, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class AudioLM(nn.Module):
    def __init__(self, cfg: AudioLMConfig):
        super().__init__()
        self.cfg = cfg
        self.audio_tower = AudioEncoder(cfg.encoder)
        self.multi_modal_projector = Projector(cfg)
        self.language_model = CausalLM(cfg.decoder)
        # Stop/pad ids from the folder's generation_config.json (transformers' defaults for `generate`).
        self.generation_defaults: dict = {}
        # Set by `auralm.infer.compiled.compile_decode`: decode steps then run one compiled graph.
        self.compiled_step = None

    # ---- checkpoints ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> "AudioLM":
        """Load a Hugging Face Qwen2-Audio folder (config.json + single or sharded safetensors)."""
        from auralm.checkpoint.hf import load_audiolm

        return load_audiolm(folder, dtype=dtype, device=device)

    def save_pretrained(self, folder: str | Path, max_shard_bytes: int = 4 * 1024**3) -> None:
        """Write a folder that transformers (`Qwen2AudioForConditionalGeneration`) and vLLM load."""
        from auralm.checkpoint.hf import save_audiolm

        save_audiolm(self, folder, max_shard_bytes=max_shard_bytes)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 256,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        seed: int | None = None,
        **_: object,
    ) -> torch.Tensor:
        """transformers' `generate` for this model: returns (B, T + n), the prompts followed by the new tokens.

        Padded batches (left or right) give each row the tokens it gets alone. Stop ids default to the folder's
        generation_config.json; rows that stop early are filled with `pad_token_id`.
        """
        from auralm.infer.generate import generate
        from auralm.infer.sampling import GenerationConfig

        if eos_token_id is None:
            eos_token_id = self.generation_defaults.get("eos_token_id")
        stops = tuple(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else (() if eos_token_id is None else (eos_token_id,))
        if pad_token_id is None:
            pad_token_id = self.generation_defaults.get("pad_token_id", stops[0] if stops else 0)
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=do_sample, temperature=temperature,
            top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, stop_token_ids=stops, seed=seed,
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if input_features is not None:
            inputs["input_features"] = input_features
            inputs["feature_attention_mask"] = feature_attention_mask
        return generate(self, inputs, cfg, pad_token_id=pad_token_id)

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.language_model.lm_head.weight.device

    # ---- audio ---------------------------------------------------------------------------------------------
    def encode_audio(self, input_features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Projected audio embeddings of every clip, concatenated in order.

        input_features: (Na, M, F) log-mel, one row per clip (or per 30 s window of a long clip); frame_lengths: (Na,).
        Returns (sum_i N_i, D_llm) where N_i = audio_output_lengths(frame_lengths[i]).
        """
        # Only frames up to L+1 can influence valid outputs (conv stem receptive field), so features padded to
        # 30 s by another processor are cropped here: a 3 s clip never pays for 30 s of encoder work.
        keep = min(input_features.shape[-1], int(frame_lengths.max()) + 2)
        enc = self.audio_tower.conv1.weight
        feats = input_features[..., :keep].to(device=enc.device, dtype=enc.dtype)
        hidden, n_out = self.audio_tower(feats, frame_lengths.to(enc.device))  # (Na, A', De), (Na,)
        hidden = self.multi_modal_projector(hidden)  # (Na, A', D)
        valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < n_out[:, None]  # (Na, A')
        return hidden[valid]  # (sum N_i, D)

    def embed(
        self, input_ids: torch.Tensor, input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (B, T, D) with each `<|AUDIO|>` position holding its audio embedding, in order."""
        embeds = self.language_model.model.embed_tokens(input_ids)  # (B, T, D)
        is_audio = input_ids == self.cfg.audio_token_id  # (B, T)
        n_tokens = int(is_audio.sum())
        if input_features is None:
            if n_tokens:
                raise ValueError(f"input_ids hold {n_tokens} <|AUDIO|> tokens but no input_features were given")
            return embeds
        if feature_attention_mask is None:
            frame_lengths = torch.full((input_features.shape[0],), input_features.shape[-1], dtype=torch.long)
        else:
            frame_lengths = feature_attention_mask.sum(-1).long()
        audio = self.encode_audio(input_features, frame_lengths)  # (N, D)
        if audio.shape[0] != n_tokens:
            raise ValueError(
                f"input_ids hold {n_tokens} <|AUDIO|> tokens but the audio gives {audio.shape[0]} embeddings; "
                "expand each placeholder with the processor (auralm.Processor) so the counts agree"
            )
        return embeds.masked_scatter(is_audio[..., None], audio.to(embeds.dtype))

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
        return_hidden: bool = False,
    ) -> AudioLMOutput:
        """Logits for a batch of token sequences with audio.

        input_ids (B, T); attention_mask (B, T), or (B, cache.pos + T) with a cache, 1 = real token (left or right
        padding alike); input_features (Na, M, F) and feature_attention_mask (Na, F) as the processor returns them.
        Positions default to counting real tokens only, so a padded row gives the same logits as the row alone.
        logits_to_keep=k computes the output layer for the last k positions only; return_hidden skips it.
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids or inputs_embeds")
            inputs_embeds = self.embed(input_ids, input_features, feature_attention_mask)
        B, T, _ = inputs_embeds.shape
        past = cache.pos if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, past + T, dtype=torch.long, device=inputs_embeds.device)
        if attention_mask.shape != (B, past + T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, past + T)}")
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)[:, past:]
        h = self.language_model.model(inputs_embeds, attention_mask.bool(), position_ids, cache)  # (B, T, D)
        if return_hidden:
            return AudioLMOutput(logits=None, hidden_states=h)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return AudioLMOutput(logits=self.language_model.lm_head(h))
