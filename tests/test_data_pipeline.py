"""The training data pipeline: exact label masks, audio expansion equal to inference, batching and caching."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from train_data import CHAT_TEMPLATE, QUESTION, answer, make_beep_world, make_tokenizer_dir

from auralm.audio.geometry import num_audio_tokens
from auralm.config import preset
from auralm.data.collate import IGNORE_INDEX, Collator, EncodedPair
from auralm.data.dataset import DataError, TrainingDataset, chat_example, load_examples
from auralm.data.sampler import BatchPlan, Group, RankBatchSampler, mix, pack
from auralm.data.specaug import SpecAugment
from auralm.model.audiolm import AudioLM
from auralm.processor import Processor
from auralm.text.chat import render_chat
from auralm.train.objective import TrainModule


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tok = make_tokenizer_dir(root / "tok")
    manifest = make_beep_world(root / "world", n_clips=6)
    return Processor.from_pretrained(tok), manifest


def _conversation(clip_a: str, clip_b: str) -> dict:
    return {
        "id": "c",
        "task": "conversation",
        "audios": [clip_a, clip_b],
        "messages": [
            {"role": "user", "content": f"<audio>{QUESTION}"},
            {"role": "assistant", "content": answer(2)},
            {"role": "user", "content": "Compare <audio>"},
            {"role": "assistant", "content": "It is the sound of glass shattering."},
        ],
    }


def _target_char_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of every assistant reply + its <|im_end|>, found by plain string search."""
    spans, start = [], 0
    head = "<|im_start|>assistant\n"
    while (i := text.find(head, start)) >= 0:
        begin = i + len(head)
        end = text.index("<|im_end|>", begin) + len("<|im_end|>")
        spans.append((begin, end))
        start = end
    return spans


def test_conversation_label_mask_token_by_token(world):
    processor, manifest = world
    clips = sorted(str(p) for p in (manifest.parent / "audio").glob("*.flac"))[:2]
    ex = chat_example(_conversation(*clips), CHAT_TEMPLATE)
    ds = TrainingDataset([ex], processor)
    item = ds[0]
    # The full conversation as inference renders and tokenizes it, placeholders expanded by the processor.
    conv_items = [
        {
            "role": "user",
            "content": [{"type": "audio", "audio": clips[0]}, {"type": "text", "text": QUESTION}],
        },
        {"role": "assistant", "content": answer(2)},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Compare "}, {"type": "audio", "audio": clips[1]}],
        },
        {"role": "assistant", "content": "It is the sound of glass shattering."},
    ]
    text = render_chat(conv_items, CHAT_TEMPLATE, add_generation_prompt=False)
    enc = processor.tokenizer.encode(text)
    waves = [processor.prepare_audio(c) for c in clips]
    _, _, counts = processor.features(waves)
    (expected_ids,) = processor._expand([enc.ids], counts)
    # The trailing newline after the last <|im_end|> influences no loss position and is not part of the row.
    assert item.input_ids.tolist() == expected_ids[:-1]
    spans = _target_char_spans(text)
    assert len(spans) == 2
    # Walk the unexpanded tokens with their character offsets; expanded audio positions are never targets.
    labels = item.labels.tolist()
    pos = 0
    for tok_id, (a, b) in zip(enc.ids[:-1], enc.offsets[:-1]):
        width = counts.pop(0) if tok_id == processor.audio_token_id else 1
        in_target = any(s <= a and b <= e for s, e in spans)
        for k in range(pos, pos + width):
            assert labels[k] == (tok_id if in_target else IGNORE_INDEX), (k, text[a:b], in_target)
        pos += width
    assert pos == len(labels)
    trained = processor.tokenizer.decode([t for t in labels if t != IGNORE_INDEX], skip_special_tokens=False)
    assert trained == answer(2) + "<|im_end|>" + "It is the sound of glass shattering.<|im_end|>"


