"""Choosing the next token: the logits processors of transformers' `generate`, in the same order.

repetition penalty -> min-new-tokens (no stop token yet) -> greedy argmax, or temperature -> top-k -> top-p -> draw.

Numerically safe per row, whatever the settings: a row's numbers must never raise inside a decode step that other
rows share. Logits are float32; a penalty that overflows float32 saturates at its largest finite value; NaN logits
count as impossible tokens; temperatures below `GREEDY_BELOW_TEMPERATURE` choose the greedy token; the division by
the temperature happens after subtracting the row's maximum, so no logit overflows to inf (inf - inf is the NaN
that made `torch.multinomial` raise). Only a row without any finite logit has nothing to draw from: `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Below this temperature sampling is greedy in all but name: a logit gap of 0.001 becomes a factor of e^-100. vLLM's
# sampler treats temperatures under the same 1e-5 as greedy; here they choose the argmax instead of dividing by them.
GREEDY_BELOW_TEMPERATURE = 1e-5
# torch.Generator.manual_seed takes any 64-bit pattern, signed or unsigned.
SEED_RANGE = (-(2**63), 2**64 - 1)
_FLOAT32_MAX = torch.finfo(torch.float32).max


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. Defaults are the papers' evaluation setting: greedy, at most 256 new tokens."""

    max_new_tokens: int = 256  # stop after this many new tokens
    min_new_tokens: int = 0  # stop tokens are forbidden before this many new tokens
    do_sample: bool = False  # False: greedy argmax; True: draw from the (warped) distribution
    temperature: float = 1.0  # divide logits by this before sampling
    top_k: int = 0  # keep the k most likely tokens (0 = all)
    top_p: float = 1.0  # keep the smallest set whose probability reaches p (1.0 = all)
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the sequence (prompt included)
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)  # any of these ends a row (and is kept)
    seed: int | None = None  # seeds the sampler of this request for reproducible draws
    num_beams: int = 1  # > 1: beam search (`infer.beam`; greedy only, answers come whole, not token by token)
    ctc_weight: float = 0.0  # > 0: joint CTC / LLM scores for models with a CTC head (`infer.ctc_prefix`), in beams

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use do_sample=False for greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if self.do_sample and self.searches:
            raise ValueError("beam search and CTC joint decoding are greedy: use do_sample=False with num_beams > 1 "
                             "or ctc_weight > 0")
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed must be a 64-bit integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {self.seed}")

    @property
    def is_plain_greedy(self) -> bool:
        return not self.do_sample and self.repetition_penalty == 1.0

    @property
    def searches(self) -> bool:
        """Whether answers come from `infer.beam.beam_search` (beams or CTC joint scores) instead of the engine's
        token-by-token choice."""
        return self.num_beams > 1 or self.ctc_weight > 0


def process_logits(
    logits: torch.Tensor, history: torch.Tensor, n_new: int, cfg: GenerationConfig
) -> torch.Tensor:
    """Apply penalty and min-length rules to one row. logits: (V,) float32; history: (L,) ids so far (prompt + new)."""
    if cfg.repetition_penalty != 1.0 and history.numel():
        seen = logits.gather(0, history)
        penalized = torch.where(seen < 0, seen * cfg.repetition_penalty, seen / cfg.repetition_penalty)
        # A penalty near 0 overflows float32 (5 / 1e-40 = inf; 1e-300 even rounds to 0, and 0 / 0 = nan): saturate a
        # finite logit at the largest finite value of its sign (0 stays 0), which keeps the tokens' order.
        overflowed = torch.isfinite(seen) & ~torch.isfinite(penalized)
        penalized = torch.where(overflowed, seen.sign() * _FLOAT32_MAX, penalized)
        logits = logits.scatter(0, history, penalized)
    if n_new < cfg.min_new_tokens and cfg.stop_token_ids:
        logits = logits.clone()
        logits[list(cfg.stop_token_ids)] = float("-inf")
    return logits


def choose(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> int:
    """Pick the next token of one row from processed logits (V,); never raises unless no logit is finite."""
    if not cfg.do_sample or cfg.temperature < GREEDY_BELOW_TEMPERATURE:
        return int(logits.argmax())
    # NaN: no evidence for the token; +inf: a logit pushed past float32, still the most likely token.
    logits = logits.float().nan_to_num(nan=float("-inf"), posinf=_FLOAT32_MAX, neginf=float("-inf"))
    best = logits.max()
    if not torch.isfinite(best):
        raise ValueError("the row has no finite logit (all NaN or -inf): there is no distribution to sample from")
    # softmax((l - max) / T) == softmax(l / T); shifted first, the best token sits at 0 and the rest at most go to
    # -inf, so nothing overflows to +inf however small T is.
    logits = (logits - best) / cfg.temperature
    if cfg.top_k:
        kth = torch.topk(logits, min(cfg.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum <= 1 - cfg.top_p
        drop_sorted[-1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop_sorted.scatter(0, order, drop_sorted), float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
