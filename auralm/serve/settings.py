"""What the server allows: every limit is checked before the work it bounds is done.

Status codes: 400 for a malformed or invalid request, 401 for a missing or wrong API key, 413 when a request
exceeds one of the size limits below (body bytes, audio bytes, audio seconds, audios per request, prompt tokens),
415 for a content type or audio format the server does not take, 422 for audio that cannot be decoded, 429 when
the queue is full (with Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Limits and switches of `auralm serve`; the defaults are safe for a server reachable by others."""

    model_name: str = "auralm"  # the model id `/v1/models` lists and requests name
    api_key: str | None = None  # when set, every /v1 route needs `Authorization: Bearer <key>`
    max_batch: int = 8  # rows decoded together; new requests join the running batch up to this many
    max_queue: int = 64  # requests waiting for a slot; one more is answered 429
    retry_after_seconds: int = 1  # the Retry-After a 429 carries
    max_body_bytes: int = 32 * MB  # a request body larger than this is refused while it is read (413)
    max_audio_bytes: int = 20 * MB  # one audio's encoded bytes (inline, uploaded or fetched)
    # Decoded chat audio per request, all clips together; decoding stops past it. Below the library's 20 min
    # (auralm.audio.DEFAULT_MAX_SECONDS): a chat prompt holds all of it at once (25 tokens/s, so 5 min is 7,500 of
    # the max_prompt_tokens) in a batch shared with other clients.
    max_audio_seconds: float = 300.0
    # Decoded audio of one transcription. Above the library's bound: each 30 s window is its own prompt, so a long
    # recording costs decoding time, not prompt length; 30 min covers a long meeting.
    max_transcribe_seconds: float = 1800.0
    max_audios: int = 8  # audio clips per request
    max_prompt_tokens: int = 8192  # prompt tokens (audio placeholders included)
    max_tokens_limit: int = 1024  # the largest max_tokens a request may ask for
    default_max_tokens: int = 256  # max_tokens when a request does not say
    allow_domains: tuple[str, ...] = ()  # hosts http(s) audio URLs may name (a subdomain of one counts); empty: none
    allow_file_dir: Path | None = None  # file:// audio URLs must resolve inside this folder; None: file:// refused
    fetch_timeout: float = 10.0  # seconds for one remote audio download, connection included
    max_redirects: int = 3  # redirects followed per audio URL, each one re-checked
    # /health says "stalled" (503) when the scheduler thread has not gone round its loop for this long while
    # requests wait or run; above the longest single step, which is one prefill of max_batch long prompts on CPU.
    health_stall_seconds: float = 120.0
    # /health says "out_of_file_descriptors" (503) when fewer than this many are free under RLIMIT_NOFILE: the
    # margin a balancer needs to take the server out of rotation before accept() fails for everyone.
    health_min_free_fds: int = 32
    # The compiled decode step (`auralm.serve.compiling`): "auto" (where it pays), "on" or "off". The library's
    # default is off; `auralm serve` defaults to auto.
    compile: str = "off"

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_audio_bytes", "max_audios",
                     "max_prompt_tokens", "max_tokens_limit", "default_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if min(self.max_audio_seconds, self.max_transcribe_seconds, self.fetch_timeout) <= 0:
            raise ValueError("max_audio_seconds, max_transcribe_seconds and fetch_timeout must be > 0")
        if self.compile not in ("auto", "on", "off"):
            raise ValueError(f"compile must be auto, on or off, got {self.compile!r}")
        if self.max_redirects < 0 or self.retry_after_seconds < 0 or self.health_min_free_fds < 0:
            raise ValueError("max_redirects, retry_after_seconds and health_min_free_fds must be >= 0")
        if not self.health_stall_seconds > 0:
            raise ValueError(f"health_stall_seconds must be > 0, got {self.health_stall_seconds}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit ({self.max_tokens_limit})"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty; pass a real key or none")
        # Hosts compare in lower case without a trailing dot, as DNS does.
        object.__setattr__(self, "allow_domains", tuple(d.lower().rstrip(".") for d in self.allow_domains))
        if self.allow_file_dir is not None:
            folder = Path(self.allow_file_dir).resolve()
            if not folder.is_dir():
                raise ValueError(f"allow_file_dir {self.allow_file_dir} is not a folder")
            object.__setattr__(self, "allow_file_dir", folder)


# The formats `input_audio.format` may name; the bytes are decoded by content, the name is only checked.
AUDIO_FORMATS = frozenset({"wav", "mp3", "flac", "ogg", "opus", "webm", "m4a", "mp4", "aac", "oga", "mpeg"})
