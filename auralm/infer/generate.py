"""Generation as a generator of tokens, shared by `AudioLM.generate`, the high-level API, evaluation and the server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from auralm.infer.engine import DecodeBatch, DecodeStep, left_align
from auralm.infer.sampling import GenerationConfig


def stream_tokens(
    model, inputs: dict[str, torch.Tensor], config: GenerationConfig, step_fn: DecodeStep | None = None,
) -> Iterator[list[tuple[int, int]]]:
    """Yield, step by step, the (row index, new token) pairs of the rows still running. Steps run `step_fn` (a
    compiled decode step, `auralm.infer.compiled`) when one is given."""
    B = inputs["input_ids"].shape[0]
    batch = DecodeBatch.prefill(model, inputs, [config] * B, step_fn=step_fn)
    while True:
        yield [(r.tag, r.new_tokens[-1]) for r in batch.rows]
        batch.drop_finished()
        if not batch.rows:
            return
        batch.step()


def generate(
    model, inputs: dict[str, torch.Tensor], config: GenerationConfig, pad_token_id: int = 0,
    step_fn: DecodeStep | None = None,
) -> torch.Tensor:
    """transformers-style result: (B, T + n) = the (left-aligned) prompts followed by the new tokens, rows that stop
    early filled with `pad_token_id`; n is the longest row's count of new tokens."""
    input_ids, _ = left_align(inputs["input_ids"], inputs["attention_mask"])
    new: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    for step in stream_tokens(model, inputs, config, step_fn):
        for row, token in step:
            new[row].append(token)
    n = max(len(r) for r in new)
    out = torch.full((input_ids.shape[0], n), pad_token_id, dtype=input_ids.dtype)
    for i, r in enumerate(new):
        out[i, : len(r)] = torch.tensor(r, dtype=input_ids.dtype)
    return torch.cat([input_ids, out], dim=1)


class TextDeltas:
    """Turns a growing list of token ids into text deltas that never split a multi-byte character.

    Byte-level BPE tokens can end in the middle of a UTF-8 character; the decoded text then ends in U+FFFD until the
    next token completes it, so a delta is released only up to the last complete character.
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already released

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.decode(self.ids)
        stable = len(text.rstrip("\ufffd"))
        delta = text[self.emitted:stable]
        self.emitted = max(self.emitted, stable)
        return delta

    def flush(self) -> str:
        text = self.decode(self.ids)
        delta = text[self.emitted:]
        self.emitted = len(text)
        return delta
