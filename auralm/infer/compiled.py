"""A compiled decode step: `torch.compile` (inductor) over static shapes; a float32 decoder's weights frozen into the
graph with matrix kernels generated for their shapes, a 16-bit decoder's read where they are.

    from auralm.infer.compiled import compile_decode
    step = compile_decode(model)   # DecodeBatch.prefill(model, ..., step_fn=step): its steps run the compiled graph

Decode on a CPU is bound by reading the weights once per step; with float32 weights frozen, inductor's CPP GEMM
template (max-autotune) streams them on every core, where MKL runs one-row products on one (see _FROZEN; the
packed weights are a second copy next to the eager ones). The step reads the whole preallocated cache under a key
mask and returns the new keys/values instead of writing them (a graph that mutates its inputs copies them whole),
so its shapes depend only on (batch, cache capacity): one compilation serves every step of a generation. The cache
capacity (prompt + max_new_tokens) is a dynamic dimension, so two graphs serve every request: one for a batch of
one and one for every larger batch (`warm_up` compiles both before the first request). A frozen graph captures the
weights when it compiles: compile a model for inference only, after any weight change (LoRA merged, dtype set).

A bfloat16 (or float16) or quantized decoder compiles without freezing (`inductor_options`): its one-row products
stay in ATen's kernels (bfloat16, int8, int4: half the bytes or fewer), and inductor fuses the rest of the step
(norms, RoPE, attention, the cache mask), so the graph reads the module's own weights and holds no second copy.
Measured on the demo model (SmolLM2-135M decoder, 2 threads of this AVX2 VM, batch one after a 256-token prompt,
one run, 2026-12-07):

| decoder | step eager | step compiled | compiling | resident memory added |
|---|---:|---:|---:|---:|
| float32, frozen (max-autotune CPP GEMM) | 74.3 ms | 31.0 ms | 143 s | +1381 MB (the packed copy) |
| bfloat16, not frozen | 57.2 ms | 35.7 ms | 14 s | +95 MB |
| bfloat16, frozen (the float32 options) | 57.2 ms | 35.4 ms | 40 s | +840 MB |
| int8 (`quantize="int8"`), not frozen | 79.1 ms | 39.8 ms | 165 s | +253 MB |
| int4 (groups of 64), not frozen | 45.3 ms | 38.1 ms | 136 s | +192 MB |

Greedy tokens equal eager in every row. At this size the step is bound by its ~600 operators' overhead more than by
the bytes of the weights: compiled, the three 16-bit-activation formats land within 12% of each other.
`compile_pays` decides where the default turns it on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch._inductor.config as inductor_config
from torch import nn

from auralm.infer.engine import DecodeBatch
from auralm.infer.sampling import GenerationConfig
from auralm.model.kv_cache import StaticStep
from auralm.model.quant import QuantLinear

# `compile_pays` turns the compiled step on by default only where the memory it adds is free (`added_bytes`).
INDUCTOR_BYTES = 384 * 2**20  # inductor's own memory, allowed beside half the decoder's bytes for an unfrozen step

# float32: freezing makes the weights constants that inductor pre-packs, and max_autotune with the CPP GEMM template
# generates its own matrix kernels (OpenMP-parallel, blocked for the cache), kept where they beat the ATen/MKL call;
# at one row per sequence MKL runs the float32 matrix-vector product on one core (~11 GB/s here), the template
# streams the weights on every core (~34 GB/s, the machine's copy bandwidth). 16-bit weights: no freezing (see the
# module docstring).
_FROZEN = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}
_UNFROZEN = {"freezing": False}


def frozen(model: nn.Module) -> bool:
    """Whether `model`'s decode step compiles with frozen, packed weights: a float32 decoder does; a 16-bit or
    quantized one (int8/int4 layers run torch's own kernels, on bfloat16 activations) does not."""
    lm = model.language_model
    if any(isinstance(m, QuantLinear) for m in lm.modules()):
        return False
    return lm.model.embed_tokens.weight.dtype == torch.float32


def inductor_options(model: nn.Module) -> dict:
    """The inductor settings `model`'s decode step compiles with (`frozen`)."""
    return _FROZEN if frozen(model) else _UNFROZEN


def added_bytes(model: nn.Module) -> int:
    """The memory a compiled step is allowed to add: a frozen (float32) step keeps its own packed copy of the decoder
    weights and inductor's memory, 3x the decoder's bytes (measured +1381 MB on the demo's 546 MB); an unfrozen one
    only inductor's memory, half the decoder's bytes + INDUCTOR_BYTES (measured on the demo: +95 MB in bfloat16,
    273 MB of weights; +253 MB int8, 168 MB; +192 MB int4, 120 MB)."""
    if frozen(model):
        return 3 * decoder_bytes(model)
    return decoder_bytes(model) // 2 + INDUCTOR_BYTES


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
        self.options = inductor_options(model)

    @torch.no_grad()
    def __call__(self, tokens, keys, values, key_valid, positions):
        # Freezing (float32) turns the weights into constants so inductor can pre-pack them, while compiling.
        # The cache capacity (prompt + max_new_tokens) changes with every request: one graph serves them all.
        for t, dim in ((keys, 3), (values, 3), (key_valid, 1)):
            torch._dynamo.maybe_mark_dynamic(t, dim)
        if tokens.shape[0] > 1:
            # One graph for every batch size above one (rows leave a batch as they finish); batch one compiles its
            # own graph, where the matrix-vector kernels are fastest.
            for t, dim in ((tokens, 0), (keys, 1), (values, 1), (key_valid, 0), (positions, 0)):
                torch._dynamo.mark_dynamic(t, dim)
        with inductor_config.patch(**self.options):
            return self.fn(tokens, keys, values, key_valid, positions)


def decoder_bytes(model: nn.Module) -> int:
    """Bytes of the language model's weights (what a frozen graph packs a copy of)."""
    return sum(t.numel() * t.element_size() for t in model.language_model.state_dict().values())


def available_memory() -> int | None:
    """Bytes of memory the system can still give this process (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def compile_pays(model: nn.Module) -> tuple[bool, str]:
    """Whether the default ("auto") compiles this model's decode step, and why: only on a CPU (where the compiled
    step streams the weights on every core, or fuses the small operators around torch's 16-bit and quantized
    kernels), not for dynamic-NTK RoPE (unsupported), and only when the memory it adds is free (`added_bytes`)."""
    if next(model.parameters()).device.type != "cpu":
        return False, "the model is not on the CPU"
    if model.cfg.decoder.rope_dynamic_ntk:
        return False, "dynamic-NTK RoPE (Qwen-Audio v1) decodes eagerly"
    need, free = added_bytes(model), available_memory()
    if free is None or free < need:
        have = "unknown" if free is None else f"{free / 2**30:.1f} GiB"
        return False, f"needs {need / 2**30:.1f} GiB of free memory, {have} available"
    kind = "frozen" if frozen(model) else "unfrozen"
    return True, f"{need / 2**30:.1f} GiB ({kind} step) fit in the {free / 2**30:.1f} GiB available"


@torch.no_grad()
def warm_up(step: CompiledDecodeStep, model: nn.Module, batch_sizes: tuple[int, ...] = (1, 2),
            log: Callable[[str], None] | None = None) -> float:
    """Compile the graphs that `batch_sizes` decode through (1 and 2: every batch), by decoding a few tokens of a
    short text prompt through the real engine; returns the seconds it took."""
    t0 = time.perf_counter()
    for b in batch_sizes:
        t1 = time.perf_counter()
        ids = torch.ones((b, 4), dtype=torch.long, device=model.device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        batch = DecodeBatch.prefill(model, inputs, [GenerationConfig(max_new_tokens=3)] * b, step_fn=step)
        batch.step()
        batch.step()
        if log is not None:
            log(f"compiled the decode step for batch {'1' if b == 1 else '2 and up'} in {time.perf_counter() - t1:.0f} s")
    return time.perf_counter() - t0


def compile_decode(model: nn.Module) -> CompiledDecodeStep:
    """The compiled decode step of `model` (see the module docstring), an `engine.DecodeStep`: pass it as `step_fn`
    to `DecodeBatch.prefill` or `generate`, or `auralm.load(dir, compile=True)` keeps one in the `AudioChat`."""
    return CompiledDecodeStep(model)
