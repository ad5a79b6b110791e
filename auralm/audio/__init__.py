"""Audio front end: the shared time grid (`geometry`), decoding and resampling (`io`), Whisper log-mel features
(`features`)."""

from auralm.audio.features import log_mel_batch
from auralm.audio.geometry import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, num_audio_tokens, num_frames
from auralm.audio.io import DEFAULT_MAX_SECONDS, AudioError, AudioTooLong, audio_duration, load_audio

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "HOP_LENGTH",
    "N_FRAMES",
    "N_SAMPLES",
    "SAMPLE_RATE",
    "AudioError",
    "AudioTooLong",
    "audio_duration",
    "load_audio",
    "log_mel_batch",
    "num_audio_tokens",
    "num_frames",
]
