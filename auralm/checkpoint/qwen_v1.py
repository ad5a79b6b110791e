"""Qwen-Audio / Qwen-Audio-Chat (v1) folders: `config.json` (model_type "qwen"), weights under `transformer.*`.

The published layout (fact sheet §4.1, §4.5, §4.6) maps onto auralm's modules by renames, except the fused
attention input projection, which is split along its output rows into q | k | v:

| v1 key | auralm key |
|---|---|
| `transformer.wte.weight` | `language_model.model.embed_tokens.weight` |
| `transformer.h.{i}.ln_1` / `ln_2` | `language_model.model.layers.{i}.input_layernorm` / `post_attention_layernorm` |
| `transformer.h.{i}.attn.c_attn.{weight,bias}` (3D rows) | `...self_attn.{q,k,v}_proj.{weight,bias}` |
| `transformer.h.{i}.attn.c_proj.weight` | `...self_attn.o_proj.weight` |
| `transformer.h.{i}.mlp.w1` / `w2` / `c_proj` | `...mlp.up_proj` / `gate_proj` / `down_proj` (SiLU is on w2) |
| `transformer.ln_f.weight`, `lm_head.weight` | `language_model.model.norm.weight`, `language_model.lm_head.weight` |
| `transformer.audio.conv1` / `conv2` | `audio_tower.conv1` / `conv2` |
| `transformer.audio.positional_embedding` (a stored buffer) | `audio_tower.embed_positions.weight` |
| `transformer.audio.blocks.{i}.attn.query` / `key` / `value` / `out` | `audio_tower.layers.{i}.self_attn.q_proj` / `k_proj` / `v_proj` / `out_proj` |
| `transformer.audio.blocks.{i}.attn_ln` / `mlp_ln` / `mlp.0` / `mlp.2` | `...self_attn_layer_norm` / `final_layer_norm` / `fc1` / `fc2` |
| `transformer.audio.ln_post`, `transformer.audio.proj` | `audio_tower.layer_norm`, `multi_modal_projector.linear` |
| `transformer.audio.audio_bos_eos_token.weight` | `audio_bos_eos_token.weight` |

`v1_to_auralm` / `auralm_to_v1` are that map as pure functions and each other's inverse. Weights are read from
safetensors (single or sharded) or, for folders that only have them, PyTorch `.bin` files through
`torch.load(weights_only=True)`, which unpickles tensors and plain containers only. No code from a folder runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from auralm.checkpoint.weights import assign_weights, atomic_write_text, write_shards
from auralm.config import AudioLMConfig, ConfigError, DecoderConfig, EncoderConfig
from auralm.model.qwen_v1 import QwenAudioV1
from auralm.text.qwen_v1_tokenizer import AUDIO_PAD, AUDIO_SPECIALS, AUDIO_START

MODEL_TYPE = "qwen"
# `<audio>` - `[[[AUDIO:modality]]]` in the special-token order: the pad id follows from config.audio_start_id.
PAD_BEFORE_START = AUDIO_SPECIALS.index(AUDIO_START) - AUDIO_SPECIALS.index(AUDIO_PAD)  # 3312
# Non-persistent buffers that some exports carry; they hold no weights.
IGNORED = re.compile(r"\.attn\.masked_bias$|\.rotary_emb\.inv_freq$")


def is_qwen_v1_folder(folder: str | Path) -> bool:
    """Whether `folder/config.json` names the v1 family (model_type "qwen" with an `audio` block)."""
    path = Path(folder) / "config.json"
    try:
        hf = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(hf, dict) and hf.get("model_type") == MODEL_TYPE and isinstance(hf.get("audio"), dict)


# ---- config.json ------------------------------------------------------------------------------------------
def config_from_v1(hf: dict[str, Any]) -> AudioLMConfig:
    """A v1 `config.json` dict (QWenConfig names) -> AudioLMConfig; refuses settings v1 checkpoints never use."""
    if hf.get("model_type") != MODEL_TYPE or not isinstance(hf.get("audio"), dict):
        raise ConfigError(f"config.json has model_type {hf.get('model_type')!r}; a Qwen-Audio v1 folder has 'qwen' "
                          "and an 'audio' block")  # fmt: skip
    a = hf["audio"]
    unsupported = {
        "rotary_pct": hf.get("rotary_pct", 1.0) != 1.0,  # rotary over part of each head
        "no_bias": hf.get("no_bias", True) is not True,  # biases on c_proj and the MLP
        "audio.avg_pool": a.get("avg_pool", True) is not True,
        "audio.add_audio_bos_eos_token": a.get("add_audio_bos_eos_token", True) is not True,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConfigError(f"config.json sets {bad} to values the released Qwen-Audio models do not use (unsupported)")
    d_model, n_heads = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    head_dim = hf.get("kv_channels", d_model // n_heads)
    if head_dim * n_heads != d_model:
        raise ConfigError(f"kv_channels {head_dim} x num_attention_heads {n_heads} != hidden_size {d_model}")
    if a.get("output_dim", d_model) != d_model:
        raise ConfigError(f"audio.output_dim {a.get('output_dim')} differs from hidden_size {d_model}")
    n_state = a.get("n_state", 1280)
    enc = EncoderConfig(
        n_mels=a.get("n_mels", 80), d_model=n_state, n_layers=a.get("n_layer", 32), n_heads=a.get("n_head", 20),
        ffn_dim=4 * n_state, max_positions=a.get("n_ctx", 1500), norm_eps=1e-5,
    )
    dec = DecoderConfig(
        vocab_size=hf.get("vocab_size", 155947), d_model=d_model, n_layers=hf.get("num_hidden_layers", 32),
        n_heads=n_heads, n_kv_heads=n_heads, ffn_dim=hf.get("intermediate_size", 22016) // 2, head_dim=head_dim,
        rope_theta=float(hf.get("rotary_emb_base", 10000)), norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        max_positions=hf.get("max_position_embeddings", 8192), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=True, rope_dynamic_ntk=bool(hf.get("use_dynamic_ntk", True)),
        logn_attention=bool(hf.get("use_logn_attn", True)), trained_length=hf.get("seq_length", 2048),
    )  # fmt: skip
    start = a.get("audio_start_id", 155163)
    return AudioLMConfig(encoder=enc, decoder=dec, audio_token_id=start - PAD_BEFORE_START, audio_start_id=start)


def config_to_v1(cfg: AudioLMConfig) -> dict[str, Any]:
    """The inverse of `config_from_v1`: a v1 `config.json` dict (without `auto_map`: auralm runs no remote code)."""
    e, d = cfg.encoder, cfg.decoder
    if cfg.audio_start_id is None or cfg.audio_token_id != cfg.audio_start_id - PAD_BEFORE_START:
        raise ConfigError("not a v1 config: audio_start_id must be set and the pad id PAD_BEFORE_START below it")
    if d.n_kv_heads != d.n_heads or e.ffn_dim != 4 * e.d_model or not d.qkv_bias:
        raise ConfigError("v1 has plain multi-head attention, q/k/v bias and a 4x encoder MLP; this config does not")
    return {
        "architectures": ["QWenLMHeadModel"], "model_type": MODEL_TYPE,
        "hidden_size": d.d_model, "num_hidden_layers": d.n_layers, "num_attention_heads": d.n_heads,
        "kv_channels": d.head_dim, "intermediate_size": 2 * d.ffn_dim, "vocab_size": d.vocab_size,
        "layer_norm_epsilon": d.norm_eps, "rotary_emb_base": d.rope_theta, "rotary_pct": 1.0,
        "max_position_embeddings": d.max_positions, "seq_length": d.trained_length, "no_bias": True,
        "tie_word_embeddings": d.tie_embeddings, "use_dynamic_ntk": d.rope_dynamic_ntk,
        "use_logn_attn": d.logn_attention, "scale_attn_weights": True, "emb_dropout_prob": 0.0,
        "attn_dropout_prob": 0.0, "bf16": False, "fp16": False, "fp32": False,
        "audio": {
            "n_mels": e.n_mels, "n_ctx": e.max_positions, "n_state": e.d_model, "n_head": e.n_heads,
            "n_layer": e.n_layers, "output_dim": d.d_model, "avg_pool": True, "add_audio_bos_eos_token": True,
            "audio_start_id": cfg.audio_start_id,
        },
    }  # fmt: skip


# ---- key map ------------------------------------------------------------------------------------------------
_LM = "language_model.model."
_L = _LM + "layers.{i}."
_A = "audio_tower.layers.{i}."
_PAIRS = [  # (v1 key or prefix, auralm key or prefix); `{i}` is a number; the c_attn split is handled apart
    ("transformer.wte.", _LM + "embed_tokens."),
    ("transformer.h.{i}.ln_1.", _L + "input_layernorm."),
    ("transformer.h.{i}.ln_2.", _L + "post_attention_layernorm."),
    ("transformer.h.{i}.attn.c_proj.", _L + "self_attn.o_proj."),
    ("transformer.h.{i}.mlp.w1.", _L + "mlp.up_proj."),
    ("transformer.h.{i}.mlp.w2.", _L + "mlp.gate_proj."),
    ("transformer.h.{i}.mlp.c_proj.", _L + "mlp.down_proj."),
    ("transformer.ln_f.", _LM + "norm."),
    ("lm_head.", "language_model.lm_head."),
    ("transformer.audio.conv{i}.", "audio_tower.conv{i}."),
    ("transformer.audio.positional_embedding", "audio_tower.embed_positions.weight"),
    ("transformer.audio.blocks.{i}.attn.query.", _A + "self_attn.q_proj."),
    ("transformer.audio.blocks.{i}.attn.key.", _A + "self_attn.k_proj."),
    ("transformer.audio.blocks.{i}.attn.value.", _A + "self_attn.v_proj."),
    ("transformer.audio.blocks.{i}.attn.out.", _A + "self_attn.out_proj."),
    ("transformer.audio.blocks.{i}.attn_ln.", _A + "self_attn_layer_norm."),
    ("transformer.audio.blocks.{i}.mlp_ln.", _A + "final_layer_norm."),
    ("transformer.audio.blocks.{i}.mlp.0.", _A + "fc1."),
    ("transformer.audio.blocks.{i}.mlp.2.", _A + "fc2."),
    ("transformer.audio.ln_post.", "audio_tower.layer_norm."),
    ("transformer.audio.proj.", "multi_modal_projector.linear."),
    ("transformer.audio.audio_bos_eos_token.", "audio_bos_eos_token."),
]


def _rule(source: str, target: str) -> tuple[re.Pattern, str]:
    """A template pair as (pattern, replacement): a key equal to `source`, or starting with it when it ends in '.'."""
    pattern = "^" + re.escape(source).replace(re.escape("{i}"), r"(\d+)") + ("" if source.endswith(".") else "$")
    return re.compile(pattern), target.replace("{i}", r"\1")


_TO_AURALM = [_rule(v1, ours) for v1, ours in _PAIRS]
_TO_V1 = [_rule(ours, v1) for v1, ours in _PAIRS]
_C_ATTN = re.compile(r"^transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)$")
_QKV = re.compile(r"^language_model\.model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")


def _rename(key: str, table: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, repl in table:
        if pattern.match(key):
            return pattern.sub(repl, key, count=1)
    return None


def v1_to_auralm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """v1 keys -> auralm keys; each `c_attn` becomes q, k, v (its rows split in three). Raises KeyError naming a
    key that is not part of the v1 layout (the buffers in `IGNORED` are dropped)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        if IGNORED.search(key):
            continue
        m = _C_ATTN.match(key)
        if m:
            if t.shape[0] % 3:
                raise ValueError(f"{key} has {t.shape[0]} rows, not a multiple of 3 (q | k | v)")
            for name, part in zip("qkv", t.chunk(3, dim=0)):  # (3D, ...) -> 3 x (D, ...)
                out[f"{_LM}layers.{m[1]}.self_attn.{name}_proj.{m[2]}"] = part
            continue
        name = _rename(key, _TO_AURALM)
        if name is None:
            raise KeyError(f"{key!r} is not a key of the Qwen-Audio v1 layout")
        out[name] = t
    return out


