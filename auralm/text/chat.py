"""ChatML rendering of conversations with audio, as the Qwen2-Audio chat template does it.

A model folder may ship its own Jinja template (`chat_template.json`, `chat_template.jinja` or the
`chat_template` key of `tokenizer_config.json`); without one, `DEFAULT_CHAT_TEMPLATE` below is used. It renders:
a default system turn ("You are a helpful assistant.") when the first message is not a system message; each audio
item as `Audio k: <|audio_bos|><|AUDIO|><|audio_eos|>\\n` with k counted over the whole conversation; text items
verbatim; `<|im_start|>assistant\\n` when a generation prompt is asked for. Templates run in Jinja's sandbox.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from auralm.text.tokens import AUDIO_PLACEHOLDER

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Written for auralm; renders the same strings as the reference processor's built-in template.
DEFAULT_CHAT_TEMPLATE = (
    "{%- set n = namespace(audio=0) -%}\n"
    "{%- for message in messages -%}\n"
    "{%- if loop.first and message.role != 'system' -%}\n"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif -%}\n"
    "<|im_start|>{{ message.role }}\n"
    "{% if message.content is string %}\n{{ message.content }}<|im_end|>\n"
    "{% else %}\n"
    "{%- for item in message.content -%}\n"
    "{%- if item.type == 'audio' or 'audio' in item or 'audio_url' in item -%}\n"
    "{%- set n.audio = n.audio + 1 -%}\n"
    "Audio {{ n.audio }}: " + AUDIO_PLACEHOLDER + "\n"
    "{% elif 'text' in item -%}\n"
    "{{ item.text }}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "<|im_end|>\n"
    "{% endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "<|im_start|>assistant\n"
    "{% endif -%}"
)


class ChatTemplateError(ValueError):
    """A conversation does not have the expected shape, or the template failed to render."""


@lru_cache(maxsize=8)
def _compile(template: str):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    return env.from_string(template)


def validate_conversation(conversation: Any) -> list[dict[str, Any]]:
    """Check the transformers conversation shape: a list of {role, content} with content a string or a list of
    typed items ({"type": "text", "text": ...} / {"type": "audio", "audio": ...} / {"type": "audio", "audio_url": ...})."""
    if isinstance(conversation, dict):
        conversation = [conversation]
    if not isinstance(conversation, list) or not conversation:
        raise ChatTemplateError("a conversation is a non-empty list of {'role': ..., 'content': ...} messages")
    for i, m in enumerate(conversation):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatTemplateError(f"message {i} must be a dict with 'role' and 'content', got {m!r:.80}")
        if m["role"] not in ("system", "user", "assistant"):
            raise ChatTemplateError(f"message {i} has role {m['role']!r}; use system, user or assistant")
        content = m["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise ChatTemplateError(f"message {i} content must be a string or a list of items")
        for j, item in enumerate(content):
            if not isinstance(item, dict):
                raise ChatTemplateError(f"message {i} item {j} must be a dict, got {type(item).__name__}")
            kind = item.get("type", "audio" if ("audio" in item or "audio_url" in item) else "text")
            if kind == "text" and not isinstance(item.get("text"), str):
                raise ChatTemplateError(f"message {i} item {j} is a text item without a 'text' string")
            if kind == "audio" and "audio" not in item and "audio_url" not in item:
                raise ChatTemplateError(f"message {i} item {j} is an audio item without 'audio' or 'audio_url'")
            if kind not in ("text", "audio"):
                raise ChatTemplateError(f"message {i} item {j} has unsupported type {kind!r} (text or audio)")
    return conversation


def render_chat(
    conversation: list[dict[str, Any]], template: str | None = None, add_generation_prompt: bool = True,
    **extra: Any,
) -> str:
    """Render a conversation to the prompt string (audio items become placeholders; audio data is not touched)."""
    conversation = validate_conversation(conversation)
    try:
        return _compile(template or DEFAULT_CHAT_TEMPLATE).render(
            messages=conversation, add_generation_prompt=add_generation_prompt, **extra
        )
    except TemplateError as err:
        raise ChatTemplateError(f"the chat template failed to render: {err}") from None


def audio_items(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The audio items of a conversation (each with an `audio` or `audio_url`) in the order the template numbers
    them."""
    return [
        item for m in validate_conversation(conversation) if isinstance(m["content"], list)
        for item in m["content"] if item.get("type") == "audio" or "audio" in item or "audio_url" in item
    ]


def read_chat_template(folder: Path) -> str | None:
    """The template a model folder ships, if any (chat_template.jinja, chat_template.json, tokenizer_config.json)."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            try:
                template = json.loads(path.read_text()).get("chat_template")
            except json.JSONDecodeError as err:
                raise ChatTemplateError(f"{path} is not valid JSON: {err}") from None
            if isinstance(template, str):
                return template
    return None
