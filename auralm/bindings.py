"""`AudioLM.from_pretrained`, `.save_pretrained` and `.generate`: transformers' entry points, attached here.

`auralm.model.audiolm.AudioLM` is a plain nn.Module; loading and saving live in `auralm.checkpoint.hf`, generation
in `auralm.infer`. These thin wrappers join them above both layers, so that model/ imports neither. The package
root's `AudioLM` is this module's (`from auralm import AudioLM` imports it), so the public class always has them;
library code calls `load_audiolm` / `save_audiolm` / `infer.generate` directly and never needs this module.
"""

from __future__ import annotations

from pathlib import Path
from weakref import WeakKeyDictionary

import torch

from auralm.checkpoint.hf import load_audiolm, read_generation_defaults, save_audiolm
from auralm.infer.engine import DecodeStep
from auralm.infer.generate import generate as generate_tokens
from auralm.infer.sampling import GenerationConfig
from auralm.model.audiolm import AudioLM

__all__ = ["AudioLM"]

# The generation_config.json (eos / pad ids) of each model `from_pretrained` loaded: what `generate` defaults to and
# what `save_pretrained` writes back (transformers keeps it as `model.generation_config`). Kept beside the model,
# not on it, and dropped with it.
_generation_defaults: WeakKeyDictionary[AudioLM, dict] = WeakKeyDictionary()


def from_pretrained(
    cls: type[AudioLM], folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
    quantize: str | None = None,
) -> AudioLM:
    """Load a Hugging Face Qwen2-Audio folder (config.json + single or sharded safetensors); `quantize`: "int8" /
    "int4" decoder weights (`auralm.checkpoint.hf.load_audiolm`)."""
    model = load_audiolm(folder, dtype=dtype, device=device, quantize=quantize)
    _generation_defaults[model] = read_generation_defaults(folder)
    return model


def save_pretrained(self: AudioLM, folder: str | Path, max_shard_bytes: int = 4 * 1024**3) -> None:
    """Write a folder that transformers (`Qwen2AudioForConditionalGeneration`) and vLLM load; the generation
    defaults of the folder the model was loaded from go with it."""
    save_audiolm(self, folder, max_shard_bytes=max_shard_bytes, generation_defaults=_generation_defaults.get(self))


@torch.no_grad()
def generate(
    self: AudioLM,
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
    step_fn: DecodeStep | None = None,
) -> torch.Tensor:
    """transformers' `generate` for this model: returns (B, T + n), the prompts followed by the new tokens.

    Padded batches (left or right) give each row the tokens it gets alone. Stop ids default to the
    generation_config.json of the folder `from_pretrained` loaded (none for a model built otherwise); rows that stop
    early are filled with `pad_token_id`. `step_fn`: a compiled decode step (`auralm.infer.compiled`). A keyword
    this signature does not name is a TypeError, never ignored.
    """
    defaults = _generation_defaults.get(self, {})
    if eos_token_id is None:
        eos_token_id = defaults.get("eos_token_id")
    stops = tuple(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else (() if eos_token_id is None else (eos_token_id,))
    if pad_token_id is None:
        pad_token_id = defaults.get("pad_token_id", stops[0] if stops else 0)
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
    return generate_tokens(self, inputs, cfg, pad_token_id=pad_token_id, step_fn=step_fn)


AudioLM.from_pretrained = classmethod(from_pretrained)
AudioLM.save_pretrained = save_pretrained
AudioLM.generate = generate
