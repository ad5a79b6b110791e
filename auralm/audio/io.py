"""Audio decoding: a file, bytes, a binary file object or an (array, sr) pair in; mono float32 at 16 kHz out.

soundfile (libsndfile) reads wav, flac, ogg/vorbis, opus and mp3; PyAV (FFmpeg) reads what libsndfile cannot
(m4a/aac, webm, ...). Decoded blocks are mixed to mono, checked and resampled with soxr as they arrive, so memory
stays proportional to the output and the length limit stops decoding early: a small compressed file cannot
expand into gigabytes of PCM. Every failure is an `AudioError` with a one-line message naming the source.
"""

from __future__ import annotations

import io
import math
import numbers
import os
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
import soxr
import torch

from auralm.audio.geometry import SAMPLE_RATE

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | tuple

# The library's one bound on an audio input (load_audio, the processor, `auralm transcribe`): 20 minutes. A chat
# prompt holds every window's embeddings at once (25 tokens/s, so 30,000 tokens); the server and the training data
# set their own, smaller bounds (auralm.serve.settings, auralm.train.config) for the reasons written there.
DEFAULT_MAX_SECONDS = 1200.0
RESAMPLE_QUALITY = "HQ"  # soxr's high-quality preset (its default for one-shot resampling)
_BLOCK_FRAMES = 1 << 16  # frames per soundfile read: ~1.4 s at 48 kHz, a few MB even for many channels
# The lowest source rate accepted. Telephone audio is 8 kHz, and nothing below 1 kHz holds speech or most sounds;
# a lower rate turns a few bytes into minutes of audio after resampling (a 444-byte WAV at 1 Hz is 200 s, ~50 s of
# CPU), so it is refused from the header, before anything is decoded.
MIN_SOURCE_RATE = 1000
_MAX_CHANNELS = 64  # an array's smaller axis above this is not a plausible channel axis
_NO_AUDIO_STREAM = "not a recognised audio file: no audio stream in what FFmpeg reads it as"


class AudioError(ValueError):
    """Input that cannot become a waveform; the message names the source and the problem on one line."""


class AudioTooLong(AudioError):
    """The audio is longer than the `max_seconds` limit (decoding stopped at the limit)."""


class AudioRateTooLow(AudioError):
    """The audio's sample rate is below `MIN_SOURCE_RATE` (refused before decoding)."""


def _describe(source: object) -> str:
    """How messages name the source: the path, "<bytes>", the file object's name, or "<array>"."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, (tuple, np.ndarray, torch.Tensor)):
        return "<array>"
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<file object>"


def _one_line(exc: BaseException) -> str:
    """A decoder exception as one short line (FFmpeg errors carry errno noise, some libraries multi-line text)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:200]


