"""The OpenAI-compatible API, driven by the real `openai` client against a server on a free loopback port."""

from __future__ import annotations

from dataclasses import replace

import httpx
import openai
import pytest
from serve_support import ServerThread, audio_part, b64, tiny_chat, user, wav_bytes

from auralm.serve.app import create_app
from auralm.serve.settings import ServeSettings

MODEL = "tiny-audio"
CLIP_A = wav_bytes(2.0, seed=1)
CLIP_B = wav_bytes(3.5, seed=2)


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return tiny_chat(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(chat):
    settings = ServeSettings(model_name=MODEL, max_batch=4, max_tokens_limit=512, default_max_tokens=24)
    with ServerThread(create_app(chat, settings)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_list(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "auralm"


def test_chat_with_audio_is_the_library_answer(client, chat):
    question = "What's that sound?"
    r = client.chat.completions.create(
        model=MODEL, max_tokens=12, messages=[user(audio_part(CLIP_A), question)],
    )
    expected = chat.chat(question, audio=CLIP_A, max_new_tokens=12)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content.strip() == expected
    assert r.choices[0].finish_reason == "length"
    prompt = chat.inputs([chat.conversation(question, CLIP_A)])["input_ids"].shape[1]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt, 12)
    assert r.usage.total_tokens == prompt + 12


def test_multi_turn_multi_audio_with_audio_urls(client, chat):
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        user({"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64," + b64(CLIP_A)}}, "Describe the audio."),
        {"role": "assistant", "content": "It is the sound of glass shattering."},
        user(audio_part(CLIP_B), "And this one? Compare both."),
    ]
    r = client.chat.completions.create(model=MODEL, max_tokens=10, messages=messages)
    library = [
        messages[0],
        {"role": "user", "content": [{"type": "audio", "audio": CLIP_A}, {"type": "text", "text": "Describe the audio."}]},
        messages[2],
        {"role": "user", "content": [{"type": "audio", "audio": CLIP_B},
                                     {"type": "text", "text": "And this one? Compare both."}]},
    ]
    assert r.choices[0].message.content.strip() == chat.chat(library, max_new_tokens=10)
    assert r.usage.prompt_tokens == chat.inputs([library])["input_ids"].shape[1]


