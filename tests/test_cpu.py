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
