"""The CTC-head projector option (`AudioLMConfig.projector_ctc_rows`): frames leave as their CTC posterior's mix of
the LLM's embedding rows; off by default (the released linear projector, byte-identical configs); saved, loaded and
installed from the ctc stage's head; and the demo recipe's read-stage manifest."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from tiny_hf import build_hf_checkpoint

from auralm.checkpoint.hf import load_audiolm, save_audiolm
from auralm.config import CTC_ROWS_KEY, AudioLMConfig, ConfigError
from auralm.demo.ctc_align import CosineCTCHead, install_head
from auralm.demo.package import use_ctc_rows
from auralm.demo.train import reading_manifest

ROWS = [5, 9, 17, 42]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_hf_checkpoint(tmp_path_factory.mktemp("ctcproj") / "model", n_mels=80, n_kv_heads=2)


def _ctc_model(folder, seed: int = 0):
    model = load_audiolm(folder)
    use_ctc_rows(model, ROWS)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.multi_modal_projector.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def test_off_by_default_the_projector_and_config_are_the_released_ones(folder):
    model = load_audiolm(folder)
    keys = {k for k in model.state_dict() if k.startswith("multi_modal_projector.")}
    assert keys == {"multi_modal_projector.linear.weight", "multi_modal_projector.linear.bias"}
    assert CTC_ROWS_KEY not in model.cfg.to_hf()
    x = torch.randn(3, model.cfg.encoder.d_model)
    assert torch.equal(model.multi_modal_projector(x), model.multi_modal_projector.linear(x))


def test_a_frame_becomes_its_posterior_mix_of_the_llm_rows(folder):
    model = _ctc_model(folder)
    proj, embed = model.multi_modal_projector, model.language_model.model.embed_tokens.weight
    x = torch.randn(2, 7, model.cfg.encoder.d_model)  # (B, A, De)
    out = proj(x, embed)  # (B, A, D)
    # by hand: cosine logits against [blank, rows], scaled, softmax; blank -> ctc_blank_embed, class k -> row k
    y = x @ proj.linear.weight.T + proj.linear.bias
    classes = [proj.ctc_blank] + [embed[r] for r in ROWS]
    scale = math.exp(proj.ctc_log_scale.item())
    logits = torch.stack([scale * F.cosine_similarity(y, c.expand_as(y), dim=-1) for c in classes], -1)
    p = logits.softmax(-1)
    want = p[..., :1] * proj.ctc_blank_embed + sum(p[..., k + 1: k + 2] * embed[r] for k, r in enumerate(ROWS))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="embedding rows"):
        proj(x)


def test_a_confident_frame_arrives_as_the_token_embedding_itself(folder):
    model = _ctc_model(folder)
    proj, embed = model.multi_modal_projector, model.language_model.model.embed_tokens.weight
    with torch.no_grad():
        proj.ctc_log_scale.fill_(math.log(200.0))  # a sharp head
        proj.linear.weight.zero_()
        proj.linear.bias.copy_(embed[ROWS[2]])  # every frame points exactly at row 17
    out = proj(torch.randn(4, model.cfg.encoder.d_model), embed)
    torch.testing.assert_close(out, embed[ROWS[2]].expand(4, -1), rtol=1e-3, atol=1e-3)


def test_config_round_trip_and_bad_rows(folder):
    cfg = load_audiolm(folder).cfg
    cfg.projector_ctc_rows = list(ROWS)
    hf = cfg.to_hf()
    assert hf[CTC_ROWS_KEY] == ROWS
    assert AudioLMConfig.from_hf(hf).projector_ctc_rows == ROWS
    with pytest.raises(ConfigError, match=CTC_ROWS_KEY):
        AudioLMConfig.from_hf({**hf, CTC_ROWS_KEY: [1, "two"]})


def test_saved_and_loaded_with_the_same_audio_embeddings(folder, tmp_path):
    model = _ctc_model(folder, seed=3)
    save_audiolm(model, tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())[CTC_ROWS_KEY] == ROWS
    again = load_audiolm(tmp_path / "saved")
    feats = torch.randn(2, 80, 300)  # (Na, M, F)
    lengths = torch.tensor([300, 180])
    with torch.no_grad():
        torch.testing.assert_close(again.encode_audio(feats, lengths), model.encode_audio(feats, lengths))


def test_the_installed_head_gives_the_heads_own_posteriors(folder):
    model = load_audiolm(folder)
    embed = model.language_model.model.embed_tokens.weight.detach()
    torch.manual_seed(0)
    head = CosineCTCHead(model.multi_modal_projector.linear, embed[ROWS], init_scale=10.0)
    with torch.no_grad():
        head.proj.weight.normal_()
        head.log_scale.fill_(2.5)
    h = torch.randn(1, 11, model.cfg.encoder.d_model)  # (B, T, De)
    want = head(h).exp()  # (B, T, K + 1) posteriors
    install_head(model, head, ROWS)
    assert model.cfg.projector_ctc_rows == ROWS
    proj = model.multi_modal_projector
    # The projected frame is the posterior mix, so recover the mix weights by least squares over [blank, rows].
    basis = torch.stack([proj.ctc_blank_embed.detach()] + [embed[r] for r in ROWS])  # (K + 1, D)
    got = torch.linalg.lstsq(basis.T, proj(h, embed)[0].detach().T).solution.T  # (T, K + 1)
    torch.testing.assert_close(got, want[0].detach(), rtol=1e-3, atol=1e-3)


def test_reading_manifest_keeps_english_clips_with_known_words(tmp_path):
    records = [
        {"id": "a", "task": "asr", "language": "en", "text": "hello there", "audios": ["a.flac"], "duration": 1.0},
        {"id": "b", "task": "speaker", "language": "en", "text": "my voice", "audios": ["b.flac"], "duration": 1.5},
        {"id": "c", "task": "asr", "language": "de", "text": "hallo", "audios": ["c.flac"], "duration": 1.0},
        {"id": "d", "task": "sound_event", "label": "dog", "audios": ["d.flac"], "duration": 1.0},
        {"id": "e", "task": "voice_chat", "language": "en", "text_question": "why?", "audios": ["e.flac"]},
    ]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "read.jsonl"
    assert reading_manifest(src, out) == 2
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["task"], r["text"]) for r in got] == [("read-a", "asr", "hello there"),
                                                              ("read-b", "asr", "my voice")]
    assert reading_manifest(src, out, tasks=("asr",)) == 2  # written once: the existing file is kept


# ---- CTC compression: `projector_ctc_drop_blank` ---------------------------------------------------------------
def _drop_model(folder, seed: int = 0):
    model = _ctc_model(folder, seed)
    model.cfg.projector_ctc_drop_blank = True
    model.multi_modal_projector.drop_blank = True
    return model.eval()


def _half_blank(model, inputs) -> None:
    """Centre the projected frames of these clips (the tiny encoder's frames all point one way), so that the blank
    and the rows each win some frames."""
    with torch.no_grad():
        lengths = inputs["feature_attention_mask"].sum(-1)
        hidden, n = model.audio_tower(inputs["input_features"], lengths)  # (Na, A, De), (Na,)
        linear = model.multi_modal_projector.linear
        linear.bias.copy_(-linear.weight @ hidden[0, : int(n[0])].mean(0))


def _chat_inputs(folder, seconds: list[float], seeds: list[int] | None = None):
    from tiny_hf import speechlike

    from auralm import Processor

    proc = Processor.from_pretrained(folder)
    turn = [{"role": "user", "content": [{"type": "audio", "audio": "x"}, {"type": "text", "text": "What is it?"}]}]
    texts = [proc.apply_chat_template(turn)] * len(seconds)
    seeds = seeds or list(range(len(seconds)))
    return proc, proc(text=texts, audio=[speechlike(s, seed=i) for i, s in zip(seeds, seconds)])


def test_dropped_frames_are_as_if_absent(folder):
    model = _drop_model(folder, seed=1)
    _, inputs = _chat_inputs(folder, [2.3])
    _half_blank(model, inputs)
    with torch.no_grad():
        embeds, mask = model.embed_with_mask(inputs["input_ids"], inputs["attention_mask"], inputs["input_features"],
                                             inputs["feature_attention_mask"])
        is_audio = inputs["input_ids"] == model.cfg.audio_token_id
        dropped = int((mask == 0).sum())
        assert 0 < dropped < int(is_audio.sum())  # some frames are blank, some are not
        assert bool(mask[~is_audio].all())  # text is never dropped
        full = model(**inputs).logits[0, -1]
        compact = model(inputs_embeds=embeds[mask.bool()][None]).logits[0, -1]  # the dropped rows removed
    torch.testing.assert_close(full, compact, rtol=1e-4, atol=1e-4)


def test_drop_blank_generation_is_cache_exact_and_batch_invariant(folder, monkeypatch):
    from auralm.infer.engine import DecodeBatch
    from auralm.infer.generate import generate
    from auralm.infer.sampling import GenerationConfig

    model = _drop_model(folder, seed=2)
    _, both = _chat_inputs(folder, [1.1, 4.7])
    _half_blank(model, both)
    cfg = GenerationConfig(max_new_tokens=8)
    batched = generate(model, both, cfg)
    seen: list[torch.Tensor] = []
    choose = DecodeBatch._choose
    monkeypatch.setattr(DecodeBatch, "_choose", lambda self, logits: (seen.append(logits.clone()), choose(self, logits)))
    for i, seconds in enumerate([1.1, 4.7]):
        _, alone = _chat_inputs(folder, [seconds], seeds=[i])
        seen.clear()
        out = generate(model, alone, cfg)
        T = alone["input_ids"].shape[1]
        assert batched[i, -out.shape[1] + T:].tolist()[: out.shape[1] - T] == out[0, T:].tolist()
        with torch.no_grad():  # the cached decode agrees with one uncached forward over prompt + answer
            logits = model(input_ids=out, input_features=alone["input_features"],
                           feature_attention_mask=alone["feature_attention_mask"]).logits
        torch.testing.assert_close(torch.cat(seen), logits[0, T - 1:-1], rtol=1e-4, atol=1e-4)


def test_training_sees_the_same_dropped_frames(folder):
    from auralm.train.objective import embed_batch

    model = _drop_model(folder, seed=3)
    _, inputs = _chat_inputs(folder, [3.0, 1.6])
    _half_blank(model, inputs)
    with torch.no_grad():
        _, want = model.embed_with_mask(inputs["input_ids"], inputs["attention_mask"], inputs["input_features"],
                                        inputs["feature_attention_mask"])
        _, got = embed_batch(model, {**inputs, "paired": False})
    assert torch.equal(got, want) and int((got == 0).sum()) > int((inputs["attention_mask"] == 0).sum())


def test_drop_blank_config_round_trip_and_refusals(folder):
    from auralm.config import CTC_DROP_BLANK_KEY
    from auralm.model.audiolm import Projector

    cfg = load_audiolm(folder).cfg
    assert CTC_DROP_BLANK_KEY not in cfg.to_hf()
    cfg.projector_ctc_rows, cfg.projector_ctc_drop_blank = list(ROWS), True
    hf = cfg.to_hf()
    assert hf[CTC_DROP_BLANK_KEY] is True and AudioLMConfig.from_hf(hf).projector_ctc_drop_blank
    with pytest.raises(ConfigError, match=CTC_DROP_BLANK_KEY):
        AudioLMConfig.from_hf({**hf, CTC_DROP_BLANK_KEY: "yes"})
    cfg.projector_ctc_rows = []
    with pytest.raises(ValueError, match="projector_ctc_rows"):
        Projector(cfg)


def test_best_path_collapses_repeats_and_skips_blanks(folder):
    model = _ctc_model(folder)
    proj, embed = model.multi_modal_projector, model.language_model.model.embed_tokens.weight
    # frames pointing at: blank, 17, 17, blank, 17, 42, 42 -> 17 17 42
    blank = F.normalize(torch.randn(embed.shape[1]), dim=0)
    targets = [blank, embed[17], embed[17], blank, embed[17], embed[42], embed[42]]
    with torch.no_grad():
        proj.ctc_blank.copy_(blank)
        proj.ctc_log_scale.fill_(math.log(200.0))
        proj.linear.weight.zero_()
        x = torch.zeros(len(targets), model.cfg.encoder.d_model)
        proj.linear.bias.zero_()
        # one encoder unit per frame, mapped by the weight onto that frame's target direction
        for t, row in enumerate(targets):
            x[t, t] = 1.0
            proj.linear.weight[:, t] = F.normalize(row.detach(), dim=0)
    assert proj.best_path(x, embed) == [17, 17, 42]


def test_recipe_step_counts_replace_the_scaled_ones_and_ctc_head_runs_decode_jointly():
    """`--steps read=600,sft=210`: those stages run that many steps, the others their scaled count; a CTC-head run's
    chat folders carry the joint decoding settings, a plain run's do not; a bad --steps names the problem."""
    from pathlib import Path

    from auralm.demo import train as demo_train

    data = {"train": Path("t.jsonl"), "dev": Path("d.jsonl"), "read_train": Path("r.jsonl"), "read_dev": Path("rd.jsonl")}
    counts = demo_train.parse_steps("read=600,sft=210")
    stages, _ = demo_train.stage_configs(Path("s"), Path("run"), data, 100, 0.5, ["read", "pretrain", "sft"],
                                         step_counts=counts)
    steps = {name: next(o for o in ov if o.startswith("steps=")) for name, ov in stages}
    assert steps == {"read": "steps=600", "pretrain": "steps=500", "sft": "steps=210"}
    assert demo_train.chat_options(True)["asr_num_beams"] == 4 and "asr_ctc_weight" not in demo_train.chat_options(False)
    with pytest.raises(SystemExit, match="ctc=5"):
        demo_train.parse_steps("ctc=5")
