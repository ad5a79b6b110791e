"""What this CPU computes fast: bfloat16 matrix products need AVX512-BF16 or AMX.

Without either (e.g. an AVX2-only AMD EPYC), PyTorch emulates bfloat16 matmuls: measured on such a 2-core machine,
the backward pass of a 2-clip demo-model training step under bf16 autocast took 66.6 s against 1.8 s in float32 and the
forward 5.9 s against 1.0 s (2026-12-06). Training recipes and users choosing a dtype check `fast_bf16` first.
"""

from __future__ import annotations

import functools

import torch


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """True where bfloat16 matmuls run natively: any CUDA device, or a CPU with AVX512-BF16 or AMX tiles."""
    if torch.device(device).type != "cpu":
        return True
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


SLOW_BF16 = ("this CPU has neither AVX512-BF16 nor AMX, so bfloat16 matmuls are emulated (measured: a training "
             "step's forward 5.7x and backward 37x slower than in float32)")


BF16_ADVICE_BYTES = 2**30  # below this, bfloat16's emulated products cost too little to mention


def bf16_advice(model: torch.nn.Module) -> str | None:
    """A one-line note for a model whose decoder computes in bfloat16 on a CPU that emulates it, when the decoder is
    big enough for the difference to matter (measured on a 7B-shaped folder here: int8 2.25 tokens/s at 8.5 GiB
    peak, bfloat16 1.19 at 15.0 GiB); None otherwise."""
    lm = getattr(model, "language_model", model)
    linears = [m.weight for m in lm.modules() if isinstance(m, torch.nn.Linear)]
    if not linears or linears[0].device.type != "cpu" or fast_bf16():
        return None
    bf16 = sum(w.numel() * 2 for w in linears if w.dtype == torch.bfloat16)
    if bf16 < BF16_ADVICE_BYTES:
        return None
    return ("note: this CPU emulates bfloat16 (no AVX512-BF16 or AMX); for a decoder this size --quantize int8 "
            "decodes ~1.9x faster in about half the memory (README: 'What to expect on a CPU')")


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's `malloc_trim`; a no-op elsewhere).

    Quantizing a model while it loads frees a float temporary for every weight it keeps an int8 copy of; glibc keeps
    freed blocks of up to 32 MB in its heaps, and the kept weights land between them, so the holes add up: a
    Qwen2-Audio-7B-shaped folder loaded as int8 measured 12.9 GiB resident instead of 8.1 GiB (2026-12-07)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _glibc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None
