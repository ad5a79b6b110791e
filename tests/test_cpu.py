"""`auralm.cpu.fast_bf16`: bfloat16 only where the hardware multiplies it natively; the demo recipe and the training
loop follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from auralm import cpu
from auralm.demo import train as demo_train


@pytest.mark.parametrize(("avx512_bf16", "amx", "want"), [(False, False, False), (True, False, True),
                                                           (False, True, True)])
def test_fast_bf16_needs_avx512_bf16_or_amx_on_a_cpu(monkeypatch, avx512_bf16, amx, want):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu.fast_bf16() is want and cpu.fast_bf16("cpu") is want
    assert cpu.fast_bf16("cuda") is True


@pytest.mark.parametrize("fast", [True, False])
def test_demo_recipe_uses_bf16_only_where_it_is_fast(monkeypatch, fast):
    monkeypatch.setattr(demo_train, "fast_bf16", lambda device="cpu": fast)
    data = {"train": Path("t.jsonl"), "dev": Path("d.jsonl")}  # no read-stage files: the read stage is not wanted
    stages, common = demo_train.stage_configs(Path("start"), Path("run"), data, 100, 0.5, ["pretrain", "sft"])
    assert [name for name, _ in stages] == ["pretrain", "sft"]
    assert f"bf16={'true' if fast else 'false'}" in common


FRAGMENT = """
import torch
from auralm.cpu import release_free_heap
def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024
big = torch.ones(16 << 18); del big  # a freed 16 MB block raises glibc's mmap threshold: the blocks below use the heap
kept, temps = [], []
for _ in range(100):
    temps.append(torch.ones(1 << 20))  # 4 MB, freed below
    kept.append(torch.ones(1 << 12))  # 16 KB kept between them, as quantized weights sit between float temporaries
del temps
before = anon_mb()
release_free_heap()
print(before, anon_mb())
"""


@pytest.mark.skipif(cpu._glibc() is None, reason="malloc_trim is glibc's")
def test_release_free_heap_hands_heap_holes_back():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FRAGMENT], capture_output=True, text=True, check=True).stdout.split()
    before, after = float(out[0]), float(out[1])
    assert before - after > 250, (before, after)  # ~400 MB of 4 MB holes were resident until the trim


@pytest.mark.parametrize(("fast", "quantize", "tie", "want"), [
    (False, None, False, True), (True, None, False, False), (False, "int8", False, False), (False, "int8", True, False),
])
def test_load_notes_int8_for_a_large_bf16_decoder_where_bf16_is_emulated(tmp_path, monkeypatch, fast, quantize, tie,
                                                                         want):
    """`load(warm=...)` (the CLI's and server's stderr) gets one line naming --quantize int8 when a bfloat16 decoder of
    BF16_ADVICE_BYTES or more loads on a CPU without native bfloat16; not where bfloat16 is native, nor when the
    decoder is already quantized (a tied output layer stays a bfloat16 Linear then)."""
    pytest.importorskip("transformers")
    from tiny_hf import build_hf_checkpoint

    from auralm.infer.api import load
    from auralm.model import quant

    folder = build_hf_checkpoint(tmp_path / "hf", n_mels=80, n_kv_heads=2, tie=tie)
    monkeypatch.setattr(cpu, "fast_bf16", lambda device="cpu": fast)
    monkeypatch.setattr(quant, "BF16_ADVICE_BYTES", 1)  # the tiny decoder stands for a large one
    lines = []
    load(folder, dtype=torch.bfloat16, quantize=quantize, warm=lines.append)
    assert any("--quantize int8" in line for line in lines) is want, lines
    if want:
        monkeypatch.setattr(quant, "BF16_ADVICE_BYTES", 2**40)
        lines.clear()
        load(folder, dtype=torch.bfloat16, warm=lines.append)
        assert lines == []  # a small decoder: no note
