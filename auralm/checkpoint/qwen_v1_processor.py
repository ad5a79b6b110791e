"""The processor of Qwen-Audio (v1) folders: `Processor`'s interface over the v1 tokenizer and prompt rules.

Same call as `auralm.Processor` (text + audio -> input_ids, attention_mask, input_features,
feature_attention_mask; chat templates, encode, decode), with v1's rules (fact sheet §4.4, §4.7):
- a clip is the span `<audio>` + N x `[[[AUDIO:modality]]]` + `</audio>`; in prompts it is written
  `<audio>SOURCE</audio>`, where SOURCE is a local path (read here, the reference's convention) or the pad token
  for a clip passed in `audio` (auralm's `<|audio_bos|><|AUDIO|><|audio_eos|>` placeholder means the same);
- N counts floor(samples / 160) mel frames (the reference; HF-style processors round up), 80 mel bins;
- chat prompts are tokenized as make_context does (role, "\\n" and content apart, only audio tags special in
  content), and conversation text may not hold the ChatML tokens or audio spans (a forged turn or a file read);
- transcription prompts are v1's tags (`TRANSCRIBE_PROMPTS`).
Lives beside the v1 checkpoint code because it needs both the processor and the v1 folder files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auralm.audio import DEFAULT_MAX_SECONDS, HOP_LENGTH, N_FRAMES, SAMPLE_RATE
from auralm.processor import Processor, ProcessorOutput, _read_json, _unicode, batch_arguments
from auralm.text import qwen_v1_chat as v1chat
from auralm.text.qwen_v1_tokenizer import (
    AUDIO_END,
    AUDIO_PAD,
    AUDIO_SPECIALS,
    AUDIO_START,
    IM_START,
    SPECIAL_TOKENS,
    VOCAB_FILE,
    QwenV1Tokenizer,
)

# Special tokens chat text may not hold: ChatML structure, reserved extras, and the audio span tokens. The task
# tags (<|startoftranscript|>, <|en|>, ...) stay allowed: the reference parses them in chat content too.
_FORBIDDEN_IN_CHAT = frozenset(t for t in SPECIAL_TOKENS if t not in AUDIO_SPECIALS) | {AUDIO_START, AUDIO_END, AUDIO_PAD}


class QwenV1Processor(Processor):
    """`Processor` for v1 folders. `tokenizer` is a `QwenV1Tokenizer`; `audio_token_id` is the pad id."""

    def __init__(
        self, tokenizer: QwenV1Tokenizer, n_mels: int = 80, padding_side: str = "left",
        max_audio_seconds: float = DEFAULT_MAX_SECONDS,
    ):
        # Not Processor.__init__: that one reads a `tokenizers` vocabulary; the attributes are the same.
        self.tokenizer = tokenizer
        self.n_mels = n_mels
        self.chat_template = None  # v1 renders with `text.qwen_v1_chat.render_chat`
        self.padding_side = padding_side
        self.max_audio_seconds = max_audio_seconds
        self.audio_token_id = tokenizer.audio_pad_id
        self.audio_bos_id, self.audio_eos_id = tokenizer.audio_start_id, tokenizer.audio_end_id
        self.pad_token_id = tokenizer.eod_id
        # Chat answers end at <|im_end|> (the reference also stops at <|im_start|>); base-model answers at eod.
        self.eos_token_ids = [tokenizer.im_end_id, tokenizer.im_start_id, tokenizer.eod_id]
        self.special_token_ids = frozenset(tokenizer.special_ids[t] for t in _FORBIDDEN_IN_CHAT)
        self.prompt_options = dict(v1chat.TRANSCRIBE_PROMPTS)  # `AudioChat.options` defaults for v1 folders

    # ---- files ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> QwenV1Processor:
        folder = Path(folder)
        if not (folder / VOCAB_FILE).is_file():
            raise FileNotFoundError(f"{folder} has no {VOCAB_FILE} (the Qwen-Audio v1 vocabulary)")
        tokenizer = QwenV1Tokenizer.from_file(folder / VOCAB_FILE)
        audio = _read_json(folder / "config.json").get("audio", {})
        start = audio.get("audio_start_id", tokenizer.audio_start_id)
        if start != tokenizer.audio_start_id:
            raise ValueError(
                f"{folder}: config.json audio_start_id is {start} but {VOCAB_FILE} puts <audio> at "
                f"{tokenizer.audio_start_id}; the vocabulary does not belong to these weights"
            )
        tok_cfg = _read_json(folder / "tokenizer_config.json")
        kwargs: dict[str, Any] = {"n_mels": audio.get("n_mels", 80), "padding_side": tok_cfg.get("padding_side", "left")}
        kwargs.update(overrides)
        return cls(tokenizer, **kwargs)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(folder)
        tok_cfg = {"tokenizer_class": "QWenTokenizer", "padding_side": self.padding_side, "model_max_length": 8192}
        (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))

    # ---- text ----------------------------------------------------------------------------------------------
    def apply_chat_template(
        self, conversation: list[dict[str, Any]], add_generation_prompt: bool = True, tokenize: bool = False,
    ) -> str | list[int]:
        self.check_conversation_text(conversation)
        text = v1chat.render_chat(conversation, add_generation_prompt)
        return self.encode(text) if tokenize else text

    def text_ids(self, text: str) -> list[int]:
        """Message text -> ids with every special token parsed: `check_conversation_text` refuses the ChatML
        tokens and audio spans among them (`_FORBIDDEN_IN_CHAT`)."""
        return self.tokenizer.encode(text)

    def encode(self, text: str) -> list[int]:
        """A prompt -> ids. ChatML prompts (starting with `<|im_start|>`) are tokenized piecewise as make_context
        does: the ChatML tokens, each role and its "\\n" apart, content with only the audio tags special; any
        other prompt with every special token parsed (the reference's default)."""
        text = _unicode(text, "text")
        if not text.startswith(IM_START):
            return self.tokenizer.encode(text)
        ids: list[int] = []
        for kind, piece in v1chat.chat_pieces(text):
            if kind == "special":
                ids.append(self.tokenizer.special_ids[piece])
            else:
                ids += self.tokenizer.encode(piece, allowed_special=AUDIO_SPECIALS)
        return ids

    # ---- audio ---------------------------------------------------------------------------------------------
    def valid_frames(self, windows: list[np.ndarray], lengths: torch.Tensor) -> torch.Tensor:
        """v1's frame count: floor(samples / 160) valid frames per window (Nw,), where HF-style processors round up."""
        return torch.tensor([min(len(w) // HOP_LENGTH, N_FRAMES) for w in windows])

    # ---- everything ------------------------------------------------------------------------------------
    def __call__(
        self, text: str | list[str], audio: Any = None, sampling_rate: int = SAMPLE_RATE,
        return_tensors: str = "pt", padding_side: str | None = None, pad_to_30s: bool = False, **_: Any,
    ) -> ProcessorOutput:
        """Tokenize a batch of prompts and attach their audio (see `Processor.__call__`).

        Each `<audio>SOURCE</audio>` span (or auralm placeholder) is one clip: a span holding the pad token takes
        the next clip of `audio`, any other SOURCE is read as a local file path.
        """
        texts, given = batch_arguments(text, audio, return_tensors)
        sources = [s for t in texts for s in v1chat.audio_sources(t)]
        n_given = sum(s == AUDIO_PAD for s in sources)
        if n_given != len(given):
            raise ValueError(
                f"the text holds {n_given} audio placeholder(s) ({v1chat.AUDIO_SPAN} or <|AUDIO|>) but {len(given)} "
                "audio(s) were given; give one audio per placeholder, or write <audio>path</audio>"
            )
        clips = iter(given)
        audios = [next(clips) if s == AUDIO_PAD else _local_path(s) for s in sources]
        ids = [self.encode(v1chat.pad_spans(t)) for t in texts]
        return self.model_inputs(ids, audios, sampling_rate, padding_side, pad_to_30s)

    # ---- conversations with <audio>path</audio> in their text (the library's chat, not the server) ----------
    @staticmethod
    def audio_tags_to_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Messages whose text holds `<audio>path</audio>` spans, with each span made an audio item in place (so
        the chat template numbers it and the text check passes)."""
        out = []
        for m in messages:
            content = m.get("content")
            items = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(items, list):
                out.append(m)
                continue
            new: list[dict[str, Any]] = []
            for item in items:
                is_text = isinstance(item, dict) and item.get("type", "text") == "text" and isinstance(item.get("text"), str)
                new += v1chat.split_audio_tags(item["text"]) if is_text else [item]
            out.append({**m, "content": new})
        return out


def _local_path(source: str) -> str:
    if source.startswith(("http://", "https://")):
        raise ValueError(f"<audio>{source}</audio>: auralm does not fetch audio from the network; download it first")
    path = source.removeprefix("file://")
    if not Path(path).is_file():
        raise FileNotFoundError(f"<audio>{source}</audio>: no such audio file")
    return path

