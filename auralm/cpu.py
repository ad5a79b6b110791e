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


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's `malloc_trim`; a no-op elsewhere).

    Quantizing a model while it loads frees a float temporary for every weight it keeps a quantized copy of; glibc
    keeps freed blocks of up to 32 MB in its heaps, and the kept weights land between them, so the holes add up: a
    Qwen2-Audio-7B-shaped folder loaded as int8 peaked at 12.9 GiB resident instead of 8.5 GiB (2026-12-07)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _glibc():
    """The process's C library where it has `malloc_trim` (glibc), else None (macOS, musl, Windows)."""
    import ctypes
    import ctypes.util

    for name in (None, "libc.so.6", ctypes.util.find_library("c")):  # None: the libc already loaded in the process
        try:
            libc = ctypes.CDLL(name)
        except (OSError, TypeError):
            continue
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
            return libc
    return None
