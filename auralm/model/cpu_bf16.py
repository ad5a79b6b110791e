"""bfloat16 weights on a CPU without native bfloat16 matrix units: wide products computed in float32.

A CPU without AVX512-BF16 or AMX (`auralm.cpu.fast_bf16`; e.g. AVX2-only AMD EPYC, most desktop CPUs) emulates
bfloat16 matrix products. Measured on such a machine (quiet, one thread, a 5632 x 2048 weight, torch 2.13),
milliseconds per product by rows of input:

    rows                        1       2       4       8      64     256
    float32                   2.6     5.8     8.9    10.8    25.2    80.6
    bfloat16 (emulated)       2.4     4.8     9.5    18.2   139.7   561.5
    float32 products          6.1     9.6    13.9    15.5    33.2    95.5   (`linear_fp32`: bf16 weights copied
                                                                             into a kept float32 buffer, then fp32)

Up to a few rows (a decode step) the bfloat16 weight is read fastest as it is; from 8 rows up (a prefill, the audio
encoder, a batch of 8 decode steps) the product is faster copied to float32 first: 1.2x at 8 rows, 4.2x at 64, 5.9x
at 256. The result is the same number: a product of two bfloat16 values is exact in float32, native bfloat16 kernels accumulate
in float32 as well, and the sum is rounded to bfloat16 once (only the order of the additions may differ). The copy
goes into a buffer kept per thread: a fresh 46 MB float32 tensor per call cost 44-55 ms in page faults against
3.5 ms for copying into the kept one. Weights are copied in chunks of at most `CHUNK_ELEMENTS`, so the buffer stays
small beside a 7B model's 545M-element output layer.

int8 layers (`model.quant.QuantLinear`) do the same from their int8 rows (copied, scaled and shifted into the
buffer): torch's int8 kernel, fast for one row, emulates bfloat16 activations too (measured: a 256-token prefill
of an 8 x 1024 decoder 0.64 s through it, 0.38 s from the dequantized rows in float32).

`float32_products_(model)` gives a loaded model's Linear and Conv1d layers this forward pass (they stay
`nn.Linear` / `nn.Conv1d` with the same parameters, so state dicts, LoRA wrapping and quantization see them as
before). Only inference uses it: with gradients enabled the layers run the plain bfloat16 product, since the
reused buffer cannot be saved for a backward pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

WIDE_ROWS = 8  # input rows from which the float32 copy pays (measured above: 4 rows 0.7x, 8 rows 1.2x)
CHUNK_ELEMENTS = 1 << 24  # weight elements copied at a time (64 MB of float32)
_buffers = threading.local()  # the server decodes in its scheduler thread while requests are read in others


def _scratch(numel: int, device: torch.device) -> torch.Tensor:
    """A float32 buffer of at least `numel` elements, kept for this thread and reused."""
    buf = getattr(_buffers, "tensor", None)
    if buf is None or buf.numel() < numel or buf.device != device:
        buf = torch.empty(numel, dtype=torch.float32, device=device)
        _buffers.tensor = buf
    return buf


def wide_input(x: torch.Tensor) -> bool:
    """Whether a product with `x` (..., K) should run in float32: bfloat16 on the CPU, no gradient wanted, no graph
    being compiled, `WIDE_ROWS` rows or more."""
    return (
        x.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()  # a compiled graph (infer.compiled) gets inductor's own kernels
        and x.numel() >= WIDE_ROWS * x.shape[-1]
    )


def chunked_linear_fp32(
    x: torch.Tensor, out_features: int, fill: Callable[[int, int, torch.Tensor], None], bias: torch.Tensor | None,
) -> torch.Tensor:
    """x (..., K) bfloat16 times a weight (N, K) that `fill(n0, n1, w32)` writes as float32 rows n0..n1 into w32
    (n1 - n0, K), a view of the kept buffer; `bias` (N,). The products in float32, the result (..., N) in x's dtype."""
    N, K = out_features, x.shape[-1]
    x2 = x.reshape(-1, K).float()  # (M, K)
    out = torch.empty(x2.shape[0], N, dtype=x.dtype, device=x.device)  # (M, N)
    rows = max(1, CHUNK_ELEMENTS // K)  # weight rows per chunk
    buf = _scratch(min(N, rows) * K, x.device)
    for n0 in range(0, N, rows):
        n1 = min(N, n0 + rows)
        w32 = buf[: (n1 - n0) * K].view(n1 - n0, K)
        fill(n0, n1, w32)
        b32 = None if bias is None else bias[n0:n1].float()
        out[:, n0:n1] = F.linear(x2, w32, b32)  # (M, n1 - n0), rounded to x's dtype once
    return out.view(*x.shape[:-1], N)


def linear_fp32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear for bfloat16 x (..., K), weight (N, K), bias (N,): float32 products, bfloat16 result (..., N)."""

    def fill(n0: int, n1: int, w32: torch.Tensor) -> None:
        w32.copy_(weight[n0:n1])

    return chunked_linear_fp32(x, weight.shape[0], fill, bias)


class Float32ProductLinear(nn.Linear):
    """nn.Linear whose bfloat16 products of `WIDE_ROWS` or more rows run in float32 (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype == torch.bfloat16 and wide_input(x):
            return linear_fp32(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class Float32ProductConv1d(nn.Conv1d):
    """nn.Conv1d whose bfloat16 convolutions run in float32: emulated, they fall back to a slow im2col path (the
    encoder's conv stem: weights of 3 x 1280 x 1280 at most, copied whole)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype != torch.bfloat16 or not wide_input(x):
            return super().forward(x)
        bias = None if self.bias is None else self.bias.float()
        y = F.conv1d(x.float(), self.weight.float(), bias, self.stride, self.padding, self.dilation, self.groups)
        return y.to(x.dtype)


def float32_products_(model: nn.Module) -> int:
    """Give every plain nn.Linear and nn.Conv1d of `model` the float32-product forward, in place, sharing its
    parameters (no copy), and turn on the `float32_products` switch of layers that have one. Returns how many
    layers changed. For inference on a CPU where `auralm.cpu.fast_bf16()`
    is False; harmless elsewhere (it only acts on bfloat16 inputs without gradients)."""
    swaps = {nn.Linear: Float32ProductLinear, nn.Conv1d: Float32ProductConv1d}
    changed = 0
    for name, mod in list(model.named_modules()):
        if hasattr(mod, "float32_products"):  # a layer with its own switch (model.quant.QuantLinear, int8)
            mod.float32_products = True
            changed += 1
            continue
        new_type = swaps.get(type(mod))  # exact types: a subclass keeps its own forward
        if new_type is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, _rebuilt(mod, new_type))
        changed += 1
    return changed


def _rebuilt(mod: nn.Module, new_type: type) -> nn.Module:
    """A `new_type` module with `mod`'s hyperparameters and the very same parameter tensors."""
    if new_type is Float32ProductLinear:
        new = new_type(mod.in_features, mod.out_features, bias=mod.bias is not None, device="meta")
    else:
        new = new_type(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                       dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None,
                       padding_mode=mod.padding_mode, device="meta")
    new.weight = mod.weight
    new.bias = mod.bias
    new.train(mod.training)
    return new
