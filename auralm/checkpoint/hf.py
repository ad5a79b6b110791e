"""Hugging Face Qwen2-Audio folders: config.json + safetensors (single file or sharded with an index).

Loading builds the model on the meta device and assigns the tensors read from the files, so weights are never
materialised twice. Both key layouts are read: the released one (`audio_tower.*`, `language_model.model.*`, ...,
what vLLM loads and what transformers writes) and transformers 5's in-memory one (`model.audio_tower.*`, ...).
Saving writes the released layout. Only safetensors are read: nothing is unpickled. A folder's
generation_config.json (its stop and pad ids) is read and written beside the weights, never stored on the model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from auralm.checkpoint.weights import assign_weights, atomic_write_text, write_shards
from auralm.config import AudioLMConfig, ConfigError
from auralm.cpu import fast_bf16
from auralm.model.audiolm import AudioLM
from auralm.model.cpu_bf16 import float32_products_

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# transformers-5 in-memory names -> released names; applied in order, first match wins.
_V5_TO_RELEASED = [
    (re.compile(r"^lm_head\."), "language_model.lm_head."),
    (re.compile(r"^model\.language_model\."), "language_model.model."),
    (re.compile(r"^model\.audio_tower\."), "audio_tower."),
    (re.compile(r"^model\.multi_modal_projector\."), "multi_modal_projector."),
]


def released_key(key: str) -> str:
    """Map a checkpoint key in either layout to the released layout (= auralm's parameter names)."""
    for pattern, repl in _V5_TO_RELEASED:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return key


def checkpoint_files(folder: Path, stem: str = "model") -> list[Path]:
    """The safetensors files of a folder, from its index if sharded. `stem`: "model", or QUANT_STEM for the
    weights of a quantized folder."""
    index_name, single_name = f"{stem}.safetensors.index.json", f"{stem}.safetensors"
    if (folder / index_name).is_file():
        try:
            index = json.loads((folder / index_name).read_text())
            names = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as err:
            raise ConfigError(f"{folder / index_name} is not a valid safetensors index: {err}") from None
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is missing shard(s) named in its index: {missing}")
        return [folder / n for n in names]
    if (folder / single_name).is_file():
        return [folder / single_name]
    if list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
        raise ConfigError(
            f"{folder} holds only pickle weights (*.bin/*.pt); auralm reads safetensors only, since unpickling "
            "can run arbitrary code. Convert them once with a trusted tool (e.g. transformers' save_pretrained)."
        )
    raise FileNotFoundError(f"{folder} has no {single_name} or {index_name}")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def config_dtype(folder: str | Path) -> torch.dtype | None:
    """The dtype a folder's config.json names (`torch_dtype`, transformers 5's `dtype`), None if it names none."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # AudioLMConfig.from_pretrained reports the broken file
    return _DTYPES.get(hf.get("torch_dtype") or hf.get("dtype") or "")


def load_audiolm(
    folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
    quantize: str | None = None,
) -> AudioLM:
    """Build an `AudioLM` from a Hugging Face Qwen2-Audio folder.

    dtype=None: the dtype the folder's config.json names (as transformers' dtype="auto"), else the stored one.
    quantize: "int8" / "int4" / "int4-g32" quantizes the decoder's Linear layers while loading (`auralm.model.quant`;
    CPU only, bfloat16 activations unless `dtype` says otherwise); a folder saved quantized loads quantized."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    # Imported here: checkpoint.qwen_v1 imports the model, whose first import loads auralm.bindings, which
    # imports this module; at the top that would be a cycle.
    from auralm.checkpoint.quantized import QUANT_STEM, folder_quantization, load_quantized
    from auralm.checkpoint.qwen_v1 import is_qwen_v1_folder, load_qwen_v1
    from auralm.model.quant import QuantSpec

    if is_qwen_v1_folder(folder):  # Qwen-Audio (v1): its own config names and key layout
        if quantize is not None:
            raise ValueError("quantize= is implemented for Qwen2-Audio folders, not Qwen-Audio (v1)")
        return _cpu_products(load_qwen_v1(folder, dtype=dtype, device=device))
    if quantize is not None or folder_quantization(folder) is not None:
        if torch.device(device).type != "cpu":
            raise ValueError(f"quantized layers run on torch's CPU kernels; load on the CPU, not {device}")
        spec = QuantSpec.parse(quantize) if quantize is not None else None
        stem = QUANT_STEM if folder_quantization(folder) is not None else "model"
        return _cpu_products(load_quantized(folder, checkpoint_files(folder, stem), released_key, dtype, spec))
    if dtype is None:
        dtype = config_dtype(folder)
    cfg = AudioLMConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AudioLM(cfg)
    expected = set(model.state_dict().keys())
    state: dict[str, torch.Tensor] = {}
    for path in checkpoint_files(folder):
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for key in f.keys():
                name = released_key(key)
                if name not in expected:
                    raise ConfigError(f"{path.name} holds {key!r}, which the config's model does not have")
                t = f.get_tensor(key)
                state[name] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return _cpu_products(assign_weights(model, state, folder))


