"""`/health` tells the truth (issue 16.4): 503 "stalled" when the scheduler thread is stuck with requests waiting,
503 "out_of_file_descriptors" when descriptors run short, and only the status to callers without the API key."""

from __future__ import annotations

import resource
import threading
import time

import httpx
import pytest
from serve_support import ServerThread, tiny_chat, user

from auralm.serve.app import create_app
from auralm.serve.health import fd_limit, open_fds
from auralm.serve.settings import ServeSettings

MODEL = "tiny-audio"
DETAILS = {"model", "queued", "running", "stats", "reason", "open_fds", "fd_limit", "stalled_seconds"}


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return tiny_chat(tmp_path_factory.getbasetemp())


def health(server, **headers) -> httpx.Response:
    return httpx.get(server.url + "/health", headers=headers, timeout=10)


def wait_for(server, status: str, within: float) -> httpx.Response:
    deadline = time.monotonic() + within
    while (r := health(server)).json()["status"] != status:
        assert time.monotonic() < deadline, f"/health still says {r.status_code} {r.json()}"
        time.sleep(0.05)
    return r


def test_a_stuck_scheduler_is_reported_stalled_then_recovers(chat):
    """The model's forward blocks on an Event: the thread is alive but makes no progress."""
    gate, entered = threading.Event(), threading.Event()
    real = chat.model.forward

    def blocked(*args, **kwargs):
        entered.set()
        gate.wait(30)
        return real(*args, **kwargs)

    settings = ServeSettings(model_name=MODEL, default_max_tokens=4, health_stall_seconds=0.5)
    with ServerThread(create_app(chat, settings)) as s:
        time.sleep(0.8)  # idle longer than the window: an idle scheduler is not stalled
        assert health(s).status_code == 200 and health(s).json()["stalled_seconds"] == 0
        chat.model.forward = blocked
        answers = []

        def ask() -> None:
            body = {"model": MODEL, "messages": [user("hi")]}
            answers.append(httpx.post(s.url + "/v1/chat/completions", json=body, timeout=60))

        request = threading.Thread(target=ask)
        try:
            request.start()
            assert entered.wait(20)
            assert health(s).status_code == 200  # inside the window
            r = wait_for(s, "stalled", within=10)
            assert r.status_code == 503
            assert "no progress" in r.json()["reason"] and r.json()["stalled_seconds"] > 0.5
        finally:
            gate.set()
            request.join(60)
            del chat.model.forward
        assert answers[0].status_code == 200, answers[0].text
        r = wait_for(s, "ok", within=10)
        assert r.status_code == 200 and r.json()["reason"] is None


@pytest.mark.skipif(open_fds() is None, reason="no fd folder to count descriptors in")
def test_running_short_of_file_descriptors_is_a_503(chat):
    settings = ServeSettings(model_name=MODEL, default_max_tokens=4, health_min_free_fds=32)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with ServerThread(create_app(chat, settings)) as s, httpx.Client() as client:
        assert client.get(s.url + "/health").status_code == 200  # connected before the limit drops
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 16, hard))  # 16 free: under the margin of 32
        try:
            r = client.get(s.url + "/health")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "out_of_file_descriptors" and body["fd_limit"] == body["open_fds"] + 16
        assert f"of {body['fd_limit']} file descriptors are open" in body["reason"]
        assert client.get(s.url + "/health").status_code == 200  # the limit restored, the server is healthy
    assert fd_limit() == (None if soft == resource.RLIM_INFINITY else soft)


def test_without_the_key_health_shows_only_the_status(chat, monkeypatch):
    settings = ServeSettings(model_name=MODEL, api_key="sekrit", default_max_tokens=4)
    with ServerThread(create_app(chat, settings)) as s:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "sekrit"}):
            r = health(s, **headers)
            assert (r.status_code, r.json()) == (200, {"status": "ok"}), headers
        r = health(s, authorization="Bearer sekrit")
        assert r.status_code == 200 and DETAILS <= set(r.json()) and r.json()["model"] == MODEL
        monkeypatch.setattr("auralm.serve.health.open_fds", lambda: fd_limit() - 1)
        r = health(s)  # unhealthy: the code and the status, still no reason or numbers
        assert (r.status_code, r.json()) == (503, {"status": "out_of_file_descriptors"})
        assert "file descriptors" in health(s, authorization="Bearer sekrit").json()["reason"]
    monkeypatch.undo()
    with ServerThread(create_app(chat, ServeSettings(model_name=MODEL, default_max_tokens=4))) as s:
        r = health(s)  # no key configured: everyone who reaches the server may use it, details included
        assert r.status_code == 200 and DETAILS <= set(r.json()) and r.json()["api_key_required"] is False
