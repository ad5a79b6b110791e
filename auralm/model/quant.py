"""Weight-only quantization of Linear layers: int8 per output channel, int4 in groups along the input.

A decode step on a CPU reads every weight once, so bytes per weight set its speed: int8 halves bfloat16's bytes,
int4 quarters them. The matrix products run in torch's own CPU kernels, `torch._weight_int8pack_mm` and
`aten._weight_int4pack_mm_for_cpu` (bfloat16 activations; both also take float32/float16, but float32 activations
run the int8 kernel ~3.5x slower than a float32 Linear on this machine, so quantized models compute in bfloat16).

Why not torchao: measured here (torch 2.13, torchao 0.18, one 18944 x 3584 layer, batch 1, one thread): bf16 Linear
21.7 ms, torchao `Int8WeightOnlyConfig` 211 ms (it dequantizes the whole weight on every call on CPU),
`torch._weight_int8pack_mm` 6.3 ms; torchao 0.18's stable int4 configs do not run on CPU (the CPU layout moved to a
prototype that calls the same aten int4 kernel used here). So the kernels are torch's and this file only holds the
weights, their scales and the layout conversions.

Formats (what a quantized folder stores: portable, independent of the CPU that made it):
  int8  `qweight` int8 (N, K), `scales`, `zeros` (N,):   w[n, k] ~= qweight[n, k] * scales[n] + zeros[n]
        (asymmetric per output channel: the 256 codes span the row's [min, max]; the kernel is symmetric, so the
        layer adds zeros[n] * sum_k x[k] itself, one reduction per row of x)
  int4  `qweight` uint8 (N, K/2), two values 0..15 a byte, column 2j in the low nibble, 2j+1 in the high one;
        `scales`, `zeros` (N, K/g):                       w[n, k] ~= (q[n, k] - 8) * scales[n, k//g] + zeros[n, k//g]
        (asymmetric per group of g inputs, the convention of torch's int4 kernel).
In memory an int4 weight is in torch's kernel layout (`_convert_weight_to_int4pack_for_cpu`), which depends on the
CPU's vector width (64-row blocks with AVX-512, 32 with AVX2): `int4_to_kernel` / `int4_from_kernel` convert.
N: output features, K: input features, g: group size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from auralm import cpu
from auralm.model.cpu_bf16 import chunked_linear_fp32, wide_input

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what torch's int4 CPU kernel accepts
# torch 2.13's int8 CPU kernel reads the inputs in blocks of 16 and crashes (SIGSEGV, not an error) on any other K
# once the batch has 4 rows or more; such layers stay in float.
INT8_K_MULTIPLE = 16
_ROWS = 1024  # rows quantized / repacked at a time: bounds the float32 temporaries (a multiple of every kernel block)
_UNPACK_ROWS = 256  # rows unpacked from the kernel layout at a time: its permutation table is rows x K int64


@dataclass(frozen=True)
class QuantSpec:
    """Which weights are quantized, and how."""

    bits: int  # 8: int8 per output channel; 4: int4 in groups of `group_size` inputs
    group_size: int = 64  # int4 only; one of INT4_GROUP_SIZES
    head_bits: int = 8  # the output layer (lm_head): kept at 8 bits even for int4, as llama.cpp's Q4 files keep it wider

    def __post_init__(self):
        if self.bits not in (4, 8) or self.head_bits not in (4, 8):
            raise ValueError(f"quantization bits must be 8 or 4, got bits={self.bits}, head_bits={self.head_bits}")
        if self.group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"int4 group size must be one of {INT4_GROUP_SIZES}, got {self.group_size}")

    @classmethod
    def parse(cls, name: str) -> QuantSpec:
        """'int8', 'int4' (groups of 64) or 'int4-g32' / 'int4-g128' ..."""
        base, _, group = name.partition("-g")
        if base not in ("int8", "int4") or (group and (base == "int8" or not group.isdigit())):
            raise ValueError(f"unknown quantization {name!r}; use int8, int4 or int4-g<size> (e.g. int4-g32)")
        return cls(bits=8 if base == "int8" else 4, group_size=int(group) if group else 64)

    @property
    def name(self) -> str:
        return "int8" if self.bits == 8 else f"int4-g{self.group_size}"


# ---- quantization (pure functions) ------------------------------------------------------------------------
def _step(step32: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A quantization step rounded to `dtype` but never below its float32 value: a smaller step would put a row's
    extreme past the last code (bfloat16 rounds to 8 significant bits; 2^-7 more always rounds up)."""
    s = step32.to(dtype)
    return torch.where(s.float() < step32, (step32 * (1 + 2**-7)).to(dtype), s)


