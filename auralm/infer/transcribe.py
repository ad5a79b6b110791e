"""Transcribing audio of any length: overlapping windows, decoded in turn, stitched without repeated or lost words.

Windows are cut at quiet spots and overlap by `OVERLAP_SECONDS`, so a word cut at one window's edge is whole in the
other. At each seam the longest run of words that ends the previous transcript and starts the next one (compared
without case and punctuation) is kept once. Each window decodes within `window_budget` tokens, the one rule of the
library, the CLI, the demo and the server.

The overlap belongs to one segment: each seam's overlap is split at its midpoint, so the segments (SRT/VTT cues)
tile the audio in order without overlapping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from auralm.audio.chunking import WINDOW_SECONDS, plan_windows
from auralm.audio.geometry import SAMPLE_RATE

OVERLAP_SECONDS = 1.5
MAX_SEAM_WORDS = 12  # the overlap holds a few words; longer matches would be coincidences inside the text


def transcript_budget(seconds: float, timestamps: bool = False) -> int:
    """The most tokens a transcript of `seconds` of audio may take: 12 per second (30 with word times: two time
    tokens per word) + 16. Fast speech runs at ~4 words or ~6-8 tokens per second (Whisper caps a 30 s window at
    224 tokens), so real transcripts fit, while a model stuck repeating itself stops near the clip's length
    instead of after the chat default of 256 tokens."""
    return 16 + math.ceil(seconds * (30 if timestamps else 12))


def window_budget(
    seconds: float, timestamps: bool = False, max_new_tokens: int | None = None, cap: int | None = None,
) -> int:
    """The new-token budget of one window of `seconds`: the caller's `max_new_tokens` when given (an explicit limit
    wins); else `transcript_budget(seconds, timestamps)`, lowered to `cap` where a front end bounds every window
    (the server: its `default_max_tokens`, since OpenAI's transcription API takes no token limit)."""
    if max_new_tokens is not None:
        return max_new_tokens
    budget = transcript_budget(seconds, timestamps)
    return budget if cap is None else min(cap, budget)


@dataclass
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    words: list[tuple[str, float, float]] = field(default_factory=list)  # (word, start, end) when timestamps were asked


@dataclass
class Transcript:
    text: str
    segments: list[Segment]
    language: str | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def words(self) -> list[tuple[str, float, float]]:
        return [w for s in self.segments for w in s.words]


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def seam_overlap(prev: list[str], nxt: list[str], max_words: int = MAX_SEAM_WORDS) -> int:
    """How many leading words of `nxt` repeat the trailing words of `prev` (0 if none)."""
    a, b = [_norm(w) for w in prev], [_norm(w) for w in nxt]
    for m in range(min(len(a), len(b), max_words), 0, -1):
        if a[-m:] == b[:m] and any(b[:m]):
            return m
    return 0


def stitch(pieces: Iterable[str]) -> str:
    """Join window transcripts in order, dropping the words each one repeats from the previous."""
    words: list[str] = []
    for piece in pieces:
        nxt = piece.split()
        words += nxt[seam_overlap(words, nxt):]
    return " ".join(words)


def transcribe_windows(
    audio: np.ndarray, decode_window: Callable[[np.ndarray], str], progress: Callable[[int, int], None] | None = None,
    window_seconds: float = WINDOW_SECONDS, overlap_seconds: float = OVERLAP_SECONDS,
    sampling_rate: int = SAMPLE_RATE,
    parse_words: Callable[[str], list[tuple[str, float, float]]] | None = None,
) -> Transcript:
    """Decode each window with `decode_window(samples) -> text` and stitch. `progress(done, total)` after each.

    With `parse_words` (text -> (word, start, end) in window seconds) the words get absolute times and the seam is
    cut by time: a word that starts before the previous window's last word ended was already heard.
    """
    windows = plan_windows(audio, window_seconds=window_seconds, overlap_seconds=overlap_seconds)
    # Segment bounds in samples: 0, the midpoint of each seam's overlap, the end. Window i spans bounds[i:i + 2].
    bounds = [0] + [(a.end + b.start) // 2 for a, b in pairwise(windows)] + [windows[-1].end]
    segments: list[Segment] = []
    words: list[str] = []
    heard_until = 0.0
    if progress:
        progress(0, len(windows))  # the total, before the first window's wait
    for i, w in enumerate(windows):
        text = decode_window(audio[w.start:w.end]).strip()
        offset = w.start / sampling_rate
        if parse_words is not None:
            timed = [(word, offset + a, offset + b) for word, a, b in parse_words(text) if word != "<|sil|>"]
            timed = [t for t in timed if t[1] >= heard_until - 1e-6]
            heard_until = max([heard_until] + [t[2] for t in timed])
            kept = [t[0] for t in timed]
        else:
            timed = []
            nxt = text.split()
            kept = nxt[seam_overlap(words, nxt):]
        words += kept
        segments.append(Segment(bounds[i] / sampling_rate, bounds[i + 1] / sampling_rate, " ".join(kept), timed))
        if progress:
            progress(i + 1, len(windows))
    return Transcript(" ".join(words), segments)
