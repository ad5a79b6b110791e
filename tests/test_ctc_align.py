"""CTC pre-alignment of the projector: it learns words carried by the audio, touches nothing but the projector,
and hands the LLM frames with the norm of its own embedding rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_hf import build_hf_checkpoint, build_tokenizer

from auralm import AudioLM
from auralm.data.dataset import DataError
from auralm.data.feature_cache import EncoderCache, encode_clips, encoder_fingerprint
from auralm.demo.ctc_align import (
    SOUND,
    AlignConfig,
    UpperFrames,
    align_projector,
    heard_text,
    spoken_utterances,
)
from auralm.processor import Processor

WORDS = ("is", "the", "into", "audio")
TOKENIZER = build_tokenizer()
# The "speech" of this world: every token of the text sounds as a tone of its own pitch.
PITCH = {t: 300.0 + 150.0 * i for i, t in enumerate(sorted({t for w in WORDS for t in TOKENIZER.encode(" " + w).ids}
                                                           | {t for w in WORDS for t in TOKENIZER.encode(w).ids}))}


def _clip(text: str, rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
    parts = [np.zeros(int(sr * 0.1), np.float32)]
    for token in TOKENIZER.encode(text).ids:
        t = np.arange(int(sr * rng.uniform(0.2, 0.3))) / sr
        parts += [0.5 * np.sin(2 * np.pi * PITCH[token] * t).astype(np.float32), np.zeros(int(sr * 0.1), np.float32)]
    x = np.concatenate(parts)
    return x + 0.003 * rng.standard_normal(x.size).astype(np.float32)


def _world(folder, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        audio = _clip(" ".join(words), rng)
        path = folder / "audio" / f"{seed}-{i}.flac"
        sf.write(path, audio, 16000)
        lines.append({"id": f"{seed}-{i}", "task": "asr", "audios": [str(path)], "duration": audio.size / 16000,
                      "language": "en", "text": " ".join(words)})
    # rows without spoken words are skipped
    lines.append({"id": f"{seed}-ev", "task": "sound_event", "audios": [str(path)], "duration": 1.0,
                  "language": None, "label": "dog", "label_name": "dog"})
    manifest = folder / f"m{seed}.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(manifest)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctc")
    folder = build_hf_checkpoint(root / "model", n_mels=80, n_kv_heads=2)
    return root, folder, _world(root, 48, 0), _world(root, 12, 1)


def test_spoken_utterances_pick_the_spoken_text_and_sample_reproducibly(setup):
    _, folder, train, _ = setup
    tok = Processor.from_pretrained(folder).tokenizer
    utts = spoken_utterances(train, tok)
    assert len(utts) == 48  # the sound_event row has no spoken words
    assert all(tok.decode(u.tokens) == u.text for u in utts)
    a, b = spoken_utterances(train, tok, max_clips=10, seed=3), spoken_utterances(train, tok, max_clips=10, seed=3)
    assert [u.audio for u in a] == [u.audio for u in b] and len(a) == 10


def test_spoken_utterances_of_a_manifest_with_no_valid_row_name_the_first_problem(tmp_path, setup):
    _, folder, _, _ = setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task": "asr", "audios": ["a.wav"], "text": "hi"}) + "\n")  # no id
    with pytest.raises(DataError, match=r"bad.jsonl: no usable records .*id"):
        spoken_utterances(bad, Processor.from_pretrained(folder).tokenizer)


def test_heard_text_names_sounds_in_the_order_they_are_heard():
    events = [{"label": "dtmf", "start": 2.0, "end": 2.5}, {"label": "brown_noise", "start": 0.3, "end": 1.7}]
    assert heard_text({"task": "caption", "events": events}, sounds=True) == "brown noise telephone keypad tone"
    assert heard_text({"task": "caption", "events": events}) is None  # sounds are opt-in
    assert heard_text({"task": "scene", "label": "rain", "label_name": "rainstorm"}, sounds=True) == "rainstorm"
    assert heard_text({"task": "note", "instrument": "flute", "note_name": "G2"}, sounds=True) == "flute G2"
    mixed = {"task": "mixed", "sound": {"label": "beep", "count": 3}, "text_question": "How many beeps?"}
    assert heard_text(mixed, sounds=True) == "beep beep beep How many beeps?"
    assert heard_text(mixed) == "How many beeps?"  # speech only: the question
    assert heard_text({"task": "asr", "text": "hello"}, sounds=True) == "hello"
    assert heard_text({"task": "conversation", "messages": []}, sounds=True) is None


def test_spoken_utterances_with_sounds_mark_the_sound_clips(setup):
    _, folder, train, _ = setup
    tok = Processor.from_pretrained(folder).tokenizer
    utts = spoken_utterances(train, tok, sounds=True)
    assert len(utts) == 49 and [u.language for u in utts].count(SOUND) == 1
    assert next(u for u in utts if u.language == SOUND).text == "dog"


@pytest.mark.slow
def test_alignment_learns_the_words_and_changes_only_the_projector(setup):
    root, folder, train, dev = setup
    torch.manual_seed(0)
    model, processor = AudioLM.from_pretrained(folder), Processor.from_pretrained(folder)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_u, dev_u = spoken_utterances(train, processor.tokenizer), spoken_utterances(dev, processor.tokenizer)
    cache = EncoderCache(root / "cache", encoder_fingerprint(model))
    metrics = align_projector(model, processor, train_u, dev_u, cache, AlignConfig(epochs=60, batch_size=8, lr=1e-2),
                              log=lambda message: None)
    losses = metrics["epoch_losses"]
    assert losses[-1] < 0.5 * losses[0], losses
    # greedy CTC on the projector alone reads most tokens (the random tiny encoder blurs some tones)
    assert metrics["dev_wer_before"] > 100 and metrics["dev_wer"] < min(60.0, 0.3 * metrics["dev_wer_before"]), metrics
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"multi_modal_projector.linear.weight", "multi_modal_projector.linear.bias"}
    # Projected frames arrive with the mean norm of the embedding rows of the transcripts' tokens.
    vocab = sorted({t for u in train_u + dev_u for t in u.tokens})
    target = model.language_model.model.embed_tokens.weight[vocab].norm(dim=-1).mean()
    frames = torch.cat([torch.cat(cache.load(u.audio)) for u in train_u])
    got = model.multi_modal_projector(frames).norm(dim=-1).mean()
    assert abs(float(got / target) - 1.0) < 0.15


def test_the_encoders_top_blocks_train_after_the_projector_and_nothing_below_them(setup):
    root, folder, train, dev = setup
    torch.manual_seed(0)
    model, processor = AudioLM.from_pretrained(folder), Processor.from_pretrained(folder)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.audio_tower.parameters():
        p.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    train_u, dev_u = spoken_utterances(train, processor.tokenizer), spoken_utterances(dev, processor.tokenizer)
    cache = EncoderCache(root / "cache", encoder_fingerprint(model))
    # The split encoder (states below the top block, then the block, pool and norm) gives the cached frames.
    encode_clips(cache, processor, model, {u.audio: u.seconds for u in dev_u})
    upper = UpperFrames(model, processor, dev_u, 1)
    for i, u in enumerate(dev_u[:4]):
        h, n = upper.batch([i])
        torch.testing.assert_close(h[0, : int(n[0])], torch.cat(cache.load(u.audio)), atol=2e-2, rtol=1e-2)
    logs: list[str] = []
    cfg = AlignConfig(epochs=30, batch_size=8, lr=1e-2, encoder_layers=1, encoder_epochs=20, encoder_lr=1e-3,
                      encoder_head_lr=1e-3)
    metrics = align_projector(model, processor, train_u, dev_u, cache, cfg, log=logs.append)
    assert len(metrics["epoch_losses"]) == 50
    projector_phase, encoder_phase = metrics["epoch_losses"][29], metrics["epoch_losses"][-1]
    assert encoder_phase < projector_phase, metrics["epoch_losses"]
    assert any(line.startswith("encoder epoch 20/20") for line in logs)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    top = len(model.audio_tower.layers) - 1
    assert {"multi_modal_projector.linear.weight", "audio_tower.layer_norm.weight"} <= changed
    assert any(k.startswith(f"audio_tower.layers.{top}.") for k in changed)
    assert all(k.startswith(("multi_modal_projector.", f"audio_tower.layers.{top}.", "audio_tower.layer_norm."))
               for k in changed), changed
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags  # as they were


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_alignment_resumes_after_its_last_epoch_and_ends_as_an_uninterrupted_one(setup, tmp_path):
    root, folder, train, dev = setup
    cfg = AlignConfig(epochs=3, batch_size=8, lr=1e-2, encoder_layers=1, encoder_epochs=2, encoder_lr=1e-3,
                      encoder_head_lr=1e-3)

    def run(state_file, stop_at=None):
        model, processor = AudioLM.from_pretrained(folder), Processor.from_pretrained(folder)
        train_u, dev_u = spoken_utterances(train, processor.tokenizer), spoken_utterances(dev, processor.tokenizer)
        cache = EncoderCache(root / "cache", encoder_fingerprint(model))
        logs: list[str] = []

        def log(message):
            logs.append(message)
            if stop_at and message.startswith(stop_at):
                raise _Stop(message)

        metrics = align_projector(model, processor, train_u, dev_u, cache, cfg, log=log, state_file=state_file)
        return model, metrics, logs

    whole, whole_metrics, _ = run(None)
    state = tmp_path / "state.pt"
    with pytest.raises(_Stop):
        run(state, stop_at="projector epoch 2/3")  # killed after its second epoch was saved
    with pytest.raises(_Stop):
        run(state, stop_at="encoder epoch 1/2")
    resumed, metrics, logs = run(state)
    assert logs[0].startswith("encoded") and logs[1].startswith("resuming after encoder epoch 1")
    assert not any(line.startswith("projector epoch") for line in logs)  # nothing done twice
    assert metrics["epoch_losses"] == pytest.approx(whole_metrics["epoch_losses"], rel=1e-5)
    assert metrics["steps"] == whole_metrics["steps"]
    for (k, a), (_, b) in zip(resumed.state_dict().items(), whole.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)
    with pytest.raises(ValueError, match="another model, settings or clips"):
        cfg = AlignConfig(epochs=4, batch_size=8, lr=1e-2, encoder_layers=1, encoder_epochs=2)
        run(state)

    # Killed right after the projector's last epoch, before the encoder phase began.
    cfg = AlignConfig(epochs=2, batch_size=8, lr=1e-2, encoder_layers=1, encoder_epochs=1, encoder_lr=1e-3)
    whole, whole_metrics, _ = run(None)
    state = tmp_path / "state2.pt"
    with pytest.raises(_Stop):
        run(state, stop_at="projector epoch 2/2")
    resumed, metrics, logs = run(state)
    assert logs[1].startswith("resuming after projector epoch 2") and metrics["steps"] == whole_metrics["steps"]
    for (k, a), (_, b) in zip(resumed.state_dict().items(), whole.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)

    # A frozen encoder and the head kept as the projector.
    cfg = AlignConfig(epochs=3, batch_size=8, lr=1e-2, keep_head=True)
    whole, _, _ = run(None)
    state = tmp_path / "state3.pt"
    with pytest.raises(_Stop):
        run(state, stop_at="projector epoch 1/3")
    resumed, _, _ = run(state)
    for (k, a), (_, b) in zip(resumed.state_dict().items(), whole.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=k)


def test_more_encoder_layers_than_the_encoder_has_are_refused(setup):
    root, folder, train, dev = setup
    model, processor = AudioLM.from_pretrained(folder), Processor.from_pretrained(folder)
    utts = spoken_utterances(train, processor.tokenizer)
    cache = EncoderCache(root / "cache", encoder_fingerprint(model))
    too_many = len(model.audio_tower.layers) + 1
    with pytest.raises(ValueError, match=f"encoder_layers must be 0..{too_many - 1}"):
        align_projector(model, processor, utts, [], cache, AlignConfig(encoder_layers=too_many), log=lambda m: None)


def _headed(setup, cfg: AlignConfig):
    """The tiny model after a projector alignment by `cfg` (keep_head), with its processor and utterances."""
    root, folder, train, dev = setup
    torch.manual_seed(0)
    model, processor = AudioLM.from_pretrained(folder), Processor.from_pretrained(folder)
    train_u, dev_u = spoken_utterances(train, processor.tokenizer), spoken_utterances(dev, processor.tokenizer)
    cache = EncoderCache(root / "cache", encoder_fingerprint(model))
    align_projector(model, processor, train_u, dev_u, cache, cfg, log=lambda m: None)
    return model, processor, train_u, dev_u


def test_a_model_with_a_ctc_head_goes_on_from_it_in_an_encoder_only_phase(setup, tmp_path):
    model, processor, train_u, dev_u = _headed(setup, AlignConfig(epochs=20, batch_size=8, lr=1e-2, keep_head=True))
    projector = model.multi_modal_projector
    with torch.no_grad():
        projector.ctc_blank_embed.fill_(0.25)  # what later stages taught a blank frame to be
    head = {k: v.clone() for k, v in projector.state_dict().items()}
    # At learning rate 0 the encoder-only phase starts from the head it found and keeps its blank embedding: the
    # projector leaves unchanged (a fresh head would draw a random blank direction and reset the scale and embedding).
    logs: list[str] = []
    empty_cache = EncoderCache(tmp_path / "cache", encoder_fingerprint(model))
    cfg = AlignConfig(epochs=0, batch_size=8, keep_head=True, encoder_layers=1, encoder_epochs=1, encoder_lr=0.0,
                      encoder_head_lr=0.0)
    metrics = align_projector(model, processor, train_u, dev_u, empty_cache, cfg, log=logs.append)
    after = model.multi_modal_projector.state_dict()
    for key, value in head.items():
        torch.testing.assert_close(after[key], value, atol=0, rtol=0, msg=key)
    assert len(metrics["epoch_losses"]) == 1 and any(line.startswith("encoder epoch 1/1") for line in logs)
    assert not any((tmp_path / "cache").rglob("*.*"))  # no frozen phase, so no cached frames were written


def test_a_head_that_goes_on_keeps_the_rows_of_words_its_new_clips_never_say(setup, tmp_path):
    model, processor, train_u, dev_u = _headed(setup, AlignConfig(epochs=2, batch_size=8, keep_head=True))
    rows = set(model.multi_modal_projector.ctc_rows)
    audio = set(processor.tokenizer.encode(" audio").ids) | set(processor.tokenizer.encode("audio").ids)
    assert audio & rows
    # A second run on clips that never say "audio" (a hear run on another world) still scores its tokens.
    quiet = [u for u in train_u if "audio" not in u.text]
    quiet_dev = [u for u in dev_u if "audio" not in u.text]
    assert quiet and not {t for u in quiet + quiet_dev for t in u.tokens} >= (audio & rows)
    cfg = AlignConfig(epochs=0, batch_size=8, keep_head=True, encoder_layers=1, encoder_epochs=1)
    metrics = align_projector(model, processor, quiet, quiet_dev, EncoderCache(tmp_path / "c", encoder_fingerprint(model)),
                              cfg, log=lambda m: None)
    assert set(model.multi_modal_projector.ctc_rows) == rows and metrics["vocab"] == len(rows)


def test_an_alignment_with_nothing_to_train_is_refused(setup):
    root, folder, train, _ = setup
    model, processor = AudioLM.from_pretrained(folder), Processor.from_pretrained(folder)
    utts = spoken_utterances(train, processor.tokenizer)
    cache = EncoderCache(root / "cache", encoder_fingerprint(model))
    with pytest.raises(ValueError, match="nothing to train"):
        align_projector(model, processor, utts, [], cache, AlignConfig(epochs=0), log=lambda m: None)


def test_the_recipes_hear_stage_trains_the_top_encoder_block_under_a_kept_head(setup, tmp_path):
    from auralm.demo import train as demo_train

    _, folder, train, dev = setup
    torch.manual_seed(0)
    data = {"train": train, "dev": dev}
    with pytest.raises(SystemExit, match="has none"):  # a linear projector: nothing for the stage to go on from
        demo_train.hear_stage(folder, tmp_path, data, 0.01, encoder_layers=1)
    start = demo_train.ctc_stage(folder, tmp_path, data, 0.01, keep_head=True)
    (start / "auralm.json").write_text(json.dumps({"asr_num_beams": 4}))
    final = demo_train.hear_stage(start, tmp_path, data, 0.01, encoder_layers=1)
    assert final == tmp_path / "hear" / "final" and not (tmp_path / "hear" / "state.pt").exists()
    before, after = AudioLM.from_pretrained(start), AudioLM.from_pretrained(final)
    assert after.cfg.projector_ctc_rows == before.cfg.projector_ctc_rows
    old, new = before.state_dict(), after.state_dict()
    changed = {k for k in new if not torch.equal(new[k], old[k])}
    top = len(after.audio_tower.layers) - 1
    assert any(k.startswith(f"audio_tower.layers.{top}.") for k in changed)
    assert all(k.startswith(("multi_modal_projector.", f"audio_tower.layers.{top}.", "audio_tower.layer_norm."))
               for k in changed), changed
    assert json.loads((final / "auralm.json").read_text()) == {"asr_num_beams": 4}  # asked as the start was
    metrics = json.loads((final / "ctc_align.json").read_text())
    assert len(metrics["epoch_losses"]) == 2 and "dev_wer" in metrics  # the encoder phase's 2 epochs only
    assert demo_train.hear_stage(start, tmp_path, data, 0.01, encoder_layers=1) == final  # done: skipped
    small = demo_train.hear_stage(start, tmp_path / "small", data, 0.01, encoder_layers=1, epochs=1, clips=3)
    assert json.loads((small / "ctc_align.json").read_text())["clips"] == 3  # --hear-clips


@pytest.mark.parametrize(("argv", "message"), [
    (["--stages", "ctc,bogus"], "bogus is not a stage"),
    (["--stages", "pretrain,hear"], "add --ctc-head"),
    (["--from-demo", "--stages", "ctc,hear"], "has its ctc stage already"),
])
def test_the_recipe_refuses_stage_lists_it_cannot_run_before_any_work(tmp_path, argv, message):
    from auralm.demo import train as demo_train

    with pytest.raises(SystemExit, match=message):
        demo_train.main(["--world", str(tmp_path / "world"), "--out", str(tmp_path / "run"), *argv])
    assert not (tmp_path / "run").exists()
