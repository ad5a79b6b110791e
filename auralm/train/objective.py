"""The model and its loss as one module, so DDP/FSDP see (and synchronise) the whole forward pass.

`TrainModule(batch)` returns the summed cross-entropy over target tokens and their count (pre-training, SFT);
`TrainModule(batch, sequences=True)` returns the summed log-probability of each row's targets (DPO). Audio comes
either as log-mel features, encoded here, or as cached encoder outputs (`audio_embeds`), which skip the encoder
and go straight into the projector. For preference pairs the audio is encoded once and placed in both halves.
"""

from __future__ import annotations

import torch
from torch import nn

from auralm.data.collate import IGNORE_INDEX
from auralm.model.audiolm import drop_frames
from auralm.train.losses import lm_loss_sum, sequence_logprobs


def embed_batch(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings (R, T, D) with audio embeddings at the `<|AUDIO|>` positions, in order, and the attention
    mask (R, T) with the audio frames a CTC-compressing projector drops left out (`AudioLM.embed_with_mask`)."""
    ids = batch["input_ids"]  # (R, T)
    embeds = model.language_model.model.embed_tokens(ids)  # (R, T, D)
    if "audio_embeds" in batch:
        audio, kept = model.multi_modal_projector.project(  # (N, D), (N,) or None
            batch["audio_embeds"].to(embeds.dtype), model.language_model.model.embed_tokens.weight)
    elif "input_features" in batch:
        frame_lengths = batch["feature_attention_mask"].sum(-1)  # (Nw,)
        audio, kept = model.encode_audio_kept(batch["input_features"], frame_lengths)  # (N, D), (N,) or None
    else:
        return embeds, batch["attention_mask"]
    if batch["paired"]:
        audio = torch.cat([audio, audio])  # chosen rows, then rejected rows: the same clips twice
        kept = torch.cat([kept, kept]) if kept is not None else None
    is_audio = ids == model.cfg.audio_token_id  # (R, T)
    if int(is_audio.sum()) != audio.shape[0]:
        raise ValueError(
            f"the batch holds {int(is_audio.sum())} <|AUDIO|> positions for {audio.shape[0]} audio "
            "embeddings; the dataset must expand placeholders with the processor"
        )
    mask = drop_frames(batch["attention_mask"], is_audio, kept)
    return embeds.masked_scatter(is_audio[..., None], audio.to(embeds.dtype)), mask


class TrainModule(nn.Module):
    """Wraps an AudioLM; the training engines wrap this."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, batch: dict, sequences: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        embeds, attention_mask = embed_batch(self.model, batch)
        hidden = self.model(
            inputs_embeds=embeds, attention_mask=attention_mask, return_hidden=True
        ).hidden_states  # (R, T, D)
        lm_head = self.model.language_model.lm_head
        if sequences:
            return sequence_logprobs(hidden, batch["labels"], lm_head)  # (R,)
        loss_sum, n = lm_loss_sum(hidden, batch["labels"], lm_head)
        return loss_sum, torch.tensor(n, device=loss_sum.device)


def count_targets(batch: dict) -> int:
    """Target tokens of a batch: the normaliser of the token-mean LM loss."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }
