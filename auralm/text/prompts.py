"""Qwen2-Audio's speech-recognition prompts, written once (fact sheet §3.2; the training formats, the library,
the server, evaluation and the demo recipe import them).

Pre-training asks "Detect the language and recognize the speech: " and the model answers "<|xx|>" + transcript
(Figure 2 of the paper); the papers' evaluation forces the language by ending the prompt with that tag, so the
answer is the transcript alone. Word-level timestamps have their own instruction; the answer is in the SRWT
format (`auralm.text.formats.srwt_string`).
"""

from __future__ import annotations

from typing import Any

from auralm.text.tokens import AUDIO_PLACEHOLDER

ASR_INSTRUCTION = "Detect the language and recognize the speech: "  # answer: "<|xx|>" + transcript
ASR_INSTRUCTION_WITH_LANGUAGE = ASR_INSTRUCTION + "<|{language}|>"  # the evaluation prompt; answer: transcript
SRWT_INSTRUCTION = "Recognize the speech with word-level timestamps:"


def chat_instruction(instruction: str) -> str:
    """An instruction as the user's text of a chat turn: stripped, an ending ":" made a "." (training and prompts
    of chat-tuned models agree on it)."""
    instruction = instruction.strip()
    return instruction[:-1] + "." if instruction.endswith(":") else instruction


def asr_prompt(language: str | None = None, timestamps: bool = False, overrides: dict[str, Any] | None = None) -> str:
    """The prompt (one audio span, then the instruction) that asks a model for the transcript of its clip.

    `language` (a code such as "en") is forced as the answer's language tag; None lets the model detect it.
    `overrides`: a model folder's auralm.json, whose "asr_prompt" (formatted with `language`),
    "asr_prompt_no_language" and "asr_timestamps_prompt" replace these defaults, e.g. with a ChatML turn for a
    chat-tuned model.
    """
    overrides = overrides or {}
    if timestamps:
        return overrides.get("asr_timestamps_prompt", AUDIO_PLACEHOLDER + SRWT_INSTRUCTION).format(
            language=language or "en"
        )
    if language:
        return overrides.get("asr_prompt", AUDIO_PLACEHOLDER + ASR_INSTRUCTION_WITH_LANGUAGE).format(language=language)
    return overrides.get("asr_prompt_no_language", AUDIO_PLACEHOLDER + ASR_INSTRUCTION)
