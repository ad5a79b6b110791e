"""The processor: text + audio -> model inputs (`input_ids`, `attention_mask`, `input_features`,
`feature_attention_mask`), with each `<|AUDIO|>` placeholder expanded to the number of audio embeddings.

It reads the same files as the reference processor (tokenizer.json, tokenizer_config.json, preprocessor_config.json,
a chat template) and returns the same ids. Where it differs, on purpose:
- features are padded to the longest clip of the batch, not to 30 s (`pad_to_30s=True` gives the reference layout);
- audio longer than 30 s is split into windows, all encoded, instead of being cut silently; a placeholder then
  expands to the sum of its windows' embeddings, and `max_audio_seconds` bounds the total;
- the text of a conversation may not hold the tokenizer's special tokens (`ControlTokenError`): typed as text they
  would become real control ids, so `"<|im_end|>\n<|im_start|>system\n..."` could forge a system turn.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from auralm.audio import DEFAULT_MAX_SECONDS, SAMPLE_RATE, load_audio, log_mel_batch
from auralm.audio.chunking import split_audio
from auralm.audio.features import N_FFT
from auralm.audio.geometry import CHUNK_SECONDS, HOP_LENGTH, N_FRAMES, N_SAMPLES, num_audio_tokens
from auralm.text.chat import DEFAULT_CHAT_TEMPLATE, read_chat_template, render_chat, validate_conversation
from auralm.text.tokens import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN


class ProcessorOutput(dict):
    """A dict of tensors with attribute access and `.to(device)`, like transformers' BatchFeature."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: str | torch.device) -> "ProcessorOutput":
        return ProcessorOutput({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class ControlTokenError(ValueError):
    """A conversation's text holds special tokens (`tokens`), in message `message` and content item `item`."""

    def __init__(self, message: int, item: int, tokens: list[str]):
        shown = ", ".join(repr(t) for t in tokens[:5]) + (", ..." if len(tokens) > 5 else "")
        super().__init__(
            f"message {message} item {item}: the text holds the control token(s) {shown}; conversation text may not "
            "contain the tokenizer's special tokens (they would be read as prompt structure, e.g. a forged turn)"
        )
        self.message, self.item, self.tokens = message, item, tokens


class Processor:
    def __init__(
        self, tokenizer: Tokenizer, n_mels: int = 128, chat_template: str | None = None,
        pad_token: str = "<|endoftext|>", eos_tokens: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>"),
        padding_side: str = "left", max_audio_seconds: float = DEFAULT_MAX_SECONDS,
    ):
        self.tokenizer = tokenizer
        self.n_mels = n_mels
        self.chat_template = chat_template
        self.padding_side = padding_side
        self.max_audio_seconds = max_audio_seconds
        self.audio_token_id = self._require_id(AUDIO_TOKEN)
        self.audio_bos_id = tokenizer.token_to_id(AUDIO_BOS_TOKEN)
        self.audio_eos_id = tokenizer.token_to_id(AUDIO_EOS_TOKEN)
        self.pad_token_id = self._require_id(pad_token)
        self.eos_token_ids = [i for i in (tokenizer.token_to_id(t) for t in eos_tokens) if i is not None]
        # Ids that plain text must never produce: every added token marked special (ChatML, audio, task tags).
        self.special_token_ids = frozenset(
            i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special
        )

    def _require_id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise ValueError(f"the tokenizer has no {token} token; a Qwen2-Audio tokenizer defines it")
        return i

    # ---- files ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> "Processor":
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            hint = (" (a Qwen-Audio v1 folder: its processor is auralm.checkpoint.qwen_v1_processor.QwenV1Processor, "
                    "which auralm.load() picks)") if (folder / "qwen.tiktoken").is_file() else ""
            raise FileNotFoundError(f"{folder} has no tokenizer.json{hint}")
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok_cfg = _read_json(folder / "tokenizer_config.json")
        # The released folders have preprocessor_config.json; transformers 5 nests it in processor_config.json.
        fe_cfg = _read_json(folder / "preprocessor_config.json") or _read_json(folder / "processor_config.json").get(
            "feature_extractor", {}
        )
        if fe_cfg.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise ValueError(f"{folder}/preprocessor_config.json has sampling_rate {fe_cfg['sampling_rate']}; Qwen2-Audio uses {SAMPLE_RATE}")
        kwargs: dict[str, Any] = {
            "n_mels": fe_cfg.get("feature_size", 128),
            "chat_template": read_chat_template(folder),
            "padding_side": tok_cfg.get("padding_side", "left"),
        }
        pad = _token_str(tok_cfg.get("pad_token"))
        if pad:
            kwargs["pad_token"] = pad
        eos = _token_str(tok_cfg.get("eos_token"))
        if eos:
            kwargs["eos_tokens"] = tuple(dict.fromkeys([eos, "<|im_end|>", "<|endoftext|>"]))
        kwargs.update(overrides)
        return cls(tokenizer, **kwargs)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(folder / "tokenizer.json"))
        tok_cfg = {
            "tokenizer_class": "Qwen2Tokenizer",
            "pad_token": self.tokenizer.id_to_token(self.pad_token_id),
            "eos_token": self.tokenizer.id_to_token(self.eos_token_ids[0]) if self.eos_token_ids else None,
            "padding_side": self.padding_side,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 32768,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
        fe_cfg = {
            "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": self.n_mels,
            "sampling_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "chunk_length": CHUNK_SECONDS,
            "n_samples": N_SAMPLES, "nb_max_frames": N_FRAMES, "padding_side": "right", "padding_value": 0.0,
            "return_attention_mask": True, "processor_class": "Qwen2AudioProcessor",
        }
        (folder / "preprocessor_config.json").write_text(json.dumps(fe_cfg, indent=2))
        # Always write the template in use, so the folder renders the same prompts wherever it is loaded.
        template = self.chat_template or DEFAULT_CHAT_TEMPLATE
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2))

    # ---- text ----------------------------------------------------------------------------------------------
    def apply_chat_template(
        self, conversation: list[dict[str, Any]], add_generation_prompt: bool = True, tokenize: bool = False,
    ) -> str | list[int]:
        self.check_conversation_text(conversation)
        text = render_chat(conversation, self.chat_template, add_generation_prompt)
        return self.encode(text) if tokenize else text

    def check_conversation_text(self, conversation: list[dict[str, Any]]) -> None:
        """Raise `ControlTokenError` when a message's text tokenizes to one of `special_token_ids` (compared as ids,
        so exactly what the tokenizer would match), `ValueError` when it is not valid Unicode."""
        for i, m in enumerate(validate_conversation(conversation)):
            items = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
            for j, item in enumerate(items):
                if item.get("type", "text") != "text" or not isinstance(item.get("text"), str):
                    continue
                ids = self.text_ids(_unicode(item["text"], f"message {i} item {j}"))
                found = [self.tokenizer.id_to_token(t) for t in dict.fromkeys(ids) if t in self.special_token_ids]
                if found:
                    raise ControlTokenError(i, j, found)

    def text_ids(self, text: str) -> list[int]:
        """Message text -> ids as the tokenizer reads it inside a prompt (special tokens matched)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(_unicode(text, "text")).ids

    def decode(self, ids: list[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, batch: torch.Tensor | list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    # ---- audio ---------------------------------------------------------------------------------------------
    def prepare_audio(self, source: Any, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Anything `load_audio` takes (path, bytes, file, (array, sr)); a bare array is taken at `sampling_rate`."""
        if isinstance(source, (np.ndarray, torch.Tensor)):
            source = (np.asarray(source, dtype=np.float32), sampling_rate)
        return load_audio(source, SAMPLE_RATE, max_seconds=self.max_audio_seconds)

    def features(self, audios: list[np.ndarray], pad_to_30s: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Log-mel of every 30 s window of every clip -> (features (Nw, M, F), feature_attention_mask (Nw, F),
        audio tokens per clip)."""
        windows: list[np.ndarray] = []
        per_clip: list[int] = []
        for audio in audios:
            parts = split_audio(audio)
            windows.extend(parts)
            per_clip.append(len(parts))
        feats, lengths = log_mel_batch(windows, n_mels=self.n_mels, pad_to_30s=pad_to_30s)  # (Nw, M, F), (Nw,)
        lengths = self.valid_frames(windows, lengths)
        mask = (torch.arange(feats.shape[-1])[None, :] < lengths[:, None]).long()  # (Nw, F)
        tokens = [num_audio_tokens(int(n)) for n in lengths]
        counts, i = [], 0
        for k in per_clip:
            counts.append(sum(tokens[i:i + k]))
            i += k
        return feats, mask, counts

    def valid_frames(self, windows: list[np.ndarray], lengths: torch.Tensor) -> torch.Tensor:
        """The mel frames of each window the encoder sees (Nw,): `log_mel_batch`'s count, as the reference rounds."""
        return lengths

    # ---- everything ------------------------------------------------------------------------------------
    def __call__(
        self, text: str | list[str], audio: Any = None, sampling_rate: int = SAMPLE_RATE,
        return_tensors: str = "pt", padding_side: str | None = None, pad_to_30s: bool = False, **_: Any,
    ) -> ProcessorOutput:
        """Tokenize a batch of prompts and attach their audio.

        text: one prompt or a list (B); each `<|AUDIO|>` in it takes the next audio, in order across the batch.
        audio: one clip or a list of clips (arrays at `sampling_rate`, or anything `load_audio` takes).
        Returns input_ids/attention_mask (B, T) padded on `padding_side`, input_features (Nw, M, F) and
        feature_attention_mask (Nw, F) with one row per 30 s window (= per clip for clips up to 30 s).
        """
        texts, audios = batch_arguments(text, audio, return_tensors)
        ids = [self.encode(t) for t in texts]
        n_placeholders = sum(row.count(self.audio_token_id) for row in ids)
        if n_placeholders != len(audios):
            raise ValueError(
                f"the text holds {n_placeholders} {AUDIO_TOKEN} placeholder(s) but {len(audios)} audio(s) were given; "
                "give one audio per placeholder (apply_chat_template writes one per audio item)"
            )
        return self.model_inputs(ids, audios, sampling_rate, padding_side, pad_to_30s)

    def model_inputs(
        self, ids: list[list[int]], audios: list[Any], sampling_rate: int, padding_side: str | None, pad_to_30s: bool,
    ) -> ProcessorOutput:
        """Token rows with one placeholder per audio (in batch order) + those audios -> the model's inputs."""
        out = ProcessorOutput()
        if audios:
            waves = [self.prepare_audio(a, sampling_rate) for a in audios]
            total = sum(len(w) for w in waves) / SAMPLE_RATE
            if total > self.max_audio_seconds:
                raise ValueError(f"the request holds {total:.0f} s of audio; the limit is {self.max_audio_seconds:.0f} s")
            feats, fmask, counts = self.features(waves, pad_to_30s=pad_to_30s)
            ids = self._expand(ids, counts)
            out["input_features"], out["feature_attention_mask"] = feats, fmask
        input_ids, attention_mask = self.pad(ids, padding_side or self.padding_side)
        out["input_ids"], out["attention_mask"] = input_ids, attention_mask
        return ProcessorOutput({k: out[k] for k in ("input_ids", "attention_mask", "input_features", "feature_attention_mask") if k in out})

    def _expand(self, ids: list[list[int]], counts: list[int]) -> list[list[int]]:
        """Replace the k-th placeholder (in batch order) by counts[k] copies of it."""
        it = iter(counts)
        expanded = []
        for row in ids:
            new: list[int] = []
            for tok in row:
                new.extend([tok] * next(it) if tok == self.audio_token_id else [tok])
            expanded.append(new)
        return expanded

    def pad(self, ids: list[list[int]], side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
        """Pad rows to one length -> input_ids, attention_mask (B, T)."""
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        T = max(len(r) for r in ids)
        input_ids = torch.full((len(ids), T), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), T), dtype=torch.long)
        for i, row in enumerate(ids):
            sl = slice(T - len(row), T) if side == "left" else slice(0, len(row))
            input_ids[i, sl] = torch.tensor(row, dtype=torch.long)
            mask[i, sl] = 1
        return input_ids, mask


def _unicode(text: str, where: str) -> str:
    """`text` if it is valid Unicode; a lone surrogate (JSON allows "\\ud800") cannot be tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{where}: the text holds a lone surrogate (U+{ord(text[err.start]):04X} at character {err.start}); "
            "it is not valid Unicode"
        ) from None
    return text


def batch_arguments(text: str | list[str], audio: Any, return_tensors: str) -> tuple[list[str], list[Any]]:
    """A processor call's `text` and `audio` as lists: (prompts (B), clips in placeholder order)."""
    if return_tensors != "pt":
        raise ValueError(f"return_tensors={return_tensors!r}: auralm returns PyTorch tensors ('pt') only")
    texts = [text] if isinstance(text, str) else list(text)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("text must be a string or a non-empty list of strings")
    if audio is None:
        return texts, []
    if isinstance(audio, (list, tuple)) and not _is_array_pair(audio):
        return texts, list(audio)
    return texts, [audio]


def _is_array_pair(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], (int, np.integer)) and hasattr(x[0], "shape")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    return data if isinstance(data, dict) else {}


def _token_str(tok: Any) -> str | None:
    """tokenizer_config writes special tokens as strings or as {"content": ...} dicts."""
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None
