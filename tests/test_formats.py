"""Task formats: every task in tags, natural-language and ChatML form, with exact target spans."""

import re

import jinja2
import numpy as np
import pytest

from auralm.data.manifest import validate_record
from auralm.synth import derived, tasks
from auralm.text import formats
from auralm.text.formats import ENDOFTEXT, IM_END, FormatError, Rendered, render
from auralm.text.tokens import AUDIO_PLACEHOLDER, AUDIO_TOKEN, AUDIO_TOKENS

SPECIAL = re.compile(r"<\|[^|]*\|>")
KNOWN = set(formats.TAG_TOKENS) | set(AUDIO_TOKENS) | {ENDOFTEXT, formats.IM_START, IM_END}


def make_record(task: str, seed: int) -> dict:
    clip = tasks.BUILDERS[task]("train", np.random.default_rng(seed))
    record = {"id": f"{task}-{seed}", "task": task, "audios": [f"audio/{task}-{seed}.flac"],
              "duration": round(clip.audio.size / 16000, 4), **clip.record}  # fmt: skip
    assert validate_record(record) == []
    return record


@pytest.fixture(scope="module")
def records() -> dict[str, list[dict]]:
    out = {task: [make_record(task, seed) for seed in range(3)] for task in tasks.BUILDERS}
    # Make sure the voice-chat records include answered ones (general questions have answer None).
    while not any(r["answer"] for r in out["voice_chat"]):
        out["voice_chat"].append(make_record("voice_chat", len(out["voice_chat"])))
    return out


def expected_answer(record: dict, style: str) -> str:
    """What the model should say, written independently of formats.py where the format allows."""
    task = record["task"]
    if task == "asr":
        if style == "tags":
            return record["text_itn"] if record.get("itn") else record["text"]
        return f"<|{record['language']}|>{record['text']}" if style == "nl" else record["text"]
    simple = {
        "s2tt": record.get("translation"), "lid": f"<|{record.get('language')}|>", "sound_event": record.get("label_name"),
        "scene": record.get("label_name"), "caption": (record.get("captions") or [None])[0], "aqa": record.get("answer"),
        "voice_chat": record.get("answer"), "mixed": record.get("answer"),
    }  # fmt: skip
    if task == "lid" and style != "tags":
        return {"en": "English", "de": "German", "fr": "French", "es": "Spanish"}[record["language"]]
    if task in simple:
        return simple[task]
    if task == "note" and style == "tags":
        return (f"<|pitch|><|midi_pitch_{record['midi_pitch']}|><|velocity|><|midi_velocity_{record['midi_velocity']}|>"
                f"<|instrument|>{record['instrument']}<|sonic|>{', '.join(record['sonic'])}")  # fmt: skip
    if task == "note":
        return f"{record['instrument']}, {record['note_name']} (MIDI {record['midi_pitch']}), {record['velocity']}"
    if task == "speaker":
        return (f"gender: {record['gender']}, speaking rate: {record['rate']}, pitch: {record['pitch']}, "
                f"voice quality: {record['quality']}")  # fmt: skip
    assert task == "srwt"
    return None  # checked by parsing below


@pytest.mark.parametrize("style", ["tags", "nl", "chatml"])
@pytest.mark.parametrize("task", sorted(tasks.BUILDERS))
def test_every_task_renders_with_the_right_target(records, task, style):
    for record in records[task]:
        if record.get("answer", "") is None:
            with pytest.raises(FormatError, match="no answer"):
                render(record, style)
            continue
        r = render(record, style)
        stop = IM_END if style == "chatml" else ENDOFTEXT
        assert r.target.endswith(stop) and r.answer + stop == r.target
        assert r.prompt.count(AUDIO_TOKEN) == 1
        if style != "chatml":
            assert r.prompt.startswith(AUDIO_PLACEHOLDER)
        else:
            assert r.prompt.endswith("<|im_start|>assistant\n")
        unknown = set(SPECIAL.findall(r.prompt + r.target)) - KNOWN
        assert not unknown, unknown
        want = expected_answer(record, style)
        if want is not None:
            assert r.answer == want
        else:
            words = formats.parse_srwt(r.answer if style != "tags" else formats.time_token(0) + r.answer)
            assert [w for w, _, _ in words] == [w["word"] for w in record["words"]]
            for (_, start, end), w in zip(words, record["words"]):
                assert abs(start - w["start"]) <= 0.005 + 1e-9 and abs(end - w["end"]) <= 0.005 + 1e-9


def test_voice_tasks_have_no_text_prompt(records):
    record = next(r for r in records["voice_chat"] if r["answer"])
    assert render(record, "nl").prompt == AUDIO_PLACEHOLDER
    assert formats.to_messages(record)[0] == {"role": "user", "content": "<audio>"}
    assert (
        render(records["mixed"][0], "tags").prompt
        == AUDIO_PLACEHOLDER + "<|startofanalysis|><|en|><|question|><|answer|>"
    )


