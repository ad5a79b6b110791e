"""Weights between a folder and a model, for every checkpoint family (`hf`, `qwen_v1`): handing the tensors read
to a model built on the meta device (every weight present, each of the shape the config needs, assigned without a
copy), and writing safetensors shards atomically, with the index transformers reads past one shard."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

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


def write_shards(state: dict[str, torch.Tensor], folder: Path, stem: str, max_shard_bytes: int,
                 stale: tuple[str, ...] = ("model",)) -> None:
    """Write `state` as `{stem}.safetensors`, or as `{stem}-0000i-of-0000n.safetensors` shards of at most
    `max_shard_bytes` (one tensor may exceed it) with `{stem}.safetensors.index.json`. Weight files of an earlier
    save under any of the `stale` stems are removed first, so a different sharding leaves no stale shard behind.
    Every file is written to a temporary name, fsynced and renamed."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = state[key]
        size += nbytes
    for old_stem in stale:
        for old in list(folder.glob(f"{old_stem}*.safetensors")) + [folder / f"{old_stem}.safetensors.index.json"]:
            if old.exists():
                old.unlink()
    if len(shards) == 1:
        atomic_save(shards[0], folder / f"{stem}.safetensors")
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        atomic_save(shard, folder / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    atomic_write_text(folder / f"{stem}.safetensors.index.json", index)


def atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    _fsync_replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    _fsync_replace(tmp, path)


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
