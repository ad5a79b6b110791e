"""Joint CTC / LLM decoding for models whose projector keeps a CTC head (`AudioLMConfig.projector_ctc_rows`).

The CTC head reads the clip's tokens on its own (greedy: `AudioLM.read_ctc`); the LLM reads them from the audio
embeddings and writes fluent text, and where the head is unsure it writes text of its own. Joint decoding (Watanabe
et al., 2017, "Hybrid CTC/attention"; ESPnet's decoder) scores each candidate token by both:

    score(c) = (1 - w) * log p_llm(c | h) + w * [log p_ctc(h + c ...) - log p_ctc(h ...)]

where p_ctc(h ...) is the CTC prefix probability: the total probability of the frame paths whose label sequence
starts with h. A token the audio does not contain gets a low CTC score however fluent it is; the end of the answer
gets the probability that the whole clip reads exactly h. Candidates are the LLM's `top_k` tokens (plus the stop
tokens); a token outside the head's rows cannot be scored and is left out, unless no candidate is left (then the
LLM's candidates keep their LLM scores and the CTC state does not move).

This is auralm's decoding option, like the CTC head itself: other Qwen2-Audio runtimes decode with the LLM alone.
Shapes: N frames, K head classes (class 0 the blank, class k the token `rows[k - 1]`).
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def ctc_rows(model) -> list[int]:
    """The token rows of a model's CTC head, or [] when its projector has none."""
    return list(getattr(getattr(model, "multi_modal_projector", None), "ctc_rows", None) or [])


class CTCPrefixScorer:
    """The CTC side of one row's joint decoding: prefix probabilities of the tokens chosen so far and of each next
    candidate, from the clip's CTC log-posteriors."""

    def __init__(self, log_probs: torch.Tensor, rows: list[int], weight: float, stop_ids: tuple[int, ...],
                 top_k: int = 8):
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"the CTC weight must be in (0, 1], got {weight}")
        self.lp = log_probs.float()  # (N, K+1)
        self.cls = {tok: k + 1 for k, tok in enumerate(rows)}  # token id -> head class
        self.weight, self.stop_ids, self.top_k = weight, tuple(stop_ids), top_k
        N = self.lp.shape[0]
        # The empty prefix: no label yet, every frame so far a blank.
        self.r_n = torch.full((N,), NEG_INF)  # (N,) log p(prefix, path ends at frame t on its last label)
        self.r_b = torch.cumsum(self.lp[:, 0], 0)  # (N,) log p(prefix, path ends at frame t on a blank)
        self.score = 0.0  # log p_ctc(prefix ...); the empty prefix starts every path
        self.last: int | None = None  # the prefix's last head class
        self._pending: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}

    def _extend(self, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each head class c: the states (N, C) of prefix + c and its prefix log-probability (C,)."""
        x = self.lp[:, classes]  # (N, C)
        both = torch.logaddexp(self.r_n, self.r_b)  # (N,)
        same = torch.tensor([c == self.last for c in classes])  # (C,) a repeat needs a blank in between
        phi = torch.where(same[None, :], self.r_b[:, None], both[:, None])  # (N, C)
        N, C = x.shape
        r_n = torch.full((N, C), NEG_INF)
        r_b = torch.full((N, C), NEG_INF)
        if self.last is None:
            r_n[0] = x[0]  # the first label may start at frame 0
        for t in range(1, N):
            r_n[t] = torch.logaddexp(r_n[t - 1], phi[t - 1]) + x[t]
            r_b[t] = torch.logaddexp(r_b[t - 1], r_n[t - 1]) + self.lp[t, 0]
        start = x[0] if self.last is None else torch.full((C,), NEG_INF)
        psi = torch.logaddexp(start, torch.logsumexp(phi[:-1] + x[1:], 0)) if N > 1 else start  # (C,)
        return r_n, r_b, psi

    def rescore(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (V,) of the LLM's next token -> joint scores (V,): -inf outside the scored candidates."""
        llm = torch.log_softmax(logits.float(), -1)
        top = torch.topk(llm, min(self.top_k, llm.numel())).indices.tolist()
        candidates = list(dict.fromkeys(top + [s for s in self.stop_ids if s < llm.numel()]))
        scored = [t for t in candidates if t in self.cls]
        out = torch.full_like(llm, NEG_INF)
        self._pending = {}
        if scored:
            r_n, r_b, psi = self._extend([self.cls[t] for t in scored])
            for j, t in enumerate(scored):
                self._pending[t] = (r_n[:, j], r_b[:, j], float(psi[j]))
                out[t] = (1 - self.weight) * llm[t] + self.weight * (float(psi[j]) - self.score)
        ends = [s for s in candidates if s in self.stop_ids]
        if ends:
            whole = float(torch.logaddexp(self.r_n[-1], self.r_b[-1])) - self.score  # the clip reads exactly h
            for s in ends:
                out[s] = (1 - self.weight) * llm[s] + self.weight * whole
        if not torch.isfinite(out).any():  # nothing the head can score: the LLM's candidates, by the LLM alone
            out[top] = llm[top]
        return out

    def advance(self, token: int) -> None:
        """The row chose `token`: it becomes part of the prefix (a token the head could not score leaves the CTC
        state as it was)."""
        state = self._pending.get(token)
        if state is not None:
            self.r_n, self.r_b, self.score = state
            self.last = self.cls[token]
        self._pending = {}
