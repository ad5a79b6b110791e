"""Hostile requests: each is refused with the right status and a short message, and the server stays healthy.

Remote fetching is exercised without leaving this machine: a test resolver maps made-up names to addresses, and a
small redirecting server listens on 127.0.0.2, the one address the test marks as trusted. Every refused address
(127.0.0.1, 169.254.169.254, 10.x) is refused before any connection is made.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from serve_support import ServerThread, audio_part, b64, tiny_chat, user, wav_bytes

from auralm.serve.app import create_app
from auralm.serve.audio_input import AudioReader
from auralm.serve.errors import ServeError
from auralm.serve.fetch import AudioFetcher, FetchPolicy, is_public_address
from auralm.serve.settings import MB, ServeSettings

MODEL = "tiny-audio"
CLIP = wav_bytes(1.0, seed=4)
TRUSTED = "127.0.0.2"  # where the test's remote audio host listens
NAMES = {"audio.test": [TRUSTED], "internal.test": ["10.0.0.7"], "mixed.test": [TRUSTED, "10.0.0.8"]}


class RemoteHost(BaseHTTPRequestHandler):
    """The test's "remote" audio host: serves a clip, redirects to private addresses, streams too much, stalls."""

    hits: ClassVar[list[str]] = []
    hosts: ClassVar[list[str]] = []  # the Host header of each request
    private_port = 0

    def do_GET(self):
        RemoteHost.hits.append(self.path)
        RemoteHost.hosts.append(self.headers.get("Host", ""))
        routes = {
            "/to-loopback": f"http://127.0.0.1:{RemoteHost.private_port}/health",
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-internal": "http://internal.test/secret",
            "/to-file": "file:///etc/passwd",
            "/hop": "/clip.wav",
        }
        if self.path in routes:
            self.send_response(302)
            self.send_header("Location", routes[self.path])
            self.end_headers()
        elif self.path == "/clip.wav":
            self.send_response(200)
            self.send_header("Content-Length", str(len(CLIP)))
            self.end_headers()
            self.wfile.write(CLIP)
        elif self.path == "/endless":  # no Content-Length: the cap must be applied while reading
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(64):  # bounded: 64 MB at most
                    self.wfile.write(b"\0" * MB)
            except OSError:
                pass
        elif self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"R")
            self.wfile.flush()
            time.sleep(10)
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


def resolve(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise socket.gaierror(f"unknown test host {host}")
    return NAMES[host]


@pytest.fixture(scope="module")
def remote():
    httpd = ThreadingHTTPServer((TRUSTED, 0), RemoteHost)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://audio.test:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("allowed-audio")
    (folder / "clip.wav").write_bytes(CLIP)
    (folder / "passwd-link.wav").symlink_to("/etc/passwd")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, files):
    chat = tiny_chat(tmp_path_factory.getbasetemp())
    settings = ServeSettings(
        model_name=MODEL, max_body_bytes=16 * MB, max_audio_bytes=12 * MB, max_audio_seconds=60.0, max_audios=8,
        default_max_tokens=4, fetch_timeout=3.0, allow_file_dir=files,  # generous: a loaded CI box is slow
        allow_domains=("audio.test", "internal.test", "mixed.test", "127.0.0.1", "169.254.169.254"),
    )
    fetcher = AudioFetcher(FetchPolicy.from_settings(settings, resolve=resolve, trusted_addresses=frozenset({TRUSTED})))
    with ServerThread(create_app(chat, settings, fetcher)) as s:
        RemoteHost.private_port = s.port
        yield s
        assert httpx.get(s.url + "/health").json()["status"] == "ok"


def ask(server, *parts, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": [user(*parts)], **extra}
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)


def url_part(url: str) -> dict:
    return {"type": "audio_url", "audio_url": {"url": url}}


def refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert len(error["message"]) < 200 and "Traceback" not in error["message"]
    return error["message"]


def still_healthy(server) -> None:
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    r = ask(server, audio_part(CLIP), "still there?")
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


