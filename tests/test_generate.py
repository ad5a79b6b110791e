"""Generation: greedy equals transformers token for token; cache, batching, streaming and stopping are exact."""

from __future__ import annotations

import pytest
import torch

from tiny_hf import build_hf_checkpoint, speechlike

from auralm import AudioLM, Processor
from auralm.infer.engine import DecodeBatch
from auralm.infer.generate import TextDeltas, generate, stream_tokens
from auralm.infer.sampling import GenerationConfig

CLIPS = [speechlike(0.61, seed=4), speechlike(6.25, seed=5), speechlike(17.9, seed=6)]
PROMPTS = ["What's that sound?", "", "Transcribe this recording, please."]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_hf_checkpoint(tmp_path_factory.mktemp("gen"), n_mels=80, n_kv_heads=2, seed=7)


@pytest.fixture(scope="module")
def model_proc(folder):
    return AudioLM.from_pretrained(folder), Processor.from_pretrained(folder)


def chat_texts(proc):
    texts = []
    for p in PROMPTS:
        content = [{"type": "audio", "audio": "x"}] + ([{"type": "text", "text": p}] if p else [])
        texts.append(proc.apply_chat_template([{"role": "user", "content": content}]))
    return texts


def test_greedy_matches_transformers_generate(folder, model_proc):
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    model, proc = model_proc
    hf_model = Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    hf_proc = AutoProcessor.from_pretrained(folder)
    hf_proc.tokenizer.padding_side = "left"
    texts = chat_texts(proc)
    hf_in = hf_proc(text=texts, audio=CLIPS, sampling_rate=16000, return_tensors="pt", padding=True)
    eos = proc.tokenizer.token_to_id("<|im_end|>")
    with torch.no_grad():
        expected = hf_model.generate(**hf_in, max_new_tokens=16, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    got = model.generate(**proc(text=texts, audio=CLIPS), max_new_tokens=16, eos_token_id=eos, pad_token_id=eos)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)


def test_cached_decode_equals_full_forward(model_proc):
    model, proc = model_proc
    inputs = proc(text=chat_texts(proc)[:1], audio=CLIPS[:1])
    out = generate(model, inputs, GenerationConfig(max_new_tokens=10))
    T = inputs["input_ids"].shape[1]
    full_mask = torch.ones_like(out)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=full_mask, input_features=inputs["input_features"],
                       feature_attention_mask=inputs["feature_attention_mask"]).logits
    assert torch.equal(logits[0, T - 1:-1].argmax(-1), out[0, T:])


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_equals_rows_alone(model_proc, side):
    model, proc = model_proc
    texts = chat_texts(proc)
    cfg = GenerationConfig(max_new_tokens=12)
    batch = generate(model, proc(text=texts, audio=CLIPS, padding_side=side), cfg)
    for i in range(3):  # no stop ids: every row makes exactly max_new_tokens tokens
        alone = generate(model, proc(text=texts[i], audio=CLIPS[i]), cfg)
        assert torch.equal(batch[i, -cfg.max_new_tokens:], alone[0, -cfg.max_new_tokens:])


def test_stop_tokens_end_a_row_and_are_kept(model_proc):
    model, proc = model_proc
    inputs = proc(text=chat_texts(proc)[:1], audio=CLIPS[:1])
    free = generate(model, inputs, GenerationConfig(max_new_tokens=8))[0, -8:].tolist()
    stop = free[3]
    first = free.index(stop)
    stopped = generate(model, inputs, GenerationConfig(max_new_tokens=8, stop_token_ids=(stop, 10**6)))
    new = stopped[0, inputs["input_ids"].shape[1]:].tolist()
    assert new == free[: first + 1]


def test_min_new_tokens_forbids_early_stop(model_proc):
    model, proc = model_proc
    inputs = proc(text=chat_texts(proc)[:1], audio=CLIPS[:1])
    free = generate(model, inputs, GenerationConfig(max_new_tokens=6))[0, -6:].tolist()
    cfg = GenerationConfig(max_new_tokens=6, min_new_tokens=6, stop_token_ids=(free[0],))
    new = generate(model, inputs, cfg)[0, inputs["input_ids"].shape[1]:].tolist()
    assert len(new) == 6 and new[0] != free[0]


