"""No speech, no words: silence, a tone and noise transcribe to nothing, while real speech passes the gate
(issue 15, item 3)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_support import ServerThread, tiny_chat
from tiny_hf import speechlike

from auralm.audio import load_audio
from auralm.audio.speech_gate import has_speech, voiced_frames
from auralm.serve.app import create_app
from auralm.serve.settings import ServeSettings

SR = 16000
EXAMPLES = Path(__file__).resolve().parent.parent / "auralm" / "demo" / "examples"
SPEECH_EXAMPLES = [  # the demo's example clips that hold speech (the others are a sound, a note, a caption)
    "asr-broad.flac", "asr-home.flac", "mixed.flac", "s2tt.flac", "voice_chat-arithmetic.flac",
    "voice_chat-general.flac",
]


def no_speech() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(5 * SR) / SR
    brown = np.cumsum(rng.standard_normal(len(t)))
    brown -= np.convolve(brown, np.ones(1601) / 1601, mode="same")  # keep the random walk around zero
    return {
        "digital silence": np.zeros(5 * SR, dtype=np.float32),
        "1 kHz tone": (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32),
        "white noise": (0.1 * rng.standard_normal(len(t))).astype(np.float32),
        "brown noise": (0.5 * brown / np.abs(brown).max()).astype(np.float32),
        "quiet 1 kHz tone": (0.001 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return tiny_chat(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("name", list(no_speech()))
def test_no_speech_signals_do_not_pass_the_gate(name):
    assert voiced_frames(no_speech()[name]).sum() == 0 and not has_speech(no_speech()[name])


@pytest.mark.parametrize("name", SPEECH_EXAMPLES)
def test_the_demo_examples_speech_passes_the_gate(name):
    assert has_speech(load_audio(EXAMPLES / name))


def test_real_recordings_pass_the_gate():
    from auralm.checkpoint import assets

    try:
        paths = assets.fetch_all([assets.JFK_WAV, assets.ARCTIC_A0009_WAV])
    except assets.AssetUnavailableError as err:
        pytest.skip(f"pinned recordings unavailable: {err}")
    for path in paths:
        assert has_speech(load_audio(path)), path


def test_synthetic_worlds_speech_passes_the_gate(tmp_path):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (scripts/system-deps.sh installs it)")
    for i, text in enumerate(["Seven.", "Play some blues.", "But would the paper listen to Red Shirt so easily?"]):
        path = tmp_path / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        assert has_speech(load_audio(path)), text


def test_a_rough_voice_under_noise_passes_the_gate(tmp_path):
    # flite's rms voice under white noise at 10 dB SNR, as the synthetic world makes it: with the harmonic comb
    # sought up to 4 kHz the noise drowned it (2 voiced frames) and the clip transcribed to "".
    if not shutil.which("flite"):
        pytest.skip("flite is not installed (scripts/system-deps.sh installs it)")
    path = tmp_path / "rms.wav"
    subprocess.run(["flite", "-voice", "rms", "-t", "How much is ten minus seven?", "-o", str(path)], check=True)
    voice = load_audio(path)
    noise = np.random.default_rng(0).standard_normal(len(voice)).astype(np.float32)
    noise *= np.sqrt((voice**2).mean() / (noise**2).mean() / 10)  # 10 dB below the voice
    assert has_speech(voice) and has_speech(voice + noise)


@pytest.mark.parametrize("name", ["digital silence", "1 kHz tone", "white noise"])
def test_a_clip_without_speech_transcribes_to_nothing(chat, name):
    # The tiny random model writes tokens for any audio, so only the gate can make this empty.
    result = chat.transcribe((no_speech()[name], SR), max_new_tokens=8)
    assert result.text == "" and all(s.text == "" for s in result.segments)
    assert chat.transcribe((speechlike(2.0, seed=1), SR), max_new_tokens=8).text != ""  # the gate lets speech by
    assert chat.transcribe((no_speech()[name], SR), max_new_tokens=8, speech_gate=False).text != ""


def test_the_server_answers_no_speech_with_an_empty_transcript(chat):
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, no_speech()["white noise"], SR, format="WAV", subtype="PCM_16")
    settings = ServeSettings(model_name="tiny", max_batch=2, default_max_tokens=8)
    with ServerThread(create_app(chat, settings)) as server:
        r = httpx.post(server.url + "/v1/audio/transcriptions", timeout=60,
                       data={"model": "tiny", "response_format": "verbose_json"},
                       files={"file": ("noise.wav", buf.getvalue(), "audio/wav")})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == "" and r.json()["duration"] == 5.0
