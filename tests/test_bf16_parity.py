"""bfloat16 end to end against transformers in bfloat16, on the tiny checkpoints of test_parity.

Weights, activations and the KV cache are bfloat16; norms, RoPE tables and softmax are computed in float32 as the
reference does (auralm.model.layers). Text-only prompts give the reference's logits bit for bit. With audio the logits
agree to bfloat16 rounding, not bit for bit: auralm's encoder runs over the batch's longest clip (+2 frames) instead
of 30 s of padding (ARCHITECTURE.md, deliberate differences), and SDPA's blocked softmax over a different number of
(masked) keys rounds differently in bfloat16; greedy tokens are the same.
"""

from __future__ import annotations

import pytest
import torch
from test_parity import CLIPS, batch_prompts, checkpoint, hf_logits  # noqa: F401 (checkpoint is a fixture)

transformers = pytest.importorskip("transformers")

import auralm.checkpoint.hf
from auralm import AudioLM, Processor
from auralm.cpu import fast_bf16
from auralm.infer.engine import DecodeBatch
from auralm.infer.sampling import GenerationConfig
from auralm.model.cpu_bf16 import Float32ProductLinear


# "native": bfloat16 matrix products as torch runs them (what a CPU with AVX512-BF16/AMX gets); "float32-products":
# the wide ones in float32 (auralm.model.cpu_bf16, what load() gives a CPU without them). Both run on every host.
@pytest.fixture(scope="module", params=["native", "float32-products"])
def pair16(checkpoint, request):  # noqa: F811
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    hf_model = Qwen2AudioForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.bfloat16).eval()
    hf_proc = AutoProcessor.from_pretrained(checkpoint)
    hf_proc.tokenizer.padding_side = "left"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auralm.checkpoint.hf, "fast_bf16", lambda device: request.param == "native")
        model = AudioLM.from_pretrained(checkpoint, dtype=torch.bfloat16)
    swapped = any(isinstance(m, Float32ProductLinear) for m in model.modules())
    assert swapped == (request.param == "float32-products")
    return hf_model, hf_proc, model, Processor.from_pretrained(checkpoint)


def test_text_logits_equal_reference(pair16):
    """Bit for bit natively; with float32 products, to a bfloat16 step."""
    hf_model, _, model, proc = pair16
    text = proc.apply_chat_template([{"role": "user", "content": "plain text turn"}], add_generation_prompt=True)
    ids = torch.tensor([proc.encode(text)])
    with torch.no_grad():
        expected = hf_model(input_ids=ids).logits
        got = model(input_ids=ids).logits
    assert got.dtype == torch.bfloat16
    if isinstance(model.language_model.lm_head, Float32ProductLinear):
        # float32 products: the same sums added in another order, so a logit may differ by one bfloat16 step
        step = torch.finfo(torch.bfloat16).eps * expected.float().abs().clamp_min(2**-6)
        assert ((got.float() - expected.float()).abs() <= 2 * step).all()
        assert (got == expected).float().mean() >= 0.9
    else:
        assert torch.equal(got, expected)


def test_audio_logits_match_reference_to_bf16_rounding(pair16):
    hf_model, hf_proc, model, proc = pair16
    texts = batch_prompts(proc)
    hf_in = hf_proc(text=texts, audio=CLIPS, sampling_rate=16000, return_tensors="pt", padding=True)
    ours = proc(text=texts, audio=CLIPS, sampling_rate=16000, padding_side="left")
    expected = hf_logits(hf_model, hf_in).float()
    with torch.no_grad():
        got = model(**ours).logits.float()
    valid = ours.attention_mask.bool()
    diff = (got[valid] - expected[valid]).abs()
    # Logits of a few units: one bfloat16 step is 1/64 there; measured max 0.044, mean 0.004.
    assert diff.max() <= 0.1 and diff.mean() <= 0.01, (diff.max(), diff.mean())
    assert (got[valid].argmax(-1) == expected[valid].argmax(-1)).float().mean() >= 0.97


def test_greedy_tokens_equal_reference(pair16):
    hf_model, hf_proc, model, proc = pair16
    texts = batch_prompts(proc)
    hf_in = hf_proc(text=texts, audio=CLIPS, sampling_rate=16000, return_tensors="pt", padding=True)
    ours = proc(text=texts, audio=CLIPS, sampling_rate=16000, padding_side="left")
    with torch.no_grad():
        ref = hf_model.generate(**hf_in, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0,
                                output_scores=True, return_dict_in_generate=True)
        got = model.generate(**ours, max_new_tokens=10, eos_token_id=[], pad_token_id=0)
    expected, got = ref.sequences[:, hf_in["input_ids"].shape[1]:], got[:, ours.input_ids.shape[1]:]  # (B, 10)
    # The same sums in another order: a row may take the other side of a near tie, and then goes its own way. That
    # happens with float32 products, and natively on a CPU with AVX512-BF16/AMX, whose kernels choose their
    # accumulation order by shape (measured on these prompts, each time one row of one config at its 9th token; where
    # bfloat16 is emulated the native tokens are equal bit for bit). Each row must agree until it meets a tie within
    # two bfloat16 steps of the reference's own scores.
    if isinstance(model.language_model.lm_head, Float32ProductLinear) or fast_bf16("cpu"):
        for row in range(expected.shape[0]):
            differ = (got[row] != expected[row]).nonzero()
            if len(differ):
                t = int(differ[0])
                scores = ref.scores[t][row].float()  # (V,)
                a, b = scores[expected[row, t]], scores[got[row, t]]
                assert (a - b).abs() <= 2 * torch.finfo(torch.bfloat16).eps * a.abs(), (row, t, float(a), float(b))
    else:
        assert torch.equal(got, expected)


def test_kv_cache_is_bfloat16(pair16):
    _, _, model, proc = pair16
    inputs = proc(text=batch_prompts(proc)[:1], audio=CLIPS[:1])
    batch = DecodeBatch.prefill(model, inputs, [GenerationConfig(max_new_tokens=2)])
    assert batch.cache.keys.dtype == batch.cache.values.dtype == torch.bfloat16
