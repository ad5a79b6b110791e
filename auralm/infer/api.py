"""The high-level API: `auralm.load(dir)` -> an `AudioChat` with `chat()`, `stream()` and `transcribe()`.

Messages use the transformers conversation shape; an audio item is `{"type": "audio", "audio": x}` where x is
anything `load_audio` takes (path, bytes, file-like, `(array, sampling_rate)`), or `{"type": "audio", "audio_url":
u}` with u a local path, `file://` path or `data:` URL (this library never fetches from the network).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auralm.audio import SAMPLE_RATE, AudioError
from auralm.checkpoint.hf import load_audiolm
from auralm.infer.engine import DecodeBatch, DecodeStep
from auralm.infer.generate import TextDeltas
from auralm.infer.registry import default_model_dir
from auralm.infer.sampling import GenerationConfig
from auralm.infer.transcribe import Transcript, transcribe_windows
from auralm.model.audiolm import AudioLM
from auralm.processor import Processor
from auralm.text.formats import parse_srwt

AUDIO_SPAN = "<|audio_bos|><|AUDIO|><|audio_eos|>"
# Qwen2-Audio's pre-training prompts (fact sheet 3.2, auralm.text.formats); a folder's auralm.json may name others.
DEFAULT_ASR_PROMPT = AUDIO_SPAN + "Detect the language and recognize the speech: <|{language}|>"
DEFAULT_ASR_PROMPT_NO_LANGUAGE = AUDIO_SPAN + "Detect the language and recognize the speech: "
DEFAULT_TIMESTAMPS_PROMPT = AUDIO_SPAN + "Recognize the speech with word-level timestamps:"


def audio_source(item: dict[str, Any]) -> Any:
    """The loadable source of an audio item: `audio` as given, or a local / file:// / data: `audio_url`."""
    if "audio" in item:
        return item["audio"]
    url = item["audio_url"]
    if isinstance(url, dict):  # OpenAI style {"url": ...}
        url = url.get("url")
    if not isinstance(url, str):
        raise AudioError(f"audio_url must be a string, got {type(url).__name__}")
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise AudioError("data: audio URLs must be base64-encoded")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise AudioError("the data: audio URL holds invalid base64") from None
    if url.startswith("file://"):
        return url[len("file://"):]
    if url.startswith(("http://", "https://")):
        raise AudioError("auralm does not fetch audio from the network; download it and pass the file or bytes")
    return url


def transcript_budget(seconds: float, timestamps: bool = False) -> int:
    """The most tokens a transcript of `seconds` of audio may take when the caller sets no limit: 12 per second
    (30 with word times: two time tokens per word) + 16. Fast speech runs at ~4 words or ~6-8 tokens per second
    (Whisper caps a 30 s window at 224 tokens), so real transcripts fit, while a model stuck repeating itself stops
    near the clip's length instead of after the chat default of 256 tokens."""
    return 16 + math.ceil(seconds * (30 if timestamps else 12))