def test_sampling_is_reproducible_and_top_k_1_is_greedy(model_proc):
    model, proc = model_proc
    inputs = proc(text=chat_texts(proc)[:1], audio=CLIPS[:1])
    a = generate(model, inputs, GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=3))
    b = generate(model, inputs, GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, seed=3))
    assert torch.equal(a, b)
    greedy = generate(model, inputs, GenerationConfig(max_new_tokens=8))
    top1 = generate(model, inputs, GenerationConfig(max_new_tokens=8, do_sample=True, top_k=1, seed=1))
    assert torch.equal(greedy, top1)


def test_repetition_penalty_changes_choice_like_reference(folder, model_proc):
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    model, proc = model_proc
    hf_model = Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    hf_proc = AutoProcessor.from_pretrained(folder)
    text = chat_texts(proc)[:1]
    hf_in = hf_proc(text=text, audio=CLIPS[:1], sampling_rate=16000, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = hf_model.generate(**hf_in, max_new_tokens=10, do_sample=False, repetition_penalty=1.8, eos_token_id=None)
    got = model.generate(**proc(text=text, audio=CLIPS[:1]), max_new_tokens=10, repetition_penalty=1.8)
    assert torch.equal(got, expected)


def test_joining_a_running_batch_changes_nothing(model_proc):
    """Continuous batching: a row that joins mid-decode gets the tokens it gets alone, and so do the others."""
    model, proc = model_proc
    texts = chat_texts(proc)
    cfg = GenerationConfig(max_new_tokens=9)
    alone = [generate(model, proc(text=texts[i], audio=CLIPS[i]), cfg)[0, -9:].tolist() for i in range(2)]
    batch = DecodeBatch.prefill(model, proc(text=texts[0], audio=CLIPS[0]), [cfg], tags=["a"])
    for _ in range(4):
        batch.step()
    batch.merge(DecodeBatch.prefill(model, proc(text=texts[1], audio=CLIPS[1]), [cfg], tags=["b"]))
    results = {}
    while batch.rows:
        for r in batch.drop_finished():
            results[r.tag] = r.new_tokens
        if batch.rows:
            batch.step()
    assert results["a"] == alone[0] and results["b"] == alone[1]


def test_stream_deltas_join_to_final_text(model_proc):
    model, proc = model_proc
    inputs = proc(text=chat_texts(proc)[:1], audio=CLIPS[:1])
    deltas = TextDeltas(proc.decode)
    pieces = [deltas.push(tok) for step in stream_tokens(model, inputs, GenerationConfig(max_new_tokens=12)) for _, tok in step]
    pieces.append(deltas.flush())
    assert "".join(pieces) == proc.decode(deltas.ids)


def test_text_deltas_never_split_a_character(model_proc):
    _, proc = model_proc
    ids = proc.encode("你好世界。语音识别 ok")
    deltas = TextDeltas(proc.decode)
    pieces = [deltas.push(i) for i in ids] + [deltas.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == "你好世界。语音识别 ok"


def test_generate_stops_on_the_folder_generation_config_and_saves_it_back(folder, model_proc, tmp_path):
    """`AudioLM.from_pretrained` keeps the folder's generation_config.json for `.generate` and `.save_pretrained`."""
    import json
    import shutil

    _, proc = model_proc
    inputs = proc(text=chat_texts(proc)[:1], audio=CLIPS[:1])
    free = AudioLM.from_pretrained(folder).generate(**inputs, max_new_tokens=8, eos_token_id=[])[0, -8:].tolist()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    defaults = {"eos_token_id": free[3], "pad_token_id": 0}
    (copy / "generation_config.json").write_text(json.dumps(defaults))
    model = AudioLM.from_pretrained(copy)
    new = model.generate(**inputs, max_new_tokens=8)[0, inputs["input_ids"].shape[1]:].tolist()
    assert new == free[: free.index(free[3]) + 1]
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "generation_config.json").read_text()) == defaults


def test_generate_rejects_a_misspelt_keyword(model_proc):
    model, proc = model_proc
    inputs = proc(text=chat_texts(proc)[:1], audio=CLIPS[:1])
    with pytest.raises(TypeError, match="max_new_token"):
        model.generate(**inputs, max_new_token=4)
