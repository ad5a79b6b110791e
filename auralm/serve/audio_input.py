"""Audio parts of a request -> waveforms, each limit checked before the work it bounds.

The caller counts the clips before any is read. Here: each clip's encoded size is checked before base64 is
decoded (or a download goes past it), and the decoded duration is charged to the request's budget while decoding
(decoding stops at the limit, so a small compressed file cannot expand into gigabytes of samples). Failures are
`ServeError`s with fixed messages: nothing a decoder says reaches the client.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from auralm.audio import SAMPLE_RATE, AudioError, AudioTooLong, load_audio
from auralm.audio.io import MIN_SOURCE_RATE, AudioRateTooLow
from auralm.serve.errors import ServeError, bad_request, too_large
from auralm.serve.fetch import AudioFetcher
from auralm.serve.settings import AUDIO_FORMATS


class AudioReader:
    """Turns the audio of one request into waveforms within the request's budget of clips and seconds."""

    def __init__(self, fetcher: AudioFetcher, max_bytes: int, max_seconds: float):
        self.fetcher = fetcher
        self.max_bytes = max_bytes
        self.seconds_left = max_seconds
        self.max_seconds = max_seconds

    # ---- bytes ---------------------------------------------------------------------------------------------
    def input_audio_bytes(self, spec: Any, where: str) -> bytes:
        """`{"data": base64, "format": name}` (OpenAI's input_audio) -> the encoded audio bytes."""
        if not isinstance(spec, dict) or not isinstance(spec.get("data"), str):
            raise bad_request(f"{where}: input_audio must be an object with a base64 'data' string", param=where)
        fmt = spec.get("format")
        if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in AUDIO_FORMATS):
            raise ServeError(415, f"{where}: unsupported audio format; use one of {', '.join(sorted(AUDIO_FORMATS))}",
                             "unsupported_audio_format", where)
        return self._base64(spec["data"], where)

    def url_bytes(self, url: Any, where: str) -> bytes:
        """A `data:` URL's payload, or what the fetcher reads from an http(s):// or file:// URL."""
        if isinstance(url, dict):
            url = url.get("url")
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}: audio_url must be a URL string or {{'url': ...}}", param=where)
        if url[:5].lower() == "data:":
            header, comma, payload = url.partition(",")
            if not comma or not header.lower().endswith(";base64"):
                raise bad_request(f"{where}: data: audio URLs must be base64 (data:audio/...;base64,...)",
                                  "invalid_base64", where)
            return self._base64(payload, where)
        return self.fetcher.fetch(url)

    def _base64(self, text: str, where: str) -> bytes:
        raw = "".join(text.split()).encode("ascii", errors="replace")
        if len(raw) // 4 * 3 > self.max_bytes:  # checked on the encoded length, before decoding
            raise too_large(f"{where}: the audio is larger than this server's limit of {self.max_bytes} bytes",
                            "audio_too_large", where)
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{where}: the audio data is not valid base64", "invalid_base64", where) from None
        if not data:
            raise ServeError(422, f"{where}: the audio is empty", "invalid_audio", where)
        return data

    # ---- samples -------------------------------------------------------------------------------------------
    def decode(self, data: bytes, where: str) -> np.ndarray:
        """Encoded bytes -> mono float32 (n,) at 16 kHz, charged to the request's budget of seconds."""
        if len(data) > self.max_bytes:
            raise too_large(f"{where}: the audio is larger than this server's limit of {self.max_bytes} bytes",
                            "audio_too_large", where)
        if self.seconds_left <= 0:
            raise self._too_long(where)
        try:
            wave = load_audio(data, SAMPLE_RATE, max_seconds=self.seconds_left)
        except AudioTooLong:
            raise self._too_long(where) from None
        except AudioRateTooLow:
            raise ServeError(422, f"{where}: the audio's sample rate is below {MIN_SOURCE_RATE} Hz",
                             "audio_rate_too_low", where) from None
        except AudioError:
            # One fixed message, so decoder internals never reach the client.
            raise ServeError(422, f"{where}: the audio could not be decoded (not a supported audio file, or corrupt)",
                             "invalid_audio", where) from None
        self.seconds_left -= len(wave) / SAMPLE_RATE
        return wave

    def _too_long(self, where: str) -> ServeError:
        return too_large(f"{where}: the request's audio is longer than this server's limit of "
                         f"{self.max_seconds:g} s", "audio_too_long", where)
