"""Qwen-Audio (v1) prompts: the ChatML context of Qwen-Audio-Chat, `<audio>...</audio>` spans, and the
hierarchical-tag prompts of transcription (fact sheet §4.3, §4.4, §4.7).

A v1 prompt marks each clip as `<audio>SOURCE</audio>`. SOURCE is a file path in the reference's convention
(`<audio>clip.wav</audio>`), or `AUDIO_PAD` for a clip passed separately (what auralm's renderings write).
auralm's own placeholder (`<|audio_bos|><|AUDIO|><|audio_eos|>`, written by the task formats and the evaluation
prompts) means the same as `AUDIO_SPAN`. The processor replaces each span by `<audio>` + N pads + `</audio>`.

The chat context is `make_context`'s layout: a system turn ("You are a helpful assistant." unless the
conversation has its own), `\\n`-joined ChatML turns, `<|im_start|>assistant\\n` to answer. Each message's audio
items render as `Audio k:<audio>...</audio>\\n` (no space after the colon: `from_list_format`, which the
released chat examples build queries with; k counts the clips of one message, as that function does).
"""

from __future__ import annotations

import re
from typing import Any

from auralm.text.chat import DEFAULT_SYSTEM_PROMPT, validate_conversation
from auralm.text.qwen_v1_tokenizer import AUDIO_END, AUDIO_PAD, AUDIO_START, IM_END, IM_START
from auralm.text.tokens import AUDIO_PLACEHOLDER

AUDIO_SPAN = AUDIO_START + AUDIO_PAD + AUDIO_END  # one clip passed separately, before expansion
_SPAN = re.compile(re.escape(AUDIO_START) + "(.*?)" + re.escape(AUDIO_END), re.DOTALL)

# Transcription prompts (the evaluation scripts' tags; fact sheet §5.1), in `text.prompts.asr_prompt`'s
# override keys so `AudioChat.transcribe` uses them. Without a language the model writes the tags itself.
TRANSCRIBE_PROMPTS = {
    "asr_prompt": AUDIO_SPAN
    + "<|startoftranscript|><|{language}|><|transcribe|><|{language}|><|notimestamps|><|wo_itn|>",
    "asr_prompt_no_language": AUDIO_SPAN + "<|startoftranscript|>",
    # SRWT (word timestamps): the reference forces the first time token; the answer continues after it.
    "asr_timestamps_prompt": AUDIO_SPAN + "<|startoftranscript|><|{language}|><|transcribe|><|{language}|>"
    "<|timestamps|><|0.00|>",
    "asr_timestamps_answer_prefix": "<|0.00|>",
}


def audio_sources(text: str) -> list[str]:
    """The SOURCE of every `<audio>SOURCE</audio>` span, in order (auralm placeholders count as AUDIO_PAD)."""
    return [m.group(1) for m in _SPAN.finditer(with_v1_spans(text))]


def with_v1_spans(text: str) -> str:
    """auralm's audio placeholder written as the v1 span (the two mean one clip passed separately)."""
    return text.replace(AUDIO_PLACEHOLDER, AUDIO_SPAN)


def pad_spans(text: str) -> str:
    """Every span's SOURCE replaced by one `AUDIO_PAD` (what the processor then expands to N pads)."""
    return _SPAN.sub(AUDIO_SPAN, with_v1_spans(text))


def split_audio_tags(text: str) -> list[dict[str, Any]]:
    """Text with `<audio>path</audio>` spans -> content items: text pieces and `{"type": "audio", "audio": path}`;
    spans holding `AUDIO_PAD` stay in the text (their clip is passed separately)."""
    items: list[dict[str, Any]] = []
    last = 0
    for m in _SPAN.finditer(text):
        if m.group(1) == AUDIO_PAD:
            continue
        if text[last:m.start()]:
            items.append({"type": "text", "text": text[last:m.start()]})
        items.append({"type": "audio", "audio": m.group(1)})
        last = m.end()
    if text[last:]:
        items.append({"type": "text", "text": text[last:]})
    return items


def render_content(content: str | list[dict[str, Any]]) -> str:
    """One message's content: text verbatim, each audio item as `Audio k:<audio>[[[AUDIO:modality]]]</audio>\\n`."""
    if isinstance(content, str):
        return content
    out, k = "", 0
    for item in content:
        if item.get("type") == "audio" or "audio" in item or "audio_url" in item:
            k += 1
            out += f"Audio {k}:{AUDIO_SPAN}\n"
        else:
            out += item["text"]
    return out


def render_chat(conversation: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """The v1 chat context string (make_context's layout; history is not trimmed to a window)."""
    messages = validate_conversation(conversation)
    system = DEFAULT_SYSTEM_PROMPT
    if messages[0]["role"] == "system":
        system, messages = render_content(messages[0]["content"]), messages[1:]
    text = f"{IM_START}system\n{system}{IM_END}"
    for m in messages:
        text += f"\n{IM_START}{m['role']}\n{render_content(m['content'])}{IM_END}"
    if add_generation_prompt:
        text += f"\n{IM_START}assistant\n"
    return text


def chat_pieces(text: str) -> list[tuple[str, str]]:
    """A ChatML string cut as make_context tokenizes it: [(kind, text)] with kind "special" (`<|im_start|>` /
    `<|im_end|>`), "role", "newline" (the `\\n` after a role) or "content" (everything else)."""
    pieces: list[tuple[str, str]] = []
    after_start = False
    for part in re.split(f"({re.escape(IM_START)}|{re.escape(IM_END)})", text):
        if part in (IM_START, IM_END):
            pieces.append(("special", part))
            after_start = part == IM_START
            continue
        if part and after_start and "\n" in part:
            role, _, content = part.partition("\n")
            pieces += [("role", role), ("newline", "\n"), ("content", content)]
        elif part:
            pieces.append(("content", part))
        after_start = False
    return pieces