def quantize_int8(w: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w (N, K) float -> qweight int8 (N, K), scales (N,) in `dtype` (the dtype the kernel reads them in), zeros
    (N,) float32 (the layer applies them itself).

    Asymmetric: a row's codes span [min, max] (a skewed row, common in trained layers, wastes no codes; on the demo
    model this halves KL(float32 || int8) against symmetric codes). The scale is rounded to `dtype` before the
    values are rounded against it, so the stored triple reproduces the weight to half a step."""
    N, _ = w.shape
    q = torch.empty(w.shape, dtype=torch.int8)
    scales = torch.empty(N, dtype=dtype)
    zeros = torch.empty(N, dtype=torch.float32)
    for a in range(0, N, _ROWS):
        w32 = w[a:a + _ROWS].float()  # (n, K)
        lo, hi = w32.amin(1), w32.amax(1)  # (n,)
        s = _step(((hi - lo) / 255).clamp(min=1e-12), dtype)
        z = lo + 128 * s.float()  # code -128 stands for the row's minimum
        scales[a:a + _ROWS], zeros[a:a + _ROWS] = s, z
        q[a:a + _ROWS] = torch.round((w32 - z[:, None]) / s.float()[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scales, zeros


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    return q.float() * scales.float()[:, None] + zeros.float()[:, None]


def quantize_int4(
    w: torch.Tensor, group_size: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w (N, K) float -> q uint8 (N, K) with values 0..15, scales and zeros (N, K/g) in `dtype`.

    Each group of g inputs spans [min, max] in 16 steps: w ~= (q - 8) * scale + zero, zero = min + 8 * scale."""
    N, K = w.shape
    if K % group_size:
        raise ValueError(f"int4 groups of {group_size} need K divisible by it; this weight has K = {K}")
    G = K // group_size
    q = torch.empty((N, K), dtype=torch.uint8)
    scales = torch.empty((N, G), dtype=dtype)
    zeros = torch.empty((N, G), dtype=dtype)
    for a in range(0, N, _ROWS):
        wg = w[a:a + _ROWS].float().view(-1, G, group_size)  # (n, G, g)
        lo, hi = wg.amin(-1), wg.amax(-1)  # (n, G)
        s = _step(((hi - lo) / 15).clamp(min=1e-12), dtype)
        z = (lo + 8 * s.float()).to(dtype)
        scales[a:a + _ROWS], zeros[a:a + _ROWS] = s, z
        qg = torch.round((wg - z.float()[..., None]) / s.float()[..., None]) + 8
        q[a:a + _ROWS] = qg.clamp(0, 15).to(torch.uint8).view(-1, K)
    return q, scales, zeros


def dequantize_int4(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """q uint8 (N, K) values 0..15, scales/zeros (N, K/g) -> w float32 (N, K)."""
    N, K = q.shape
    G = scales.shape[1]
    w = (q.float().view(N, G, -1) - 8) * scales.float()[..., None] + zeros.float()[..., None]
    return w.view(N, K)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(N, K) values 0..15 -> (N, K/2) uint8, column 2j in the low nibble (the folder format)."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: (N, K/2) uint8 -> (N, K) uint8 values 0..15."""
    return torch.stack([packed & 15, packed >> 4], dim=-1).view(packed.shape[0], -1)


def int4_to_kernel(packed: torch.Tensor) -> torch.Tensor:
    """The folder's nibbles (N, K/2) -> torch's CPU kernel layout (N, K/2) uint8. Rows are repacked in chunks of a
    multiple of the kernel's row block, so the int32 temporaries stay small."""
    N = packed.shape[0]
    if N % 16:
        raise ValueError(f"torch's int4 kernel needs the output features divisible by 16, got {N}")
    return torch.cat([
        torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_int4(packed[a:a + _ROWS]).to(torch.int32), 1)
        for a in range(0, N, _ROWS)
    ])