def _check_rate(value: object, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise AudioError(f"{name}: invalid {what} {value!r}: must be a positive integer number of Hz")
    return int(value)


def _check_max_seconds(value: object, name: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (value > 0 and math.isfinite(value))
    ):
        raise AudioError(
            f"{name}: invalid max_seconds {value!r}: must be a positive number of seconds or None"
        )
    return float(value)


def _to_float32(samples: np.ndarray, name: str) -> np.ndarray:
    """Float samples as float32; integer PCM scaled to [-1, 1) by its full range."""
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype in (np.int8, np.int16, np.int32):
        return samples.astype(np.float32) / float(2 ** (8 * samples.dtype.itemsize - 1))
    if samples.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return (samples.astype(np.float32) - 128.0) / 128.0
    raise AudioError(
        f"{name}: unsupported sample dtype {samples.dtype}; pass float samples in [-1, 1] or int16/int32 PCM"
    )


class _MonoSink:
    """Receives decoded blocks `(frames, channels)`, mixes them to mono (channel mean), rejects non-finite
    samples, enforces the length limit as frames arrive and resamples to the target rate on the fly."""

    def __init__(self, name: str, target_rate: int, max_seconds: float | None):
        self.name = name
        self.target_rate = target_rate
        self.max_seconds = max_seconds
        self.source_rate: int | None = None
        self.frames = 0  # source-rate frames received so far
        self._max_frames: int | None = None
        self._resampler: soxr.ResampleStream | None = None
        self._parts: list[np.ndarray] = []

    def _too_long(self, what: str) -> AudioTooLong:
        return AudioTooLong(
            f"{self.name}: audio {what}, longer than max_seconds={self.max_seconds:g}; "
            "cut it into shorter files or raise max_seconds"
        )

    def start(self, source_rate: int, declared_frames: int | None = None) -> None:
        """Fixes the source rate; rejects a declared length over the limit before anything is decoded."""
        if source_rate <= 0:
            raise AudioError(f"{self.name}: corrupt audio: sample rate {source_rate} Hz")
        if source_rate < MIN_SOURCE_RATE:
            raise AudioRateTooLow(
                f"{self.name}: sample rate {source_rate} Hz is below the lowest accepted rate of {MIN_SOURCE_RATE} Hz"
            )
        self.source_rate = source_rate
        if self.max_seconds is not None:
            self._max_frames = math.floor(self.max_seconds * source_rate)
            if declared_frames is not None and declared_frames > self._max_frames:
                raise self._too_long(f"is {declared_frames / source_rate:.1f} s long")
        if source_rate != self.target_rate:
            self._resampler = soxr.ResampleStream(
                source_rate, self.target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )

    def add(self, block: np.ndarray, source_rate: int) -> None:
        """Takes float32 `(frames, channels)`; the block may be reused by the caller afterwards."""
        if self.source_rate is None:
            self.start(source_rate)
        elif source_rate != self.source_rate:
            raise AudioError(
                f"{self.name}: sample rate changes mid-stream ({self.source_rate} -> {source_rate} Hz)"
            )
        if block.ndim != 2 or block.shape[1] == 0:
            raise AudioError(f"{self.name}: corrupt audio: decoded block of shape {block.shape}")
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy()  # (frames,)
        if not np.isfinite(mono).all():
            at = (self.frames + int(np.argmin(np.isfinite(mono)))) / self.source_rate
            raise AudioError(f"{self.name}: contains non-finite samples (NaN or inf) at {at:.3f} s")
        self.frames += mono.shape[0]
        if self._max_frames is not None and self.frames > self._max_frames:
            raise self._too_long(
                f"goes on past {self.frames / self.source_rate:.1f} s (decoding stopped there)"
            )
        self._parts.append(mono if self._resampler is None else self._resampler.resample_chunk(mono))

    def finish(self) -> np.ndarray:
        """The whole mono waveform at the target rate, float32 (n,)."""
        if self.frames == 0:
            raise AudioError(f"{self.name}: contains no audio samples")
        if self._resampler is not None:
            self._parts.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        out = np.concatenate(self._parts)
        if out.shape[0] == 0:
            raise AudioError(
                f"{self.name}: too short: {self.frames} samples at {self.source_rate} Hz "
                f"give no samples at {self.target_rate} Hz"
            )
        return out


def _read_source(source: object, name: str) -> Path | bytes:
    """A checked path, or the bytes of a bytes-like or file-like source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{name}: file not found")
        if not path.is_file():
            raise AudioError(f"{name}: not a regular file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: file is empty (0 bytes)")
        return path
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif callable(getattr(source, "read", None)):
        # Read from the current position: decoders need to seek, and many file objects (uploads, pipes) cannot.
        data = source.read()
        if not isinstance(data, bytes):
            raise AudioError(
                f"{name}: file object returned {type(data).__name__}; open it in binary mode ('rb')"
            )
    elif isinstance(source, (np.ndarray, list, torch.Tensor)):
        raise AudioError(f"{name}: an array needs its sampling rate: pass an (array, sampling_rate) tuple")
    else:
        raise AudioError(
            f"{name}: unsupported source type {type(source).__name__}; "
            "pass a path, bytes, a binary file object or an (array, sampling_rate) tuple"
        )
    if not data:
        raise AudioError(f"{name}: empty input (0 bytes)")
    return data


def _open_binary(src: Path | bytes) -> BinaryIO:
    return open(src, "rb") if isinstance(src, Path) else io.BytesIO(src)


def _decode_soundfile(src: Path | bytes, sink: _MonoSink) -> bool:
    """Decodes with libsndfile into `sink`; False (nothing decoded) when libsndfile cannot open the format."""
    try:
        handle = sf.SoundFile(str(src) if isinstance(src, Path) else io.BytesIO(src))
    except (sf.SoundFileError, RuntimeError):
        return False
    if handle.format in ("MPEG", "MP3"):
        # libsndfile trusts the first frame's length and silently stops early on joined/VBR mp3 streams;
        # FFmpeg decodes every frame.
        handle.close()
        return False
    with handle:
        # The header's frame count is checked before reading; the count of frames read guards headers that lie.
        sink.start(handle.samplerate, declared_frames=handle.frames)
        block = np.empty((_BLOCK_FRAMES, handle.channels), dtype=np.float32)
        while True:
            try:
                got = handle.read(dtype="float32", always_2d=True, out=block)  # (n, channels) view of block
            except (sf.SoundFileError, RuntimeError) as exc:
                raise AudioError(f"{sink.name}: corrupt audio: {_one_line(exc)}") from None
            if got.shape[0] == 0:
                return True
            sink.add(got, handle.samplerate)
            if got.shape[0] < _BLOCK_FRAMES:
                return True


def _frame_samples(frame: av.AudioFrame, name: str) -> np.ndarray:
    """A decoded FFmpeg frame as float32 (frames, channels)."""
    samples = frame.to_ndarray()  # planar: (channels, frames); packed: (1, frames * channels)
    channels = frame.layout.nb_channels
    samples = samples.T if frame.format.is_planar else samples.reshape(-1, channels)
    return _to_float32(samples, name)


def _decode_pyav(src: Path | bytes, sink: _MonoSink) -> None:
    """Decodes the first audio stream with FFmpeg into `sink`, counting samples as frames arrive."""
    name = sink.name
    # A Python file object rather than a URL: FFmpeg then cannot follow references inside the data (playlists,
    # concat lists) to other files or hosts.
    with _open_binary(src) as file:
        try:
            container = av.open(file, mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise AudioError(f"{name}: not a recognised audio file or corrupt ({_one_line(exc)})") from None
        with container:
            if not container.streams.audio:
                raise AudioError(f"{name}: {_NO_AUDIO_STREAM} ({container.format.name})")
            stream = container.streams.audio[0]
            first_error: str | None = None
            # Codec frames are short (20 ms for opus): gather them into blocks so per-block work stays cheap.
            pending: list[np.ndarray] = []
            pending_frames, pending_rate = 0, 0
            try:
                for packet in container.demux(stream):
                    try:
                        frames = packet.decode()
                    except av.error.InvalidDataError as exc:
                        # Like the ffmpeg tool, skip undecodable packets (e.g. the junction of concatenated mp3s).
                        first_error = first_error or _one_line(exc)
                        continue
                    for frame in frames:
                        samples = _frame_samples(frame, name)  # (frames, channels)
                        if pending and (
                            frame.sample_rate != pending_rate or samples.shape[1] != pending[0].shape[1]
                        ):
                            sink.add(np.concatenate(pending), pending_rate)
                            pending, pending_frames = [], 0
                        pending.append(samples)
                        pending_frames += samples.shape[0]
                        pending_rate = frame.sample_rate
                        if pending_frames >= _BLOCK_FRAMES:
                            sink.add(np.concatenate(pending), pending_rate)
                            pending, pending_frames = [], 0
            except av.error.FFmpegError as exc:
                raise AudioError(f"{name}: corrupt audio: {_one_line(exc)}") from None
            if pending:
                sink.add(np.concatenate(pending), pending_rate)
            if sink.frames == 0 and first_error is not None:
                raise AudioError(f"{name}: corrupt audio, no packet could be decoded ({first_error})")


def _array_frames(array: object, name: str) -> tuple[np.ndarray, int]:
    """The `(array, sr)` pair's samples as (frames, channels) in their own dtype, and the checked rate."""
    if len(array) != 2:
        raise AudioError(
            f"{name}: expected an (array, sampling_rate) pair, got a tuple of {len(array)} items"
        )
    samples, rate = array
    rate = _check_rate(rate, "sampling rate in the (array, sampling_rate) pair", name)
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu()
        if samples.dtype == torch.bfloat16:  # no numpy equivalent
            samples = samples.float()
        samples = samples.numpy()
    samples = np.asarray(samples)
    if samples.size == 0:
        raise AudioError(f"{name}: contains no audio samples")
    if samples.ndim == 1:
        return samples[:, None], rate
    if samples.ndim == 2:
        short_axis = int(np.argmin(samples.shape))
        if samples.shape[0] == samples.shape[1] or samples.shape[short_axis] > _MAX_CHANNELS:
            raise AudioError(
                f"{name}: ambiguous 2-D array of shape {samples.shape}: channels must be the clearly smaller axis "
                f"(at most {_MAX_CHANNELS})"
            )
        return (samples if short_axis == 1 else samples.T), rate
    raise AudioError(f"{name}: expected a 1-D or 2-D (channels) array, got shape {samples.shape}")


def load_audio(
    source: AudioSource,
    sampling_rate: int = SAMPLE_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> np.ndarray:
    """Decodes `source` to a mono float32 waveform (n,) at `sampling_rate` Hz.

    `source` is a path, bytes, a binary file object (read from its current position) or an `(array, sr)` pair
    (array 1-D, or 2-D with channels on the clearly smaller axis; int16/int32 PCM is scaled to [-1, 1]).
    Channels are averaged; resampling uses soxr ("HQ"). Raises `AudioError` when the file is missing, empty,
    not audio or corrupt, holds no samples or non-finite ones, or is longer than `max_seconds` (None: no limit;
    checked while decoding, before the samples are kept).
    """
    name = _describe(source)
    rate = _check_rate(sampling_rate, "sampling_rate", name)
    limit = _check_max_seconds(max_seconds, name)
    sink = _MonoSink(name, rate, limit)
    if isinstance(source, tuple):
        samples, source_rate = _array_frames(source, name)
        sink.start(source_rate, declared_frames=samples.shape[0])
        sink.add(_to_float32(samples, name), source_rate)
        return sink.finish()
    src = _read_source(source, name)
    if not _decode_soundfile(src, sink):
        _decode_pyav(src, sink)
    return sink.finish()


def audio_duration(source: AudioSource) -> float:
    """Duration in seconds, from the header when the format records it, else by decoding without keeping samples.

    Header durations of compressed formats can be estimates; `load_audio` counts the real samples.
    """
    name = _describe(source)
    if isinstance(source, tuple):
        samples, rate = _array_frames(source, name)
        return samples.shape[0] / rate
    src = _read_source(source, name)
    try:
        with sf.SoundFile(str(src) if isinstance(src, Path) else io.BytesIO(src)) as handle:
            if handle.samplerate > 0:
                return handle.frames / handle.samplerate
    except (sf.SoundFileError, RuntimeError):
        pass
    with _open_binary(src) as file:
        try:
            with av.open(file, mode="r") as container:
                if not container.streams.audio:
                    raise AudioError(f"{name}: {_NO_AUDIO_STREAM} ({container.format.name})")
                stream = container.streams.audio[0]
                if stream.duration is not None and stream.time_base is not None:
                    return float(stream.duration * stream.time_base)
                if container.duration is not None:
                    return container.duration / av.time_base
                frames = sum(frame.samples for frame in container.decode(stream))
                return frames / stream.rate if stream.rate else 0.0
        except av.error.FFmpegError as exc:
            raise AudioError(f"{name}: not a recognised audio file or corrupt ({_one_line(exc)})") from None
