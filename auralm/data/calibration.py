"""Calibration inputs for GPTQ rounding (`auralm.model.gptq`): rows of a training manifest as one-row model inputs.

The rows are rendered exactly as the sft recipe renders them (task records as one-turn chats, conversations as they
are), answers included, so the decoder's layers see the activations of real prompts, audio positions and answer
tokens. One row per batch: no padding rows, which would count as inputs.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from auralm.data.collate import Collator
from auralm.data.dataset import DataError, TrainingDataset, load_examples
from auralm.processor import Processor


def calibration_batches(manifest: str | Path, processor: Processor, n: int = 64, seed: int = 0,
                        max_tokens: int = 2048) -> list[dict[str, torch.Tensor]]:
    """Up to `n` rows of `manifest` (drawn with `seed`), each as `AudioLM.forward` keyword arguments. Rows longer
    than `max_tokens` are left out (their activations cost memory for every layer at once)."""
    if n < 1:
        raise ValueError(f"calibration needs at least 1 row, got {n}")
    examples, _ = load_examples(manifest, "sft", "nl", processor.chat_template, tasks_as_chat=True)
    examples = [ex for ex in examples if ex.rejected is None]
    random.Random(seed).shuffle(examples)
    collate = Collator(processor.pad_token_id)
    data = TrainingDataset(examples, processor)
    batches = []
    for i in range(len(examples)):
        if len(batches) == n:
            break
        if data.lengths[i] > max_tokens:
            continue
        batch = collate([data[i]])
        batches.append({k: v for k, v in batch.items() if k not in ("labels", "paired")})
    if not batches:
        raise DataError(f"{manifest}: no row of at most {max_tokens} tokens to calibrate on")
    return batches