def test_audio_expansion_equals_encoder_output_and_inference(world):
    processor, manifest = world
    examples, _ = load_examples(manifest, "pretrain", "nl", CHAT_TEMPLATE)
    ds = TrainingDataset(examples, processor)
    ex, item = examples[0], ds[0]
    prompt, target = ex.segments[0][0], ex.segments[1][0]
    assert target.endswith("<|endoftext|>") and "<|AUDIO|>" in prompt
    # What inference feeds the model for the same prompt and clip.
    wave, _ = sf.read(ex.audios[0], dtype="float32")
    inputs = processor(text=prompt, audio=wave)
    n_prompt = inputs["input_ids"].shape[1]
    assert item.input_ids[:n_prompt].tolist() == inputs["input_ids"][0].tolist()
    assert item.input_ids[n_prompt:].tolist() == processor.encode(target)
    assert (item.labels[:n_prompt] == IGNORE_INDEX).all()
    assert item.labels[n_prompt:].tolist() == processor.encode(target)
    # Features: the window's own frames (+2 the conv stem reads), equal to inference's on those frames.
    (frames,) = item.frames
    assert frames == int(inputs["feature_attention_mask"].sum())
    assert torch.equal(item.features[0][:, :frames], inputs["input_features"][0, :, :frames])
    n_audio = int((item.input_ids == processor.audio_token_id).sum())
    assert n_audio == num_audio_tokens(frames)
    model = AudioLM(_tiny_cfg(processor))
    with torch.no_grad():
        emb = model.encode_audio(item.features[0][None], torch.tensor([frames]))
    assert emb.shape[0] == n_audio


def _tiny_cfg(processor: Processor):
    cfg = preset("tiny")
    cfg.audio_token_id = processor.audio_token_id
    return cfg


def test_preference_pair_shares_prompt_and_scores_last_answer_only(world):
    processor, manifest = world
    examples, skipped = load_examples(manifest, "dpo", "nl", CHAT_TEMPLATE)
    assert skipped == {"task records": 6, "conversations": 6}
    pair = TrainingDataset(examples, processor)[0]
    assert isinstance(pair, EncodedPair)
    c, r = pair.chosen, pair.rejected
    n_prompt = int((c.labels == IGNORE_INDEX).sum())
    assert torch.equal(c.input_ids[:n_prompt], r.input_ids[:n_prompt])
    assert (r.labels[:n_prompt] == IGNORE_INDEX).all() and (r.labels[n_prompt:] != IGNORE_INDEX).all()
    decode = lambda t: processor.tokenizer.decode(t[t != IGNORE_INDEX].tolist(), skip_special_tokens=False)
    assert decode(c.labels) != decode(r.labels)
    assert decode(c.labels).endswith("beeps.<|im_end|>") and decode(r.labels).endswith("beeps.<|im_end|>")
    assert r.features == []  # the rejected row reuses the chosen row's audio
    batch = Collator(processor.pad_token_id)([pair, TrainingDataset(examples, processor)[1]])
    assert batch["paired"] and batch["input_ids"].shape[0] == 4 and batch["input_features"].shape[0] == 2


def test_chat_segments_match_the_formats_module(world):
    from auralm.data.dataset import chat_segments, conversation_items
    from auralm.text.formats import chatml_segments

    messages = _conversation("a.flac", "b.flac")["messages"]
    ours = chat_segments(conversation_items(messages, ["a.flac", "b.flac"]), CHAT_TEMPLATE)
    theirs = chatml_segments(messages)
    assert "".join(t for t, _ in ours) == "".join(s.text for s in theirs).removesuffix("\n")
    assert [t for t, trained in ours if trained] == [s.text for s in theirs if s.trained]
    # A model without a chat template of its own trains on the formats module's rendering: the same segments.
    record = _conversation("a.flac", "b.flac")
    assert chat_example(record, None).segments == chat_example(record, CHAT_TEMPLATE).segments


