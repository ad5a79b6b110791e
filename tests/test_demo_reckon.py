"""The demo recipe's reckon stage (issue 13): every arithmetic answer, typed or heard, writes its problem as an
equation and every beep count as the beeps heard; the typed problems are the train split's in every phrasing (never
a test problem), each spoken train problem and count is kept with its new answer, and the other records are
replayed."""

from __future__ import annotations

import re

import pytest
from train_data import preference_row, read_jsonl, write_jsonl

from auralm.data.manifest import validate_record
from auralm.demo import train as demo_train
from auralm.eval.tasks import answers_match
from auralm.synth import texts


def _records() -> list[dict]:
    out = [{"id": f"asr-{i}", "task": "asr", "language": "en", "text": f"the cat sat on mat number {i}.",
            "audios": [f"a{i}.flac"], "duration": 1.0} for i in range(4)]
    out += [
        {"id": "vc-sum", "task": "voice_chat", "language": "en", "kind": "arithmetic",
         "text_question": "Can you tell me what twenty minus seventeen is?", "answer": "3", "audios": ["s.flac"],
         "duration": 1.0},
        {"id": "vc-home", "task": "voice_chat", "language": "en", "kind": "home", "text_question": "Lights off.",
         "answer": "Turning off the lights.", "audios": ["h.flac"], "duration": 1.0},
        {"id": "mx", "task": "mixed", "language": "en", "kind": "loudness", "text_question": "How loud is it?",
         "answer": "quiet", "audios": ["mx.flac"], "duration": 1.0},
        {"id": "mx-count", "task": "mixed", "language": "en", "kind": "count",
         "text_question": "How many beeps did you hear?", "answer": "3", "audios": ["c.flac"], "duration": 1.0},
        preference_row(),
    ]
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("reckon")
    src = root / "train.jsonl"
    write_jsonl(src, _records())
    out = root / "reckon.jsonl"
    parts = demo_train.reckon_manifest(src, out)
    return src, out, parts, read_jsonl(out)


@pytest.mark.parametrize(("problem", "text", "value"), [
    ((4, "times", 7), "4 × 7 = 28", "28"), ((20, "minus", 5), "20 - 5 = 15", "15"), ((0, "plus", 0), "0 + 0 = 0", "0"),
])
def test_an_equation_states_the_problem_and_ends_with_its_value(problem, text, value):
    assert demo_train.equation(*problem) == text
    assert answers_match(value, text)  # the eval's rule: the last number stated


def test_spoken_problems_are_read_back_from_their_questions():
    for a, op, b in texts.arithmetic("test"):
        for template in texts.ARITHMETIC_TEMPLATES:
            question = template.format(a=texts.number_words(a), op=op, b=texts.number_words(b))
            assert demo_train.spoken_problem(question) == (a, op, b)
    with pytest.raises(ValueError, match="not an arithmetic question"):
        demo_train.spoken_problem("What is twenty-one plus two?")


def test_typed_problems_are_the_train_splits_in_every_phrasing(made):
    _, _, parts, rows = made
    typed = [r for r in rows if r["id"].startswith("typed-")]
    n = len(texts.arithmetic("train"))
    assert len(typed) == parts["typed_arithmetic"] == n * len(texts.ARITHMETIC_TEMPLATES)
    value = {texts.number_words(k): k for k in range(21)}
    words = "|".join(sorted(value, key=len, reverse=True))
    seen = set()
    for r in typed:
        assert r["audios"] == [] and [m["role"] for m in r["messages"]] == ["user", "assistant"]
        m = re.search(rf"\b({words}) (plus|minus|times) ({words})\b", r["messages"][0]["content"])
        problem = (value[m.group(1)], m.group(2), value[m.group(3)])
        assert r["messages"][1]["content"] == demo_train.equation(*problem)
        seen.add(problem)
    assert seen == set(texts.arithmetic("train")) and not seen & set(texts.arithmetic("test"))


def test_spoken_problems_keep_their_clip_and_answer_with_the_equation(made):
    _, _, parts, rows = made
    spoken = [r for r in rows if r["id"].startswith("vc-sum")]
    assert len(spoken) == parts["spoken_arithmetic"] == demo_train.RECKON_SPOKEN
    assert all(r["audios"] == ["s.flac"] and r["answer"] == "20 - 17 = 3" for r in spoken)
    assert len({r["id"] for r in rows}) == len(rows)  # the repeats get ids of their own


def test_beep_counts_are_answered_as_the_beeps_heard(made):
    _, _, parts, rows = made
    counts = [r for r in rows if r["id"].startswith("mx-count")]
    assert len(counts) == parts["spoken_counting"] == demo_train.RECKON_SPOKEN
    assert all(r["audios"] == ["c.flac"] and r["answer"] == "beep beep beep: 3" for r in counts)
    assert demo_train.counted(1) == "beep: 1" and answers_match("5", demo_train.counted(5))


def test_other_records_are_replayed_and_every_row_is_valid(made):
    src, out, parts, rows = made
    ids = {r["id"] for r in rows}
    assert {"vc-home", "mx", "asr-0", "asr-3"} <= ids and not {"pref", "vc-sum", "mx-count"} & ids
    assert parts["replay"] == 6
    assert all(validate_record(r) == [] for r in rows) and sum(parts.values()) == len(rows)
    before = out.read_text()
    assert demo_train.reckon_manifest(src, out) == {} and out.read_text() == before  # written once
