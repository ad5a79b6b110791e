"""Quantized model folders: a float folder quantized while it loads, and folders that store int8 / int4 weights.

Loading streams the safetensors one tensor at a time: each file is memory-mapped for the one tensor being read and
unmapped after it (a file mapped for a whole shard would count every page read in the resident set until the end
of that shard), each float weight of a quantized layer is quantized and dropped at once, and every other tensor is
copied out in the target dtype. Peak memory is the quantized model plus one float tensor: a Qwen2-Audio-7B folder
(16 GB in bfloat16) loads as int8 in under 10 GiB (`benchmarks/bench_7b.py`). The token embedding, when the file
already holds it in the target dtype and the output layer does not share it, is kept as a view of the mapped file:
a step gathers only its tokens' rows, so only those pages are read (1.2 GiB of the 7B model's stay on disk). The
file must then stay in place while the model lives (replacing it by a new file, as `save_audiolm` does, is safe).

A quantized folder is a Hugging Face folder whose config.json carries a `quantization_config` marker
({"quant_method": "auralm-weight-only", "bits": 8, ...}) and whose weights, in `quantized.safetensors` (or shards
`quantized-0000i-of-0000n.safetensors` with `quantized.safetensors.index.json`), hold `<layer>.qweight`, `.scales`
(and `.zeros` for int4; formats in `auralm.model.quant`) in place of `<layer>.weight`. auralm reads it, quantizing
nothing again. transformers cannot load it: it does not know the quant_method (it only warns about that) and finds
no `model*.safetensors`, so it stops instead of running random weights in place of the quantized ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from auralm.config import AudioLMConfig, ConfigError
from auralm.cpu import release_free_heap
from auralm.model.audiolm import AudioLM
from auralm.model.quant import QuantLinear, QuantSpec, quantized_layers, replace_linears_

QUANT_METHOD = "auralm-weight-only"
QUANT_STEM = "quantized"  # weights in quantized.safetensors (or quantized-0000i-of-0000n + index), not model.*
_EMBEDDING = "language_model.model.embed_tokens.weight"
_QUANT_LEAVES = ("qweight", "scales", "zeros")


def folder_quantization(folder: str | Path) -> QuantSpec | None:
    """The quantization a folder's config.json records, or None for a float folder."""
    path = Path(folder) / "config.json"
    qc = json.loads(path.read_text()).get("quantization_config") if path.is_file() else None
    if not qc:
        return None
    if qc.get("quant_method") != QUANT_METHOD:
        raise ConfigError(
            f"{folder} is quantized with {qc.get('quant_method')!r}; auralm reads float folders and its own "
            f"{QUANT_METHOD!r} folders"
        )
    return QuantSpec(bits=qc["bits"], group_size=qc.get("group_size") or 64, head_bits=qc.get("head_bits", 8))


def quantization_config(model: AudioLM) -> dict | None:
    """The config.json marker for a model holding QuantLinear layers (None if it holds none)."""
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if not layers:
        return None
    head = model.language_model.lm_head
    body = [m for m in layers if m is not head] or layers
    groups = sorted({m.group_size for m in layers if m.bits == 4})
    return {
        "quant_method": QUANT_METHOD, "bits": body[0].bits, "group_size": groups[0] if groups else None,
        "head_bits": head.bits if isinstance(head, QuantLinear) else None, "rounding": body[0].rounding,
        "note": "int8/int4 weight-only (auralm.model.quant); loads in auralm, not in transformers",
    }


def folder_state_dict(model: AudioLM) -> dict[str, torch.Tensor]:
    """`model.state_dict()` with each QuantLinear's tensors in the folder format (what `save_audiolm` writes)."""
    state = dict(model.state_dict())
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLinear):
            for key in [k for k in state if k.startswith(name + ".")]:
                del state[key]
            state.update({f"{name}.{k}": v for k, v in mod.folder_tensors().items()})
    return state


def _tensor_index(files: list[Path], released_key) -> dict[str, tuple[Path, str, str]]:
    """released name -> (file, key in the file, safetensors dtype), from the headers only."""
    index = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                index[released_key(key)] = (path, key, f.get_slice(key).get_dtype())
    return index


