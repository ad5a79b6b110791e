"""AdamW over the trainable parameters, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from auralm.train.freeze import PART_MODULES


def param_groups(
    model: nn.Module, weight_decay: float, lr: float, part_lr_scale: dict[str, float] | None = None
) -> list[dict]:
    """Trainable parameters grouped by weight decay and by learning rate. Matrices decay; biases, norms,
    embeddings and row-trained matrices do not (decay would pull frozen rows of a row-trained matrix, whose
    gradient is zero, towards 0). A part named in `part_lr_scale` gets `lr * scale`, the rest `lr`."""
    scales = part_lr_scale or {}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        exempt = p.ndim < 2 or "embed" in name or hasattr(p, "_auralm_rows_from")
        scale = next((s for part, s in scales.items() if f"{PART_MODULES[part]}." in f".{name}"), 1.0)
        groups.setdefault((exempt, scale), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return [
        {"params": ps, "weight_decay": 0.0 if exempt else weight_decay, "lr": lr * scale}
        for (exempt, scale), ps in sorted(groups.items(), key=lambda kv: (kv[0][1] != 1.0, kv[0][0]))
    ]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    fused: bool = True,
    part_lr_scale: dict[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW; `fused` runs one kernel over all parameters (on CPU 10-20x faster than the default per-tensor
    loop, which matters most for the large embedding matrices). FSDP's sharded parameters take the default."""
    return torch.optim.AdamW(
        param_groups(model, weight_decay, lr, part_lr_scale), lr=lr, betas=betas, eps=eps, fused=fused or None
    )


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak rate before optimizer step `step` (0-based): linear warmup to 1, then a cosine
    from 1 down to `min_ratio` at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, min_ratio)
    )
