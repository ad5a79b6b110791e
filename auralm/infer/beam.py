"""Beam search for one prompt, optionally with joint CTC / LLM scores (`infer.ctc_prefix`).

Each step every live hypothesis proposes its best next tokens; the `num_beams` best (hypothesis, token) pairs by
total score go on, and their KV-cache rows are gathered from their parents'. A hypothesis that chooses a stop token
is finished. Scores:
- LLM alone: the sum of the tokens' log-probabilities, compared between finished hypotheses divided by their length
  (Whisper's default length normalisation, so that short answers do not win by being short); the search ends when
  `num_beams` hypotheses have finished.
- with `ctc_weight` w: the sum of the joint scores (1 - w) log p_llm + w (CTC prefix increment). The CTC term ends
  an answer where the audio's tokens end, so no length normalisation; as scores only fall, the search ends once the
  best finished hypothesis scores above every live one.
`num_beams` 1 with a CTC weight is greedy joint decoding. The answer is decided only at the end, so it comes whole.
"""

from __future__ import annotations

import copy

import torch

from auralm.infer.ctc_prefix import CTCPrefixScorer, ctc_rows
from auralm.infer.engine import eager_step, prefill_cache
from auralm.infer.sampling import GenerationConfig, process_logits

CANDIDATES_PER_BEAM = 8  # tokens each live hypothesis proposes (the LLM's best; their joint scores rank them)


def _child(scorer: CTCPrefixScorer, token: int) -> CTCPrefixScorer:
    """A copy of `scorer` that has advanced by `token` (its `rescore` must have scored it)."""
    child = copy.copy(scorer)  # shares the parent's candidate states; `advance` takes one and drops its own reference
    child.advance(token)
    return child


@torch.no_grad()
def beam_search(model, inputs: dict[str, torch.Tensor], config: GenerationConfig) -> list[int]:
    """The new tokens (stop id included when one ended it) of one prompt's best hypothesis.

    inputs: processor outputs of one row (input_ids (1, T), attention_mask, and its audio); config: greedy, with
    `num_beams` and `ctc_weight` (needs a CTC-head model and audio)."""
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError(f"beam_search decodes one prompt, got {inputs['input_ids'].shape[0]}")
    mask = inputs["attention_mask"].bool()[0]
    ids = inputs["input_ids"][:, mask]  # (1, T) the real tokens only
    T = ids.shape[1]
    scorer = None
    if config.ctc_weight > 0:
        if not ctc_rows(model):
            raise ValueError("ctc_weight needs a model whose projector has a CTC head (projector_ctc_rows)")
        if inputs.get("input_features") is None:
            raise ValueError("ctc_weight needs audio in the prompt")
        lp = model.ctc_log_posteriors(inputs["input_features"], inputs["feature_attention_mask"].sum(-1))
        scorer = CTCPrefixScorer(lp, model.multi_modal_projector.ctc_rows, config.ctc_weight, config.stop_token_ids,
                                 top_k=CANDIDATES_PER_BEAM)
    logits, cache, key_valid = prefill_cache(model, ids, torch.ones_like(ids), inputs, T + config.max_new_tokens)
    positions = key_valid.sum(-1)  # (1,) the next token's RoPE position (the same for every hypothesis)
    prompt = ids[0].tolist()
    live: list[tuple[list[int], float, CTCPrefixScorer | None]] = [([], 0.0, scorer)]
    done: list[tuple[list[int], float]] = []  # finished: tokens (stop id included), rank score
    stops = set(config.stop_token_ids)
    for n in range(config.max_new_tokens):
        proposals = []  # (total score, parent, token)
        for b, (tokens, score, sc) in enumerate(live):
            row = logits[b].float()
            if not config.is_plain_greedy or n < config.min_new_tokens:
                row = process_logits(row, torch.tensor(prompt + tokens, device=row.device), n, config)
            if sc is not None:
                joint = sc.rescore(row)
                top = torch.isfinite(joint).nonzero().flatten().tolist()
            else:
                joint = torch.log_softmax(row, -1)
                top = torch.topk(joint, min(CANDIDATES_PER_BEAM, joint.numel())).indices.tolist()
            proposals += [(score + float(joint[t]), b, t) for t in top if torch.isfinite(joint[t])]
        if not proposals and not done:
            raise ValueError("no hypothesis has a finite score to go on with (all logits NaN or -inf)")
        proposals.sort(key=lambda p: -p[0])
        chosen = []
        for total, b, t in proposals:
            tokens = live[b][0] + [t]
            if t in stops or len(tokens) == config.max_new_tokens:  # finished: stopped, or out of budget
                done.append((tokens, total if scorer is not None else total / len(tokens)))
            else:
                chosen.append((total, b, t))
            if len(chosen) == config.num_beams:
                break
        if not chosen:
            break
        if scorer is not None and done and max(s for _, s in done) >= chosen[0][0]:
            break  # joint scores only fall: no live hypothesis can overtake the best finished one
        if scorer is None and len(done) >= config.num_beams:
            break
        parents = torch.tensor([b for _, b, _ in chosen], device=model.device)
        cache.select_rows(parents)
        key_valid = key_valid[parents]
        live = [(live[b][0] + [t], total, None if live[b][2] is None else _child(live[b][2], t))
                for total, b, t in chosen]
        last = torch.tensor([[t] for _, _, t in chosen], device=model.device)  # (beams, 1)
        logits = eager_step(model, last, cache, key_valid, (positions + n).expand(len(chosen)))
    if not done:  # every hypothesis ran out of candidates: the best live one
        done = [(tokens, score) for tokens, score, _ in live]
    return max(done, key=lambda d: d[1])[0]