def _cpu_products(model: AudioLM) -> AudioLM:
    """A bfloat16 model on a CPU that emulates bfloat16 matrix products gets float32 products for its wide ones
    (prefill, encoder, batched decode; `auralm.model.cpu_bf16`): same sums, up to 6x faster there."""
    weight = next(model.parameters())
    if weight.dtype == torch.bfloat16 and not fast_bf16(weight.device):
        float32_products_(model)
    return model


def read_generation_defaults(folder: str | Path) -> dict:
    """eos/pad ids from generation_config.json, if the folder has one (transformers' defaults for `generate`)."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        gen = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    return {k: gen[k] for k in ("eos_token_id", "pad_token_id") if gen.get(k) is not None}


def save_audiolm(
    model: AudioLM, folder: str | Path, max_shard_bytes: int = 4 * 1024**3, generation_defaults: dict | None = None,
) -> None:
    """Write config.json and safetensors in the released layout, and generation_config.json when
    `generation_defaults` (eos/pad ids, as `read_generation_defaults` returns them) are given; files appear
    atomically (temp + rename)."""
    from auralm.checkpoint.qwen_v1 import save_qwen_v1  # here, not at the top: see load_audiolm
    from auralm.model.qwen_v1 import QwenAudioV1

    if isinstance(model, QwenAudioV1):  # written back in its own layout, which load_audiolm reads
        save_qwen_v1(model, folder, max_shard_bytes=max_shard_bytes)
        if generation_defaults:
            atomic_write_text(Path(folder) / "generation_config.json", json.dumps(generation_defaults, indent=2))
        return
    from auralm.checkpoint.quantized import QUANT_STEM, folder_state_dict, quantization_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    quantized = quantization_config(model)  # int8 / int4 layers are written in their folder format
    state = folder_state_dict(model) if quantized else model.state_dict()
    state = {k: v.detach().contiguous() for k, v in state.items()}
    if model.cfg.decoder.tie_embeddings:
        state.pop("language_model.lm_head.weight", None)
    # Quantized weights go under other file names, so that transformers finds no weights it would misread.
    write_shards(state, folder, QUANT_STEM if quantized else "model", max_shard_bytes, stale=("model", QUANT_STEM))
    hf = model.cfg.to_hf()
    hf["torch_dtype"] = str(model.dtype).removeprefix("torch.")
    if quantized:
        hf["quantization_config"] = quantized  # what auralm reads; transformers finds no model*.safetensors
    atomic_write_text(folder / "config.json", json.dumps(hf, indent=2))
    if generation_defaults:
        atomic_write_text(folder / "generation_config.json", json.dumps(generation_defaults, indent=2))
