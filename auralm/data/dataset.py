"""Training datasets over JSONL manifests: text -> token ids with exact label masks, audio loaded lazily.

Each row becomes an `Example`: text segments in order, each marked as target (in the loss) or context, plus the
audio files its placeholders refer to. The rules (shared by every recipe):
- a task record (pre-training) renders through `auralm.text.formats` into a prompt and a target; the target and
  the end-of-text token after it are the loss;
- a conversation renders through the model's chat template; each assistant turn's content and the `<|im_end|>`
  that closes it are the loss; the system and user turns, the `<|im_start|>assistant\\n` headers, the newline
  after `<|im_end|>` and every audio position are not;
- a preference pair is a conversation whose last assistant turn exists twice (chosen, rejected).
Segments are tokenized separately, the prompt exactly as inference tokenizes it, so training sees the token
boundaries the model meets when it generates. Each `<|AUDIO|>` expands to the encoder's output count for its clip
through `Processor.features` / `Processor._expand`, the same code inference uses.

Audio is decoded, resampled and turned into log-mel in `__getitem__`, so DataLoader workers do it in parallel
and memory holds only the batches in flight. Lengths for bucketing come from the manifest's durations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from auralm.audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE, audio_duration, num_audio_tokens
from auralm.data.collate import IGNORE_INDEX, Encoded, EncodedPair
from auralm.data.manifest import load_manifest
from auralm.data.sampler import Group
from auralm.data.specaug import SpecAugment
from auralm.processor import Processor
from auralm.text.chat import render_chat
from auralm.text.formats import (
    IM_END,  # ends every ChatML turn; part of the loss after an assistant turn
    FormatError,
    chatml_segments,
    render,
    to_messages,
)
from auralm.text.tokens import AUDIO_MARKER, AUDIO_TOKEN


class DataError(ValueError):
    """Training data cannot be used: no valid rows, a row the recipe cannot train on, or a bad audio file."""


@dataclass
class Example:
    """One training row before tokenization."""

    segments: list[tuple[str, bool]]  # text pieces in order; True marks a piece in the loss
    audios: list[str] = field(default_factory=list)  # audio files, in the order of the placeholders
    rejected: str | None = None  # preference pairs: the rejected answer replacing the last target segment
    task: str = ""  # manifest task (for task weights)
    id: str = ""  # row id, for messages
    duration: float | None = None  # seconds of audio, if the manifest gives it (for length estimates)


# ---- rows -> examples --------------------------------------------------------------------------------------
def task_example(record: dict[str, Any], convention: str) -> Example:
    """A pre-training row: the formats module's prompt (audio placeholders first) and its target (the answer
    and `<|endoftext|>`), in the Qwen2-Audio natural-language ('nl') or Qwen-Audio tag ('tags') convention."""
    rendered = render(record, convention)
    return Example(
        [(rendered.prompt, False), (rendered.target, True)],
        list(record["audios"]),
        task=record["task"],
        id=record["id"],
        duration=record.get("duration"),
    )


def conversation_items(messages: list[dict[str, Any]], audios: list[str]) -> list[dict[str, Any]]:
    """ms-swift/LLaMA-Factory messages (strings with `<audio>` markers) -> the chat template's typed items."""
    queue = list(audios)
    out = []
    for m in messages:
        content = m["content"]
        if m["role"] == "assistant" or AUDIO_MARKER not in content:
            out.append({"role": m["role"], "content": content})
            continue
        items: list[dict[str, Any]] = []
        for i, piece in enumerate(content.split(AUDIO_MARKER)):
            if i:
                items.append({"type": "audio", "audio": queue.pop(0)})
            if piece:
                items.append({"type": "text", "text": piece})
        out.append({"role": m["role"], "content": items})
    assert not queue, "more audios than <audio> markers (the manifest validator checks this)"
    return out


