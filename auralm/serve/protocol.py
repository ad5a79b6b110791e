"""OpenAI request bodies -> auralm conversations and generation configs, every field checked.

Chat content parts: `{"type": "text", "text"}`, `{"type": "input_audio", "input_audio": {"data": base64,
"format"}}` and `{"type": "audio_url", "audio_url": {"url"}}` (or a bare URL string) with data:, http(s):// or
file:// URLs (the last two only as the server's fetch policy allows). Roles: system (or developer), user,
assistant; audio only in user turns. Sampling: temperature (0 or absent = greedy), top_p, max_tokens /
max_completion_tokens, seed, stop, n=1; top_k, repetition_penalty and min_tokens (vLLM's names) as extensions. Parameters that would change
the answer in ways this server cannot honour (tools, logprobs, penalties, n > 1, audio output) are refused, not
silently ignored.
"""

from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass, replace
from typing import Any

import torch

from auralm.audio import SAMPLE_RATE
from auralm.infer.sampling import GREEDY_BELOW_TEMPERATURE, SEED_RANGE, GenerationConfig
from auralm.processor import ControlTokenError
from auralm.serve.audio_input import AudioReader
from auralm.serve.errors import ServeError, bad_request, too_large
from auralm.serve.settings import ServeSettings
from auralm.text.tokens import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN

MAX_STOPS = 4  # OpenAI's limit on stop strings
MAX_STOP_CHARS = 256
CHARS_PER_TOKEN_BOUND = 16  # text longer than max_prompt_tokens * this cannot fit; refused before tokenizing
_RESERVED_MARKERS = (AUDIO_TOKEN, AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN)
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}$")  # the prompt names it as a <|xx|> token
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Sampling bounds. temperature: 0 is greedy; a positive value below GREEDY_BELOW_TEMPERATURE is greedy in all but
# name (the library chooses the argmax for it), so it is refused rather than silently changed: send 0. Above 2
# (OpenAI's limit) the draw is close to uniform noise. repetition_penalty: 1 is off, > 1 discourages repeats; below
# 0.01 a seen token's logit is already multiplied by 100, so smaller values change no choice and only push logits
# toward float32 overflow; above 10 a seen token is effectively banned.
MAX_TEMPERATURE = 2.0
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 0.01, 10.0


