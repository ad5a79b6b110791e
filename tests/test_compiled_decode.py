"""The compiled decode step (torch.compile, frozen weights, static cache shapes) chooses the eager engine's tokens."""

from __future__ import annotations

import pytest
import torch
from tiny_hf import build_hf_checkpoint, speechlike

from auralm import AudioLM, Processor
from auralm.infer.compiled import compile_decode
from auralm.infer.generate import generate
from auralm.infer.sampling import GenerationConfig

CLIPS = [speechlike(0.61, seed=4), speechlike(6.25, seed=5), speechlike(11.9, seed=6)]
PROMPTS = ["What's that sound?", "", "Transcribe this recording, please."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = build_hf_checkpoint(tmp_path_factory.mktemp("compiled"), n_mels=80, n_kv_heads=2, seed=7)
    proc = Processor.from_pretrained(folder)
    texts = []
    for p in PROMPTS:
        content = [{"type": "audio", "audio": "x"}] + ([{"type": "text", "text": p}] if p else [])
        texts.append(proc.apply_chat_template([{"role": "user", "content": content}]))
    return folder, proc, texts


@pytest.mark.slow
def test_compiled_equals_eager_for_a_padded_batch_whose_rows_stop_apart(setup):
    folder, proc, texts = setup
    eager, compiled = AudioLM.from_pretrained(folder), AudioLM.from_pretrained(folder)
    step = compile_decode(compiled)
    weights = {k: v.clone() for k, v in compiled.state_dict().items()}
    inputs = proc(text=texts, audio=CLIPS)  # left-padded: every row has a different prompt length
    free = generate(eager, inputs, GenerationConfig(max_new_tokens=12))
    # Stop on the token row 0 makes 4th, so rows finish at different steps and the batch shrinks while decoding.
    stop = int(free[0, -12 + 3])
    cfg = GenerationConfig(max_new_tokens=12, stop_token_ids=(stop,))
    expected = generate(eager, inputs, cfg)
    got = generate(compiled, inputs, cfg, step_fn=step)
    assert torch.equal(got, expected)
    assert (got[:, -12:] == stop).any(1)[0]
    # A single row takes its own (batch of one) graph.
    alone = generate(compiled, proc(text=texts[2], audio=CLIPS[2]), GenerationConfig(max_new_tokens=12), step_fn=step)
    assert torch.equal(alone[0, -12:], free[2, -12:])
    # Frozen weights are copies for the graph; the model's own weights are untouched.
    assert all(torch.equal(weights[k], v) for k, v in compiled.state_dict().items())



@pytest.mark.slow
def test_two_graphs_serve_every_batch_size_and_length(setup):
    """Batch one has its graph, every larger batch shares the other, and the cache length (prompt + budget) is a
    dynamic dimension: new lengths and batch sizes do not compile again."""
    from torch._dynamo.utils import counters

    folder, proc, texts = setup
    model = AudioLM.from_pretrained(folder)
    step = compile_decode(model)
    before = counters["stats"]["unique_graphs"]
    for rows, budget in ((1, 3), (2, 3), (1, 9), (3, 5), (2, 17), (1, 30)):
        inputs = proc(text=texts[:rows], audio=CLIPS[:rows])
        eager = generate(model, inputs, GenerationConfig(max_new_tokens=budget))
        assert torch.equal(generate(model, inputs, GenerationConfig(max_new_tokens=budget), step_fn=step), eager)
    assert counters["stats"]["unique_graphs"] - before == 2


@pytest.mark.slow
def test_a_bfloat16_decoder_compiles_unfrozen_and_chooses_the_eager_tokens(setup):
    from auralm.infer import compiled as compiled_module

    folder, proc, texts = setup
    eager = AudioLM.from_pretrained(folder, dtype=torch.bfloat16)
    model = AudioLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert not compiled_module.frozen(model) and compiled_module.inductor_options(model) == {"freezing": False}
    assert compiled_module.frozen(AudioLM.from_pretrained(folder))  # float32: frozen, packed weights
    step = compile_decode(model)
    inputs = proc(text=texts, audio=CLIPS)
    cfg = GenerationConfig(max_new_tokens=8)
    assert torch.equal(generate(model, inputs, cfg, step_fn=step), generate(eager, inputs, cfg))
    # Unfrozen, the graph reads the module's own weights: a change to them shows in the next step.
    with torch.no_grad():
        model.language_model.lm_head.weight.zero_()  # every logit becomes 0
    zeroed = generate(model, inputs, GenerationConfig(max_new_tokens=3), step_fn=step)
    assert (zeroed[:, -2:] == 0).all()  # argmax of equal logits: token 0, from the compiled steps too


@pytest.mark.slow
def test_an_int8_decoder_compiles_unfrozen_and_chooses_the_eager_tokens(setup):
    from auralm.infer import compiled as compiled_module
    from auralm.model.quant import QuantLinear

    folder, proc, texts = setup
    eager = AudioLM.from_pretrained(folder, quantize="int8")
    model = AudioLM.from_pretrained(folder, quantize="int8")
    assert any(isinstance(m, QuantLinear) for m in model.language_model.modules())
    assert not compiled_module.frozen(model)
    step = compile_decode(model)
    inputs = proc(text=texts, audio=CLIPS)
    cfg = GenerationConfig(max_new_tokens=8)
    assert torch.equal(generate(model, inputs, cfg, step_fn=step), generate(eager, inputs, cfg))
