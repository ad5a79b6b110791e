"""The time grid every layer shares, each constant beside its derivation.

16 kHz samples -> one log-mel frame per 10 ms (hop 160) -> the encoder's stride-2 conv (20 ms) -> its average
pool (40 ms): one audio embedding, i.e. one `<|AUDIO|>` token, per 40 ms. The encoder takes at most 30 s at a time.
The processor, the datasets and the model all count audio tokens with `num_audio_tokens` from here.
"""

from __future__ import annotations

from typing import TypeVar

SAMPLE_RATE = 16000  # Hz; the rate every Whisper-style encoder is trained on
HOP_LENGTH = 160  # samples between mel frames: 10 ms at 16 kHz
CHUNK_SECONDS = 30  # the encoder's window: the reference's fixed input length
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples in a 30 s chunk
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 frames in a 30 s chunk

Count = TypeVar("Count")  # an int, or an integer tensor of counts (the formulas are elementwise)


def num_frames(n_samples: int) -> int:
    """Number of valid mel frames for a clip of `n_samples` samples: ceil(n_samples / HOP_LENGTH).

    Not capped: callers following the 30 s reference layout cap it at N_FRAMES themselves.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    return -(-n_samples // HOP_LENGTH)


def conv_output_lengths(frame_lengths: Count) -> Count:
    """Valid encoder positions after the stride-2 conv (k=3, padding 1) for L mel frames: L1 = (L - 1) // 2 + 1."""
    return (frame_lengths - 1) // 2 + 1


def num_audio_tokens(frame_lengths: Count) -> Count:
    """Audio embeddings (= `<|AUDIO|>` tokens) for L mel frames: the (2, 2) average pool after the conv,
    N = (L1 - 2) // 2 + 1 (1 s = 100 frames -> 25 tokens; 30 s -> 750). Elementwise on tensors."""
    return (conv_output_lengths(frame_lengths) - 2) // 2 + 1