def test_released_prompts_are_reproduced(records):
    asr = next(r for r in records["asr"] if r["language"] == "en" and not r.get("itn"))
    assert render(asr, "tags").prompt == (AUDIO_PLACEHOLDER + "<|startoftranscript|><|en|><|transcribe|><|en|>"
                                          "<|notimestamps|><|wo_itn|>")  # fmt: skip
    assert render(asr, "nl").prompt == AUDIO_PLACEHOLDER + "Detect the language and recognize the speech: "
    caption = records["caption"][0]
    assert render(caption, "tags").prompt.endswith(
        "<|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_plain|>"
    )
    assert render(caption, "nl").prompt == AUDIO_PLACEHOLDER + "Generate the caption in English:"
    note = records["note"][0]
    assert render(note, "tags").prompt.endswith(
        "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>"
    )
    srwt = records["srwt"][0]
    assert render(srwt, "tags").prompt.endswith("<|timestamps|><|0.00|>")


def test_srwt_string_format_and_round_trip():
    words = [{"word": "turn", "start": 0.54, "end": 0.86}, {"word": "on", "start": 0.86, "end": 1.17},
             {"word": "lights", "start": 1.46, "end": 1.9}]  # fmt: skip
    text = formats.srwt_string(words, duration=2.01)
    assert text == "<|0.00|><|sil|><|0.54|>turn<|0.86|>on<|1.17|><|sil|><|1.46|>lights<|1.90|><|sil|><|2.01|>"
    assert formats.parse_srwt(text) == [("turn", 0.54, 0.86), ("on", 0.86, 1.17), ("lights", 1.46, 1.9)]
    # Generation cut off before the last end time: the unfinished word is dropped; stray tags are ignored.
    assert formats.parse_srwt("<|0.00|>a<|0.20|><|endoftext|>b") == [("a", 0.0, 0.2)]
    with pytest.raises(FormatError, match="outside"):
        formats.time_token(30.01)
    assert formats.time_token(29.996) == "<|30.00|>" and formats.time_token(1.234) == "<|1.23|>"


def test_tag_tokens():
    assert len(formats.TAG_TOKENS) == len(set(formats.TAG_TOKENS))
    assert formats.TIME_TOKENS[0] == "<|0.00|>" and formats.TIME_TOKENS[-1] == "<|30.00|>"
    assert len(formats.TIME_TOKENS) == 3001
    assert "<|midi_pitch_127|>" in formats.TAG_TOKENS and "<|midi_velocity_0|>" in formats.TAG_TOKENS


def qwen2_audio_template() -> jinja2.Template:
    """The chat template of transformers' Qwen2AudioProcessor (the reference implementation)."""
    from transformers.models.qwen2_audio.processing_qwen2_audio import Qwen2AudioProcessor

    return jinja2.Environment().from_string(Qwen2AudioProcessor.default_chat_template.fget(None))


def as_hf_messages(messages: list[dict]) -> list[dict]:
    """Our `<audio>` strings -> the HF content lists (audio items and text items in order)."""
    out = []
    for m in messages:
        if m["role"] == "assistant" or "<audio>" not in m["content"]:
            out.append(m)
            continue
        parts = m["content"].split("<audio>")
        content = [{"type": "text", "text": parts[0]}] if parts[0] else []
        for part in parts[1:]:
            content.append({"type": "audio", "audio_url": "x.flac"})
            if part:
                content.append({"type": "text", "text": part})
        out.append({"role": m["role"], "content": content})
    return out


def test_chatml_matches_the_qwen2_audio_template(records):
    pool = derived.pools([r for rs in records.values() for r in rs])
    rng = np.random.default_rng(0)
    conversations = [derived.conversation(rng, pool) for _ in range(30)]
    conversations.append({"messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Compare <audio> with <audio>."},
                                       {"role": "assistant", "content": "Same."}]})  # fmt: skip
    template = qwen2_audio_template()
    for conv in conversations:
        messages = conv["messages"]
        rendered = formats.render_chatml(messages)
        reference = template.render(messages=as_hf_messages(messages), add_generation_prompt=False)
        assert rendered.prompt + rendered.target + "\n" == reference
        prefix = template.render(messages=as_hf_messages(messages[:-1]), add_generation_prompt=True)
        assert rendered.prompt == prefix
        segments = formats.chatml_segments(messages)
        assert "".join(s.text for s in segments) == reference
        assert [s.text for s in segments if s.trained] == [
            m["content"] + IM_END for m in messages if m["role"] == "assistant"
        ]


def test_preference_pairs_share_the_prompt(records):
    pool = derived.pools([r for rs in records.values() for r in rs])
    rng = np.random.default_rng(1)
    for _ in range(20):
        pair = derived.preference(rng, pool)
        chosen, rejected = formats.render_preference(pair)
        assert chosen.prompt == rejected.prompt
        assert (
            chosen.answer == pair["messages"][-1]["content"] and rejected.answer == pair["rejected_response"]
        )
        assert chosen.answer != rejected.answer
        with pytest.raises(FormatError, match="chatml"):
            render(pair, "tags")


def test_bad_input_raises_format_errors(records):
    with pytest.raises(FormatError, match="unknown style"):
        render(records["asr"][0], "yaml")
    with pytest.raises(FormatError, match="end with an assistant"):
        formats.render_chatml([{"role": "user", "content": "hi"}])
    assert Rendered("p", "x<|endoftext|>").answer == "x"