@lru_cache(maxsize=8)
def _kernel_slots(rows: int, K: int) -> torch.Tensor:
    """For a chunk of `rows` x K values, the (row * K + column) index each nibble of the kernel layout holds (low
    nibble of byte 0, high nibble of byte 0, low of byte 1, ...). Found by packing probes whose values are the base-16
    digits of the index: the layout is a permutation and this reads it off, whatever the CPU's block size."""
    index = torch.arange(rows * K, dtype=torch.int64).view(rows, K)
    slots = torch.zeros(rows * K, dtype=torch.int64)
    digit, scale = 0, 1
    while scale < rows * K:
        probe = ((index // scale) % 16).to(torch.int32)
        nibbles = unpack_int4(torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1)).reshape(-1)
        slots += nibbles.long() * scale
        digit, scale = digit + 1, scale * 16
    return slots


def int4_from_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """Inverse of `int4_to_kernel`: torch's CPU layout (N, K/2) -> the folder's nibbles (N, K/2)."""
    N, K = kernel.shape[0], kernel.shape[1] * 2
    out = torch.empty_like(kernel)
    for a in range(0, N, _UNPACK_ROWS):
        chunk = kernel[a:a + _UNPACK_ROWS]
        nibbles = unpack_int4(chunk).reshape(-1)  # (n * K,) in kernel order
        values = torch.empty_like(nibbles)
        values[_kernel_slots(chunk.shape[0], K)] = nibbles
        out[a:a + _UNPACK_ROWS] = pack_int4(values.view(-1, K))
    return out


# ---- the module --------------------------------------------------------------------------------------------
def fits(bits: int, in_features: int, out_features: int, group_size: int) -> bool:
    """Whether torch's kernels take a layer of this shape: int8 needs K % 16 == 0, int4 K % group == 0, N % 16 == 0."""
    if bits == 8:
        return in_features % INT8_K_MULTIPLE == 0
    return in_features % group_size == 0 and out_features % 16 == 0


class QuantLinear(nn.Module):
    """A Linear layer whose weight is int8 (per output channel) or int4 (grouped); bias and activations stay in
    `dtype`. Built empty (on any device, `meta` included) and filled by `set_weight` or `load_folder_tensors`."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, bits: int, group_size: int = 64,
        dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None,
    ):
        super().__init__()
        if not fits(bits, in_features, out_features, group_size):
            raise ValueError(
                f"int{bits} needs in_features divisible by {INT8_K_MULTIPLE if bits == 8 else group_size} (got "
                f"{in_features})" + ("" if bits == 8 else f" and out_features by 16 (got {out_features})")
            )
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        N, K = out_features, in_features
        if bits == 8:
            self.register_buffer("qweight", torch.empty((N, K), dtype=torch.int8, device=device))
            self.register_buffer("scales", torch.empty(N, dtype=dtype, device=device))
            self.register_buffer("zeros", torch.empty(N, dtype=torch.float32, device=device))
        else:
            self.register_buffer("qweight", torch.empty((N, K // 2), dtype=torch.uint8, device=device))  # kernel layout
            self.register_buffer(
                "scales_and_zeros", torch.empty((K // group_size, N, 2), dtype=dtype, device=device)
            )
        self.bias = nn.Parameter(torch.empty(N, dtype=dtype, device=device), requires_grad=False) if bias else None
        # int8: wide bfloat16 inputs (a prefill) multiply the dequantized rows in float32 (`model.cpu_bf16`), set by
        # `cpu_bf16.float32_products_` where the CPU emulates bfloat16
        self.float32_products = False
        self.rounding = "nearest"  # how the codes were chosen: "nearest", or "gptq" (`model.gptq`); recorded in folders

    @property
    def dtype(self) -> torch.dtype:
        return self.scales.dtype if self.bits == 8 else self.scales_and_zeros.dtype

    def extra_repr(self) -> str:
        kind = "int8" if self.bits == 8 else f"int4, groups of {self.group_size}"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}, bias={self.bias is not None}"

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int = 64, dtype: torch.dtype | None = None) -> QuantLinear:
        dtype = dtype or linear.weight.dtype
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, bits, group_size, dtype)
        q.set_weight(linear.weight.detach(), None if linear.bias is None else linear.bias.detach())
        return q

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Quantize a float weight (N, K) into this module (its buffers are replaced, so a meta shell works)."""
        assert weight.shape == (self.out_features, self.in_features), (weight.shape, self.out_features, self.in_features)
        if self.bits == 8:
            q, s, z = quantize_int8(weight, self.dtype)
            self.load_folder_tensors({"qweight": q, "scales": s, "zeros": z})
        else:
            q, s, z = quantize_int4(weight, self.group_size, self.dtype)
            self.load_folder_tensors({"qweight": pack_int4(q), "scales": s, "zeros": z})
        if bias is not None:
            self.bias = nn.Parameter(bias.to(self.dtype), requires_grad=False)

    def load_folder_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take the folder format's tensors (`qweight`, `scales`, [`zeros`], [`bias`]); see the file's docstring."""
        N, K = self.out_features, self.in_features
        dtype = self.dtype
        q = tensors["qweight"]
        if self.bits == 8:
            if q.dtype != torch.int8 or q.shape != (N, K):
                raise ValueError(f"int8 qweight must be int8 ({N}, {K}), got {q.dtype} {tuple(q.shape)}")
            self.qweight = q.contiguous()
            self.scales = tensors["scales"].to(dtype).reshape(N).contiguous()
            self.zeros = tensors["zeros"].float().reshape(N).contiguous()
        else:
            G = K // self.group_size
            if q.dtype != torch.uint8 or q.shape != (N, K // 2):
                raise ValueError(f"int4 qweight must be uint8 ({N}, {K // 2}), got {q.dtype} {tuple(q.shape)}")
            s, z = tensors["scales"], tensors["zeros"]
            if s.shape != (N, G) or z.shape != (N, G):
                raise ValueError(f"int4 scales/zeros must be ({N}, {G}) for groups of {self.group_size}, got "
                                 f"{tuple(s.shape)} / {tuple(z.shape)}")
            self.qweight = int4_to_kernel(q)
            self.scales_and_zeros = torch.stack([s, z], dim=-1).transpose(0, 1).to(dtype).contiguous()  # (G, N, 2)
        if "bias" in tensors:
            self.bias = nn.Parameter(tensors["bias"].to(dtype), requires_grad=False)

    def folder_tensors(self) -> dict[str, torch.Tensor]:
        """The folder format of this layer (inverse of `load_folder_tensors`)."""
        if self.bits == 8:
            out = {"qweight": self.qweight, "scales": self.scales, "zeros": self.zeros}
        else:
            sz = self.scales_and_zeros.transpose(0, 1)  # (N, G, 2)
            out = {"qweight": int4_from_kernel(self.qweight), "scales": sz[..., 0].contiguous(),
                   "zeros": sz[..., 1].contiguous()}
        if self.bias is not None:
            out["bias"] = self.bias.detach()
        return out

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight (N, K) these values stand for (tests, analysis: not a fast path)."""
        t = self.folder_tensors()
        if self.bits == 8:
            return dequantize_int8(t["qweight"], t["scales"], t["zeros"])
        return dequantize_int4(unpack_int4(t["qweight"]), t["scales"], t["zeros"])

    def _dequantize_rows(self, n0: int, n1: int, w32: torch.Tensor) -> None:
        """int8 rows n0..n1 as float32 into w32 (n1 - n0, K): qweight * scales + zeros, as `dequantize_int8`."""
        w32.copy_(self.qweight[n0:n1])
        w32.mul_(self.scales[n0:n1, None].float()).add_(self.zeros[n0:n1, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) -> (..., N). The kernels take 2-D inputs in the scales' dtype."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(self.dtype)  # (M, K)
        if self.bits == 8 and self.float32_products and wide_input(x2):
            y = chunked_linear_fp32(x2, self.out_features, self._dequantize_rows, None)  # (M, N)
        elif self.bits == 8:
            y = torch._weight_int8pack_mm(x2, self.qweight, self.scales)  # (M, N)
            # The zero points: sum_k x[m, k] * zeros[n], in float32 (one pass over x, one over the output).
            y = (y.float() + x2.float().sum(-1, keepdim=True) * self.zeros).to(y.dtype)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.qweight, self.group_size, self.scales_and_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*lead, self.out_features)


# ---- which layers ------------------------------------------------------------------------------------------
def quantized_layers(model: nn.Module, spec: QuantSpec) -> dict[str, int]:
    """name -> bits for each Linear of the language model that `spec` quantizes.

    The decoder's projections get `spec.bits`, the output layer `spec.head_bits` (not when it shares the embedding
    matrix: the embedding needs the float rows anyway). The audio encoder and projector stay in float: they run once
    per clip, bound by compute rather than by reading weights. A layer whose shape the kernels cannot take (`fits`)
    stays in float."""
    lm = model.language_model if hasattr(model, "language_model") else model
    prefix = "language_model." if lm is not model else ""
    tied = lm.lm_head.weight is lm.model.embed_tokens.weight
    out = {}
    for name, mod in lm.named_modules():
        if not isinstance(mod, nn.Linear) or (name == "lm_head" and tied):
            continue
        bits = spec.head_bits if name == "lm_head" else spec.bits
        if not fits(bits, mod.in_features, mod.out_features, spec.group_size):
            continue
        out[prefix + name] = bits
    return out


def replace_linears_(model: nn.Module, layers: dict[str, int], group_size: int, dtype: torch.dtype) -> None:
    """Swap each named nn.Linear for an empty QuantLinear of the same shape on the same device (a shell to fill)."""
    for name, bits in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        lin = getattr(parent, child)
        assert isinstance(lin, nn.Linear), (name, type(lin))
        shell = QuantLinear(lin.in_features, lin.out_features, lin.bias is not None, bits, group_size, dtype,
                            device=lin.weight.device)
        setattr(parent, child, shell)


@torch.no_grad()
def quantize_(model: nn.Module, spec: QuantSpec, dtype: torch.dtype = torch.bfloat16) -> dict[str, int]:
    """Quantize a loaded float model in place (layer by layer: one float weight freed as each is replaced); the
    rest of the model is cast to `dtype`. Returns the layers quantized (name -> bits)."""
    layers = quantized_layers(model, spec)
    for name, bits in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, QuantLinear.from_linear(getattr(parent, child), bits, spec.group_size, dtype))
    model.to(dtype)  # QuantLinear's integer buffers keep their dtype: `Module.to(dtype)` casts floating tensors only
    return layers


