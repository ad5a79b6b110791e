"""The voice-chat page in a real browser: Debian's headless Chromium, driven by Playwright, with a WAV file as the
microphone. It records, sends, and an answer streams into the conversation; then a text turn and a file upload."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import soundfile as sf
from serve_support import ServerThread, tiny_chat
from tiny_hf import speechlike

from auralm.serve.app import create_app
from auralm.serve.settings import ServeSettings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
MODEL = "tiny-audio"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The server, plus a log of the audio each request carried (seconds and loudness per clip)."""
    chat = tiny_chat(tmp_path_factory.getbasetemp())
    seen: list[list[tuple[float, float]]] = []
    inputs = chat.inputs

    def recording_inputs(conversations):
        clips = [item["audio"][0] for m in conversations[0] if isinstance(m["content"], list)
                 for item in m["content"] if item.get("type") == "audio"]
        seen.append([(len(c) / 16000, float(np.sqrt(np.mean(c ** 2)))) for c in clips])
        return inputs(conversations)

    chat.inputs = recording_inputs
    with ServerThread(create_app(chat, ServeSettings(model_name=MODEL))) as server:
        yield server, seen


@pytest.fixture(scope="module")
def microphone(tmp_path_factory):
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    sf.write(path, speechlike(4.0, seed=21, sr=48000), 48000, subtype="PCM_16")
    return path


def drop_file(page, name: str, data: bytes) -> None:
    """Drag a file onto the page the way a person does: dragenter, dragover, drop, with a DataTransfer."""
    page.evaluate("""([name, bytes]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "audio/wav" }));
        for (const type of ["dragenter", "dragover", "drop"]) {
            document.body.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }
    }""", [name, list(data)])


@pytest.mark.slow
def test_record_send_and_see_the_answer(served, microphone, tmp_path):
    server, seen = served
    buf = io.BytesIO()
    sf.write(buf, speechlike(1.5, seed=22), 16000, format="WAV", subtype="PCM_16")
    short_clip = buf.getvalue()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS,
                                    f"--use-file-for-fake-audio-capture={microphone}"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('tiny-audio')")
            page.click("#settings summary")
            page.fill("#max-tokens", "16")

            # Ask by voice: record about 1.5 s from the (fake) microphone, then send.
            page.click("#record")
            page.wait_for_selector("#record.recording")
            page.wait_for_timeout(1500)
            page.click("#record")
            page.wait_for_selector("#attachment:not([hidden])")
            page.click("#send")
            answer = page.wait_for_selector(".msg.assistant[data-state=done]", timeout=30_000)
            assert answer.inner_text().strip(), "the answer stayed empty"
            assert answer.get_attribute("data-finish") == "length"
            assert page.locator(".msg.user audio").count() == 1
            assert len(seen) == 1 and len(seen[0]) == 1
            seconds, loudness = seen[0][0]
            assert 0.8 < seconds < 4.0 and loudness > 0.01, f"the recording reached the server as {seen[0]}"

            # A text follow-up carries the whole conversation, the recording included.
            page.fill("#text", "And what else?")
            page.press("#text", "Enter")
            page.wait_for_selector(".msg.assistant[data-state=done] >> nth=1", timeout=30_000)
            assert seen[-1] == seen[0]

            # An audio file chosen from disk joins the conversation as a second clip.
            page.set_input_files("#file", str(microphone))
            page.click("#send")
            page.wait_for_selector(".msg.assistant[data-state=done] >> nth=2", timeout=30_000)
            assert [round(s, 1) for s, _ in seen[-1]][1:] == [4.0]

            # A file dropped on the page, with a spoken question only (no text).
            drop_file(page, "dropped.wav", short_clip)
            page.wait_for_selector("#attachment:not([hidden])")
            page.click("#send")
            page.wait_for_selector(".msg.assistant[data-state=done] >> nth=3", timeout=30_000)
            assert [round(s, 1) for s, _ in seen[-1]][1:] == [4.0, 1.5]
            assert page.locator(".msg").count() == 8
            assert page.locator("#error").is_hidden() and not errors
            page.screenshot(path=str(tmp_path / "voice-chat.png"))
        finally:
            browser.close()


def test_refusals_show_the_servers_message(served):
    server, _ = served
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('tiny-audio')")
            page.click("#settings summary")
            page.fill("#max-tokens", "100000")  # over the server's max_tokens limit
            page.fill("#text", "hi")
            page.click("#send")
            page.wait_for_selector(".msg.assistant[data-state=failed]", timeout=30_000)
            assert "max_tokens" in page.inner_text("#error")
        finally:
            browser.close()
