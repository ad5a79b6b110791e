"""The three recipes on the tiny preset: falling losses, freeze policies, LoRA, the exported folder, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from train_data import base_config, make_beep_world, make_tokenizer_dir, read_jsonl, write_yaml

from auralm import AudioLM
from auralm.train.config import TrainConfig, load_config
from auralm.train.recipes import build_model, load_processor, train


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    return {
        "root": root,
        "tok": make_tokenizer_dir(root / "tok"),
        "tok_tags": make_tokenizer_dir(root / "tok_tags", with_tags=True),
        "train": make_beep_world(root / "world", n_clips=12, seed=0),
        "dev": make_beep_world(root / "world", n_clips=4, seed=1, name="dev"),
    }


def _run(env, name: str, recipe: str, **over):
    cfg = TrainConfig.from_dict(
        base_config(env["root"] / name, env["tok"], env["train"], recipe=recipe, **over)
    )
    return cfg, train(cfg)


def _losses(result, key: str = "loss") -> list[float]:
    return [r[key] for r in result.metrics if key in r]


def _initial_state(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    return build_model(cfg, load_processor(cfg)).state_dict()


def test_sft_lowers_the_loss_and_writes_everything(env):
    cfg, res = _run(
        env, "sft", "sft", steps=8, data={"dev": [str(env["dev"])]}, log={"eval_every": 4, "plot": True}
    )
    losses = _losses(res)
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]
    dev = _losses(res, "dev_loss")
    assert len(dev) == 2 and dev[1] < dev[0]
    rec = res.metrics[0]
    for key in ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed"):
        assert key in rec
    out = res.out_dir
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_config(out / "config.yaml").to_dict() == cfg.to_dict()
    assert read_jsonl(out / "metrics.jsonl") == res.metrics
    # SFT stage default: encoder frozen, projector + LLM trained.
    init, final = _initial_state(cfg), AudioLM.from_pretrained(res.final_dir).state_dict()
    assert all(torch.equal(init[k], final[k]) for k in init if k.startswith("audio_tower."))
    assert not torch.equal(
        init["multi_modal_projector.linear.weight"], final["multi_modal_projector.linear.weight"]
    )
    assert not torch.equal(init["language_model.lm_head.weight"], final["language_model.lm_head.weight"])


@pytest.mark.parametrize("convention", ["nl", "tags"])
def test_pretrain_lowers_the_loss_with_the_llm_frozen(env, convention):
    tok = env["tok_tags"] if convention == "tags" else env["tok"]
    over = {
        "steps": 8,
        "data": {"convention": convention},
        "model": {"tokenizer": str(tok)},
        "optim": {"lr": 1e-2},
    }
    cfg = TrainConfig.from_dict(
        base_config(env["root"] / f"pre-{convention}", tok, env["train"], "pretrain", **over)
    )
    res = train(cfg)
    losses = _losses(res)
    assert sum(losses[-2:]) < sum(losses[:2])
    # Qwen-Audio's stage 1: the encoder and projector learn, the LLM stays as it was.
    init, final = _initial_state(cfg), AudioLM.from_pretrained(res.final_dir).state_dict()
    assert all(torch.equal(init[k], final[k]) for k in init if k.startswith("language_model."))
    changed = [k for k in init if k.startswith("audio_tower.layers.") and not torch.equal(init[k], final[k])]
    assert changed


def test_dpo_lowers_the_loss_and_logs_rewards(env):
    # The dev set is the training pairs themselves: the metrics then average over every pair, not one batch.
    _, res = _run(
        env,
        "dpo",
        "dpo",
        steps=8,
        dpo={"beta": 0.5},
        optim={"lr": 5e-3},
        data={"dev": [str(env["train"])]},
        log={"eval_every": 8},
    )
    losses = _losses(res)
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # the policy starts as the reference: log 2
    assert sum(losses[-2:]) < sum(losses[:2])
    for key in ("rewards_chosen", "rewards_rejected", "accuracy", "margin"):
        assert key in res.metrics[0]
    dev = res.metrics[-1]
    assert dev["dev_loss"] < 0.6931
    assert dev["dev_margin"] == pytest.approx(
        dev["dev_rewards_chosen"] - dev["dev_rewards_rejected"], abs=1e-6
    )
    assert dev["dev_margin"] > 0 and 0.0 <= dev["dev_accuracy"] <= 1.0


def test_sft_from_the_encoder_cache_with_workers(env):
    cfg, res = _run(env, "cached", "sft", steps=4, data={"cache_encoder": True, "num_workers": 1})
    losses = _losses(res)
    assert losses[-1] < losses[0]
    cached = list((res.out_dir / "encoder_cache").rglob("*.safetensors"))
    assert len(cached) == 12  # every clip encoded once, before training
    init, final = _initial_state(cfg), AudioLM.from_pretrained(res.final_dir).state_dict()
    assert all(torch.equal(init[k], final[k]) for k in init if k.startswith("audio_tower."))


def test_lora_trains_only_adapters_and_merges_on_export(env):
    cfg, res = _run(
        env,
        "lora",
        "sft",
        steps=6,
        parts={"llm": "lora", "projector": "freeze"},
        lora={"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]},
        optim={"lr": 1e-2},
    )
    losses = _losses(res)
    assert losses[-1] < losses[0]
    init, final = _initial_state(cfg), AudioLM.from_pretrained(res.final_dir).state_dict()
    assert set(init) == set(final)  # merged: plain checkpoint names, no adapter keys
    changed = sorted(k for k in init if not torch.equal(init[k], final[k]))
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    # Only the A (r x in) and B (out x r) matrices of q_proj (64 -> 64) and v_proj (64 -> 32) in 2 layers.
    assert res.trainable["trainable"] == 2 * (4 * (64 + 64) + 4 * (64 + 32))
    assert json.loads((res.adapter_dir / "adapter_config.json").read_text())["r"] == 4


def test_dpo_with_lora_uses_the_adapter_free_model_as_reference(env):
    _, res = _run(
        env,
        "dpo-lora",
        "dpo",
        steps=6,
        parts={"llm": "lora"},
        lora={"r": 4},
        optim={"lr": 1e-2},
        data={"dev": [str(env["train"])]},
        log={"eval_every": 6},
    )
    # With the adapters freshly at zero, policy and reference (adapters off) agree exactly: loss log 2.
    assert _losses(res)[0] == pytest.approx(0.693147, abs=1e-6)
    assert res.metrics[-1]["dev_loss"] < 0.693147 and res.metrics[-1]["dev_margin"] > 0


def test_exported_folder_loads_in_transformers_with_the_same_logits(env):
    transformers = pytest.importorskip("transformers")
    import soundfile as sf

    from auralm.processor import Processor

    _, res = _run(env, "export", "sft", steps=2)
    folder = res.final_dir
    hf = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    ours = AudioLM.from_pretrained(folder).eval()
    proc = Processor.from_pretrained(folder)
    conv = [
        {
            "role": "user",
            "content": [{"type": "audio", "audio": "x"}, {"type": "text", "text": "How many beeps?"}],
        }
    ]
    prompt = proc.apply_chat_template(conv)
    wave, _ = sf.read(next((env["train"].parent / "audio").glob("*.flac")), dtype="float32")
    inputs = proc(text=prompt, audio=wave)
    ref_inputs = proc(text=prompt, audio=wave, pad_to_30s=True)  # transformers' encoder takes exactly 30 s
    with torch.no_grad():
        a = ours(**inputs).logits
        b = hf(**ref_inputs).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    hf_proc = transformers.AutoProcessor.from_pretrained(folder)
    assert hf_proc.tokenizer(prompt)["input_ids"] == proc.encode(prompt)


def test_cli_trains_and_reports_bad_configs_in_one_line(env, capsys):
    from auralm.cli import main

    cfg_path = write_yaml(
        env["root"] / "cli.yaml", base_config(env["root"] / "cli-run", env["tok"], env["train"], steps=2)
    )
    assert main(["train", str(cfg_path), "optim.lr=1e-3", "log.every=1"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert (env["root"] / "cli-run" / "final" / "model.safetensors").is_file()
    cases = {
        "optim.lrr=1": "unknown key 'optim.lrr' (did you mean 'optim.lr'?)",
        "steps=many": "steps: expected an integer, got 'many'",
        "data.train.0.path=/nowhere/x.jsonl": "data.train[0].path: /nowhere/x.jsonl does not exist",
        "parts.llm=melt": "parts.llm: expected one of ['train', 'freeze', 'lora']",
        "data.cache_encoder=true": "data.cache_encoder needs a frozen encoder",
    }
    for override, message in cases.items():
        out_dir = env["root"] / "never"
        code = main(["train", str(cfg_path), override, "recipe=pretrain", f"out_dir={out_dir}"])
        err = capsys.readouterr().err.strip()
        assert code == 1 and message in err and len(err.splitlines()) == 1, (override, err)
        assert not out_dir.exists()  # nothing ran
    bad_yaml = env["root"] / "bad.yaml"
    bad_yaml.write_text(yaml.safe_dump({"optim": {"lr": 1e-3, "warmup": 3}}))
    assert main(["train", str(bad_yaml)]) == 1
    assert "unknown key 'optim.warmup' (did you mean 'optim.warmup_steps'?)" in capsys.readouterr().err
    assert main(["train", str(env["root"] / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err
