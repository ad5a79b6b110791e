"""Tiny random Qwen-Audio (v1) folders in the published layout, written without auralm's converter.

The keys, shapes and config names below are transcribed from the v1 layout (fact sheet §4.1, §4.5, §4.6), so a
test that loads these folders checks auralm's key map against the layout rather than against itself. The
vocabulary is synthetic (no `qwen.tiktoken` ships in an installable package): every byte, then the prefixes of a
few words, optionally padded to the released size with tokens no text produces.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

WORDS = ["You", "are", "a", "helpful", "assistant.", "What", "is", "this", "sound?", "Describe", "the", "audio.", "Audio", "user", "system", "assistant", "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "hello", "world", "transcribe", "speech", "你好", "世界"]

N_SPECIALS = 3522  # 3 ChatML + 205 extras + 3314 audio tokens


def synthetic_ranks(size: int | None = None) -> dict[bytes, int]:
    """Every single byte (ranks 0-255), then each word's prefixes (so BPE can build them merge by merge);
    `size` pads with 4-byte tokens of an unused lead byte (0xff never starts UTF-8) up to that many ranks."""
    ranks = {bytes([b]): b for b in range(256)}
    for word in WORDS:
        for piece in (word.encode(), b" " + word.encode()):
            for end in range(2, len(piece) + 1):
                ranks.setdefault(piece[:end], len(ranks))
    if size is not None:
        i = 0
        while len(ranks) < size:
            ranks.setdefault(b"\xff" + i.to_bytes(3, "big"), len(ranks))
            i += 1
    return ranks


def write_tiktoken(ranks: dict[bytes, int], path: Path) -> None:
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda x: x[1])))


def v1_config(vocab_size: int, audio_start_id: int, seq_length: int = 48) -> dict:
    """A QWenConfig-style config.json: tiny sizes, the released flags (dynamic NTK and log-n on). `seq_length`
    is small so that short test prompts already exceed it and both long-context rules engage."""
    return {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig", "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
        "model_type": "qwen", "hidden_size": 64, "num_attention_heads": 4, "kv_channels": 16, "num_hidden_layers": 2,
        "intermediate_size": 256, "vocab_size": vocab_size, "layer_norm_epsilon": 1e-5, "rotary_emb_base": 10000,
        "rotary_pct": 1.0, "max_position_embeddings": 8192, "seq_length": seq_length, "no_bias": True,
        "tie_word_embeddings": False, "use_dynamic_ntk": True, "use_logn_attn": True, "scale_attn_weights": True,
        "emb_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "bf16": False, "fp16": False, "fp32": False,
        "tokenizer_type": "QWenTokenizer", "transformers_version": "4.31.0", "use_cache": True,
        "audio": {"n_mels": 80, "n_ctx": 1500, "n_state": 32, "n_head": 4, "n_layer": 2, "output_dim": 64,
                  "avg_pool": True, "add_audio_bos_eos_token": True, "audio_start_id": audio_start_id},
    }  # fmt: skip


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's position table: [sin | cos] of t * exp(-ln(10000) / (C/2 - 1) * k)."""
    inv = torch.exp(-math.log(10000) / (channels // 2 - 1) * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


def v1_layout(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every key of the published v1 layout with its shape, for `cfg` (QWenConfig names)."""
    D, V, F = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"] // 2
    P = cfg["kv_channels"] * cfg["num_attention_heads"]
    a = cfg["audio"]
    S, M = a["n_state"], a["n_mels"]
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (V, D), "transformer.ln_f.weight": (D,),
                                          "lm_head.weight": (V, D)}  # fmt: skip
    for i in range(cfg["num_hidden_layers"]):
        h = f"transformer.h.{i}."
        shapes |= {
            h + "ln_1.weight": (D,), h + "attn.c_attn.weight": (3 * P, D), h + "attn.c_attn.bias": (3 * P,),
            h + "attn.c_proj.weight": (D, P), h + "ln_2.weight": (D,), h + "mlp.w1.weight": (F, D),
            h + "mlp.w2.weight": (F, D), h + "mlp.c_proj.weight": (D, F),
        }
    au = "transformer.audio."
    shapes |= {
        au + "conv1.weight": (S, M, 3), au + "conv1.bias": (S,), au + "conv2.weight": (S, S, 3), au + "conv2.bias": (S,),
        au + "positional_embedding": (a["n_ctx"], S), au + "ln_post.weight": (S,), au + "ln_post.bias": (S,),
        au + "proj.weight": (a["output_dim"], S), au + "proj.bias": (a["output_dim"],),
        au + "audio_bos_eos_token.weight": (2, a["output_dim"]),
    }
    for i in range(a["n_layer"]):
        b = f"{au}blocks.{i}."
        shapes |= {
            b + "attn.query.weight": (S, S), b + "attn.query.bias": (S,), b + "attn.key.weight": (S, S),
            b + "attn.value.weight": (S, S), b + "attn.value.bias": (S,), b + "attn.out.weight": (S, S),
            b + "attn.out.bias": (S,), b + "attn_ln.weight": (S,), b + "attn_ln.bias": (S,),
            b + "mlp.0.weight": (4 * S, S), b + "mlp.0.bias": (4 * S,), b + "mlp.2.weight": (S, 4 * S),
            b + "mlp.2.bias": (S,), b + "mlp_ln.weight": (S,), b + "mlp_ln.bias": (S,),
        }
    return shapes


def v1_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for every key of `v1_layout(cfg)` (norm weights near 1, the sinusoid position table)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in v1_layout(cfg).items():
        if key.endswith("positional_embedding"):
            state[key] = sinusoids(*shape)
        elif any(n in key for n in ("ln_1", "ln_2", "ln_f", "_ln.", "ln_post")) and key.endswith("weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


def build_v1_folder(folder: Path, seed: int = 0, weights: str = "sharded", seq_length: int = 48) -> Path:
    """A tiny v1 folder: config.json, generation_config.json, qwen.tiktoken and weights, the published way.

    weights: "sharded" (two safetensors shards + index), "single" (model.safetensors) or "bin"
    (pytorch_model.bin, a plain torch.save of the state dict)."""
    folder.mkdir(parents=True, exist_ok=True)
    ranks = synthetic_ranks()
    write_tiktoken(ranks, folder / "qwen.tiktoken")
    n_vocab = len(ranks) + N_SPECIALS
    audio_start_id = n_vocab - 2  # <audio> is the second-to-last special token
    cfg = v1_config(vocab_size=n_vocab + 14, audio_start_id=audio_start_id, seq_length=seq_length)  # padded rows
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    eod = len(ranks)
    (folder / "generation_config.json").write_text(json.dumps(
        {"chat_format": "chatml", "eos_token_id": eod, "pad_token_id": eod, "max_window_size": 6144,
         "max_new_tokens": 512, "do_sample": True, "top_k": 0, "top_p": 0.5}
    ))  # fmt: skip
    state = v1_state_dict(cfg, seed)
    if weights == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    elif weights == "single":
        save_file(state, str(folder / "model.safetensors"))
    else:
        keys = sorted(state)
        shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
                  "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}  # fmt: skip
        for name, part in shards.items():
            save_file({k: state[k] for k in part}, str(folder / name))
        index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def tone(seconds: float, freq: float = 440.0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
