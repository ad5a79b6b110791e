"""The decode engine: prefill a batch of prompts once, then decode one token per row per step with a KV cache.

A `DecodeBatch` holds the rows being decoded. Rows can join a running batch (`merge`, used by the server's
continuous batching) and leave it when they finish (`drop_finished`). All rows share one cache write position;
shorter prompts are right-aligned and their empty slots masked, so every row computes exactly what it would alone.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from auralm.audio.geometry import num_audio_tokens
from auralm.infer.sampling import GenerationConfig, choose, process_logits
from auralm.model.kv_cache import KVCache, merge_right_aligned


def finish_reason(config: GenerationConfig, new_tokens: list[int]) -> str | None:
    """The stopping rule of every decode loop: after its newest token a row is done with "stop" (a stop id, once
    `min_new_tokens` are made; sampling never picks one earlier) or "length" (`max_new_tokens` made), else None."""
    if new_tokens and new_tokens[-1] in config.stop_token_ids and len(new_tokens) >= config.min_new_tokens:
        return "stop"
    if len(new_tokens) >= config.max_new_tokens:
        return "length"
    return None


@dataclass
class Row:
    """One sequence being generated."""

    config: GenerationConfig
    history: list[int]  # the prompt's real tokens, then the new tokens (the repetition penalty looks at both)
    tag: Hashable = None  # the caller's handle: the row's batch index (default), or e.g. the server's Job
    new_tokens: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    finished: bool = False  # set by `accept` from `finish_reason`; a caller may also end a row (a stop string)
    error: ValueError | None = None  # why this row ended without a token (no finite logit); the others go on

    def accept(self, token: int) -> None:
        self.new_tokens.append(token)
        self.history.append(token)
        self.finished = finish_reason(self.config, self.new_tokens) is not None


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the right end (left padding); a right-padded batch becomes left-padded."""
    order = torch.argsort(attention_mask.long(), dim=1, stable=True)  # pads (0) first, real tokens keep their order
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def stack_inputs(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Join several processor outputs into one batch: prompts right-padded (prefill left-aligns them), feature
    rows of every clip in order, padded to the longest with their masks off."""
    T = max(p["input_ids"].shape[1] for p in parts)

    def pad(x: torch.Tensor, n: int) -> torch.Tensor:  # right-pad the last dim with zeros
        return torch.nn.functional.pad(x, (0, n - x.shape[-1]))

    out = {
        "input_ids": torch.cat([pad(p["input_ids"], T) for p in parts]),
        "attention_mask": torch.cat([pad(p["attention_mask"], T) for p in parts]),
    }
    with_audio = [p for p in parts if p.get("input_features") is not None]
    if with_audio:
        F = max(p["input_features"].shape[-1] for p in with_audio)
        out["input_features"] = torch.cat([pad(p["input_features"], F) for p in with_audio])
        out["feature_attention_mask"] = torch.cat([pad(p["feature_attention_mask"], F) for p in with_audio])
    return out


def split_inputs(inputs: dict[str, torch.Tensor], audio_token_id: int) -> list[dict[str, torch.Tensor]]:
    """Inverse of `stack_inputs`: one processor output per row, each with the feature windows of its own audio
    (windows are in row order; a row owns as many as its `<|AUDIO|>` positions take)."""
    B = inputs["input_ids"].shape[0]
    feats = inputs.get("input_features")
    if feats is None:
        return [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(B)]
    per_window = num_audio_tokens(inputs["feature_attention_mask"].sum(-1)).tolist()  # (Nw,)
    out, w = [], 0
    for i in range(B):
        row = {"input_ids": inputs["input_ids"][i:i + 1], "attention_mask": inputs["attention_mask"][i:i + 1]}
        need, first = int((row["input_ids"] == audio_token_id).sum()), w
        while need > 0:
            need -= per_window[w]
            w += 1
        if need != 0:
            raise ValueError(f"row {i}: its audio positions do not match its feature windows")
        if w > first:
            row["input_features"] = feats[first:w]
            row["feature_attention_mask"] = inputs["feature_attention_mask"][first:w]
        out.append(row)
    return out


@torch.no_grad()
def prefill_cache(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs: dict[str, torch.Tensor], capacity: int,
) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
    """Run left-aligned prompts (B, T) with their audio (`inputs`' features) into a new cache of `capacity` slots:
    the last position's logits (B, V), the cache, and key_valid bool (B, capacity) over its real slots."""
    B, T = input_ids.shape
    dec = model.cfg.decoder
    cache = KVCache.allocate(dec.n_layers, B, dec.n_kv_heads, capacity, dec.head_dim, model.dtype, model.device)
    input_ids, attention_mask = input_ids.to(model.device), attention_mask.to(model.device)
    # `attended` also leaves out the audio frames a CTC-compressing projector drops (`AudioLM.embed_with_mask`)
    embeds, attended = model.embed_with_mask(input_ids, attention_mask, inputs.get("input_features"),
                                             inputs.get("feature_attention_mask"))
    logits = model(inputs_embeds=embeds, attention_mask=attended, cache=cache, logits_to_keep=1).logits[:, -1]
    key_valid = torch.zeros((B, capacity), dtype=torch.bool, device=model.device)
    key_valid[:, :T] = attended.bool()
    return logits, cache, key_valid


@torch.no_grad()
def eager_step(model, last: torch.Tensor, cache: KVCache, key_valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """One decode step run eagerly: last tokens (B, 1) at RoPE positions (B,) go into the cache's next slot (marked
    valid in key_valid); returns the next tokens' logits (B, V)."""
    pos = cache.pos
    key_valid[:, pos] = True
    # New tokens are plain text: audio is merged at prefill only, even if a model emits the placeholder id.
    embeds = model.language_model.model.embed_tokens(last)  # (B, 1, D)
    return model(inputs_embeds=embeds, attention_mask=key_valid[:, : pos + 1], position_ids=positions[:, None],
                 cache=cache).logits[:, -1]


# A whole decode step as one function (`auralm.infer.compiled.compile_decode` makes one): last tokens (B, 1), the
# cache's keys and values (L, B, Hkv, S_max, Dh) read only, key_valid (B, S_max), positions (B,) -> logits (B, V)
# and the new token's keys and values (L, B, Hkv, 1, Dh), which the engine writes into the cache.
DecodeStep = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]


class DecodeBatch:
    def __init__(
        self, model, rows: list[Row], cache: KVCache, key_valid: torch.Tensor, positions: torch.Tensor,
        step_fn: DecodeStep | None = None,
    ):
        self.model = model
        self.rows = rows
        self.cache = cache
        self.key_valid = key_valid  # bool (B, capacity): which cache slots hold real tokens
        self.positions = positions  # (B,) RoPE position of each row's next token
        self.step_fn = step_fn  # None: each step runs the model eagerly

    # ---- building --------------------------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def prefill(
        cls, model, inputs: dict[str, torch.Tensor], configs: list[GenerationConfig], tags: list[Hashable] | None = None,
        step_fn: DecodeStep | None = None,
    ) -> DecodeBatch:
        """Run the prompts (processor outputs, any padding side) and choose each row's first new token; later steps
        run `step_fn` (a compiled decode step of this model) when one is given."""
        input_ids, attention_mask = left_align(inputs["input_ids"], inputs["attention_mask"])
        B, T = input_ids.shape
        if len(configs) != B:
            raise ValueError(f"{len(configs)} generation configs for {B} prompts")
        logits, cache, key_valid = prefill_cache(model, input_ids, attention_mask, inputs,
                                                 T + max(c.max_new_tokens for c in configs))
        rows = []
        for i, cfg in enumerate(configs):
            gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
            prompt = input_ids[i][attention_mask[i].bool()].tolist()
            rows.append(Row(cfg, prompt, tags[i] if tags else i, generator=gen))
        batch = cls(model, rows, cache, key_valid, key_valid.sum(-1), step_fn)
        batch._choose(logits)
        return batch

    def merge(self, other: DecodeBatch) -> None:
        """Add the rows of another (prefilled) batch to this one."""
        need = max(self.cache.pos, other.cache.pos) + max(
            [r.config.max_new_tokens - len(r.new_tokens) for r in self.rows + other.rows] + [1]
        )
        self.cache, self.key_valid = merge_right_aligned(
            [self.cache, other.cache], [self.key_valid, other.key_valid], need
        )
        self.rows += other.rows
        self.positions = torch.cat([self.positions, other.positions])

    # ---- decoding --------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return any(not r.finished for r in self.rows)

    @torch.no_grad()
    def step(self) -> None:
        """Feed every row's last token and choose the next one. Finished rows must be dropped first."""
        assert self.rows and not any(r.finished for r in self.rows), "drop finished rows before stepping"
        if self.cache.pos + 1 > self.cache.max_len:
            self._grow(self.cache.max_len * 2)
        last = torch.tensor([r.history[-1] for r in self.rows], device=self.model.device)[:, None]  # (B, 1)
        pos = self.cache.pos
        if self.step_fn is not None:
            # key_valid still excludes slot `pos`: the compiled step attends to the new token itself.
            logits, k, v = self.step_fn(
                last, self.cache.keys, self.cache.values, self.key_valid, self.positions
            )  # (B, V), (L, B, Hkv, 1, Dh) x 2
            self.cache.keys[:, :, :, pos:pos + 1] = k
            self.cache.values[:, :, :, pos:pos + 1] = v
            self.key_valid[:, pos] = True
            self.cache.advance(1)
        else:
            logits = eager_step(self.model, last, self.cache, self.key_valid, self.positions)
        self.positions = self.positions + 1
        self._choose(logits)

    def drop_finished(self) -> list[Row]:
        """Remove finished rows from the batch and return them."""
        done = [r for r in self.rows if r.finished]
        if done:
            keep = torch.tensor([i for i, r in enumerate(self.rows) if not r.finished], dtype=torch.long)
            self.rows = [r for r in self.rows if not r.finished]
            if self.rows:
                self.cache.select_rows(keep.to(self.cache.keys.device))
                self.key_valid = self.key_valid[keep.to(self.key_valid.device)]
                self.positions = self.positions[keep.to(self.positions.device)]
        return done

    def compact(self, min_dead: int = 64) -> bool:
        """Drop the cache columns in front of the oldest live row when they outnumber the live ones.

        Rows that joined later sit right-aligned at the shared write position, so in a batch that never empties the
        columns of long-finished rows pile up in front; no live row attends to them (their key mask is off), so
        removing them changes no result and keeps memory and attention cost proportional to the live rows.
        """
        pos = self.cache.pos
        live = self.key_valid[:, :pos].any(0)  # (pos,) columns some row still attends to
        first = int(live.int().argmax()) if bool(live.any()) else pos
        if first < min_dead or first < pos - first:
            return False
        kept = KVCache(self.cache.keys[:, :, :, first:pos], self.cache.values[:, :, :, first:pos], pos - first,
                       self.cache.rope_base)
        need = (pos - first) + max(r.config.max_new_tokens - len(r.new_tokens) for r in self.rows) + 1
        self.cache, self.key_valid = merge_right_aligned([kept], [self.key_valid[:, first:pos]], need)
        return True

    def _choose(self, logits: torch.Tensor) -> None:
        """logits: (B, V) for each row's next token."""
        logits = logits.float()
        for i, r in enumerate(self.rows):
            # Penalty and min-new-tokens rules; a plain greedy row past its minimum has none to apply.
            if not r.config.is_plain_greedy or len(r.new_tokens) < r.config.min_new_tokens:
                history = torch.tensor(r.history, device=logits.device)
                logits[i] = process_logits(logits[i], history, len(r.new_tokens), r.config)
        if any(r.config.do_sample for r in self.rows):
            tokens = [self._choose_row(logits[i], r) for i, r in enumerate(self.rows)]
        else:
            tokens = logits.argmax(-1).tolist()  # (B,) greedy rows in one argmax
        for r, t in zip(self.rows, tokens):
            if t is not None:
                r.accept(t)

    @staticmethod
    def _choose_row(logits: torch.Tensor, row: Row) -> int | None:
        """One row's token, or None when its logits leave nothing to draw: that row alone ends, with `error`."""
        try:
            return choose(logits, row.config, row.generator)
        except ValueError as err:
            row.error, row.finished = err, True
            return None

    def _grow(self, capacity: int) -> None:
        self.cache, self.key_valid = merge_right_aligned([self.cache], [self.key_valid], capacity)
