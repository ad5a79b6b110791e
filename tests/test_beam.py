"""Beam search and joint CTC / LLM decoding (auralm.infer.beam, auralm.infer.ctc_prefix): the CTC prefix
probabilities against brute force, beams against the greedy engine, the head's own reading recovered, batch
independence, the folder's transcription defaults, and the server's scheduler."""

from __future__ import annotations

import itertools
import math

import openai
import pytest
import torch
from serve_support import ServerThread, wav_bytes
from tiny_hf import build_hf_checkpoint, speechlike

import auralm
from auralm.demo.package import use_ctc_rows
from auralm.infer import beam as beam_module
from auralm.infer.beam import beam_search
from auralm.infer.ctc_prefix import CTCPrefixScorer
from auralm.infer.generate import generate_tokens
from auralm.infer.sampling import GenerationConfig
from auralm.serve.app import create_app
from auralm.serve.settings import ServeSettings

ROWS = [5, 9, 17, 42]


# ---- the CTC prefix scorer -----------------------------------------------------------------------------------
def _brute_force(lp: torch.Tensor, prefix: list[int]) -> tuple[float, float]:
    """(log p(label sequence starts with prefix), log p(label sequence is exactly prefix)) over all frame paths."""
    N, C = lp.shape
    starts = exact = 0.0
    for path in itertools.product(range(C), repeat=N):
        labels, prev = [], 0
        for c in path:
            if c != 0 and c != prev:
                labels.append(c)
            prev = c
        p = math.exp(sum(float(lp[t, c]) for t, c in enumerate(path)))
        starts += p if labels[:len(prefix)] == prefix else 0.0
        exact += p if labels == prefix else 0.0
    return math.log(starts) if starts else -math.inf, math.log(exact) if exact else -math.inf


def test_prefix_probabilities_match_brute_force():
    """After each token of a path with a repeated label, every candidate's prefix score increment and the end's
    score equal sums over all 4^5 frame paths."""
    lp = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)).log_softmax(-1)  # 5 frames, blank + 3
    rows = [100, 101, 102]  # head class k reads token rows[k - 1]
    stop = 7
    scorer = CTCPrefixScorer(lp, rows, weight=1.0, stop_ids=(stop,), top_k=10)
    llm = torch.zeros(110)
    llm[rows] = 5.0  # the rows are the LLM's best candidates; with weight 1 their joint score is the CTC term alone
    prefix: list[int] = []
    for token in (101, 101, 100):
        joint = scorer.rescore(llm)
        before = _brute_force(lp, prefix)[0]
        for cand in rows:
            want = _brute_force(lp, prefix + [rows.index(cand) + 1])[0] - before
            assert math.isclose(float(joint[cand]), want, rel_tol=1e-4, abs_tol=1e-5), (prefix, cand)
        assert math.isclose(float(joint[stop]), _brute_force(lp, prefix)[1] - before, rel_tol=1e-4, abs_tol=1e-5)
        assert torch.isinf(joint[3]) and joint[3] < 0  # not a head row, not a stop: no score
        scorer.advance(token)
        prefix.append(rows.index(token) + 1)


# ---- beams on a tiny model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_hf_checkpoint(tmp_path_factory.mktemp("beam") / "model", n_mels=80, n_kv_heads=2)


def _inputs(chat, seconds: float, seed: int):
    return chat.processor(text=chat.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio": "x"}, {"type": "text", "text": "Transcribe."}]}]),
        audio=speechlike(seconds, seed=seed))


def _ctc_chat(folder, sharp: float = 0.0):
    """The tiny model with a random CTC head over ROWS; `sharp` > 0 makes its posteriors near one-hot."""
    chat = auralm.load(folder)
    model = chat.model
    use_ctc_rows(model, ROWS)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.multi_modal_projector.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        if sharp:
            model.multi_modal_projector.ctc_log_scale.fill_(sharp)
    return chat


