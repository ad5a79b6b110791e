"""Audio longer than 30 s is windowed and every window is used; transcripts are stitched without loss or repeats."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from tiny_hf import build_hf_checkpoint

from auralm import load
from auralm.audio import load_audio
from auralm.audio.chunking import plan_windows
from auralm.audio.geometry import num_audio_tokens
from auralm.infer.transcribe import seam_overlap, stitch, transcribe_windows

SR = 16000
PASSAGES = [
    "The museum opens at nine in the morning and closes at six in the evening. Visitors can walk through the old "
    "halls, look at paintings from three centuries, and rest in the garden behind the building. On Sundays the "
    "entrance is free for children and students, and the guides tell stories about the painters and their families.",
    "To bake simple bread you need flour, water, salt and a little yeast. Mix everything in a large bowl, knead the "
    "dough for ten minutes, and let it rise in a warm place until it doubles. Shape the loaf, bake it for forty "
    "minutes, and let it cool before you cut the first slice with a sharp knife.",
    "The train to the coast leaves from platform four every hour. The journey takes about two hours and passes small "
    "villages, green fields and a long river valley. Tickets are cheaper before eight in the morning, and bicycles "
    "may travel in the last carriage if there is enough space for them.",
]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> np.ndarray:
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (scripts/system-deps.sh installs it)")
    folder = tmp_path_factory.mktemp("speech")
    parts = []
    for i, text in enumerate(PASSAGES):
        path = folder / f"p{i}.wav"
        subprocess.run(["espeak-ng", "-s", "130", "-w", str(path), text], check=True, capture_output=True)
        parts += [load_audio(path), np.zeros(SR // 2, dtype=np.float32)]
    audio = np.concatenate(parts)
    target = 95 * SR  # pad or trim with silence to exactly 95 s so the window plan is known
    audio = np.pad(audio, (0, max(0, target - len(audio))))[:target]
    assert len(audio) == target
    return audio


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    return load(build_hf_checkpoint(tmp_path_factory.mktemp("m"), n_mels=80, n_kv_heads=2))


def test_windows_cover_everything_and_cut_in_quiet_spots(long_clip):
    windows = plan_windows(long_clip)
    assert windows[0].start == 0 and windows[-1].end == len(long_clip)
    assert all(b.start == a.end for a, b in zip(windows, windows[1:]))
    assert all(w.end - w.start <= 30 * SR for w in windows)
    loud = np.sqrt(np.mean(long_clip**2))
    for w in windows[:-1]:  # the cut sits in a frame much quieter than the clip on average
        frame = long_clip[w.end - 160:w.end + 160]
        assert np.sqrt(np.mean(frame**2)) < 0.5 * loud


def test_chat_encodes_every_window(chat, long_clip):
    inputs = chat.inputs([chat.conversation("What is this recording about?", audio=(long_clip, SR))])
    windows = plan_windows(long_clip)
    expected = sum(num_audio_tokens(-(-(w.end - w.start) // 160)) for w in windows)
    n_audio = int((inputs["input_ids"] == chat.processor.audio_token_id).sum())
    assert n_audio == expected > 750 * 3  # 95 s = ~2375 embeddings; the reference keeps 750 (30 s)
    assert inputs["input_features"].shape[0] == len(windows)
    answer = chat.chat("What is this recording about?", audio=(long_clip, SR), max_new_tokens=4)
    # The answer is the greedy continuation of exactly these inputs, every window included: an argmax loop over
    # full forwards (no cache) decodes to the same text.
    ids, T = inputs["input_ids"], inputs["input_ids"].shape[1]
    for _ in range(4):
        with torch.no_grad():
            logits = chat.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                input_features=inputs["input_features"],
                                feature_attention_mask=inputs["feature_attention_mask"]).logits
        token = int(logits[0, -1].argmax())
        if token in chat.config().stop_token_ids:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert ids.shape[1] > T  # the loop made at least one token, so the comparison below is not of two empty answers
    assert answer == chat.processor.decode(ids[0, T:]).strip()


def test_transcribe_decodes_every_window(chat, long_clip):
    seen = []
    result = chat.transcribe((long_clip, SR), language="en", progress=lambda d, t: seen.append((d, t)), max_new_tokens=3)
    n = len(plan_windows(long_clip, overlap_seconds=1.5))
    assert seen[-1] == (n, n) and n == 4
    assert len(result.segments) == n and result.segments[-1].end == pytest.approx(95.0)


def test_stitching_with_a_scripted_decoder():
    """Words at known times; the decoder returns every word that overlaps its window, so seams repeat words."""
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(40)]
    words, t = [], 0.3
    while t < 93:
        d = rng.uniform(0.2, 0.6)
        words.append((str(rng.choice(vocab)), t, t + d))
        t += d + rng.uniform(0.05, 0.5)
    n = 95 * SR
    # The samples encode their own index, so the decoder knows where a window starts and ends.
    audio = (np.arange(n) * 1e-7).astype(np.float32)

    def decode(samples: np.ndarray) -> str:
        start = round(float(samples[0]) / 1e-7) / SR
        end = start + len(samples) / SR
        return " ".join(w for w, s, e in words if e > start and s < end)

    result = transcribe_windows(audio, decode)
    assert result.text.split() == [w for w, _, _ in words]
    assert len(result.segments) == 4


def test_stitch_rules():
    assert stitch(["a b c d", "c d e f", "f g"]) == "a b c d e f g"
    assert stitch(["Hello there, my", "My friend."]) == "Hello there, my friend."
    assert stitch(["one two", "three four"]) == "one two three four"  # nothing shared: nothing dropped
    assert seam_overlap(["x", "y"], ["z"]) == 0


def test_long_file_on_disk_round_trip(tmp_path, long_clip, chat):
    path = tmp_path / "long.flac"
    sf.write(path, long_clip, SR)
    inputs = chat.inputs([chat.conversation("", audio=str(path))])
    assert inputs["input_features"].shape[0] == len(plan_windows(long_clip))


def test_timestamped_stitching_cuts_the_seam_by_time():
    """With word times, words heard at the end of one window are not repeated by the next (scripted decoder)."""
    from auralm.text.formats import srwt_string

    rng = np.random.default_rng(1)
    words, t = [], 0.2
    while t < 70:
        d = rng.uniform(0.2, 0.5)
        words.append({"word": f"w{len(words)}", "start": round(t, 2), "end": round(t + d, 2)})
        t += d + rng.uniform(0.05, 0.4)
    audio = (np.arange(72 * SR) * 1e-7).astype(np.float32)

    def decode(samples: np.ndarray) -> str:
        start = round(float(samples[0]) / 1e-7) / SR
        end = start + len(samples) / SR
        inside = [
            {"word": w["word"], "start": round(w["start"] - start, 2), "end": round(w["end"] - start, 2)}
            for w in words if w["start"] >= start - 1e-9 and w["end"] <= end  # a decoder hears whole words only
        ]
        return srwt_string(inside)

    from auralm.text.formats import parse_srwt

    result = transcribe_windows(audio, decode, parse_words=parse_srwt)
    assert result.text.split() == [w["word"] for w in words]
    got = result.words
    assert [w for w, _, _ in got] == [w["word"] for w in words]
    assert max(abs(a - w["start"]) for (_, a, _), w in zip(got, words)) < 0.011


def test_transcripts_get_a_token_budget_from_the_window_length(chat):
    """Without max_new_tokens a window may decode ~12 tokens per second (a looping model stops near the clip's
    length); an explicit limit wins; word times get room for their time tokens."""
    from auralm.infer.transcribe import transcript_budget

    budgets = []
    decode = chat.generate_texts

    def spy(inputs, cfg, skip_special_tokens=True):
        budgets.append(cfg.max_new_tokens)
        return decode(inputs, replace(cfg, max_new_tokens=2), skip_special_tokens)

    chat.generate_texts = spy
    try:
        clip = (np.zeros(2 * SR, np.float32), SR)  # silence: the speech gate is off so that every window decodes
        chat.transcribe(clip, speech_gate=False)
        chat.transcribe(clip, timestamps=True, speech_gate=False)
        chat.transcribe(clip, max_new_tokens=100, speech_gate=False)
        chat.transcribe((np.zeros(40 * SR, np.float32), SR), speech_gate=False)  # two windows, each its own length
    finally:
        chat.generate_texts = decode
    assert budgets[:3] == [16 + 24, 16 + 60, 100]
    assert budgets[3] > budgets[4] and budgets[3] <= transcript_budget(30.0) and budgets[3] > 256
    assert transcript_budget(30.0) == 376
