"""Generation as one generator: prefill, then one decode step at a time, yielding each running row's new token.

Every decode loop of the library consumes `stream_tokens`: `generate()` (transformers' result, behind
`AudioLM.generate`), `generate_texts()` (answers of a batch: `AudioChat.chat_batch`, transcription windows,
evaluation) and `stream_text()` (text deltas of one answer: `AudioChat.stream` and `chat`, the CLI). The server's
scheduler runs its own continuous-batching loop over the same `DecodeBatch` steps, the same stopping rule
(`engine.finish_reason`) and the same `TextDeltas`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from auralm.infer.beam import beam_search
from auralm.infer.engine import DecodeBatch, DecodeStep, left_align, split_inputs
from auralm.infer.sampling import GenerationConfig


def stream_tokens(
    model, inputs: dict[str, torch.Tensor], config: GenerationConfig, step_fn: DecodeStep | None = None,
) -> Iterator[list[tuple[int, int]]]:
    """Prefill the prompts (processor outputs, B rows), then yield step by step the (row index, new token) pairs of
    the rows still running; a row's last pair carries the token that finished it (stop id kept). Steps run
    `step_fn` (a compiled decode step, `auralm.infer.compiled`) when one is given; every function below passes it.
    A config that `searches` (beams, CTC joint scores: `infer.beam`) decodes each row alone, eagerly, and yields its
    answer once it is decided."""
    B = inputs["input_ids"].shape[0]
    if config.searches:  # beams / CTC joint scores: each row searched alone, its answer yielded whole
        rows = split_inputs(inputs, model.cfg.audio_token_id)
        answers = [beam_search(model, row, config) for row in rows]
        for n in range(max(len(a) for a in answers)):
            yield [(i, a[n]) for i, a in enumerate(answers) if n < len(a)]
        return
    batch = DecodeBatch.prefill(model, inputs, [config] * B, step_fn=step_fn)
    while True:
        for r in batch.rows:
            if r.error is not None:  # one caller owns every row here: its call fails with the row's reason
                raise r.error
        yield [(r.tag, r.new_tokens[-1]) for r in batch.rows]
        batch.drop_finished()
        if not batch.rows:
            return
        batch.step()


def generate_tokens(
    model, inputs: dict[str, torch.Tensor], config: GenerationConfig, step_fn: DecodeStep | None = None,
) -> list[list[int]]:
    """The new tokens of every row (stop id included), in batch order."""
    new: list[list[int]] = [[] for _ in range(inputs["input_ids"].shape[0])]
    for step in stream_tokens(model, inputs, config, step_fn):
        for row, token in step:
            new[row].append(token)
    return new


def generate(
    model, inputs: dict[str, torch.Tensor], config: GenerationConfig, pad_token_id: int = 0,
    step_fn: DecodeStep | None = None,
) -> torch.Tensor:
    """transformers-style result: (B, T + n) = the (left-aligned) prompts followed by the new tokens, rows that stop
    early filled with `pad_token_id`; n is the longest row's count of new tokens."""
    input_ids, _ = left_align(inputs["input_ids"], inputs["attention_mask"])
    new = generate_tokens(model, inputs, config, step_fn)
    n = max(len(r) for r in new)
    out = torch.full((input_ids.shape[0], n), pad_token_id, dtype=input_ids.dtype)
    for i, r in enumerate(new):
        out[i, : len(r)] = torch.tensor(r, dtype=input_ids.dtype)
    return torch.cat([input_ids, out], dim=1)


def generate_texts(
    model, decode: Callable[..., str], inputs: dict[str, torch.Tensor], config: GenerationConfig,
    skip_special_tokens: bool = True, step_fn: DecodeStep | None = None,
) -> list[str]:
    """The answer of every row as text, in batch order: its new tokens without stop ids, decoded with
    `decode(ids, skip_special_tokens)`, stripped. Each row's answer equals the one it gets alone."""
    stops = set(config.stop_token_ids)
    return [
        decode([t for t in tokens if t not in stops], skip_special_tokens).strip()
        for tokens in generate_tokens(model, inputs, config, step_fn)
    ]


def stream_text(
    model, decode: Callable[[list[int]], str], inputs: dict[str, torch.Tensor], config: GenerationConfig,
    step_fn: DecodeStep | None = None,
) -> Iterator[str]:
    """Text deltas of one prompt's answer (B = 1) as its tokens are decoded; joined they are `decode(new tokens)`
    (stop ids are special tokens: `decode` must skip them)."""
    if inputs["input_ids"].shape[0] != 1:
        raise ValueError(f"stream_text decodes one prompt, got {inputs['input_ids'].shape[0]}; use generate_texts")
    deltas = TextDeltas(decode)
    for step in stream_tokens(model, inputs, config, step_fn):
        for _, token in step:
            if delta := deltas.push(token):
                yield delta
    if tail := deltas.flush():
        yield tail


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