def test_streaming_gives_the_same_answer_in_pieces(client, server):
    messages = [user(audio_part(CLIP_B), "Transcribe this recording, please.")]
    whole = client.chat.completions.create(model=MODEL, max_tokens=16, messages=messages)
    chunks = list(client.chat.completions.create(
        model=MODEL, max_tokens=16, messages=messages, stream=True, stream_options={"include_usage": True},
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(1 for p in pieces if p) > 1, "the answer should arrive in several pieces"
    assert "".join(pieces) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    # The wire format ends the way OpenAI's does.
    body = {"model": MODEL, "max_tokens": 3, "stream": True, "messages": [user("hi")]}
    raw = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_stop_strings_cut_the_answer_streamed_or_not(client):
    messages = [user(audio_part(CLIP_A), "Describe the audio in detail.")]
    free = client.chat.completions.create(model=MODEL, max_tokens=20, messages=messages).choices[0].message.content
    stop = free[6:8]
    assert stop.strip() and "\ufffd" not in stop, f"pick another cut of the free answer {free!r}"
    expected = free[: free.find(stop)]
    r = client.chat.completions.create(model=MODEL, max_tokens=20, messages=messages, stop=[stop, "never-there"])
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model=MODEL, max_tokens=20, messages=messages, stop=stop, stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_min_tokens_holds_back_the_stop_token(client, chat):
    from auralm.infer.engine import DecodeBatch

    question = "Describe the audio in detail."
    messages = [user(audio_part(CLIP_A), question)]
    free = DecodeBatch.prefill(chat.model, chat.inputs([chat.conversation(question, CLIP_A)]),
                               [chat.config(max_new_tokens=1)])
    for _ in range(3):
        free.rows[0].finished = False
        free.step()
    stop_id = free.rows[0].new_tokens[3]  # the free answer's 4th token becomes a stop token
    first = free.rows[0].new_tokens.index(stop_id)
    original = chat.defaults
    chat.defaults = replace(original, stop_token_ids=(*original.stop_token_ids, stop_id))
    try:
        short = client.chat.completions.create(model=MODEL, max_tokens=12, messages=messages)
        held = client.chat.completions.create(model=MODEL, max_tokens=12, messages=messages,
                                              extra_body={"min_tokens": 12})
    finally:
        chat.defaults = original
    assert short.usage.completion_tokens == first + 1 and short.choices[0].finish_reason == "stop"
    assert held.usage.completion_tokens == 12 and held.choices[0].finish_reason == "length"


def test_seeded_sampling_is_reproducible(client):
    def ask(seed):
        return client.chat.completions.create(
            model=MODEL, max_tokens=16, temperature=1.0, top_p=0.95, seed=seed, messages=[user("hi")],
        ).choices[0].message.content

    assert ask(5) == ask(5)
    assert ask(5) != ask(6)


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcription_formats(client, chat, fmt):
    expected = chat.transcribe(CLIP_B, max_new_tokens=24).text
    r = client.audio.transcriptions.create(model=MODEL, file=("clip.wav", CLIP_B), response_format=fmt)
    if fmt == "json":
        assert r.text == expected
    elif fmt == "text":
        assert r.strip() == expected
    elif fmt == "srt":
        assert r == f"1\n00:00:00,000 --> 00:00:03,500\n{expected}\n\n"
    elif fmt == "vtt":
        assert r == f"WEBVTT\n\n00:00:00.000 --> 00:00:03.500\n{expected}\n\n"
    else:
        assert r.text == expected and r.duration == 3.5 and r.task == "transcribe"
        assert [(s.start, s.end, s.text) for s in r.segments] == [(0.0, 3.5, expected)]


def test_long_transcription_is_windowed_with_language(client, chat):
    long_clip = wav_bytes(41.0, seed=3)
    r = client.audio.transcriptions.create(
        model=MODEL, file=("long.wav", long_clip), response_format="verbose_json", language="en",
    )
    assert r.language == "en" and r.duration == 41.0
    assert len(r.segments) == 2 and r.segments[0].start == 0.0 and r.segments[-1].end == 41.0
    assert r.text == chat.transcribe(long_clip, language="en", max_new_tokens=24).text


def test_short_transcription_stops_at_the_clip_budget(client, chat):
    """A 0.5 s clip may decode transcript_budget(0.5) = 22 tokens, fewer than the server's default of 24: the
    server stops where the library stops (the random model never says EOS, so a missing budget shows)."""
    short = wav_bytes(0.5, seed=4)
    r = client.audio.transcriptions.create(model=MODEL, file=("short.wav", short))
    assert r.text == chat.transcribe(short).text != chat.transcribe(short, max_new_tokens=24).text


def test_refusals_use_openai_error_shape(client, server):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, n=2, messages=[user("hi")])
    assert err.value.body["code"] == "unsupported_parameter" and err.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[user("hi")])
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(
            model=MODEL, messages=[user("hi")],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        )
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=MODEL, max_tokens=100_000, messages=[user("hi")])
    with pytest.raises(openai.BadRequestError, match="min_tokens"):
        client.chat.completions.create(model=MODEL, max_tokens=3, messages=[user("hi")], extra_body={"min_tokens": 5})
    with pytest.raises(openai.BadRequestError, match="audio markers"):
        client.chat.completions.create(model=MODEL, messages=[user("<|AUDIO|> sneaky")])
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.transcriptions.create(model=MODEL, file=("a.wav", CLIP_A), response_format="tsv")
    r = httpx.get(server.url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.post(server.url + "/v1/chat/completions", content=b'{"model": "x"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"


def test_api_key_guards_the_api_but_not_health_or_page(chat):
    settings = ServeSettings(model_name=MODEL, api_key="sekrit", default_max_tokens=4)
    with ServerThread(create_app(chat, settings)) as s:
        for key in ("wrong", ""):
            bad = openai.OpenAI(base_url=s.url + "/v1", api_key=key or "x", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
        r = httpx.post(s.url + "/v1/chat/completions", json={"model": MODEL, "messages": [user("hi")]})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sekrit", max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=[user("hi")]).usage.completion_tokens == 4
        assert httpx.get(s.url + "/health").json() == {"status": "ok"}  # the details need the key too
        assert httpx.get(s.url + "/health", headers={"authorization": "Bearer sekrit"}).json()["api_key_required"]
        assert httpx.get(s.url + "/").status_code == 200


def test_page_and_assets_are_served_with_a_strict_policy(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text and "<script>" not in page.text  # no inline script
    for asset in ("app.js", "style.css"):
        assert httpx.get(f"{server.url}/static/{asset}").status_code == 200
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_serve_command_settings(monkeypatch, tmp_path):
    from auralm.cli import build_parser
    from auralm.serve.cli import settings_from_args

    monkeypatch.setenv("AURALM_API_KEY", "from-env")
    args = build_parser().parse_args(
        ["serve", "--model", str(tmp_path), "--allow-domain", "Media.Example.com.", "--max-batch", "3"])
    settings = settings_from_args(args, tmp_path)
    assert args.host == "127.0.0.1" and args.port == 8000  # loopback unless told otherwise
    assert settings.api_key == "from-env" and settings.allow_file_dir is None
    assert settings.allow_domains == ("media.example.com",) and settings.max_batch == 3
    assert settings.model_name == tmp_path.name
    health = settings_from_args(build_parser().parse_args(
        ["serve", "--health-stall-seconds", "7.5", "--health-min-free-fds", "64"]), tmp_path)
    assert (health.health_stall_seconds, health.health_min_free_fds) == (7.5, 64)
    with pytest.raises(ValueError, match="health_stall_seconds"):
        settings_from_args(build_parser().parse_args(["serve", "--health-stall-seconds", "0"]), tmp_path)
    with pytest.raises(ValueError, match="max_batch"):
        settings_from_args(build_parser().parse_args(["serve", "--max-batch", "0"]), tmp_path)
    with pytest.raises(ValueError, match="allow_file_dir"):
        settings_from_args(build_parser().parse_args(["serve", "--allow-file-dir", str(tmp_path / "nope")]), tmp_path)