def _read(path: Path, key: str) -> torch.Tensor:
    """One tensor, memory-mapped: its pages stay mapped only while the returned tensor lives."""
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key)


@torch.no_grad()
def load_quantized(
    folder: Path, files: list[Path], released_key, dtype: torch.dtype | None, quantize: QuantSpec | None,
) -> AudioLM:
    """Build an AudioLM from `folder` (its safetensors `files`, keys mapped by `released_key`) with quantized
    decoder Linears: those the folder stores quantized, or those `quantize` selects in a float folder.

    dtype: activations, embeddings, norms, encoder (default bfloat16: torch's int8 / int4 CPU kernels are fast only
    with bfloat16 activations)."""
    stored = folder_quantization(folder)
    if stored is not None and quantize is not None and quantize != stored:
        raise ValueError(f"{folder} is already quantized as {stored.name}; load it without quantize= "
                         f"(or quantize its float original as {quantize.name})")
    dtype = dtype or torch.bfloat16
    cfg = AudioLMConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AudioLM(cfg)
    index = _tensor_index(files, released_key)
    if stored is not None:
        # The folder says which layers it quantized: those with a qweight (int8 -> 8 bits, uint8 nibbles -> 4).
        layers = {n.removesuffix(".qweight"): 8 if d == "I8" else 4 for n, (_, _, d) in index.items()
                  if n.endswith(".qweight")}
        group = stored.group_size
        rounding = json.loads((Path(folder) / "config.json").read_text())["quantization_config"].get("rounding")
    else:
        layers = quantized_layers(model, quantize)
        group = quantize.group_size
    replace_linears_(model, layers, group, dtype)

    expected = set(model.state_dict()) - {k for k in model.state_dict() if k.rpartition(".")[0] in layers}
    tied = cfg.decoder.tie_embeddings
    if tied:
        expected.discard("language_model.lm_head.weight")
    state: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in layers}  # a stored layer's tensors so far
    filled: set[str] = set()
    for name, (path, key, _) in index.items():
        owner, _, leaf = name.rpartition(".")
        if tied and name == "language_model.lm_head.weight":
            continue
        t = _read(path, key)
        if owner in layers:
            mod = model.get_submodule(owner)
            if leaf == "weight" and stored is None:
                mod.set_weight(t)  # quantized here; the float tensor (and its mapped pages) go with `t`
                del t  # freed before the trim; the loop's closing `del t` is skipped below
                release_free_heap()  # the quantizing temporaries' holes, else the resident set grows ~1.6x
                filled.add(owner)
                continue
            elif leaf == "bias":
                mod.bias = torch.nn.Parameter(t.to(dtype, copy=True), requires_grad=False)
            elif leaf in _QUANT_LEAVES and stored is not None:
                parts[owner][leaf] = t.clone()
                if set(_QUANT_LEAVES) <= parts[owner].keys():
                    mod.load_folder_tensors(parts.pop(owner))
                    mod.rounding = rounding or "nearest"
                    filled.add(owner)
            else:
                raise ConfigError(f"{path.name} holds {key!r}, which does not fit the quantized layer {owner}")
        elif name in expected:
            want = model.get_parameter(name).shape
            if t.shape != want:
                raise ConfigError(f"{name} has shape {tuple(t.shape)} in {folder}, the config needs {tuple(want)}")
            if name == _EMBEDDING and t.dtype == dtype and not tied:
                state[name] = t  # stays a view of the mapped file: a step reads only its tokens' rows (see above)
            else:
                state[name] = t.to(dtype, copy=True) if t.is_floating_point() else t.clone()
        else:
            raise ConfigError(f"{path.name} holds {key!r}, which the config's model does not have")
        del t
    missing = sorted((expected - set(state)) | (set(layers) - filled))
    if missing:
        raise ConfigError(f"{folder} lacks {len(missing)} weight(s) the config needs, e.g. {missing[:5]}")
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.language_model.lm_head.weight = model.language_model.model.embed_tokens.weight
    left = [k for k, v in model.state_dict().items() if v.is_meta]
    if left:
        raise ConfigError(f"{folder} lacks {len(left)} tensor(s) the config needs, e.g. {left[:5]}")
    model.audio_tower.embed_positions.weight.requires_grad_(False)
    return model.eval()