def test_one_beam_without_ctc_is_the_greedy_engine(folder):
    chat = auralm.load(folder)
    inputs = _inputs(chat, 2.0, seed=1)
    cfg = chat.config(max_new_tokens=12)
    greedy = generate_tokens(chat.model, dict(inputs), cfg)[0]
    assert beam_search(chat.model, dict(inputs), GenerationConfig(**{**vars(cfg), "num_beams": 1})) == greedy
    beams = beam_search(chat.model, dict(inputs), GenerationConfig(**{**vars(cfg), "num_beams": 4}))
    assert 1 <= len(beams) <= 12


def test_joint_decoding_with_a_sharp_head_reads_what_the_head_reads(folder, monkeypatch):
    """Every head row a candidate, a near one-hot head, CTC weight 1: the answer is the head's own greedy reading
    followed by a stop token, with one beam or four."""
    monkeypatch.setattr(beam_module, "CANDIDATES_PER_BEAM", 10_000)
    chat = _ctc_chat(folder, sharp=6.0)
    inputs = _inputs(chat, 2.5, seed=2)
    reading = chat.model.read_ctc(inputs["input_features"], inputs["feature_attention_mask"].sum(-1))
    assert reading and set(reading) <= set(ROWS)
    for beams in (1, 4):
        cfg = chat.config(max_new_tokens=40, num_beams=beams, ctc_weight=1.0)
        tokens = beam_search(chat.model, dict(inputs), cfg)
        assert tokens[:-1] == reading and tokens[-1] in cfg.stop_token_ids, (beams, tokens, reading)


def test_batched_beams_equal_each_row_alone(folder):
    chat = _ctc_chat(folder)
    parts = [_inputs(chat, s, seed=i) for i, s in enumerate((1.5, 3.0))]
    from auralm.infer.engine import stack_inputs

    cfg = chat.config(max_new_tokens=10, num_beams=3, ctc_weight=0.4)
    together = generate_tokens(chat.model, stack_inputs([dict(p) for p in parts]), cfg)
    alone = [generate_tokens(chat.model, dict(p), cfg)[0] for p in parts]
    assert together == alone


def test_settings_are_checked(folder):
    for bad in ({"num_beams": 0}, {"ctc_weight": 1.5}, {"num_beams": 2, "do_sample": True}):
        with pytest.raises(ValueError):
            GenerationConfig(**bad)
    chat = auralm.load(folder)  # no CTC head
    with pytest.raises(ValueError, match="CTC head"):
        beam_search(chat.model, dict(_inputs(chat, 1.0, seed=0)), chat.config(max_new_tokens=4, ctc_weight=0.5))


def test_the_folders_transcription_defaults_reach_transcribe_eval_and_the_server(folder, tmp_path):
    """auralm.json's asr_num_beams / asr_ctc_weight: `transcribe` decodes with them unless told otherwise, word
    timestamps and sampling do not, and a server transcription (the scheduler's search path) gives the same text."""
    chat = _ctc_chat(folder)
    clip = wav_bytes(2.0, seed=5)
    plain = chat.transcribe(clip, max_new_tokens=12).text
    chat.options = {**chat.options, "asr_num_beams": 3, "asr_ctc_weight": 0.5}
    assert chat.asr_decoding() == {"num_beams": 3, "ctc_weight": 0.5}
    assert chat.asr_decoding({"do_sample": True}) == {} and chat.asr_decoding({"num_beams": 2}) == {}
    searched = chat.transcribe(clip, max_new_tokens=12).text
    explicit = chat.transcribe(clip, max_new_tokens=12, num_beams=3, ctc_weight=0.5).text
    assert searched == explicit != plain  # (the searched answer differs from the greedy one for this clip)
    assert chat.transcribe(clip, max_new_tokens=12, num_beams=1, ctc_weight=0.0).text == plain
    settings = ServeSettings(model_name="tiny", max_batch=4, max_tokens_limit=512, default_max_tokens=12)
    with ServerThread(create_app(chat, settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        r = client.audio.transcriptions.create(model="tiny", file=("clip.wav", clip))
        assert r.text == searched
