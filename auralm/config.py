"""Typed model configs, presets, and conversion from/to the Hugging Face Qwen2-Audio `config.json`.

The field names are auralm's own (short and uniform); `from_hf` / `to_hf` are the only place that knows the
Hugging Face names. Every field has a one-line doc so a config file reads as documentation.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# config.json key of `AudioLMConfig.projector_ctc_rows` (auralm's own: transformers ignores it, see the README).
CTC_ROWS_KEY = "auralm_projector_ctc_rows"
# config.json key of `AudioLMConfig.projector_ctc_drop_blank` (auralm's own, as above).
CTC_DROP_BLANK_KEY = "auralm_projector_ctc_drop_blank"

class ConfigError(ValueError):
    """A config file or dict is malformed: unknown key, wrong type or an impossible value."""


@dataclass
class EncoderConfig:
    """The Whisper-style audio encoder (conv stem, Transformer, stride-2 average pool, final LayerNorm)."""

    n_mels: int = 128  # log-mel bins of the input features (128 for Whisper-large-v3 / Qwen2-Audio, 80 before)
    d_model: int = 1280  # width of the encoder
    n_layers: int = 32  # number of pre-LN Transformer blocks
    n_heads: int = 20  # attention heads (head dim = d_model / n_heads)
    ffn_dim: int = 5120  # hidden width of each block's MLP
    max_positions: int = 1500  # rows of the learned position table = max frames after the stride-2 conv (30 s)
    norm_eps: float = 1e-5  # LayerNorm epsilon

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"encoder d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    @property
    def max_mel_frames(self) -> int:
        """Mel frames one encoder window takes: the position table times the conv stride (3000 = 30 s)."""
        return self.max_positions * 2


@dataclass
class DecoderConfig:
    """The Qwen2 decoder LLM (RMSNorm, RoPE, grouped-query attention, SwiGLU, q/k/v bias)."""

    vocab_size: int = 156032  # rows of the embedding and the output layer
    d_model: int = 4096  # hidden size
    n_layers: int = 32  # number of decoder blocks
    n_heads: int = 32  # query heads
    n_kv_heads: int = 32  # key/value heads (= n_heads: plain multi-head attention; fewer: grouped-query)
    ffn_dim: int = 11008  # SwiGLU hidden width
    head_dim: int | None = None  # per-head width; None means d_model // n_heads
    rope_theta: float = 10000.0  # RoPE base
    norm_eps: float = 1e-5  # RMSNorm epsilon
    max_positions: int = 8192  # longest sequence the model was trained for (informational; RoPE has no table)
    tie_embeddings: bool = False  # the output layer reuses the input embedding matrix
    qkv_bias: bool = True  # q/k/v projections carry a bias (Qwen2); o_proj never does
    # Qwen (v1) long-context rules, both off for Qwen2 and both inference-only (off in training mode):
    rope_dynamic_ntk: bool = False  # per row, RoPE base x alpha^(Dh/(Dh-2)) from its prompt length at prefill
    logn_attention: bool = False  # queries at position p >= trained_length scaled by log(p+1) / log(trained_length)
    trained_length: int = 2048  # context the two rules above measure from (Qwen v1 `seq_length`)

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"decoder n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ConfigError(f"decoder d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
            self.head_dim = self.d_model // self.n_heads


@dataclass
class AudioLMConfig:
    """Encoder + projector + decoder, and the id of the `<|AUDIO|>` placeholder token."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    audio_token_id: int = 151646  # id of `<|AUDIO|>`; each one is replaced by one projected audio frame
    # auralm's option, not Qwen2-Audio's (`model.audiolm.Projector`): the LLM token rows a CTC-head projector scores
    # each frame against; the frame becomes its posterior's mix of those rows. Empty = the released linear projector.
    projector_ctc_rows: list[int] = field(default_factory=list)
    # With a CTC-head projector: frames whose most likely class is the blank are left out of attention (CTC
    # compression: the LLM reads only the token-bearing frames). Their `<|AUDIO|>` positions stay in the sequence.
    projector_ctc_drop_blank: bool = False
    # Qwen-Audio (v1): id of `<audio>` (`</audio>` is the next id); both take their embeddings from the
    # encoder's own `audio_bos_eos_token` table instead of the LLM's. None for Qwen2-Audio.
    audio_start_id: int | None = None

    # ---- dict / JSON round trip of auralm's own layout -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AudioLMConfig":
        d = dict(d)
        enc = _build(EncoderConfig, d.pop("encoder", {}), "encoder")
        dec = _build(DecoderConfig, d.pop("decoder", {}), "decoder")
        return _build(cls, d, "config", encoder=enc, decoder=dec)

    # ---- Hugging Face `config.json` ------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> "AudioLMConfig":
        """Read a Hugging Face Qwen2-Audio config dict (transformers 4.x or 5.x spelling)."""
        if hf.get("model_type") not in (None, "qwen2_audio"):
            raise ConfigError(f"config.json has model_type {hf.get('model_type')!r}; auralm reads 'qwen2_audio'")
        a = hf.get("audio_config") or {}
        t = hf.get("text_config") or {}
        enc_defaults = EncoderConfig()
        enc = EncoderConfig(
            n_mels=a.get("num_mel_bins", enc_defaults.n_mels),
            d_model=a.get("d_model", enc_defaults.d_model),
            n_layers=a.get("encoder_layers", enc_defaults.n_layers),
            n_heads=a.get("encoder_attention_heads", enc_defaults.n_heads),
            ffn_dim=a.get("encoder_ffn_dim", enc_defaults.ffn_dim),
            max_positions=a.get("max_source_positions", enc_defaults.max_positions),
        )
        if a.get("scale_embedding"):
            raise ConfigError("audio_config.scale_embedding=true is not used by Qwen2-Audio and not supported")
        if a.get("activation_function", "gelu") != "gelu":
            raise ConfigError(f"audio_config.activation_function {a['activation_function']!r}: only 'gelu'")
        # Qwen2Config defaults apply to the keys the released config leaves out (fact sheet 1.1).
        rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
            raise ConfigError(f"text_config rope scaling {rope!r} is not supported (only plain RoPE)")
        theta = rope.get("rope_theta", t.get("rope_theta", 10000.0))
        n_heads = t.get("num_attention_heads", 32)
        d_model = t.get("hidden_size", 4096)
        dec = DecoderConfig(
            vocab_size=t.get("vocab_size", hf.get("vocab_size", 151936)),
            d_model=d_model,
            n_layers=t.get("num_hidden_layers", 32),
            n_heads=n_heads,
            n_kv_heads=t.get("num_key_value_heads") or n_heads,
            ffn_dim=t.get("intermediate_size", 22016),
            head_dim=t.get("head_dim") or d_model // n_heads,
            rope_theta=float(theta),
            norm_eps=t.get("rms_norm_eps", 1e-6),
            max_positions=t.get("max_position_embeddings", 32768),
            tie_embeddings=bool(t.get("tie_word_embeddings", False)),
        )
        if t.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"text_config.hidden_act {t['hidden_act']!r}: only 'silu'")
        audio_token = hf.get("audio_token_index", hf.get("audio_token_id", 151646))
        return cls(encoder=enc, decoder=dec, audio_token_id=audio_token,
                   projector_ctc_rows=_int_list(hf.get(CTC_ROWS_KEY) or [], CTC_ROWS_KEY),
                   projector_ctc_drop_blank=_bool(hf.get(CTC_DROP_BLANK_KEY, False), CTC_DROP_BLANK_KEY))

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face `config.json` dict that transformers (4.x and 5.x) and vLLM load."""
        e, d = self.encoder, self.decoder
        # auralm's own key, written only when the option is on: a released-layout config stays byte-identical.
        extra = {CTC_ROWS_KEY: list(self.projector_ctc_rows)} if self.projector_ctc_rows else {}
        extra.update({CTC_DROP_BLANK_KEY: True} if self.projector_ctc_drop_blank else {})
        return {
            **extra,
            "architectures": ["Qwen2AudioForConditionalGeneration"],
            "model_type": "qwen2_audio",
            "audio_token_index": self.audio_token_id,
            "ignore_index": -100,
            "audio_config": {
                "model_type": "qwen2_audio_encoder",
                "num_mel_bins": e.n_mels,
                "d_model": e.d_model,
                "encoder_layers": e.n_layers,
                "encoder_attention_heads": e.n_heads,
                "encoder_ffn_dim": e.ffn_dim,
                "max_source_positions": e.max_positions,
                "activation_function": "gelu",
                "scale_embedding": False,
                "dropout": 0.0,
                "attention_dropout": 0.0,
                "activation_dropout": 0.0,
                "encoder_layerdrop": 0.0,
            },
            "text_config": {
                "model_type": "qwen2",
                "vocab_size": d.vocab_size,
                "hidden_size": d.d_model,
                "num_hidden_layers": d.n_layers,
                "num_attention_heads": d.n_heads,
                "num_key_value_heads": d.n_kv_heads,
                "head_dim": d.head_dim,
                "intermediate_size": d.ffn_dim,
                "hidden_act": "silu",
                "rms_norm_eps": d.norm_eps,
                "rope_theta": d.rope_theta,
                "rope_parameters": {"rope_type": "default", "rope_theta": d.rope_theta},
                "max_position_embeddings": d.max_positions,
                "tie_word_embeddings": d.tie_embeddings,
                "use_sliding_window": False,
                "sliding_window": None,
                "attention_dropout": 0.0,
            },
        }

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "AudioLMConfig":
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise ConfigError(f"{folder} has no config.json: is it a Qwen2-Audio model folder?")
        try:
            hf = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from None
        return cls.from_hf(hf)


def _int_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise ConfigError(f"{where}: expected a list of token ids (non-negative integers)")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _build(cls, d: dict[str, Any], where: str, **extra: Any):
    """Construct a dataclass from a dict, naming unknown keys and wrong types instead of a TypeError."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}")
    return cls(**d, **extra)


# ---- presets -----------------------------------------------------------------------------------------
PRESETS: dict[str, AudioLMConfig] = {
    # The released Qwen2-Audio-7B / -Instruct shape (fact sheet 1.1).
    "qwen2-audio-7b": AudioLMConfig(
        encoder=EncoderConfig(),
        decoder=DecoderConfig(
            vocab_size=156032, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=11008,
            rope_theta=10000.0, norm_eps=1e-5, max_positions=8192,
        ),
        audio_token_id=151646,
    ),
    # A few-MB model for unit tests: grouped-query attention, 80 mels.
    "tiny": AudioLMConfig(
        encoder=EncoderConfig(n_mels=80, d_model=64, n_layers=2, n_heads=4, ffn_dim=128, max_positions=1500),
        decoder=DecoderConfig(
            vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
            rope_theta=10000.0, norm_eps=1e-6, max_positions=4096,
        ),
        audio_token_id=500,
    ),
}


def preset(name: str) -> AudioLMConfig:
    """A deep copy of a named preset, so callers can change it freely."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return AudioLMConfig.from_dict(PRESETS[name].to_dict())