@dataclass
class ChatRequest:
    """A checked chat completion request; audio items hold decoded waveforms `(samples, 16000)`."""

    conversation: list[dict[str, Any]]
    config: GenerationConfig
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; nesting too deep -> RecursionError
        raise bad_request("the request body is not valid JSON", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("the request body must be a JSON object", "invalid_json")
    return payload


def check_model(payload: dict[str, Any], settings: ServeSettings) -> None:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (see GET /v1/models)", "missing_model", "model")
    if model != settings.model_name:
        raise ServeError(404, f"this server serves the model '{settings.model_name}' only", "model_not_found", "model")


# ---- chat ----------------------------------------------------------------------------------------------------
def parse_chat(payload: dict[str, Any], settings: ServeSettings, defaults: GenerationConfig,
               reader: AudioReader) -> ChatRequest:
    """Check the whole request, then fetch and decode its audio in order (limits first, work after)."""
    check_model(payload, settings)
    _refuse_unsupported(payload)
    config = generation_config(payload, settings, defaults)
    stop = _stop_strings(payload.get("stop"))
    stream = _flag(payload, "stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("stream_options must be an object", param="stream_options")
    include_usage = bool(options and options.get("include_usage"))
    conversation, audios = _conversation(payload.get("messages"), settings)
    for item, where, kind, spec in audios:
        data = reader.input_audio_bytes(spec, where) if kind == "input_audio" else reader.url_bytes(spec, where)
        item["audio"] = (reader.decode(data, where), SAMPLE_RATE)
    return ChatRequest(conversation, config, stop, stream, include_usage)


def _conversation(messages: Any, settings: ServeSettings) -> tuple[list[dict[str, Any]], list[tuple]]:
    """Messages -> (conversation with empty audio items, [(item, where, kind, spec)] to fill in)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", param="messages")
    conversation, audios, chars = [], [], 0
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", param=where)
        role = _ROLES.get(m["role"]) if isinstance(m.get("role"), str) else None  # a list or dict is unhashable
        if role is None:
            raise bad_request(f"{where}: role must be system, developer, user or assistant", param=where)
        content = m.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise bad_request(f"{where}: content must be a string or a list of content parts", param=where)
        items = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise bad_request(f"{at}: a text part needs a 'text' string", param=at)
                _check_unicode(text, at)
                if any(marker in text for marker in _RESERVED_MARKERS):
                    raise bad_request(f"{at}: text may not contain the audio markers {', '.join(_RESERVED_MARKERS)}",
                                      param=at)
                chars += len(text)
                items.append({"type": "text", "text": text})
            elif kind in ("input_audio", "audio_url"):
                if role != "user":
                    raise bad_request(f"{at}: audio may only appear in user messages", param=at)
                item = {"type": "audio"}
                audios.append((item, at, kind, part.get(kind)))
                items.append(item)
            else:
                raise bad_request(f"{at}: unsupported content part type; use text, input_audio or audio_url", param=at)
        conversation.append({"role": role, "content": items})
    if len(audios) > settings.max_audios:
        raise too_large(f"the request holds {len(audios)} audios; this server takes at most {settings.max_audios}",
                        "too_many_audios", "messages")
    if chars > settings.max_prompt_tokens * CHARS_PER_TOKEN_BOUND:
        raise too_large("the messages are longer than this server's prompt limit", "context_length_exceeded",
                        "messages")
    return conversation, audios


def build_inputs(chat, conversation: list[dict[str, Any]], settings: ServeSettings) -> dict[str, torch.Tensor]:
    """Processor outputs for one conversation (B = 1), within the prompt limit."""
    try:
        inputs = chat.inputs([conversation])
    except ControlTokenError as err:
        at = f"messages[{err.message}].content[{err.item}]"
        shown = ", ".join(err.tokens[:5])
        raise bad_request(f"{at}: text may not contain the model's control tokens ({shown})",
                          "special_token_in_text", at) from None
    except ValueError:
        raise bad_request("the messages could not be turned into a prompt for this model", "invalid_messages") from None
    n = int(inputs["input_ids"].shape[1])
    if n > settings.max_prompt_tokens:
        raise too_large(f"the prompt is {n} tokens (audio included); this server's limit is "
                        f"{settings.max_prompt_tokens}", "context_length_exceeded", "messages")
    return inputs


# ---- sampling ------------------------------------------------------------------------------------------------
def generation_config(payload: dict[str, Any], settings: ServeSettings, defaults: GenerationConfig) -> GenerationConfig:
    n = payload.get("n")
    if n is not None and (_int(n, "n") != 1):
        raise bad_request("n must be 1: this server returns one choice per request", "unsupported_parameter", "n")
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if max_tokens is None:
        max_tokens = settings.default_max_tokens
    max_tokens = _int(max_tokens, "max_tokens")
    if not 1 <= max_tokens <= settings.max_tokens_limit:
        raise bad_request(f"max_tokens must be between 1 and {settings.max_tokens_limit}", param="max_tokens")
    fields: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": False, "temperature": 1.0}
    temperature = _temperature(payload.get("temperature"), MAX_TEMPERATURE)
    if temperature:
        fields.update(do_sample=True, temperature=temperature)
    top_p = _number(payload.get("top_p"), "top_p", 0.0, 1.0)
    if top_p is not None:
        if top_p == 0:
            raise bad_request("top_p must be > 0", param="top_p")
        fields["top_p"] = top_p
    if payload.get("top_k") is not None:
        top_k = _int(payload["top_k"], "top_k")
        fields["top_k"] = max(top_k, 0)  # vLLM's -1 means "all", as 0 does here
    penalty = _number(payload.get("repetition_penalty"), "repetition_penalty", MIN_REPETITION_PENALTY,
                      MAX_REPETITION_PENALTY)
    if penalty is not None:
        fields["repetition_penalty"] = penalty
    if payload.get("seed") is not None:
        seed = _int(payload["seed"], "seed")
        if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
            raise bad_request(f"seed must be a 64-bit integer, between {SEED_RANGE[0]} and {SEED_RANGE[1]}",
                              param="seed")
        fields["seed"] = seed
    if payload.get("min_tokens") is not None:
        min_tokens = _int(payload["min_tokens"], "min_tokens")
        if not 0 <= min_tokens <= max_tokens:
            raise bad_request("min_tokens must be between 0 and max_tokens", param="min_tokens")
        fields["min_new_tokens"] = min_tokens
    return replace(defaults, **fields)


def _refuse_unsupported(payload: dict[str, Any]) -> None:
    for name in ("tools", "functions"):
        if payload.get(name):
            raise bad_request(f"'{name}' is not supported by this server", "unsupported_parameter", name)
    if payload.get("tool_choice") not in (None, "none"):
        raise bad_request("'tool_choice' is not supported by this server", "unsupported_parameter", "tool_choice")
    fmt = payload.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad_request("only response_format {'type': 'text'} is supported", "unsupported_parameter",
                          "response_format")
    if payload.get("logprobs") or payload.get("top_logprobs"):
        raise bad_request("logprobs are not supported by this server", "unsupported_parameter", "logprobs")
    if payload.get("logit_bias"):
        raise bad_request("logit_bias is not supported by this server", "unsupported_parameter", "logit_bias")
    for name in ("frequency_penalty", "presence_penalty"):
        if _number(payload.get(name), name, -2.0, 2.0):
            raise bad_request(f"{name} is not supported (use repetition_penalty)", "unsupported_parameter", name)
    modalities = payload.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise bad_request("this server answers in text only (modalities ['text'])", "unsupported_parameter",
                          "modalities")
    if payload.get("audio") is not None:
        raise bad_request("audio output is not supported by this server", "unsupported_parameter", "audio")


def _stop_strings(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("stop must be a non-empty string or a list of them", param="stop")
    if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise bad_request(f"stop takes at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters",
                          param="stop")
    for s in stops:
        _check_unicode(s, "stop")
    return tuple(stops)


# ---- transcription -------------------------------------------------------------------------------------------
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@dataclass
class TranscriptionRequest:
    language: str | None
    response_format: str
    temperature: float
    word_timestamps: bool = False  # timestamp_granularities has "word": verbose_json gets `words`


def parse_transcription(form: dict[str, Any], settings: ServeSettings) -> TranscriptionRequest:
    """The non-file fields of a /v1/audio/transcriptions form."""
    check_model({"model": form.get("model")}, settings)
    language = form.get("language") or None
    if language is not None and not _LANGUAGE.match(language):
        raise bad_request("language must be a language code such as 'en'", param="language")
    fmt = form.get("response_format") or "json"
    if fmt not in TRANSCRIPT_FORMATS:
        raise bad_request(f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}", param="response_format")
    if form.get("prompt"):
        raise bad_request("a transcription prompt is not supported by this server", "unsupported_parameter", "prompt")
    granularities = form.get("timestamp_granularities[]") or []
    if any(g not in ("segment", "word") for g in granularities):
        raise bad_request("timestamp_granularities may hold 'segment' and 'word'", param="timestamp_granularities")
    if granularities and fmt != "verbose_json":  # OpenAI's rule: only verbose_json carries timestamps
        raise bad_request("timestamp_granularities needs response_format 'verbose_json'",
                          param="timestamp_granularities")
    try:
        temperature = float(form.get("temperature") or 0.0)
    except ValueError:
        raise bad_request("temperature must be a number", param="temperature") from None
    temperature = _temperature(temperature, 1.0)  # OpenAI's range for transcription
    return TranscriptionRequest(language and language.lower(), fmt, temperature, "word" in granularities)


# ---- field checks --------------------------------------------------------------------------------------------
def _flag(payload: dict[str, Any], name: str) -> bool:
    value = payload.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false", param=name)
    return value


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise bad_request(f"{name} must be an integer", param=name)
    return int(value)


def _temperature(value: Any, hi: float) -> float | None:
    """0 (greedy) or a number in [GREEDY_BELOW_TEMPERATURE, hi]; see the bounds at the top of this module."""
    t = _number(value, "temperature", 0.0, hi)
    if t is not None and 0 < t < GREEDY_BELOW_TEMPERATURE:
        raise bad_request(f"temperature must be 0 (greedy) or between {GREEDY_BELOW_TEMPERATURE:g} and {hi:g}",
                          param="temperature")
    return t


def _check_unicode(text: str, param: str) -> None:
    """JSON may carry a lone surrogate ("\\ud800"); it is not text and cannot be tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{param}: the text holds a lone surrogate (U+D800-U+DFFF), which is not valid Unicode",
                          "invalid_text", param) from None


def _number(value: Any, name: str, lo: float, hi: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi:
        raise bad_request(f"{name} must be a number between {lo:g} and {hi:g}", param=name)
    return float(value)