def test_recipe_row_selection_and_errors(world, tmp_path):
    _, manifest = world
    sft, skipped = load_examples(manifest, "sft", "nl", CHAT_TEMPLATE)
    assert len(sft) == 6 and skipped == {"task records": 6, "preference pairs": 6}
    with_tasks, _ = load_examples(manifest, "sft", "nl", CHAT_TEMPLATE, tasks_as_chat=True)
    assert len(with_tasks) == 12
    only_tasks = tmp_path / "tasks.jsonl"
    only_tasks.write_text(
        "\n".join(line for line in manifest.read_text().splitlines() if '"aqa"' in line) + "\n"
    )
    with pytest.raises(DataError, match="no preference pairs to train dpo on"):
        load_examples(only_tasks, "dpo", "nl", CHAT_TEMPLATE)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(manifest.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.warns(UserWarning, match="bad.jsonl:2"):
        rows, skipped = load_examples(bad, "pretrain", "nl", CHAT_TEMPLATE)
    assert len(rows) == 1 and skipped == {"malformed lines": 1}


def test_token_budget_packing_and_bucketing():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 300, size=500)
    batches = pack(rng.permutation(500), lengths, max_tokens=1200, max_rows=8, bucket_size=100)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) <= 8 and (len(b) == 1 or len(b) * lengths[b].max() <= 1200)
    # Bucketing keeps rows of similar length together: padding is far below random batching's.
    waste = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    assert waste < 0.15 * lengths.sum()
    huge = pack(np.arange(3), np.array([5000, 10, 10]), max_tokens=100, max_rows=8, bucket_size=10)
    assert [0] in huge  # a row over the budget gets a batch of its own, never dropped


def test_weighted_mixing():
    rng = np.random.default_rng(1)
    a, b = Group(np.arange(0, 100), 2.0), Group(np.arange(100, 140), 0.5)
    order = mix([a, b], rng)
    counts = np.bincount(order, minlength=140)
    assert (counts[:100] == 2).all()
    assert counts[100:].sum() == 20 and set(counts[100:]) <= {0, 1}
    assert not np.array_equal(order[:50], np.sort(order[:50]))  # shuffled


def test_batch_plan_deterministic_and_split_over_ranks():
    lengths = np.random.default_rng(2).integers(5, 50, size=64)
    make = lambda: BatchPlan(lengths, [Group(np.arange(64))], 200, 4, 32, seed=7, multiple_of=4)
    p1, p2 = make(), make()
    assert p1.epoch(0) == p2.epoch(0) and p1.epoch(0) != p1.epoch(1)
    assert len(p1.epoch(0)) % 4 == 0
    ranks = [list(RankBatchSampler(p1, 0, rank=r, world_size=2)) for r in range(2)]
    interleaved = [b for pair in zip(*ranks) for b in pair]
    assert interleaved == p1.epoch(0)
    resumed = list(RankBatchSampler(p1, 0, rank=1, world_size=2, start=4))
    assert resumed == ranks[1][2:]


def test_specaugment_masks_only_valid_frames_and_is_seeded():
    feats = torch.randn(80, 120)
    aug = SpecAugment(freq_masks=2, freq_width=10, time_masks=2, time_width=0.2)
    a = aug(feats, 100, torch.Generator().manual_seed(3))
    b = aug(feats, 100, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(a[:, 100:], feats[:, 100:])
    changed = a != feats
    assert changed.any()
    assert torch.allclose(a[changed], feats[:, :100].mean().expand(int(changed.sum())))


def test_encoder_cache_gives_the_same_loss(world, tmp_path):
    from auralm.data.feature_cache import EncoderCache, encoder_fingerprint, fill_cache

    processor, manifest = world
    examples, _ = load_examples(manifest, "sft", "nl", CHAT_TEMPLATE)
    torch.manual_seed(0)
    model = AudioLM(_tiny_cfg(processor)).eval()
    module = TrainModule(model)
    collate = Collator(processor.pad_token_id)
    plain = TrainingDataset(examples, processor)
    cache = EncoderCache(tmp_path / "cache", encoder_fingerprint(model))
    assert fill_cache(cache, plain, model) == 6
    assert fill_cache(cache, plain, model) == 0  # computed once
    cached = TrainingDataset(examples, processor, encoder_cache=cache)
    with torch.no_grad():
        a = module(collate([plain[i] for i in range(4)]))
        b = module(collate([cached[i] for i in range(4)]))
    assert "audio_embeds" in collate([cached[0]])
    assert a[1] == b[1] and torch.allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    model.audio_tower.layer_norm.weight.data += 1  # a different encoder never reads these entries
    assert not EncoderCache(tmp_path / "cache", encoder_fingerprint(model)).has(examples[0].audios[0])
