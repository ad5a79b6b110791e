"""A compiled decode step: `torch.compile` (inductor) with the weights frozen into the graph and matrix kernels
generated for their shapes, over static shapes.

    from auralm.infer.compiled import compile_decode
    step = compile_decode(model)   # DecodeBatch.prefill(model, ..., step_fn=step): its steps run the compiled graph

Decode on a CPU is bound by reading the weights once per step; with the weights frozen, inductor's CPP GEMM
template (max-autotune) streams them on every core, where MKL runs one-row products on one (see _INDUCTOR_OPTIONS;
the packed weights are a second copy next to the eager ones). The step reads
the whole preallocated cache under a key mask and returns the new keys/values instead of writing them (a graph
that mutates its inputs copies them whole), so its shapes depend only on (batch, cache capacity): one compilation
serves every step of a generation, and each new (batch, capacity) pair compiles once. The weights are captured
when a shape first compiles: compile a model for inference only, after any weight change (LoRA merged, dtype set).
"""

from __future__ import annotations

import torch
import torch._inductor.config as inductor_config
from torch import nn

from auralm.model.kv_cache import StaticStep


# freezing: weights become constants that inductor pre-packs. max_autotune with the CPP GEMM template: inductor
# generates its own matrix kernels (OpenMP-parallel, blocked for the cache) and keeps them where they beat the
# ATen/MKL call; at one row per sequence MKL runs the matrix-vector product on one core (~11 GB/s here), the
# template streams the weights on every core (~34 GB/s, the machine's copy bandwidth).
_INDUCTOR_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}


class _Step(nn.Module):
    """tokens (B, 1), keys/values (L, B, Hkv, S_max, Dh) read only, key_valid bool (B, S_max) over the cached
    slots, positions (B,) -> logits (B, V) of the next token, new keys and values (L, B, Hkv, 1, Dh)."""

    def __init__(self, language_model: nn.Module):
        super().__init__()
        self.lm = language_model

    def forward(self, tokens, keys, values, key_valid, positions):
        step = StaticStep(keys, values)
        x = self.lm.model.embed_tokens(tokens)  # (B, 1, D)
        h = self.lm.model.step_static(x, key_valid, positions[:, None], step)
        return self.lm.lm_head(h[:, -1]), torch.stack(step.new_keys), torch.stack(step.new_values)


class CompiledDecodeStep:
    """The decode step of one model; each (batch, capacity) shape compiles on first use."""

    def __init__(self, model: nn.Module):
        if model.cfg.decoder.rope_dynamic_ntk:
            # The static step keeps one RoPE base for the whole batch; dynamic NTK gives each row its own.
            raise ValueError("compile=True does not support dynamic-NTK RoPE (Qwen-Audio v1 folders); decode eagerly")
        self.fn = torch.compile(_Step(model.language_model).eval(), fullgraph=True, dynamic=None)

    @torch.no_grad()
    def __call__(self, tokens, keys, values, key_valid, positions):
        # Freezing turns the weights into constants so inductor can pre-pack them; it applies while compiling.
        if tokens.shape[0] > 1:
            # One graph for every batch size above one (rows leave a batch as they finish); batch one compiles its
            # own, fully static graph, where the matrix-vector kernels are fastest.
            for t, dim in ((tokens, 0), (keys, 1), (values, 1), (key_valid, 0), (positions, 0)):
                torch._dynamo.mark_dynamic(t, dim)
        with inductor_config.patch(**_INDUCTOR_OPTIONS):
            return self.fn(tokens, keys, values, key_valid, positions)


def compile_decode(model: nn.Module) -> CompiledDecodeStep:
    """The compiled decode step of `model` (see the module docstring), an `engine.DecodeStep`: pass it as `step_fn`
    to `DecodeBatch.prefill` or `generate`, or `auralm.load(dir, compile=True)` keeps one in the `AudioChat`."""
    return CompiledDecodeStep(model)
