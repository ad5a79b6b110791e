"""Whisper log-mel features in torch, value-exact with transformers' `WhisperFeatureExtractor`.

The reference pads every clip with zeros to 30 s and computes 3000 frames. Here a batch is padded only as far as
its longest clip needs, yet every frame returned holds the value the reference computes at that index, so the
encoder sees the same numbers on every frame its valid outputs depend on. Three details make that true:

(a) the reference zero-pads the waveform BEFORE the centred STFT, so the windows of the last frames see zeros,
    not a reflection of the clip's tail: each clip is zero-padded on the right before the STFT here as well;
(b) the dynamic-range clamp uses each clip's maximum over all 3000 frames, which includes the one or two frames
    just past the clip whose windows still overlap its tail: every frame that overlaps the signal is kept
    (frames further out are all-zero windows and sit at the log floor, below any maximum);
(c) the encoder's conv stem (k=3, then k=3 stride 2) makes its valid outputs depend on mel frames up to L+1,
    so two frames past the longest clip's L are returned, with their true values.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from auralm.audio.geometry import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, num_frames

N_FFT = 400  # 25 ms analysis window at 16 kHz
N_FREQS = N_FFT // 2 + 1  # 201 one-sided STFT bins
SUPPORTED_N_MELS = (80, 128)  # Whisper large-v3 / Qwen2-Audio use 128, the older Whisper models 80
LOG_FLOOR = 1e-10  # mel power floor before log10, i.e. -10 in log10 units
DYNAMIC_RANGE = 8.0  # log10 units (80 dB) kept below each clip's loudest value
_STFT_REACH = N_FFT // 2  # a centred frame t sees samples [t*HOP - 200, t*HOP + 200)


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, 27.0 / np.log(6.4)
    linear = 3.0 * freq / 200.0
    log = min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) * logstep
    return np.where(freq >= min_log_hz, log, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel`."""
    mels = np.asarray(mels, dtype=np.float64)
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, np.log(6.4) / 27.0
    linear = 200.0 * mels / 3.0
    log = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, log, linear)


@functools.cache
def _mel_filters_f64(n_mels: int) -> np.ndarray:
    # Triangles with corners equally spaced on the Slaney mel scale between 0 Hz and Nyquist, each scaled by
    # 2 / (its width in Hz) ("slaney" area normalisation), evaluated at the STFT bin frequencies (librosa's filters).
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FREQS)  # (201,)
    corners = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))  # (M+2,)
    widths = np.diff(corners)  # (M+1,)
    offsets = corners[None, :] - fft_freqs[:, None]  # (201, M+2)
    rising = -offsets[:, :-2] / widths[:-1]  # (201, M)
    falling = offsets[:, 2:] / widths[1:]  # (201, M)
    triangles = np.maximum(0.0, np.minimum(rising, falling))  # (201, M)
    area_norm = 2.0 / (corners[2:] - corners[:-2])  # (M,)
    return (triangles * area_norm[None, :]).T  # (M, 201)


def mel_filters(n_mels: int = 128) -> torch.Tensor:
    """Slaney mel filter bank `(n_mels, 201)` float32 for 16 kHz, 400-point FFT (computed in float64)."""
    if n_mels not in SUPPORTED_N_MELS:
        raise ValueError(f"n_mels must be one of {SUPPORTED_N_MELS}, got {n_mels!r}")
    return torch.from_numpy(_mel_filters_f64(n_mels).astype(np.float32))


def _as_waveform(audio: np.ndarray | torch.Tensor, index: int) -> torch.Tensor:
    """Checks one clip and returns it as a 1-D float32 CPU-or-device tensor (no copy when already float32)."""
    if isinstance(audio, np.ndarray):
        if audio.dtype.kind != "f":
            raise ValueError(
                f"audio {index}: expected a float waveform in [-1, 1], got dtype {audio.dtype}; "
                "decode files and scale PCM with auralm.audio.load_audio"
            )
        audio = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    elif isinstance(audio, torch.Tensor):
        if not audio.is_floating_point():
            raise ValueError(f"audio {index}: expected a float waveform in [-1, 1], got dtype {audio.dtype}")
        audio = audio.detach().to(torch.float32)
    else:
        raise TypeError(f"audio {index}: expected a numpy array or torch tensor, got {type(audio).__name__}")
    if audio.ndim != 1:
        raise ValueError(
            f"audio {index}: expected a 1-D mono waveform, got shape {tuple(audio.shape)}; mix channels to mono first"
        )
    if audio.numel() == 0:
        raise ValueError(f"audio {index}: the clip is empty (0 samples)")
    return audio


