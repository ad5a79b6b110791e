"""The demo recipe's voice stage (issue 13): its manifest keeps every spoken question, adds sentences heard alone and
answered by the base LLM as it answers them typed, the train split's arithmetic typed (never the test split's),
and a replay of the other tasks; typed and spoken rows train together."""

from __future__ import annotations

import json
import re

import pytest
from tiny_hf import build_hf_checkpoint
from train_data import base_config, make_beep_world, make_tokenizer_dir, preference_row, write_jsonl

from auralm.data.manifest import validate_record
from auralm.demo import train as demo_train
from auralm.eval.voice_knowledge import llm_answers
from auralm.infer.api import AudioChat
from auralm.synth import texts
from auralm.train.config import TrainConfig
from auralm.train.recipes import train


def _records() -> list[dict]:
    out = []
    for i in range(6):
        out.append({"id": f"asr-{i}", "task": "asr", "language": "en", "text": f"the cat sat on mat number {i}.",
                    "audios": [f"a{i}.flac"], "duration": 1.0})
    out += [
        {"id": "de", "task": "asr", "language": "de", "text": "hallo welt", "audios": ["de.flac"], "duration": 1.0},
        {"id": "vc", "task": "voice_chat", "language": "en", "kind": "arithmetic", "text_question": "What is two plus two?",
         "answer": "4", "audios": ["vc.flac"], "duration": 1.0},
        {"id": "mx", "task": "mixed", "language": "en", "text_question": "How many beeps?", "answer": "3",
         "audios": ["mx.flac"], "duration": 1.0},
        {"id": "se", "task": "sound_event", "language": None, "label": "dog", "audios": ["se.flac"], "duration": 1.0},
        preference_row(),
    ]
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("voice")
    base = build_hf_checkpoint(root / "base", n_mels=80, n_kv_heads=2)
    src = root / "train.jsonl"
    write_jsonl(src, _records())
    out = root / "voice.jsonl"
    parts = demo_train.voice_manifest(src, out, base, said_clips=6)
    return base, src, out, parts, [json.loads(line) for line in out.read_text().splitlines()]


def test_every_spoken_question_is_kept_and_every_row_is_valid(made):
    _, _, _, parts, rows = made
    ids = {r.get("id") for r in rows}
    assert {"vc", "mx"} <= ids
    assert not any(r["task"] == "preference" for r in rows)
    assert all(validate_record(r) == [] for r in rows)
    assert sum(parts.values()) == len(rows)


def test_sentences_are_answered_as_the_llm_answers_them_typed(made):
    base, _, _, parts, rows = made
    said = [r for r in rows if r.get("kind") == "said"]
    assert len(said) == parts["said"] == 6  # the English sentences, never the German one
    assert {r["audios"][0] for r in said} == {f"a{i}.flac" for i in range(6)}
    want = llm_answers(AudioChat.from_folder(base), [r["text_question"] for r in said])
    assert [r["answer"] for r in said] == want and all(want)


def test_typed_arithmetic_is_the_train_splits_with_right_answers(made):
    _, _, _, parts, rows = made
    value = {texts.number_words(n): n for n in range(21)}
    typed = [r for r in rows if r["id"].startswith("typed-arithmetic-")]
    assert len(typed) == parts["typed_arithmetic"] == len(texts.arithmetic("train"))
    seen = set()
    for r in typed:
        assert r["audios"] == [] and [m["role"] for m in r["messages"]] == ["user", "assistant"]
        words = "|".join(sorted(value, key=len, reverse=True))
        m = re.search(rf"({words}) (plus|minus|times) ({words})", r["messages"][0]["content"])
        a, op, b = value[m.group(1)], m.group(2), value[m.group(3)]
        assert r["messages"][1]["content"] == str(texts.arithmetic_answer(a, op, b))
        seen.add((a, op, b))
    assert seen == set(texts.arithmetic("train")) and not seen & set(texts.arithmetic("test"))


def test_replay_and_written_once(made):
    base, src, out, parts, _ = made
    spoken = parts["voice_chat_and_mixed"] + parts["said"] + parts["typed_arithmetic"]
    assert parts["replay"] == min(8, int(demo_train.REPLAY_SHARE * spoken))  # the 8 other records, or the share
    before = out.read_text()
    assert demo_train.voice_manifest(src, out, base) == {} and out.read_text() == before


def test_typed_and_spoken_rows_train_together(tmp_path):
    """Conversations without audio next to audio rows in one manifest: the loss falls."""
    world = make_beep_world(tmp_path / "world", n_clips=8, seed=0)
    rows = [json.loads(line) for line in world.read_text().splitlines()]
    rows += [{"id": f"typed-{k}-{i}", "task": "conversation", "audios": [],
              "messages": [{"role": "user", "content": f"What is {w} plus zero?"},
                           {"role": "assistant", "content": str(i)}]}
             for k in range(3) for i, w in ((1, "one"), (2, "two"), (3, "three"))]
    mixed = tmp_path / "world" / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig.from_dict(base_config(tmp_path / "run", make_tokenizer_dir(tmp_path / "tok"), mixed,
                                            recipe="sft", steps=8))
    losses = [r["loss"] for r in train(cfg).metrics if "loss" in r]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]
