"""When a long job (`auralm eval`, `auralm transcribe`) decodes through the compiled step by default (neither
`--compile` nor `--no-compile` given): compiling both graphs of the demo's float32 decoder takes ~5 min on this
2-core VM and saves ~40 ms per decode step (74 -> 31 ms): ~0.9 s per eval item of ~20 steps, so 1,000 items save
~15 min; transcription takes ~3-4 steps per second of speech, so an hour of audio saves ~8-10 min. Below these
sizes compiling would cost about what it saves, and the eager step is kept. This module imports no compiler:
deciding a short job stays cheap (importing `auralm.infer.compiled` pulls in torch's inductor, ~3 s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

LONG_JOB_ITEMS = 1000
LONG_JOB_AUDIO_SECONDS = 3600.0


def long_job_compiles(model: nn.Module, items: int = 0, audio_seconds: float = 0.0) -> tuple[bool, str]:
    """Whether the default compiles the decode step for a job of `items` prompts or `audio_seconds` of transcription,
    and why: the job must be long (LONG_JOB_ITEMS, LONG_JOB_AUDIO_SECONDS) and compiling must pay
    (`compiled.compile_pays`: a CPU, the memory it adds free)."""
    if items < LONG_JOB_ITEMS and audio_seconds < LONG_JOB_AUDIO_SECONDS:
        return False, (f"a short job ({_job(items, audio_seconds)}; compiling pays from {LONG_JOB_ITEMS} items or "
                       f"{LONG_JOB_AUDIO_SECONDS / 60:.0f} min of audio)")
    from auralm.infer.compiled import compile_pays

    return compile_pays(model)


def compile_if_long(chat: Any, log: Callable[[str], None], items: int = 0, audio_seconds: float = 0.0) -> bool:
    """Turn `chat`'s (an `AudioChat`) compiled step on when `long_job_compiles` says so, announced through `log`,
    which also gets the compile progress; returns whether it did."""
    compiles, why = long_job_compiles(chat.model, items, audio_seconds)
    if compiles:
        log(f"compiling the decode step for {_job(items, audio_seconds)} ({why}; --no-compile: decode eagerly)")
        chat.use_compiled_decode(warm=log)
    return compiles


def _job(items: int, audio_seconds: float) -> str:
    return f"{items} items" if items else f"{audio_seconds / 60:.0f} min of audio"
