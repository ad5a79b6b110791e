"""Transcription output as the library, the CLI and /v1/audio/transcriptions give it (issue 15, item 3): cues of
long audio in order and apart, the detected language reported, word times when asked."""

from __future__ import annotations

import io
import re
from itertools import pairwise

import httpx
import numpy as np
import pytest
import soundfile as sf
from serve_support import ServerThread, tiny_chat
from tiny_hf import speechlike

from auralm.infer.transcribe import transcribe_windows
from auralm.infer.transcript_formats import to_srt, to_vtt
from auralm.serve.app import create_app
from auralm.serve.scheduler import Delta, Job
from auralm.serve.settings import ServeSettings

SR = 16000
CUE = re.compile(r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)")


def cue_times(subtitles: str) -> list[tuple[float, float]]:
    def seconds(h, m, s, ms):
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000

    return [(seconds(*m.groups()[:4]), seconds(*m.groups()[4:])) for m in CUE.finditer(subtitles)]


def assert_in_order_and_apart(cues: list[tuple[float, float]], duration: float) -> None:
    assert cues and cues[0][0] == 0.0 and cues[-1][1] == pytest.approx(duration, abs=1e-3)
    for (start, end), (next_start, _) in pairwise(cues):
        assert start < end <= next_start, cues
    assert all(start < end for start, end in cues)


def test_cues_of_long_audio_do_not_overlap_at_the_seams():
    audio = np.concatenate([speechlike(20.0, seed=s) for s in range(4)])  # 80 s: three windows, two seams
    result = transcribe_windows(audio, lambda samples: f"words of {len(samples)} samples", overlap_seconds=1.5)
    assert len(result.segments) == 3
    for segment, after in pairwise(result.segments):
        assert segment.end == after.start  # the overlap is split once, between the two windows
    assert_in_order_and_apart(cue_times(to_srt(result)), 80.0)
    assert_in_order_and_apart(cue_times(to_vtt(result)), 80.0)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return tiny_chat(tmp_path_factory.getbasetemp())


@pytest.fixture
def tagging(chat, monkeypatch):
    """The tiny model's decoding as if its answers began with a language tag (Qwen2-Audio answers "<|de|>..." when
    asked to detect the language); decoding without special tokens is unchanged."""
    plain = chat.processor.decode

    def decode(ids, skip_special_tokens=True):
        text = plain(ids, skip_special_tokens)
        return text if skip_special_tokens or not len(ids) else "<|de|>" + text

    monkeypatch.setattr(chat.processor, "decode", decode)
    return plain


def test_the_library_reports_the_detected_language(chat, tagging):
    clip = (speechlike(3.0, seed=2), SR)
    detected = chat.transcribe(clip, max_new_tokens=6)
    assert detected.language == "de"
    assert "<|" not in detected.text and detected.text != ""
    assert chat.transcribe(clip, language="en", max_new_tokens=6).language == "en"  # asked for: reported as asked


def wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def serving(chat) -> ServerThread:
    """A server over `chat` as it decodes now (the scheduler takes the processor's decode when it is built)."""
    return ServerThread(create_app(chat, ServeSettings(model_name="tiny", max_batch=2, default_max_tokens=12)))


@pytest.fixture
def server(chat, tagging):
    with serving(chat) as s:
        yield s


def transcribe(server, audio: bytes, **fields) -> httpx.Response:
    data = {"model": "tiny", **fields}
    return httpx.post(server.url + "/v1/audio/transcriptions", data=data, files={"file": ("a.wav", audio)},
                      timeout=120)


def test_the_server_reports_the_detected_language(server, chat):
    clip = wav(speechlike(3.0, seed=2))
    for fmt in ("json", "verbose_json"):
        r = transcribe(server, clip, response_format=fmt)
        assert r.status_code == 200, r.text
        assert r.json()["language"] == "de" and "<|" not in r.json()["text"]
    assert r.json()["text"] == chat.transcribe(clip, max_new_tokens=12).text


def test_the_servers_long_transcript_has_cues_in_order(server):
    clip = wav(np.concatenate([speechlike(20.0, seed=s) for s in range(3)]))  # 60 s: two windows
    r = transcribe(server, clip, response_format="srt", language="en")
    assert r.status_code == 200, r.text
    assert_in_order_and_apart(cue_times(r.text), 60.0)
    segments = transcribe(server, clip, response_format="verbose_json", language="en").json()["segments"]
    assert [s["start"] for s in segments[1:]] == [s["end"] for s in segments[:-1]]


def test_word_timestamps_fill_words_in_verbose_json(chat, monkeypatch):
    # The tiny model knows no time tokens: stand in an answer in the word-timestamp (SRWT) format.
    monkeypatch.setattr(chat.processor, "decode", lambda ids, skip=True: "" if skip or not len(ids) else
                        "<|en|><|0.00|><|sil|><|0.40|>hello<|0.90|>world<|1.30|>")
    with serving(chat) as server:
        r = transcribe(server, wav(speechlike(2.0, seed=1)), response_format="verbose_json",
                       **{"timestamp_granularities[]": ["word", "segment"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["words"] == [{"word": "hello", "start": 0.4, "end": 0.9}, {"word": "world", "start": 0.9, "end": 1.3}]
    assert body["text"] == "hello world" and body["language"] == "en"


def test_word_timestamps_need_verbose_json(server):
    r = transcribe(server, wav(speechlike(1.0, seed=1)), response_format="json",
                   **{"timestamp_granularities[]": "word"})
    assert r.status_code == 400 and "verbose_json" in r.json()["error"]["message"]


def test_a_scheduler_job_can_keep_special_tokens(chat):
    inputs = chat.processor(text="hi")
    tag = chat.processor.tokenizer.token_to_id("<|im_start|>")  # a special token of the tiny tokenizer
    for skip, expected in ((False, ["<|im_start|>"]), (True, [])):
        deltas = []
        job = Job(inputs, chat.config(max_new_tokens=2), deltas.append, skip_special_tokens=skip)
        job.start(chat.processor.decode)
        job.take(tag)
        assert [d.text for d in deltas if isinstance(d, Delta)] == expected
