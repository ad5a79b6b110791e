"""The high-level API: `auralm.load(dir)` -> an `AudioChat` with `chat()`, `stream()` and `transcribe()`.

Messages use the transformers conversation shape; an audio item is `{"type": "audio", "audio": x}` where x is
anything `load_audio` takes (path, bytes, file-like, `(array, sampling_rate)`), or `{"type": "audio", "audio_url":
u}` with u a local path, `file://` path or `data:` URL (this library never fetches from the network).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auralm.audio import SAMPLE_RATE, AudioError
from auralm.audio.speech_gate import has_speech
from auralm.checkpoint.hf import load_audiolm
from auralm.checkpoint.qwen_v1 import is_qwen_v1_folder
from auralm.checkpoint.qwen_v1_processor import QwenV1Processor
from auralm.infer.ctc_prefix import ctc_rows
from auralm.infer.engine import DecodeStep
from auralm.infer.generate import generate_texts, stream_text
from auralm.infer.registry import default_model_dir
from auralm.infer.sampling import GenerationConfig
from auralm.infer.threads import set_threads
from auralm.infer.transcribe import Transcript, transcribe_windows, window_budget
from auralm.model.audiolm import AudioLM
from auralm.model.quant import bf16_advice
from auralm.processor import Processor
from auralm.text.chat import audio_items
from auralm.text.formats import answer_language, parse_srwt, special_pattern, strip_tags
from auralm.text.prompts import asr_prompt

# Decodes a batch of prompts to answers: (inputs, config, skip_special_tokens) -> texts, as `generate_texts` does.
BatchDecoder = Callable[[dict[str, torch.Tensor], GenerationConfig, bool], list[str]]


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
        added = getattr(getattr(processor, "tokenizer", None), "get_added_tokens_decoder", None)
        # The special tokens as text, to strip from a transcript decoded with them (for its language tag).
        self.special_text = special_pattern(t.content for t in added().values() if t.special) if added else special_pattern()

    @classmethod
    def from_folder(
        cls, folder: str | Path, dtype: torch.dtype | None = None, quantize: str | None = None,
    ) -> AudioChat:
        folder = Path(folder)
        options_path = folder / "auralm.json"
        options = json.loads(options_path.read_text()) if options_path.is_file() else {}
        model = load_audiolm(folder, dtype=dtype, quantize=quantize)
        if is_qwen_v1_folder(folder):  # Qwen-Audio (v1): its own tokenizer, prompts and transcription tags
            processor: Processor = QwenV1Processor.from_pretrained(folder)
            options = {**processor.prompt_options, **options}
        else:
            processor = Processor.from_pretrained(folder)
        return cls(model, processor, options)

    def use_compiled_decode(self, warm: Callable[[str], None] | None = None) -> None:
        """Decode through the compiled step from now on (`auralm.infer.compiled`). With `warm` both graphs compile
        now, each announced through `warm(line)`; otherwise each compiles at its first use."""
        # imported here: it imports torch's inductor (~3 s), which only a compiled step needs
        from auralm.infer.compiled import compile_decode, warm_up

        self.step_fn = compile_decode(self.model)
        if warm is not None:
            warm("compiling the decode step (a minute or more on a CPU)")
            warm_up(self.step_fn, self.model, log=warm)

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
        if isinstance(self.processor, QwenV1Processor):  # v1's `<audio>path</audio>` in the caller's own text
            messages = self.processor.audio_tags_to_items(messages)
        return messages

    def inputs(self, conversations: list[list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        texts, audios = [], []
        for conv in conversations:
            texts.append(self.processor.apply_chat_template(conv, add_generation_prompt=True))
            audios += [self.processor.prepare_audio(audio_source(item)) for item in audio_items(conv)]
        return self.processor(text=texts, audio=audios or None)

    def asr_decoding(self, generation: dict[str, Any] | None = None) -> dict[str, Any]:
        """How the folder asks to decode transcripts (auralm.json `asr_num_beams`, `asr_ctc_weight`; the demo model's
        recipe writes them: beams with joint CTC scores, `infer.beam`), unless `generation` samples or sets its own
        beams or CTC weight. Not for word timestamps: their time tokens are not in a CTC head's rows."""
        generation = generation or {}
        if generation.get("do_sample") or {"num_beams", "ctc_weight"} & generation.keys():
            return {}
        out = {"num_beams": int(self.options.get("asr_num_beams", 1)),
               "ctc_weight": float(self.options.get("asr_ctc_weight", 0.0))}
        if out["ctc_weight"] > 0 and not ctc_rows(self.model):
            out["ctc_weight"] = 0.0  # a folder whose head was removed (or a v1 model): the LLM alone
        return {k: v for k, v in out.items() if v != vars(self.defaults)[k]}

    def config(self, **overrides: Any) -> GenerationConfig:
        if "max_tokens" in overrides:
            overrides["max_new_tokens"] = overrides.pop("max_tokens")
        return replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})

    # ---- talking -----------------------------------------------------------------------------------------
    def stream(self, messages: str | list[dict[str, Any]], audio: Any = None, **generation: Any) -> Iterator[str]:
        """Text deltas of the answer as they are decoded (never a broken multi-byte character)."""
        inputs = self.inputs([self.conversation(messages, audio)])
        yield from stream_text(self.model, self.processor.decode, inputs, self.config(**generation), self.step_fn)

    def chat(self, messages: str | list[dict[str, Any]], audio: Any = None, **generation: Any) -> str:
        """The whole answer to a conversation (or a text prompt with `audio=`)."""
        return "".join(self.stream(messages, audio, **generation)).strip()

    def chat_batch(self, conversations: list[list[dict[str, Any]]], **generation: Any) -> list[str]:
        """Answers for many conversations decoded together; each equals its `chat()` answer."""
        return self.generate_texts(self.inputs(conversations), self.config(**generation))

    def generate_texts(
        self, inputs: dict[str, torch.Tensor], cfg: GenerationConfig, skip_special_tokens: bool = True
    ) -> list[str]:
        """The answers to a batch of processor outputs (`infer.generate.generate_texts`); `chat_batch`,
        transcription windows and evaluation decode through here."""
        return generate_texts(self.model, self.processor.decode, inputs, cfg, skip_special_tokens, self.step_fn)

    # ---- transcription ------------------------------------------------------------------------------------
    def transcribe(
        self, audio: Any, language: str | None = None, timestamps: bool = False, progress=None,
        speech_gate: bool = True, **generation: Any,
    ) -> Transcript:
        """Transcribe audio of any length (windows of 30 s, stitched). `str(result)` is the text.

        `audio`: anything `load_audio` takes; `language` forces the transcript's language tag (default: the model
        detects it, and `result.language` is the one it named, if it named one); `timestamps` asks for word times
        (`result.words`); `progress(done, total)` after each window; `speech_gate`: windows without voiced speech
        (`audio.speech_gate`) transcribe to "" without running the model; `generation`: `GenerationConfig` fields,
        where an explicit `max_new_tokens` (or `max_tokens`) limits every window."""
        return self.transcribe_wave(
            self.processor.prepare_audio(audio), language, timestamps, progress, speech_gate=speech_gate, **generation
        )

    def transcribe_wave(
        self, wave: np.ndarray, language: str | None = None, timestamps: bool = False, progress=None,
        decode: BatchDecoder | None = None, cap: int | None = None, speech_gate: bool = True, **generation: Any,
    ) -> Transcript:
        """The one transcription function (library, CLI, demo and server): 16 kHz mono samples (n,) -> Transcript.

        Each window with speech (all of them without `speech_gate`) is prompted with `text.prompts.asr_prompt` (the
        folder's auralm.json may replace the prompts) and decoded by `decode` (default: `generate_texts`; the server
        queues windows with its scheduler) within `transcribe.window_budget(window seconds, timestamps,
        max_new_tokens, cap)` new tokens. `result.language`: `language`, else the tag the model's answers start with
        most often (Qwen2-Audio answers "<|en|>..." when asked to detect), else None."""
        decode = decode or self.generate_texts
        cfg = self.config(**({} if timestamps else self.asr_decoding(generation)), **generation)
        explicit = generation.get("max_new_tokens", generation.get("max_tokens"))
        prompt = asr_prompt(language, timestamps, self.options)
        # What a timestamps prompt forces of the answer (v1 ends it with "<|0.00|>"), put back before parsing.
        forced = self.options.get("asr_timestamps_answer_prefix", "") if timestamps else ""
        # Special tokens are kept when word times are wanted (time tokens) or the language is to be detected (the
        # answer's language tag); the transcript text is then stripped of them.
        keep_special = timestamps or language is None
        detected: list[str] = []

        def decode_window(samples: np.ndarray) -> str:
            if speech_gate and not has_speech(samples):
                return ""  # silence, a tone, noise: no words, and no model run that would describe the sound
            inputs = self.processor(text=prompt, audio=samples)
            budget = window_budget(len(samples) / SAMPLE_RATE, timestamps, explicit, cap)
            text = forced + decode(inputs, replace(cfg, max_new_tokens=budget), not keep_special)[0]
            if keep_special and (tag := answer_language(text)) is not None:
                detected.append(tag)
            return text if timestamps or not keep_special else strip_tags(text, self.special_text)

        result = transcribe_windows(wave, decode_window, progress, parse_words=parse_srwt if timestamps else None)
        result.language = language or (max(detected, key=detected.count) if detected else None)
        return result


