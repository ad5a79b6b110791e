"""The `tiny` world end to end: reproducible bytes, resume, valid manifests, exact word times, held-out splits."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from auralm.data.manifest import load_manifest
from auralm.synth import cli, world
from auralm.synth.world import SPLITS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, voice_engines) -> Path:
    """The tiny world generated with two worker processes (every voice engine is needed)."""
    out = tmp_path_factory.mktemp("tiny2")
    world.generate(out, "tiny", seed=0, workers=2)
    return out


@pytest.fixture(scope="module")
def manifests(tiny) -> dict[str, list[dict]]:
    out = {}
    for split in SPLITS:
        records, errors = load_manifest(tiny / f"{split}.jsonl", check_files=True)
        assert errors == [], errors[:5]
        out[split] = records
    return out


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_same_seed_same_bytes_across_workers_and_resume(tiny, tmp_path):
    expected = tree(tiny)
    assert any(name.endswith(".flac") for name in expected) and "train.jsonl" in expected
    assert not any(name.startswith(".parts") for name in expected)

    # Two workers interrupted after a few chunks, then finished by one worker: the same bytes again.
    out = tmp_path / "resumed"

    def stop_early(done: int, total: int) -> None:
        if done >= 3 * world.CHUNK:
            raise Interrupt

    with pytest.raises(Interrupt):
        world.generate(out, "tiny", seed=0, workers=2, progress=stop_early)
    finished = len(list((out / ".parts").rglob("*.json")))
    assert 3 * world.CHUNK <= finished < len(world.plan(world.preset("tiny")))
    assert not (out / "train.jsonl").exists()
    report = world.generate(out, "tiny", seed=0, workers=1)
    assert report.generated == report.clips - finished
    assert tree(out) == expected

    # A finished world is not regenerated; other settings in the same folder are refused.
    assert world.generate(out, "tiny", seed=0, workers=1).generated == 0
    with pytest.raises(world.WorldError, match="other settings"):
        world.generate(out, "tiny", seed=1, workers=1)


def test_every_line_passes_the_schema_and_matches_its_audio(tiny, manifests):
    p = world.preset("tiny")
    for split, records in manifests.items():
        by_task: dict[str, int] = {}
        for r in records:
            by_task[r["task"]] = by_task.get(r["task"], 0) + 1
        assert by_task == {**p.clips(split), **p.derived_counts(split)}
        for r in records:
            if r["task"] in ("conversation", "preference"):
                assert all(Path(a).is_file() for a in r["audios"])
                continue
            info = sf.info(r["audios"][0])
            assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
            assert abs(info.frames / 16000 - r["duration"]) < 1e-4


def test_word_timings_match_the_audio(manifests):
    checked = 0
    for records in manifests.values():
        for r in (r for r in records if r["task"] == "srwt"):
            audio, rate = sf.read(r["audios"][0], dtype="float64")
            peak = np.abs(audio).max()
            cursor = 0
            for w in r["words"]:
                start, end = round(w["start"] * rate), round(w["end"] * rate)
                assert np.abs(audio[cursor:start]).max(initial=0) <= 1 / 32768, (r["id"], w)  # silent gap
                span = audio[start:end]
                assert np.sqrt(np.mean(span**2)) > 0.02 * peak, (r["id"], w)  # speech inside the word
                assert audio[start] != 0 and audio[end - 1] != 0  # the span is tight
                cursor = end
            assert np.abs(audio[cursor:]).max(initial=0) <= 1 / 32768
            checked += 1
    assert checked >= 8


def speech_content(records: list[dict]) -> set[str]:
    """What the speakers say, for tasks whose text comes from the held-out pools (mixed audio asks a few
    fixed questions about a new sound each time, so it is not held out)."""
    out = set()
    for r in records:
        if r["task"] == "mixed":
            continue
        for field in ("text", "text_question", "text_itn"):
            if isinstance(r.get(field), str):
                out.add(r[field].lower())
    return out


def test_splits_share_no_voice_and_no_test_content(manifests):
    voices = {s: {r["voice"] for r in manifests[s] if "voice" in r} for s in SPLITS}
    assert all(voices.values())
    assert not (voices["train"] & voices["test"]) and not (voices["train"] & voices["dev"])
    assert not (voices["dev"] & voices["test"])
    speakers = {s: {v.split("+")[1] for v in voices[s]} for s in SPLITS}
    assert not (speakers["train"] & speakers["test"])
    content = {s: speech_content(manifests[s]) for s in SPLITS}
    assert (
        content["test"]
        and not (content["test"] & content["train"])
        and not (content["dev"] & content["train"])
    )


def test_stats_and_cli(tiny, manifests, capsys):
    summary = json.loads((tiny / "stats.json").read_text())
    for split in SPLITS:
        s = summary[split]
        assert s["records"] == len(manifests[split])
        clips = [r for r in manifests[split] if r["task"] not in ("conversation", "preference")]
        assert s["clips"] == len(clips) and abs(s["hours"] - sum(r["duration"] for r in clips) / 3600) < 1e-3
        assert sum(t["count"] for t in s["tasks"].values()) == s["records"]
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synth", "--out", str(tiny), "--stats"])
    assert args.func(args) == 0
    assert "train:" in capsys.readouterr().out
    bad = parser.parse_args(["synth", "--out", str(tiny), "--seed", "5", "--workers", "1"])
    assert bad.func(bad) == 2 and "other settings" in capsys.readouterr().err
