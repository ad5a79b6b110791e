"""The server compiles its decode step in the background (issue 17.3): it answers from the start, switches to the
compiled step when it is ready, answers the same, and says so in /health; "auto" stays eager where compiling does
not pay."""

from __future__ import annotations

import httpx
import pytest
from serve_support import ServerThread, tiny_chat, user

from auralm.infer import compiled
from auralm.serve.app import create_app
from auralm.serve.compiling import DecodeCompiler
from auralm.serve.scheduler import Scheduler
from auralm.serve.settings import ServeSettings

MODEL = "tiny-audio"


@pytest.fixture
def chat(tmp_path_factory):
    return tiny_chat(tmp_path_factory.getbasetemp())  # a fresh AudioChat: compiling sets its step_fn


def ask(server, text: str) -> str:
    body = {"model": MODEL, "messages": [user(text)], "max_tokens": 6}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def decode_state(server) -> dict:
    return httpx.get(server.url + "/health", timeout=10).json()["decode"]


@pytest.mark.slow
def test_the_server_answers_while_compiling_then_through_the_compiled_step(chat):
    lines: list[str] = []
    app = create_app(chat, ServeSettings(model_name=MODEL, compile="on"), announce=lines.append)
    with ServerThread(app) as s:
        eager = ask(s, "hello there")  # answered at once, eagerly, while the compile thread works
        assert decode_state(s)["state"] in ("compiling", "compiled")
        app.state.compiler.join(600)
        assert decode_state(s) == {"mode": "on", "state": "compiled", "reason": app.state.compiler.reason}
        assert app.state.scheduler.step_fn is chat.step_fn is not None
        calls = []
        real = chat.step_fn.fn
        chat.step_fn.fn = lambda *a: calls.append(1) or real(*a)  # count the compiled graph's calls
        assert ask(s, "hello there") == eager
        assert len(calls) == 5  # the first token comes from the prefill, the other five from the compiled step
    assert any("batch 1" in line for line in lines) and any("batch 2 and up" in line for line in lines)
    assert "compiled" in lines[-1]


def test_auto_stays_eager_without_memory_for_a_second_copy(chat, monkeypatch):
    lines: list[str] = []
    scheduler = Scheduler(chat.model, chat.processor.decode, 2, 2)
    monkeypatch.setattr(compiled, "available_memory", lambda: compiled.decoder_bytes(chat.model))
    compiler = DecodeCompiler(chat, scheduler, "auto", lines.append)
    compiler.start()
    assert compiler.state == "eager" and compiler._thread is None and scheduler.step_fn is None
    assert "needs" in compiler.reason and "free memory" in compiler.reason
    assert lines and "--compile on" in lines[0]
    monkeypatch.setattr(compiled, "available_memory", lambda: 1 << 40)
    assert compiled.compile_pays(chat.model)[0]


def test_off_never_compiles_and_a_bad_mode_is_refused(chat):
    scheduler = Scheduler(chat.model, chat.processor.decode, 2, 2)
    compiler = DecodeCompiler(chat, scheduler, "off", print)
    compiler.start()
    assert compiler.status() == {"mode": "off", "state": "eager", "reason": "compile is off"}
    with pytest.raises(ValueError, match="compile must be auto, on or off"):
        ServeSettings(compile="yes")