class AudioChat:
    """A loaded model + processor with the defaults of how to talk to it."""

    def __init__(
        self, model: AudioLM, processor: Processor, options: dict[str, Any] | None = None,
        step_fn: DecodeStep | None = None,
    ):
        self.model = model
        self.processor = processor
        self.options = options or {}
        self.defaults = GenerationConfig(max_new_tokens=256, stop_token_ids=tuple(processor.eos_token_ids))
        self.step_fn = step_fn  # the model's compiled decode step (`load(compile=True)`), used by every decode loop

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: torch.dtype | None = None) -> AudioChat:
        folder = Path(folder)
        options_path = folder / "auralm.json"
        options = json.loads(options_path.read_text()) if options_path.is_file() else {}
        return cls(load_audiolm(folder, dtype=dtype), Processor.from_pretrained(folder), options)

    # ---- building prompts ------------------------------------------------------------------------------
    def conversation(self, messages: str | list[dict[str, Any]], audio: Any = None) -> list[dict[str, Any]]:
        """A text (+ audio) turn or a message list -> a conversation; `audio` (one or a list) joins the last user turn."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": [{"type": "text", "text": messages}] if messages else []}]
        else:
            messages = [dict(m) for m in messages]
        if audio is not None:
            clips = audio if isinstance(audio, list) else [audio]
            last = messages[-1]
            if last.get("role") != "user":
                messages.append(last := {"role": "user", "content": []})
            content = last["content"]
            content = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
            last["content"] = [{"type": "audio", "audio": a} for a in clips] + content
        return messages

    def inputs(self, conversations: list[list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        texts, audios = [], []
        for conv in conversations:
            texts.append(self.processor.apply_chat_template(conv, add_generation_prompt=True))
            audios += [self.processor.prepare_audio(audio_source(item)) for item in _audio_items(conv)]
        return self.processor(text=texts, audio=audios or None)

    def config(self, **overrides: Any) -> GenerationConfig:
        if "max_tokens" in overrides:
            overrides["max_new_tokens"] = overrides.pop("max_tokens")
        return replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})

    # ---- talking -----------------------------------------------------------------------------------------
    def stream(self, messages: str | list[dict[str, Any]], audio: Any = None, **generation: Any) -> Iterator[str]:
        """Text deltas of the answer as they are decoded (never a broken multi-byte character)."""
        inputs = self.inputs([self.conversation(messages, audio)])
        yield from self._stream_inputs(inputs, self.config(**generation))

    def chat(self, messages: str | list[dict[str, Any]], audio: Any = None, **generation: Any) -> str:
        """The whole answer to a conversation (or a text prompt with `audio=`)."""
        return "".join(self.stream(messages, audio, **generation)).strip()

    def chat_batch(self, conversations: list[list[dict[str, Any]]], **generation: Any) -> list[str]:
        """Answers for many conversations decoded together; each equals its `chat()` answer."""
        return self.generate_texts(self.inputs(conversations), self.config(**generation))

    def generate_texts(
        self, inputs: dict[str, torch.Tensor], cfg: GenerationConfig, skip_special_tokens: bool = True
    ) -> list[str]:
        B = inputs["input_ids"].shape[0]
        batch = DecodeBatch.prefill(self.model, inputs, [cfg] * B, step_fn=self.step_fn)
        answers: dict[int, list[int]] = {}
        while True:
            for row in batch.drop_finished():
                answers[row.tag] = row.new_tokens
            if not batch.rows:
                break
            batch.step()
        stops = set(cfg.stop_token_ids)
        return [
            self.processor.decode([t for t in answers[i] if t not in stops], skip_special_tokens).strip()
            for i in range(B)
        ]

    def _stream_inputs(self, inputs: dict[str, torch.Tensor], cfg: GenerationConfig) -> Iterator[str]:
        batch = DecodeBatch.prefill(self.model, inputs, [cfg], step_fn=self.step_fn)
        deltas = TextDeltas(self.processor.decode)
        while True:
            delta = deltas.push(batch.rows[0].new_tokens[-1])
            if delta:
                yield delta
            if batch.drop_finished():
                break
            batch.step()
        tail = deltas.flush()
        if tail:
            yield tail

    # ---- transcription ------------------------------------------------------------------------------------
    def transcribe(
        self, audio: Any, language: str | None = None, timestamps: bool = False, progress=None, **generation: Any,
    ) -> Transcript:
        """Transcribe audio of any length (windows of 30 s, stitched). `str(result)` is the text."""
        wave = self.processor.prepare_audio(audio)
        cfg = self.config(**generation)
        prompt = self.asr_prompt(language, timestamps)
        fixed_budget = generation.get("max_new_tokens", generation.get("max_tokens")) is not None

        def decode_window(samples: np.ndarray) -> str:
            inputs = self.processor(text=prompt, audio=samples)
            seconds = len(samples) / SAMPLE_RATE
            window_cfg = cfg if fixed_budget else replace(cfg, max_new_tokens=transcript_budget(seconds, timestamps))
            # Time tokens are special tokens: keep them when word times are wanted.
            return self.generate_texts(inputs, window_cfg, skip_special_tokens=not timestamps)[0]

        result = transcribe_windows(wave, decode_window, progress, parse_words=parse_srwt if timestamps else None)
        result.language = language
        return result

    def asr_prompt(self, language: str | None, timestamps: bool) -> str:
        if timestamps:
            return self.options.get("asr_timestamps_prompt", DEFAULT_TIMESTAMPS_PROMPT).format(language=language or "en")
        if language:
            return self.options.get("asr_prompt", DEFAULT_ASR_PROMPT).format(language=language)
        return self.options.get("asr_prompt_no_language", DEFAULT_ASR_PROMPT_NO_LANGUAGE)


def _audio_items(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        item for m in conversation if isinstance(m.get("content"), list)
        for item in m["content"] if item.get("type") == "audio" or "audio" in item or "audio_url" in item
    ]


def load(model_dir: str | Path | None = None, dtype: torch.dtype | None = None, compile: bool = False) -> AudioChat:
    """Load a model folder for chat, streaming and transcription; no folder = the default model a front end
    registered (`auralm.infer.registry`; `import auralm` registers the embedded demo model).

    `compile=True` runs decode steps through one compiled graph (`auralm.infer.compiled`): faster decoding after a
    one-time compilation (tens of seconds per batch shape), worth it for long or many generations."""
    if model_dir is None:
        model_dir = default_model_dir()
    chat = AudioChat.from_folder(model_dir, dtype=dtype)
    if compile:
        from auralm.infer.compiled import compile_decode  # imports torch's inductor: only when asked for

        chat.step_fn = compile_decode(chat.model)
    return chat