# ---- URLs ------------------------------------------------------------------------------------------------------
def test_file_urls_stay_inside_the_allowed_folder(server, files):
    refused(ask(server, url_part("file:///etc/passwd")), 400, "path_not_allowed")
    refused(ask(server, url_part(f"file://{files}/../../../etc/passwd")), 400, "path_not_allowed")
    refused(ask(server, url_part(f"file://{files}/passwd-link.wav")), 400, "path_not_allowed")
    refused(ask(server, url_part(f"file://{files}/missing.wav")), 400, "file_not_found")
    refused(ask(server, url_part("/etc/passwd")), 400, "unsupported_url")
    assert ask(server, url_part(f"file://{files}/clip.wav")).status_code == 200
    still_healthy(server)


def test_private_and_metadata_addresses_are_refused_before_connecting(server):
    RemoteHost.hits.clear()
    refused(ask(server, url_part(f"http://127.0.0.1:{server.port}/health")), 400, "private_address")
    refused(ask(server, url_part("http://169.254.169.254/latest/meta-data/")), 400, "private_address")
    refused(ask(server, url_part("http://internal.test/secret")), 400, "private_address")
    refused(ask(server, url_part(f"http://mixed.test:{server.port}/")), 400, "private_address")  # one bad answer
    refused(ask(server, url_part("http://evil.example/clip.wav")), 400, "domain_not_allowed")
    refused(ask(server, url_part("http://user:pw@audio.test/clip.wav")), 400, "url_not_allowed")
    refused(ask(server, url_part("ftp://audio.test/clip.wav")), 400, "unsupported_url")
    refused(ask(server, url_part("http://[::1/clip.wav")), 400, "invalid_url")
    refused(ask(server, url_part("http://aud%69o.test/clip.wav")), 400, "invalid_url")
    refused(ask(server, url_part("http://2130706433/")), 400, "domain_not_allowed")  # 127.0.0.1 as a number
    assert RemoteHost.hits == []
    still_healthy(server)


def test_redirects_are_rechecked_hop_by_hop(server, remote):
    RemoteHost.hits.clear()
    for hop in ("/to-loopback", "/to-metadata", "/to-internal"):
        refused(ask(server, url_part(remote + hop)), 400, "private_address")
    refused(ask(server, url_part(remote + "/to-file")), 400, "url_not_allowed")
    assert RemoteHost.hits == ["/to-loopback", "/to-metadata", "/to-internal", "/to-file"]  # first hops only
    assert ask(server, url_part(remote + "/hop"), "what is it?").status_code == 200  # a public redirect is fine
    assert RemoteHost.hits[-2:] == ["/hop", "/clip.wav"]
    still_healthy(server)


@pytest.mark.slow
def test_downloads_are_capped_and_timed(server, remote):
    start = time.monotonic()
    refused(ask(server, url_part(remote + "/endless")), 413, "audio_too_large")
    refused(ask(server, url_part(remote + "/stall")), 400, "fetch_timeout")
    assert time.monotonic() - start < 25
    still_healthy(server)


def test_dns_rebinding_cannot_move_the_connection(remote):
    """The name is resolved once per hop and the connection goes to the address that was checked: a resolver
    that answers a private address on its second call never gets that call."""
    answers = iter([[TRUSTED], ["10.0.0.9"]])
    calls = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    policy = FetchPolicy(allow_domains=("audio.test",), resolve=rebinding, trusted_addresses=frozenset({TRUSTED}))
    RemoteHost.hosts.clear()
    assert AudioFetcher(policy).fetch(remote + "/clip.wav") == CLIP
    assert calls == ["audio.test"]
    assert RemoteHost.hosts == [remote.removeprefix("http://")]  # the name, not the address, in the Host header


def test_remote_urls_are_off_unless_domains_are_allowed(tmp_path):
    fetcher = AudioFetcher(FetchPolicy())
    with pytest.raises(Exception, match="disabled") as err:
        fetcher.fetch("https://example.com/a.wav")
    assert err.value.code == "remote_urls_disabled"
    with pytest.raises(Exception, match="disabled"):
        fetcher.fetch("file:///etc/passwd")


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("240.0.0.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("2002:7f00:1::", False),
    ("64:ff9b::a00:1", False), ("ff02::1", False),
])
def test_public_address_rule(address, public):
    import ipaddress

    assert is_public_address(ipaddress.ip_address(address)) is public