def log_mel_batch(
    audios: list[np.ndarray | torch.Tensor],
    n_mels: int = 128,
    pad_to_30s: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper log-mel spectrograms of a batch of 16 kHz mono clips.

    Args:
        audios: B float waveforms, 1-D, any lengths >= 1 sample, values nominally in [-1, 1].
        n_mels: 80 or 128 mel bins.
        pad_to_30s: reproduce transformers' layout exactly: each clip zero-padded or truncated to N_SAMPLES,
            F = N_FRAMES. Otherwise the batch is only padded as far as its longest clip needs (see below).
        device: where to compute (default CPU); the outputs live there.

    Returns:
        features: float32 (B, n_mels, F).
        frame_lengths: long (B,), L_i = ceil(n_i / HOP_LENGTH) valid frames (capped at N_FRAMES when pad_to_30s).

    Default mode: F = min(max_i L_i + 2, N_FRAMES) when every clip is <= 30 s, and every one of the F frames of
    every clip equals the reference's value at that index (the clamp is per clip, as in the reference). Clips
    longer than 30 s are not truncated: F = max_i L_i + 2 and all their frames are returned (cut long audio into
    windows of <= N_SAMPLES first to stay in the reference's regime).
    """
    if not isinstance(audios, (list, tuple)) or len(audios) == 0:
        raise ValueError("audios must be a non-empty list of 1-D waveforms")
    if n_mels not in SUPPORTED_N_MELS:
        raise ValueError(f"n_mels must be one of {SUPPORTED_N_MELS}, got {n_mels!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    clips = [_as_waveform(audio, i) for i, audio in enumerate(audios)]
    lengths = [clip.numel() for clip in clips]

    if pad_to_30s:
        lengths = [min(n, N_SAMPLES) for n in lengths]
        n_out, padded_len = N_FRAMES, N_SAMPLES
    else:
        n_out = max(num_frames(n) for n in lengths) + 2  # (c): frames L and L+1 feed valid conv outputs
        if max(lengths) <= N_SAMPLES and n_out >= N_FRAMES:
            # The reference's own layout, including its reflect padding at the 30 s edge.
            n_out, padded_len = N_FRAMES, N_SAMPLES
        else:
            # (a) Just enough zeros that the last returned frame's window lies inside them, so no reflection of
            # the padded signal reaches any returned frame.
            padded_len = (n_out - 1) * HOP_LENGTH + _STFT_REACH
    frame_lengths = torch.tensor([num_frames(n) for n in lengths], dtype=torch.long, device=device)

    waveform = torch.zeros(len(clips), padded_len, dtype=torch.float32, device=device)  # (B, S)
    for row, (clip, n) in enumerate(zip(clips, lengths)):
        waveform[row, :n] = clip[:n]
    bad = ~torch.isfinite(waveform).all(dim=1)
    if bad.any():
        raise ValueError(f"audio {int(bad.nonzero()[0])}: contains non-finite samples (NaN or inf)")

    window = torch.hann_window(N_FFT, periodic=True, device=device)
    stft = torch.stft(
        waveform, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True
    )  # (B, 201, S // HOP + 1)
    # The reference drops the STFT's last frame; here any frame past n_out is dropped, which includes it.
    power = stft[..., :n_out].abs() ** 2  # (B, 201, F)
    mel = mel_filters(n_mels).to(device) @ power  # (B, M, F)
    log_spec = torch.clamp(mel, min=LOG_FLOOR).log10()  # (B, M, F)
    # (b) Per-clip maximum over all returned frames: they include every frame whose window overlaps the clip,
    # and the reference's remaining frames are all-zero windows at the floor, so the maximum is the same.
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    log_spec = torch.maximum(log_spec, peak - DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0, frame_lengths
