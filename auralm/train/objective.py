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
from auralm.train.losses import lm_loss_sum, sequence_logprobs


def embed_batch(model: nn.Module, batch: dict) -> torch.Tensor:
    """Token embeddings (R, T, D) with audio embeddings at the `<|AUDIO|>` positions, in order."""
    ids = batch["input_ids"]  # (R, T)
    embeds = model.language_model.model.embed_tokens(ids)  # (R, T, D)
    if "audio_embeds" in batch:
        audio = model.multi_modal_projector(  # (N, D)
            batch["audio_embeds"].to(embeds.dtype), model.language_model.model.embed_tokens.weight)
    elif "input_features" in batch:
        frame_lengths = batch["feature_attention_mask"].sum(-1)  # (Nw,)
        audio = model.encode_audio(batch["input_features"], frame_lengths)  # (N, D)
    else:
        return embeds
    if batch["paired"]:
        audio = torch.cat([audio, audio])  # chosen rows, then rejected rows: the same clips twice
    is_audio = ids == model.cfg.audio_token_id  # (R, T)
    if int(is_audio.sum()) != audio.shape[0]:
        raise ValueError(
            f"the batch holds {int(is_audio.sum())} <|AUDIO|> positions for {audio.shape[0]} audio "
            "embeddings; the dataset must expand placeholders with the processor"
        )
    return embeds.masked_scatter(is_audio[..., None], audio.to(embeds.dtype))


class TrainModule(nn.Module):
    """Wraps an AudioLM; the training engines wrap this."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, batch: dict, sequences: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        embeds = embed_batch(self.model, batch)
        hidden = self.model(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"], return_hidden=True
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
