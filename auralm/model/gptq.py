"""GPTQ rounding for the weight-only formats of `auralm.model.quant`: the same int8 / int4 codes, chosen so that the
layer's outputs on calibration inputs move as little as possible, instead of each weight rounded to its nearest code.

Rounding to nearest makes each weight's error independent of the others. GPTQ (Frantar et al., 2022) quantizes the
input columns of a weight one at a time and spreads each column's rounding error over the columns not yet quantized,
weighted by the inverse of the inputs' second moment H = sum_x x x^T, which minimises ||W x - W_q x||^2 over the
calibration inputs. The scales and zero points keep the round-to-nearest rules (int8: each row's [min, max];
int4: each group's [min, max], taken from the weights as updated when the group is reached), so a GPTQ folder is an
ordinary quantized folder: nothing changes at load or run time.

`hessians` collects H for chosen Linear layers with forward hooks; `gptq_quantize` turns one weight and its H into
the folder format's tensors. Shapes: W (N, K): N outputs, K inputs; H (K, K).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from auralm.model.quant import _step

_BLOCK = 128  # columns per lazy-update block (the paper's B)


@contextmanager
def hessians(modules: dict[str, nn.Linear]):
    """While inside, every forward of the named Linear layers adds its inputs' x x^T (float32) to a per-layer sum.
    Yields {name: [H (K, K), count]}; padding rows should not be fed (they would count as inputs)."""
    sums: dict[str, list] = {name: [torch.zeros(m.in_features, m.in_features), 0] for name, m in modules.items()}

    def hook(name):
        def add(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()  # (M, K)
            sums[name][0].addmm_(x.T, x)
            sums[name][1] += x.shape[0]
        return add

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in modules.items()]
    try:
        yield sums
    finally:
        for h in handles:
            h.remove()


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 (K, K), after dampening H's diagonal by `damp` x its mean (as the paper does)."""
    H = H.clone()
    dead = torch.diag(H) == 0  # inputs that were always zero: their weights cannot matter, and H is singular there
    H[dead, dead] = 1
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True)