def chat_segments(conversation: list[dict[str, Any]], template: str | None) -> list[tuple[str, bool]]:
    """Split a rendered conversation into context and target segments, one target per assistant turn.

    A target is the assistant's content plus the `<|im_end|>` closing it: the text the model must generate after
    the generation prompt `<|im_start|>assistant\\n`, where inference stops. Text after the last target (a newline)
    can influence no loss position and is left out.
    """
    segments: list[tuple[str, bool]] = []
    pos = 0
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        prompt = render_chat(conversation[:i], template, add_generation_prompt=True)
        full = render_chat(conversation[: i + 1], template, add_generation_prompt=False)
        target = message["content"] + IM_END
        rendered_so_far = "".join(text for text, _ in segments)
        if not prompt.startswith(rendered_so_far) or not full.startswith(prompt + target):
            raise DataError(
                "the chat template does not render conversations prefix by prefix "
                "(<|im_start|>assistant\\n{content}<|im_end|>), so assistant turns cannot be located"
            )
        segments.append((prompt[pos:], False))
        segments.append((target, True))
        pos = len(prompt) + len(target)
    return [(text, is_target) for text, is_target in segments if text]


def chat_example(record: dict[str, Any], template: str | None) -> Example:
    """A conversation (SFT) or preference pair (DPO) row -> an Example.

    `template` is the model folder's own chat template; without one, the conversation renders as the formats
    module's ChatML (the Qwen2-Audio reference template). SFT: every assistant turn is a target. DPO: only the
    last turn is scored, so everything before it is one prompt segment, tokenized as inference tokenizes the
    prompt; `rejected` replaces the chosen target.
    """
    audios = list(record.get("audios", []))
    if template is None:
        segments = [(s.text, s.trained) for s in chatml_segments(record["messages"])]
        last = max(i for i, (_, trained) in enumerate(segments) if trained)
        segments = _merge_adjacent(segments[: last + 1])
    else:
        segments = chat_segments(conversation_items(record["messages"], audios), template)
    rejected = record.get("rejected_response")
    if rejected is not None:
        segments = [("".join(text for text, _ in segments[:-1]), False), segments[-1]]
        rejected += IM_END
    return Example(
        segments,
        audios,
        rejected=rejected,
        task=record.get("task", ""),
        id=record.get("id", ""),
        duration=record.get("duration"),
    )


