"""Handing the tensors read from a folder to a model built on the meta device: every weight present, each of the
shape the config needs, assigned without a copy. One check for every checkpoint family (`hf`, `qwen_v1`)."""

from __future__ import annotations

from pathlib import Path

import torch

from auralm.config import ConfigError
from auralm.model.audiolm import AudioLM


def assign_weights(model: AudioLM, state: dict[str, torch.Tensor], folder: str | Path) -> AudioLM:
    """Load `state` (auralm names) into `model` (built on the meta device), in eval mode. With tied embeddings the
    output layer is the embedding table: a stored lm_head is dropped. Raises ConfigError naming a missing weight or
    a wrong shape."""
    tied = model.cfg.decoder.tie_embeddings
    expected = set(model.state_dict())
    if tied:
        state.pop("language_model.lm_head.weight", None)
        expected.discard("language_model.lm_head.weight")
    missing = sorted(expected - set(state))
    if missing:
        raise ConfigError(f"{folder} lacks {len(missing)} weight(s) the config needs, e.g. {missing[:5]}")
    for name, t in state.items():
        want = model.get_parameter(name).shape
        if t.shape != want:
            raise ConfigError(f"{name} has shape {tuple(t.shape)} in {folder}, the config needs {tuple(want)}")
    model.load_state_dict(state, strict=not tied, assign=True)
    if tied:
        model.language_model.lm_head.weight = model.language_model.model.embed_tokens.weight
    model.audio_tower.embed_positions.weight.requires_grad_(False)
    return model.eval()
