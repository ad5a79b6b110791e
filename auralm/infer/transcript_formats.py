"""A `Transcript` in OpenAI's transcription response formats: json, text, srt, vtt and verbose_json."""

from __future__ import annotations

from typing import Any

from auralm.infer.transcribe import Transcript


def _clock(seconds: float, decimal: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{decimal}{ms % 1000:03d}"


def to_srt(result: Transcript) -> str:
    segments = [s for s in result.segments if s.text]
    return "".join(
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n\n" for i, s in enumerate(segments, 1)
    )


def to_vtt(result: Transcript) -> str:
    segments = [s for s in result.segments if s.text]
    return "WEBVTT\n\n" + "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n\n" for s in segments)


def to_verbose(result: Transcript, duration: float, words: bool = False) -> dict[str, Any]:
    """OpenAI's verbose_json: the text, language, duration and timed segments (one per decoded window); with
    `words` (timestamp_granularities "word"; the result of a transcription with word times) the timed words."""
    body = {
        "task": "transcribe", "language": result.language, "duration": round(duration, 3), "text": result.text,
        "segments": [
            {"id": i, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text}
            for i, s in enumerate(result.segments)
        ],
    }
    if words:
        body["words"] = [{"word": w, "start": round(a, 3), "end": round(b, 3)} for w, a, b in result.words]
    return body
