"""Splitting audio longer than the encoder window (30 s) into windows, cut at quiet spots.

The reference silently keeps the first 30 s. auralm encodes every window instead: for chat the window embeddings
are joined in order (no overlap, so nothing is heard twice); for transcription windows overlap a little and the
transcripts are stitched (`auralm.infer.transcribe`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auralm.audio.geometry import CHUNK_SECONDS, SAMPLE_RATE

WINDOW_SECONDS = float(CHUNK_SECONDS)  # the longest window: what the encoder takes at once


@dataclass(frozen=True)
class Window:
    """One window of a longer clip: samples [start, end) of the original audio."""

    start: int
    end: int

    @property
    def start_seconds(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_seconds(self) -> float:
        return self.end / SAMPLE_RATE


def _quietest_cut(audio: np.ndarray, lo: int, hi: int, frame: int) -> int:
    """Sample index in [lo, hi] at the centre of the lowest-energy frame (ties: the latest, for longer windows)."""
    seg = audio[lo:hi]
    n = len(seg) // frame
    if n == 0:
        return hi
    energy = (seg[: n * frame].reshape(n, frame) ** 2).mean(axis=1)  # (n,)
    best = n - 1 - int(np.argmin(energy[::-1]))
    return lo + best * frame + frame // 2


def plan_windows(
    n_samples: int | np.ndarray, window_seconds: float = WINDOW_SECONDS, overlap_seconds: float = 0.0,
    search_seconds: float = 5.0, audio: np.ndarray | None = None,
) -> list[Window]:
    """Cut a clip into windows of at most `window_seconds`.

    Each cut falls at the quietest 20 ms frame of the last `search_seconds` of a window (when `audio` is given; else
    at the window end), and the next window starts `overlap_seconds` before the cut. Windows cover every sample.
    """
    if isinstance(n_samples, np.ndarray):
        audio, n_samples = n_samples, len(n_samples)
    win = int(window_seconds * SAMPLE_RATE)
    overlap = int(overlap_seconds * SAMPLE_RATE)
    search = int(search_seconds * SAMPLE_RATE)
    if not 0 <= overlap < win - search:
        raise ValueError(f"overlap {overlap_seconds}s must be >= 0 and leave room for the cut search in a {window_seconds}s window")
    windows: list[Window] = []
    start = 0
    while n_samples - start > win:
        lo, hi = start + win - search, start + win
        cut = _quietest_cut(audio, lo, hi, SAMPLE_RATE // 50) if audio is not None else hi
        windows.append(Window(start, cut))
        start = cut - overlap
    windows.append(Window(start, n_samples))
    return windows


def split_audio(audio: np.ndarray, window_seconds: float = WINDOW_SECONDS, overlap_seconds: float = 0.0) -> list[np.ndarray]:
    """The samples of each window (views, not copies)."""
    return [audio[w.start:w.end] for w in plan_windows(audio, window_seconds, overlap_seconds)]
