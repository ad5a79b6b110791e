"""Float32 products for bfloat16 weights (auralm.model.cpu_bf16): the same numbers as a bfloat16 product, taken
only where they pay and never where a gradient is wanted; load() gives them to CPUs that emulate bfloat16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import auralm.checkpoint.hf
import auralm.model.cpu_bf16 as cpu_bf16
from auralm.checkpoint.hf import load_audiolm, save_audiolm
from auralm.config import AudioLMConfig, DecoderConfig, EncoderConfig
from auralm.infer.generate import generate
from auralm.infer.sampling import GenerationConfig
from auralm.model.audiolm import AudioLM
from auralm.model.quant import QuantLinear
from auralm.model.cpu_bf16 import (
    WIDE_ROWS,
    Float32ProductConv1d,
    Float32ProductLinear,
    float32_products_,
    linear_fp32,
)


def _bf16(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).bfloat16()


def _one_step_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to one bfloat16 rounding step of the larger value (sums taken in another order)."""
    step = torch.finfo(torch.bfloat16).eps * torch.maximum(got.float().abs(), want.float().abs()).clamp_min(2**-10)
    assert ((got.float() - want.float()).abs() <= step).all()


@pytest.mark.parametrize("chunk", [1 << 24, 7 * 64])  # one chunk; 7-row chunks, the last one short (N = 61)
def test_linear_fp32_is_the_float32_product_rounded_once(monkeypatch, chunk):
    monkeypatch.setattr(cpu_bf16, "CHUNK_ELEMENTS", chunk)
    x, w, b = _bf16(3, 5, 64, seed=1), _bf16(61, 64, seed=2), _bf16(61, seed=3)
    got = linear_fp32(x, w, b)
    want = F.linear(x.float(), w.float(), b.float()).bfloat16()
    assert got.shape == (3, 5, 61) and got.dtype == torch.bfloat16
    _one_step_close(got, want)
    assert (got == want).float().mean() >= 0.99
    _one_step_close(got, F.linear(x, w, b))  # and what torch's own bfloat16 kernel gives


def test_wide_inputs_take_the_float32_path_and_narrow_ones_do_not(monkeypatch):
    calls = 0

    def counting(*args):
        nonlocal calls
        calls += 1
        return linear_fp32(*args)

    monkeypatch.setattr(cpu_bf16, "linear_fp32", counting)
    model = nn.Sequential(nn.Linear(64, 32).bfloat16())
    assert float32_products_(model) == 1
    with torch.no_grad():
        model(_bf16(WIDE_ROWS - 1, 64))  # a decode step of a small batch: bfloat16 as it is
        assert calls == 0
        model(_bf16(2, WIDE_ROWS, 64))
        assert calls == 1
    model(_bf16(2, WIDE_ROWS, 64))  # gradients enabled: the reused buffer could not be saved for backward
    assert calls == 1


def test_gradients_are_those_of_the_plain_layer():
    torch.manual_seed(0)
    plain = nn.Linear(64, 32).bfloat16()
    swapped = nn.Sequential(nn.Linear(64, 32).bfloat16())
    swapped[0].load_state_dict(plain.state_dict())
    float32_products_(swapped)
    x = _bf16(8, 64, seed=4)
    plain(x).float().square().sum().backward()
    swapped(x).float().square().sum().backward()
    assert torch.equal(swapped[0].weight.grad, plain.weight.grad)


def test_conv1d_matches_the_bfloat16_convolution():
    conv = nn.Conv1d(16, 24, kernel_size=3, stride=2, padding=1).bfloat16()
    x = _bf16(2, 16, 50, seed=5)
    with torch.no_grad():
        want = conv(x)
        holder = nn.Sequential(conv)
        float32_products_(holder)
        assert isinstance(holder[0], Float32ProductConv1d)
        got = holder[0](x)
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    _one_step_close(got, F.conv1d(x.float(), conv.weight.float(), conv.bias.float(), 2, 1).bfloat16())


def _tiny_model() -> AudioLM:
    cfg = AudioLMConfig(
        encoder=EncoderConfig(n_mels=80, d_model=64, n_layers=1, n_heads=2, ffn_dim=128, max_positions=1500),
        decoder=DecoderConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                              head_dim=16),
        audio_token_id=500,
    )
    torch.manual_seed(0)
    return AudioLM(cfg).eval()


def test_a_swapped_model_keeps_its_parameters_and_generates_the_same_tokens():
    model = _tiny_model().bfloat16()
    before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    cfg = GenerationConfig(max_new_tokens=8)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        tokens = generate(model, batch, cfg, pad_token_id=0)
    n_layers = sum(type(m) in (nn.Linear, nn.Conv1d) for m in model.modules())
    assert float32_products_(model) == n_layers
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == before  # same keys, same tensors
    with torch.no_grad():
        got = model(input_ids=ids).logits
        assert torch.equal(generate(model, batch, cfg, pad_token_id=0), tokens)
    assert (got.argmax(-1) == logits.argmax(-1)).all()
    assert (got.float() - logits.float()).abs().max() <= 0.05  # logits of ~1: a few bfloat16 steps


@pytest.mark.parametrize("dtype,fast,swapped", [
    (torch.bfloat16, False, True),
    (torch.bfloat16, True, False),  # a CPU with AVX512-BF16 / AMX multiplies bfloat16 natively
    (torch.float32, False, False),
])
def test_load_swaps_only_bfloat16_models_on_slow_cpus(tmp_path, monkeypatch, dtype, fast, swapped):
    save_audiolm(_tiny_model(), tmp_path)
    monkeypatch.setattr(auralm.checkpoint.hf, "fast_bf16", lambda device: fast)
    model = load_audiolm(tmp_path, dtype=dtype)
    assert any(isinstance(m, Float32ProductLinear) for m in model.modules()) == swapped
    assert all(isinstance(m, Float32ProductLinear) == swapped for m in model.modules() if isinstance(m, nn.Linear))


def test_int8_layers_multiply_their_dequantized_rows_in_float32(monkeypatch):
    monkeypatch.setattr(cpu_bf16, "CHUNK_ELEMENTS", 5 * 64)  # several chunks, the last one short
    lin = nn.Linear(64, 48)
    q = QuantLinear.from_linear(lin, bits=8, dtype=torch.bfloat16)
    x = _bf16(2, 6, 64, seed=7)
    with torch.no_grad():
        kernel = q(x)  # torch's int8 kernel
        assert float32_products_(nn.Sequential(q)) == 1 and q.float32_products
        got = q(x)
        # the layer's convention on both paths: the product rounded to bfloat16, then the bias added
        want = F.linear(x.float(), q.dequantized_weight()).bfloat16() + q.bias
        assert torch.equal(q(x[:1, :WIDE_ROWS - 1]), kernel[:1, :WIDE_ROWS - 1])  # a decode step: the kernel
    _one_step_close(got, want)
    assert (got.float() - kernel.float()).abs().max() <= 0.05  # the kernel's own rounding of the same product


def test_load_turns_float32_products_on_for_int8_layers_on_slow_cpus(tmp_path, monkeypatch):
    save_audiolm(_tiny_model(), tmp_path)
    for fast in (False, True):
        monkeypatch.setattr(auralm.checkpoint.hf, "fast_bf16", lambda device: fast)
        model = load_audiolm(tmp_path, quantize="int8")
        flags = {m.float32_products for m in model.modules() if isinstance(m, QuantLinear)}
        assert flags == {not fast}