def _merge_adjacent(segments: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Join neighbouring segments with the same flag: a context run is tokenized in one piece, as inference does."""
    out: list[tuple[str, bool]] = []
    for text, flag in segments:
        if out and out[-1][1] == flag:
            out[-1] = (out[-1][0] + text, flag)
        else:
            out.append((text, flag))
    return out


RECIPE_ROWS = {"pretrain": "task records", "sft": "conversations", "dpo": "preference pairs"}


def load_examples(
    path: str | Path, recipe: str, convention: str, template: str | None, tasks_as_chat: bool = False
) -> tuple[list[Example], dict[str, int]]:
    """Read the rows of one JSONL file that `recipe` trains on -> (examples, skipped counts by reason).

    pretrain takes task records (rendered in `convention`), sft takes conversations (and, with `tasks_as_chat`,
    task records as one-turn chats), dpo takes preference pairs; other rows are skipped and counted, so one
    manifest can feed every stage. Malformed lines are warned about and skipped; no usable row is an error.
    """
    records, errors = load_manifest(path)
    for err in errors[:10]:
        warnings.warn(f"skipped: {err}", stacklevel=2)
    skipped: dict[str, int] = {"malformed lines": len(errors)} if errors else {}
    examples = []
    for r in records:
        kind = r["task"] if r["task"] in ("conversation", "preference") else "task"
        try:
            if recipe == "pretrain" and kind == "task":
                examples.append(task_example(r, convention))
            elif recipe == "sft" and kind == "conversation":
                examples.append(chat_example(r, template))
            elif recipe == "sft" and kind == "task" and tasks_as_chat:
                examples.append(chat_example({**r, "messages": to_messages(r)}, template))
            elif recipe == "dpo" and kind == "preference":
                examples.append(chat_example(r, template))
            else:
                reason = {
                    "task": "task records",
                    "conversation": "conversations",
                    "preference": "preference pairs",
                }
                skipped[reason[kind]] = skipped.get(reason[kind], 0) + 1
        except FormatError as err:
            skipped["unrenderable rows"] = skipped.get("unrenderable rows", 0) + 1
            if skipped["unrenderable rows"] <= 3:
                warnings.warn(f"skipped {path} row {r['id']!r}: {err}", stacklevel=2)
    if not examples:
        detail = ", ".join(f"{n} {why}" for why, n in skipped.items()) or "no rows"
        raise DataError(f"{path}: no {RECIPE_ROWS[recipe]} to train {recipe} on ({detail})")
    return examples, skipped


# ---- the dataset ------------------------------------------------------------------------------------------
@dataclass
class _Tokenized:
    segments: list[tuple[list[int], bool]]  # token ids per segment, target flag
    rejected: list[int] | None  # preference pairs: ids of the rejected target


class TrainingDataset(Dataset):
    """Examples -> `Encoded` (or `EncodedPair` for preference pairs) with audio features computed on access.

    specaugment masks the features of every clip (seeded by `seed`, `epoch` and the row, so reruns agree);
    encoder_cache, when given, supplies the frozen encoder's outputs instead of features (see feature_cache).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        processor: Processor,
        specaugment: SpecAugment | None = None,
        seed: int = 0,
        encoder_cache: Any = None,
        max_audio_seconds: float | None = None,
    ):
        self.examples = list(examples)
        self.processor = processor
        self.specaugment = specaugment
        self.seed = seed
        self.epoch = 0  # set by the training loop before each epoch's DataLoader is created
        self.encoder_cache = encoder_cache
        self.max_audio_seconds = max_audio_seconds
        self._tokens = [self._tokenize(ex) for ex in self.examples]
        self.lengths = np.array([self._estimate_length(i) for i in range(len(self.examples))], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.examples)

    def groups(
        self,
        source_of: Sequence[int],
        source_weights: Sequence[float],
        task_weights: dict[str, float] | None = None,
    ) -> list[Group]:
        """Mixing groups: one per (source file, task), weighted by source weight x task weight."""
        task_weights = task_weights or {}
        unknown = sorted(set(task_weights) - {ex.task for ex in self.examples})
        if unknown:
            raise DataError(f"data.task_weights names task(s) {unknown} that no training row has")
        keys: dict[tuple[int, str], list[int]] = {}
        for i, ex in enumerate(self.examples):
            keys.setdefault((source_of[i], ex.task), []).append(i)
        return [
            Group(np.array(idx, dtype=np.int64), source_weights[s] * task_weights.get(task, 1.0))
            for (s, task), idx in sorted(keys.items())
        ]

    # ---- tokens ---------------------------------------------------------------------------------------------
    def _tokenize(self, ex: Example) -> _Tokenized:
        audio_id = self.processor.audio_token_id
        segments = []
        for text, is_target in ex.segments:
            ids = self.processor.encode(text)
            if is_target and audio_id in ids:
                raise DataError(f"row {ex.id!r}: a target holds {AUDIO_TOKEN}; audio can only be input")
            segments.append((ids, is_target))
        n_placeholders = sum(ids.count(audio_id) for ids, _ in segments)
        if n_placeholders != len(ex.audios):
            raise DataError(
                f"row {ex.id!r}: {n_placeholders} {AUDIO_TOKEN} placeholder(s) for {len(ex.audios)} audio(s)"
            )
        if not any(t for _, t in segments):
            raise DataError(f"row {ex.id!r} has nothing to learn (no target text)")
        rejected = self.processor.encode(ex.rejected) if ex.rejected is not None else None
        return _Tokenized(segments, rejected)

    def _estimate_length(self, i: int) -> int:
        """Tokens of row i with audio placeholders counted at their expanded size (from durations)."""
        tok, ex = self._tokens[i], self.examples[i]
        n_text = sum(len(ids) for ids, _ in tok.segments) - len(ex.audios)
        if tok.rejected is not None:  # the longer of the two rows decides the padded size
            n_text += max(0, len(tok.rejected) - len(tok.segments[-1][0]))
        if not ex.audios:
            return n_text
        seconds = ex.duration if ex.duration is not None else sum(audio_duration(a) for a in ex.audios)
        per_clip = seconds / len(ex.audios) * SAMPLE_RATE
        return n_text + len(ex.audios) * _audio_tokens_estimate(per_clip)

    # ---- items ----------------------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> Encoded | EncodedPair:
        ex, tok = self.examples[i], self._tokens[i]
        features: list[torch.Tensor] = []
        frames: list[int] = []
        embeds: list[torch.Tensor] = []
        if ex.audios:
            if self.encoder_cache is not None:
                per_clip = [self.encoder_cache.load(path) for path in ex.audios]  # each: list of (N_w, De)
                embeds = [e for clip in per_clip for e in clip]
                counts = [sum(e.shape[0] for e in clip) for clip in per_clip]
            else:
                features, frames, counts = self.audio_features(ex.audios, i)
        else:
            counts = []
        ids, labels = self._assemble(tok.segments, counts)
        chosen = Encoded(ids, labels, features, frames, embeds)
        if tok.rejected is None:
            return chosen
        # The rejected row is the same prompt with the last target swapped; it shares the chosen row's audio.
        rej_ids, rej_labels = self._assemble(tok.segments[:-1] + [(tok.rejected, True)], counts)
        return EncodedPair(chosen, Encoded(rej_ids, rej_labels))

    def audio_features(self, audios: list[str], row: int) -> tuple[list[torch.Tensor], list[int], list[int]]:
        """Load the clips of one row -> per-window log-mel (M, F_w), valid frames, and audio tokens per clip."""
        try:
            waves = [self.processor.prepare_audio(a) for a in audios]
        except (OSError, ValueError) as err:
            raise DataError(f"row {self.examples[row].id!r}: cannot load its audio: {err}") from None
        if self.max_audio_seconds is not None:
            total = sum(len(w) for w in waves) / SAMPLE_RATE
            if total > self.max_audio_seconds:
                raise DataError(
                    f"row {self.examples[row].id!r} has {total:.1f} s of audio, more than "
                    f"data.max_audio_seconds={self.max_audio_seconds}"
                )
        feats, mask, counts = self.processor.features(waves)  # (Nw, M, F), (Nw, F)
        frames = mask.sum(-1).tolist()
        # Keep each window's own frames plus the two past its end that its last outputs depend on (see
        # auralm.audio.features); collation pads the batch to its longest window only.
        features = [feats[w, :, : min(feats.shape[-1], n + 2)] for w, n in enumerate(frames)]
        if self.specaugment is not None:
            g = torch.Generator().manual_seed(hash_seed(self.seed, self.epoch, row))
            features = [self.specaugment(f, n, g) for f, n in zip(features, frames)]
        return features, frames, counts

    def _assemble(
        self, segments: list[tuple[list[int], bool]], counts: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenate segments, expanding placeholders with the processor -> ids (T,), labels (T,)."""
        it = iter(counts)
        ids: list[int] = []
        labels: list[int] = []
        audio_id = self.processor.audio_token_id
        for seg, is_target in segments:
            if is_target:
                ids.extend(seg)
                labels.extend(seg)
                continue
            n = seg.count(audio_id)
            (expanded,) = self.processor._expand([seg], [next(it) for _ in range(n)])
            ids.extend(expanded)
            labels.extend([IGNORE_INDEX] * len(expanded))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike hash())."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1)
    )


def _audio_tokens_estimate(n_samples: float) -> int:
    """Audio tokens of a clip of `n_samples`, windows of 30 s included (exact for clips up to 30 s)."""
    frames = math.ceil(n_samples / HOP_LENGTH)
    full, rest = divmod(frames, N_FRAMES)  # whole 30 s windows and the last one's frames
    return full * num_audio_tokens(N_FRAMES) + (num_audio_tokens(rest) if rest else 0)