# ---- advice ------------------------------------------------------------------------------------------------
BF16_ADVICE_BYTES = 2**30  # below this, bfloat16's emulated products cost too little to mention


def bf16_advice(model: torch.nn.Module) -> str | None:
    """A one-line note for a model whose decoder computes in bfloat16 on a CPU that emulates it, when the decoder's
    bfloat16 Linear weights reach BF16_ADVICE_BYTES (measured on a 7B-shaped folder here: int8 2.25 tokens/s at
    8.5 GiB peak, bfloat16 1.19 at 15.0 GiB); None otherwise, and for a decoder already quantized."""
    lm = getattr(model, "language_model", model)
    modules = list(lm.modules())
    linears = [m.weight for m in modules if isinstance(m, torch.nn.Linear)]
    if not linears or linears[0].device.type != "cpu" or cpu.fast_bf16():
        return None
    if any(isinstance(m, QuantLinear) for m in modules):
        return None  # quantized already (a tied output layer stays a bfloat16 Linear)
    bf16 = sum(w.numel() * 2 for w in linears if w.dtype == torch.bfloat16)
    if bf16 < BF16_ADVICE_BYTES:
        return None
    return ("note: this CPU emulates bfloat16 (no AVX512-BF16 or AMX); for a decoder this size --quantize int8 "
            "(load(..., quantize=\"int8\")) decodes ~1.9x faster in about half the memory (README: 'What to expect "
            "on a CPU')")