@torch.no_grad()
def gptq_quantize(
    w: torch.Tensor, H: torch.Tensor, bits: int, group_size: int, dtype: torch.dtype, damp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w (N, K) float, H (K, K) -> the folder tensors of `quant.quantize_int8` (bits 8: q int8 (N, K), scales (N,)
    in `dtype`, zeros (N,) float32) or `quant.quantize_int4` (bits 4: q uint8 (N, K) values 0..15, scales and zeros
    (N, K/g) in `dtype`), with GPTQ's error-compensating rounding."""
    W = w.float().clone()  # (N, K), updated in place as columns are quantized
    N, K = W.shape
    U = _inverse_cholesky(H.float(), damp)  # (K, K) upper
    if bits == 8:
        lo, hi = W.amin(1), W.amax(1)  # (N,)
        s8 = _step(((hi - lo) / 255).clamp(min=1e-12), dtype)
        z8 = lo + 128 * s8.float()
        scale, zero, qmin, qmax = s8.float(), z8, -128, 127
        q = torch.empty((N, K), dtype=torch.int8)
    else:
        if K % group_size:
            raise ValueError(f"int4 groups of {group_size} need K divisible by it; this weight has K = {K}")
        G = K // group_size
        scales4 = torch.empty((N, G), dtype=dtype)
        zeros4 = torch.empty((N, G), dtype=dtype)
        qmin, qmax = 0, 15
        q = torch.empty((N, K), dtype=torch.uint8)
    for b0 in range(0, K, _BLOCK):
        b1 = min(b0 + _BLOCK, K)
        Wb = W[:, b0:b1].clone()  # (N, n)
        Eb = torch.zeros_like(Wb)  # (N, n) scaled errors of this block
        Ub = U[b0:b1, b0:b1]
        for j in range(b1 - b0):
            k = b0 + j
            if bits == 4 and k % group_size == 0:
                # the group's codes span its weights as they are now (after the earlier columns' updates)
                g = k // group_size
                wg = torch.cat([Wb[:, j:], W[:, b1:]], dim=1)[:, :group_size]  # (N, g)
                lo, hi = wg.amin(1), wg.amax(1)
                s4 = _step(((hi - lo) / 15).clamp(min=1e-12), dtype)
                z4 = (lo + 8 * s4.float()).to(dtype)
                scales4[:, g], zeros4[:, g] = s4, z4
                scale, zero = s4.float(), z4.float() - 8 * s4.float()  # code c stands for c * scale + zero
            col = Wb[:, j]  # (N,)
            code = torch.round((col - zero) / scale).clamp(qmin, qmax)
            q[:, k] = code.to(q.dtype)
            err = (col - (code * scale + zero)) / Ub[j, j]  # (N,)
            Wb[:, j + 1:] -= err[:, None] * Ub[j, j + 1:][None, :]
            Eb[:, j] = err
        W[:, b1:] -= Eb @ U[b0:b1, b1:]  # the block's errors reach the columns after it at once
    if bits == 8:
        return q, s8, z8
    return q, scales4, zeros4


class _Reached(Exception):
    """Raised by the hook that captures the first decoder layer's inputs: nothing after it needs to run."""


@torch.no_grad()
def gptq_quantize_(model: nn.Module, spec, batches: list[dict], dtype: torch.dtype = torch.bfloat16,
                   damp: float = 0.01, progress=None) -> dict[str, int]:
    """Quantize an AudioLM's decoder in place with GPTQ rounding (`spec`: a `quant.QuantSpec`; the same layers as
    `quant.quantize_`), layer after layer: each decoder layer's Hessians come from the outputs of the layers before
    it *as quantized*, so later layers correct for earlier ones' rounding (the paper's sequential order).

    batches: model inputs (`AudioLM.forward` keyword arguments), one sequence each so that no padding row counts
    as an input. Memory: the first layer's inputs of every batch (float, sum of T x D) and one layer's H at a time.
    Returns the layers quantized (name -> bits)."""
    from auralm.model.quant import QuantLinear, pack_int4, quantized_layers

    layers = quantized_layers(model, spec)
    decoder = model.language_model.model
    captured = []

    def capture(_mod, args):
        captured.append(args)
        raise _Reached

    handle = decoder.layers[0].register_forward_pre_hook(capture)
    try:
        for batch in batches:
            try:
                model(**batch)
            except _Reached:
                pass
    finally:
        handle.remove()
    xs = [a[0] for a in captured]  # (1, T, D) each
    folder: dict[str, dict[str, torch.Tensor]] = {}

    def quantize_group(named: dict[str, nn.Linear], module: nn.Module, calls: list[tuple]) -> None:
        """Collect H for `named` while `module` runs on each argument tuple of `calls`, then GPTQ each weight; the
        float weight becomes the dequantized one so that what runs next sees this rounding."""
        if not named:
            return
        with hessians(named) as sums:
            for call in calls:
                module(*call)
        for name, mod in named.items():
            H, _ = sums.pop(name)
            bits = layers[name]
            q, s, z = gptq_quantize(mod.weight, H, bits, spec.group_size, dtype, damp)
            if bits == 8:
                folder[name] = {"qweight": q, "scales": s, "zeros": z}
                mod.weight.copy_(q.float() * s.float()[:, None] + z[:, None])
            else:
                folder[name] = {"qweight": pack_int4(q), "scales": s, "zeros": z}
                G = s.shape[1]
                deq = (q.float().view(q.shape[0], G, -1) - 8) * s.float()[..., None] + z.float()[..., None]
                mod.weight.copy_(deq.view_as(mod.weight))

    prefix = "language_model.model.layers."
    for li, layer in enumerate(decoder.layers):
        args = [a[1:] for a in captured]  # (cos, sin, mask, cache, layer_idx, q_scale) per batch
        named = {prefix + f"{li}.{n}": m for n, m in layer.named_modules()
                 if isinstance(m, nn.Linear) and prefix + f"{li}.{n}" in layers}
        calls = [(x, *a) for x, a in zip(xs, args)]
        quantize_group(named, layer, calls)
        xs = [layer(*call) for call in calls]
        if progress:
            progress(li + 1, len(decoder.layers))
    head = model.language_model.lm_head
    if "language_model.lm_head" in layers:
        quantize_group({"language_model.lm_head": head}, head, [(decoder.norm(x),) for x in xs])
    for name, tensors in folder.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        lin = getattr(parent, child)
        shell = QuantLinear(lin.in_features, lin.out_features, lin.bias is not None, layers[name], spec.group_size,
                            dtype)
        shell.load_folder_tensors({**tensors, **({} if lin.bias is None else {"bias": lin.bias.detach()})})
        shell.rounding = "gptq"
        setattr(parent, child, shell)
    model.to(dtype)
    return layers