def auralm_to_v1(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `v1_to_auralm`: q, k, v of each layer concatenated back into `c_attn`."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, t in state.items():
        m = _QKV.match(key)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = t
            continue
        name = _rename(key, _TO_V1)
        if name is None:
            raise KeyError(f"{key!r} has no place in the Qwen-Audio v1 layout")
        out[name] = t
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"layer {layer} {kind}: q, k and v are needed to form c_attn, got {sorted(parts)}")
        out[f"transformer.h.{layer}.attn.c_attn.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


# ---- files --------------------------------------------------------------------------------------------------
def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files: safetensors (index, or single) if any, else PyTorch .bin (index, or single)."""
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):  # fmt: skip
        if (folder / index).is_file():
            try:
                names = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError) as err:
                raise ConfigError(f"{folder / index} is not a valid weight index: {err}") from None
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise FileNotFoundError(f"{folder} is missing shard(s) named in {index}: {missing}")
            return [folder / n for n in names]
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(f"{folder} has no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")


def read_weights(path: Path, device: str | torch.device = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) pairs of one weight file; .bin files are read with `weights_only=True` (no code runs)."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield key, f.get_tensor(key)
        return
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=True)
    except RuntimeError:  # files from torch.save's legacy (pre-zip) format cannot be memory-mapped
        state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict):
        raise ConfigError(f"{path} does not hold a state dict (got {type(state).__name__})")
    yield from state.items()


def weight_shapes(folder: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{auralm parameter name: (shape, dtype name)} of a v1 folder's weights, without reading safetensors data."""
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in weight_files(Path(folder)):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                metas = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
                tensors = {k: torch.empty(s.get_shape(), device="meta") for k, s in metas.items()}
                dtypes = {k: s.get_dtype() for k, s in metas.items()}
        else:
            tensors = dict(read_weights(path))
            dtypes = {k: str(t.dtype).removeprefix("torch.") for k, t in tensors.items()}
        for key, t in tensors.items():
            if IGNORED.search(key):
                continue
            names = v1_to_auralm({key: t})
            shapes |= {name: (tuple(part.shape), dtypes[key]) for name, part in names.items()}
    return shapes


def read_config(folder: Path) -> AudioLMConfig:
    path = folder / "config.json"
    try:
        hf = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    return config_from_v1(hf)


def load_qwen_v1(folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
    """Build a `QwenAudioV1` from a v1 folder: every weight of the layout must be there, nothing else may be."""
    folder = Path(folder)
    cfg = read_config(folder)
    with torch.device("meta"):
        model = QwenAudioV1(cfg)
    expected = set(model.state_dict())
    tied = cfg.decoder.tie_embeddings
    if tied:
        expected.discard("language_model.lm_head.weight")
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        for name, t in v1_to_auralm(dict(read_weights(path, device))).items():
            if name not in expected:
                raise ConfigError(f"{path.name} holds a weight for {name!r}, which the config's model does not have")
            state[name] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return assign_weights(model, state, folder)


def save_qwen_v1(model: QwenAudioV1, folder: str | Path, max_shard_bytes: int = 4 * 1024**3) -> None:
    """Write `model` as a v1 folder (config.json + safetensors in the published key layout, sharded with an index
    past `max_shard_bytes`), which `load_qwen_v1` reads back."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.decoder.tie_embeddings:
        state.pop("language_model.lm_head.weight", None)
    state = auralm_to_v1(state)
    write_shards(state, folder, "model", max_shard_bytes)
    hf = config_to_v1(model.cfg)
    hf["torch_dtype"] = str(model.dtype).removeprefix("torch.")
    atomic_write_text(folder / "config.json", json.dumps(hf, indent=2))