def load(
    model_dir: str | Path | None = None, dtype: torch.dtype | None = None, compile: bool = False,
    threads: int | None = None, quantize: str | None = None, warm: Callable[[str], None] | None = None,
) -> AudioChat:
    """Load a model folder for chat, streaming and transcription; no folder = the default model a front end
    registered (`auralm.infer.registry`; `import auralm` registers the embedded demo model).

    `compile=True` runs decode steps through one compiled graph (`auralm.infer.compiled`): faster decoding after a
    one-time compilation (a minute or more per graph on a CPU; two graphs: batch one and larger batches), worth it
    for long or many generations. With `warm` both graphs compile now, each announced through `warm(line)`;
    otherwise each compiles at its first use. `warm` (the CLI's stderr) also gets a note when a large bfloat16
    decoder loads on a CPU that emulates bfloat16 (`auralm.model.quant.bf16_advice`).
    `threads`: torch's CPU thread count, which is process-wide (default: `infer.threads.default_threads()`, the
    cores other processes leave idle, or OMP_NUM_THREADS when set).
    `dtype`: default the folder's config `torch_dtype`. `quantize`: "int8" or "int4" ("int4-g32", ...) quantizes
    the decoder's Linear layers while loading (`auralm.model.quant`; bfloat16 activations), for a CPU: a decode step
    reads half (int8) or a quarter (int4) of bfloat16's bytes. A folder saved quantized loads quantized as it is."""
    set_threads(threads)  # first: a bad value fails before the weights are read
    if model_dir is None:
        model_dir = default_model_dir()
    chat = AudioChat.from_folder(model_dir, dtype=dtype, quantize=quantize)
    advice = bf16_advice(chat.model) if warm is not None else None
    if advice:
        warm(advice)
    if compile:
        chat.use_compiled_decode(warm)
    return chat