# ---- bodies and audio ------------------------------------------------------------------------------------------
def test_a_200_mb_body_is_refused_at_the_cap_while_streaming(server):
    """Chunked upload (no Content-Length): the server answers 413 once 16 MB have arrived, long before 200 MB."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"[" * MB
    sent = 0
    try:
        while sent < 200 * MB:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = b""
    try:
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_too_large"
    assert sent < 48 * MB, f"{sent / MB:.0f} MB were sent before the refusal"
    still_healthy(server)


def test_a_declared_oversized_body_is_refused_before_reading(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 209715200\r\n\r\n{")
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413")
    still_healthy(server)


@pytest.fixture(scope="module")
def opus_bomb(tmp_path_factory):
    """~10 MB of Ogg Opus that decodes to about 100 minutes (a minute of noise, copied 100 times)."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/system-deps.sh installs it)")
    folder = tmp_path_factory.mktemp("bomb")
    minute = folder / "minute.opus"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anoisesrc=r=48000:a=0.1:d=60", "-ac", "1",
                    "-c:a", "libopus", "-b:a", "16k", str(minute)], check=True)
    (folder / "list.txt").write_text("".join(f"file '{minute}'\n" for _ in range(100)))
    bomb = folder / "bomb.opus"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(folder / "list.txt"),
                    "-c", "copy", str(bomb)], check=True)
    return bomb.read_bytes()


def test_a_10_mb_opus_that_decodes_past_the_duration_cap(server, opus_bomb):
    assert 8 * MB < len(opus_bomb) < 12 * MB
    start = time.monotonic()
    message = refused(ask(server, audio_part(opus_bomb, "opus"), "hi"), 413, "audio_too_long")
    assert "60 s" in message
    assert time.monotonic() - start < 10, "decoding must stop at the cap, not run through 100 minutes"
    files = {"file": ("bomb.opus", opus_bomb)}
    r = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": MODEL}, files=files, timeout=30)
    refused(r, 413, "audio_too_long")
    still_healthy(server)


def test_bad_audio_and_bad_json(server):
    refused(ask(server, {"type": "input_audio", "input_audio": {"data": "not*base64!", "format": "wav"}}), 400,
            "invalid_base64")
    refused(ask(server, url_part("data:audio/wav;base64,%%%")), 400, "invalid_base64")
    message = refused(ask(server, audio_part(b"this is plain text, not audio " * 40)), 422, "invalid_audio")
    assert "ffmpeg" not in message.lower() and "sndfile" not in message.lower()
    refused(ask(server, audio_part(os.urandom(50_000), "mp3")), 422, "invalid_audio")
    refused(ask(server, audio_part(CLIP, "pcm16")), 415, "unsupported_audio_format")
    refused(ask(server, *[audio_part(CLIP)] * 50), 413, "too_many_audios")
    refused(ask(server, "x" * (8192 * 16 + 1)), 413, "context_length_exceeded")
    for body in (b"{not json", b'{"model": "tiny-audio", "messages": [', b"[1, 2]", b"\xff\xfe", b"[" * 100_000):
        r = httpx.post(server.url + "/v1/chat/completions", content=body,
                       headers={"content-type": "application/json"})
        refused(r, 400, "invalid_json")
    refused(ask(server, "hi", temperature="hot"), 400, "invalid_request")
    refused(ask(server, "hi", stream="yes"), 400, "invalid_request")
    r = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": MODEL}, files={"file": ("x.wav", b"RIFF")})
    refused(r, 422, "invalid_audio")
    still_healthy(server)


def test_inline_audio_is_capped_before_base64_is_decoded():
    reader = AudioReader(AudioFetcher(FetchPolicy()), max_bytes=1000, max_seconds=10.0)
    with pytest.raises(ServeError) as err:
        reader.url_bytes("data:audio/wav;base64," + "!" * 2000, "audio")  # not even valid base64: never decoded
    assert (err.value.status, err.value.code) == (413, "audio_too_large")
    assert reader.url_bytes("data:audio/wav;base64," + b64(b"RIFF"), "audio") == b"RIFF"
