"""Qwen-Audio (v1): the same encoder, projector and decoder math as `AudioLM`, plus what v1 does differently.

What is shared (so auralm's modules run v1 weights after a pure key rename, `auralm.checkpoint.qwen_v1`):
the Whisper-large-v2 encoder blocks (v1 scales q and k by Dh^-1/4 each, the same as Dh^-1/2 on the logits),
average pool -> LayerNorm (`ln_post`) -> Linear (`proj`, the projector), and the Qwen-7B LLM, which is the Qwen2
decoder with fused q/k/v split and the SwiGLU halves renamed (`DecoderConfig.rope_dynamic_ntk` and
`logn_attention` switch on v1's long-context rules).

What differs, here:
- `<audio>` / `</audio>` take rows 0 / 1 of the encoder-owned `audio_bos_eos_token` table, not the LLM's
  embeddings (the reference overwrites the whole span [<audio>, pads..., </audio>] at prefill);
- the encoder sees each clip's mel frames up to 2 * L1 (L1 = frames after the stride-2 conv) and zeros beyond,
  which is what the reference's crop + the conv's zero padding give a clip run alone. (The reference crops a
  batch at its longest clip, so a shorter clip's last frame sees one real frame more there; auralm gives every
  clip its alone-result, so batched == single.)
"""

from __future__ import annotations

import torch
from torch import nn

from auralm.audio.geometry import conv_output_lengths
from auralm.config import AudioLMConfig
from auralm.model.audiolm import AudioLM


class QwenAudioV1(AudioLM):
    """`AudioLM` with the v1 audio span embeddings. `cfg.audio_token_id` is the audio pad id
    (`[[[AUDIO:modality]]]`), `cfg.audio_start_id` the `<audio>` id."""

    def __init__(self, cfg: AudioLMConfig):
        if cfg.audio_start_id is None:
            raise ValueError("a Qwen-Audio v1 config needs audio_start_id (the id of <audio>)")
        super().__init__(cfg)
        self.audio_bos_eos_token = nn.Embedding(2, cfg.decoder.d_model)  # rows: <audio>, </audio>

    def encode_audio_kept(
        self, input_features: torch.Tensor, frame_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As `AudioLM.encode_audio_kept`, with each clip's frames from 2 * L1 on set to zero (v1's crop)."""
        crop = 2 * conv_output_lengths(frame_lengths.to(input_features.device))  # (Na,)
        frames = torch.arange(input_features.shape[-1], device=input_features.device)
        keep = frames[None, :] < crop[:, None]  # (Na, F)
        return super().encode_audio_kept(input_features * keep[:, None, :].to(input_features.dtype), frame_lengths)

    def embed_with_mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, input_features: torch.Tensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings (B, T, D): pads hold the audio embeddings in order, `<audio>` / `</audio>` the
        encoder's bos / eos rows; the attention mask as given."""
        embeds, attention_mask = super().embed_with_mask(input_ids, attention_mask, input_features,
                                                         feature_attention_mask)  # (B, T, D)
        start = (input_ids == self.cfg.audio_start_id)[..., None]  # (B, T, 1)
        end = (input_ids == self.cfg.audio_start_id + 1)[..., None]
        if int(start.sum()) != int(end.sum()):
            raise ValueError(
                f"input_ids hold {int(start.sum())} <audio> but {int(end.sum())} </audio> tokens; "
                "every audio span needs both (the processor writes them)"
            )
        bos, eos = self.audio_bos_eos_token.weight.to(embeds.dtype)  # (D,), (D,)
        return torch.where(start, bos, torch.where(end, eos, embeds)), attention_mask
