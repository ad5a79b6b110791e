"""Preference evaluation: margins equal a hand computation, and after DPO they move by exactly what DPO logged."""

from __future__ import annotations

import pytest
import torch
from train_data import base_config, make_beep_world, make_tokenizer_dir

from auralm import AudioLM
from auralm.eval.preference import main, preference_margins, summarize
from auralm.processor import Processor
from auralm.train.config import TrainConfig
from auralm.train.recipes import build_model, load_processor, train


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefs")
    world = make_beep_world(root / "world", n_clips=12, seed=0)
    cfg = TrainConfig.from_dict(base_config(
        root / "dpo", make_tokenizer_dir(root / "tok"), world, recipe="dpo", steps=8, dpo={"beta": 0.5},
        optim={"lr": 5e-3}, data={"dev": [str(world)]}, log={"eval_every": 8},
    ))
    processor = load_processor(cfg)
    start = root / "start"  # the policy DPO starts from (also its frozen reference), as a folder
    build_model(cfg, processor).save_pretrained(start)
    processor.save_pretrained(start)
    return world, start, train(cfg)


def test_margin_is_the_difference_of_summed_answer_logprobs(dpo_run):
    world, start, _ = dpo_run
    (_, margin), = preference_margins(start, world, limit=1)
    # By hand: the full forward's log-softmax at each answer token, for the chosen and the rejected row.
    from auralm.data.collate import Collator
    from auralm.data.dataset import TrainingDataset, load_examples

    processor = Processor.from_pretrained(start)
    model = AudioLM.from_pretrained(start)
    ex, _ = load_examples(world, "dpo", "nl", processor.chat_template)
    batch = Collator(processor.pad_token_id)([TrainingDataset(ex[:1], processor)[0]])
    frames = batch["feature_attention_mask"].sum(-1)
    audio = model.encode_audio(batch["input_features"], frames)
    sums = []
    for row in range(2):
        ids, labels = batch["input_ids"][row:row + 1], batch["labels"][row]
        embeds = model.language_model.model.embed_tokens(ids)
        embeds[ids == model.cfg.audio_token_id] = audio
        with torch.no_grad():
            logp = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"][row:row + 1]).logits[0]
        logp = logp.float().log_softmax(-1)
        sums.append(sum(float(logp[t - 1, labels[t]]) for t in range(1, len(labels)) if labels[t] >= 0))
    assert margin == pytest.approx(sums[0] - sums[1], abs=1e-3)


def test_dpo_moves_the_margins_by_what_it_logged(dpo_run, tmp_path, capsys):
    world, start, result = dpo_run
    before = summarize(preference_margins(start, world))["all"]
    after = summarize(preference_margins(result.final_dir, world))["all"]
    dev = result.metrics[-1]  # DPO's dev margin: beta * (policy margin - reference margin), mean over pairs
    assert after["mean_margin"] - before["mean_margin"] == pytest.approx(dev["dev_margin"] / 0.5, rel=1e-3)
    assert after["mean_margin"] > before["mean_margin"]
    assert main([str(start), str(result.final_dir), "--manifest", str(world)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and out.count("all") == 2
    assert main([str(tmp_path / "missing"), "--manifest", str(world)]) == 1
