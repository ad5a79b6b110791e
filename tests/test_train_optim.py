"""Optimizer parameter groups: weight decay by kind, learning rate by part."""

from __future__ import annotations

import pytest
import torch
from train_data import make_tokenizer_dir

from auralm.config import preset
from auralm.model.audiolm import AudioLM
from auralm.train.config import TrainConfigError, load_config
from auralm.train.optim import build_optimizer


def _groups(scales):
    torch.manual_seed(0)
    model = AudioLM(preset("tiny"))
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.999), 1e-8, fused=False, part_lr_scale=scales)
    where = {id(p): g for g in opt.param_groups for p in g["params"]}
    return model, opt, where


def test_part_scale_sets_the_rate_of_that_part_only():
    model, opt, where = _groups({"projector": 0.05})
    assert opt.param_groups[0]["lr"] == 1e-3  # the unscaled rate comes first (the loop logs group 0)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for name, p in trainable:
        g = where[id(p)]
        assert g["lr"] == pytest.approx(5e-5 if name.startswith("multi_modal_projector.") else 1e-3), name
        assert g["weight_decay"] == (0.0 if p.ndim < 2 or "embed" in name else 0.1), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)


def test_no_scale_keeps_one_rate_and_a_stepped_projector_moves_less():
    model, opt, where = _groups(None)
    assert {g["lr"] for g in opt.param_groups} == {1e-3}
    # One identical gradient step: the scaled projector moves 20x less than the unscaled one.
    moved = []
    for scales in (None, {"projector": 0.05}):
        model, opt, _ = _groups(scales)
        w = model.multi_modal_projector.linear.weight
        before = w.detach().clone()
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        moved.append(float((w.detach() - before).abs().mean()))
    assert moved[1] == pytest.approx(moved[0] * 0.05, rel=0.02)


def test_unknown_part_is_a_config_error(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    tok = make_tokenizer_dir(tmp_path / "tok")
    with pytest.raises(TrainConfigError, match="part_lr_scale: unknown part 'proj'"):
        load_config(None, ["optim.part_lr_scale={proj: 0.1}", "model.preset=tiny", f"model.tokenizer={tok}",
                           f"data.train=[{{path: {manifest}}}]"])
