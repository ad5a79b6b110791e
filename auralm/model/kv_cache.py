"""A preallocated key/value cache written at explicit positions.

All rows of a batch share one write position (`pos`); rows that are shorter (left padding) or that joined later
are handled by the key-padding mask the caller passes, not by ragged storage. Shapes stay static, so a compiled
decode step is reused for every token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class KVCache:
    """keys/values: (n_layers, B, Hkv, S_max, Dh). `pos` is the number of positions already written.

    `rope_base` (B,) is each row's RoPE base when the decoder scales it per prompt (dynamic NTK, Qwen v1): fixed at
    prefill, the keys in the cache were rotated with it, so the row's later tokens must use it too.
    """

    keys: torch.Tensor
    values: torch.Tensor
    pos: int = 0
    rope_base: torch.Tensor | None = None

    @classmethod
    def allocate(
        cls, n_layers: int, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
        dtype: torch.dtype, device: torch.device | str = "cpu",
    ) -> "KVCache":
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        return cls(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, Hkv, T, Dh) at [pos, pos + T) and return every key/value written so far, (B, Hkv, pos+T, Dh).

        `pos` itself advances in `advance()`, once per forward pass, after all layers wrote.
        """
        end = self.pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; this step needs {end}")
        self.keys[layer, :, :, self.pos:end] = k
        self.values[layer, :, :, self.pos:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the given batch rows (finished rows leave the batch)."""
        self.keys = self.keys[:, rows]
        self.values = self.values[:, rows]
        if self.rope_base is not None:
            self.rope_base = self.rope_base[rows.to(self.rope_base.device)]


@dataclass
class StaticStep:
    """One decode position over full-capacity cache buffers, with static shapes (the compiled decode step).

    It reads the cache but does not write it: each layer attends over the cached slots plus the new key/value,
    which it collects in `new_keys`/`new_values`; the caller stores them at the write position afterwards (one
    copy for all layers). A compiled graph that mutated its cache inputs would copy whole buffers every step.
    keys/values: (n_layers, B, Hkv, S_max, Dh), read only.
    """

    keys: torch.Tensor
    values: torch.Tensor
    new_keys: list[torch.Tensor] = field(default_factory=list)  # per layer (B, Hkv, 1, Dh)
    new_values: list[torch.Tensor] = field(default_factory=list)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (B, Hkv, 1, Dh) -> keys and values (B, Hkv, S_max + 1, Dh): the cache, then the new position."""
        self.new_keys.append(k)
        self.new_values.append(v)
        return torch.cat([self.keys[layer], k], dim=2), torch.cat([self.values[layer], v], dim=2)


def merge_right_aligned(caches: list[KVCache], valid: list[torch.Tensor], capacity: int) -> tuple[KVCache, torch.Tensor]:
    """Stack the rows of several caches into one whose write position is the largest of theirs.

    Each cache's written positions [0, pos_i) move to [P - pos_i, P), P = max pos_i, so all rows continue writing at
    P; the slots in front of a shorter cache are marked invalid in the returned key mask (B_total, capacity).
    valid[i]: bool (B_i, >= pos_i) key mask of cache i.
    """
    P = max(c.pos for c in caches)
    if capacity < P:
        raise ValueError(f"capacity {capacity} is smaller than the merged length {P}")
    ref = caches[0].keys
    L, _, H, _, Dh = ref.shape
    B = sum(c.keys.shape[1] for c in caches)
    keys = torch.zeros((L, B, H, capacity, Dh), dtype=ref.dtype, device=ref.device)
    values = torch.zeros_like(keys)
    mask = torch.zeros((B, capacity), dtype=torch.bool, device=ref.device)
    b = 0
    for c, v in zip(caches, valid):
        n = c.keys.shape[1]
        keys[:, b:b + n, :, P - c.pos:P] = c.keys[:, :, :, :c.pos]
        values[:, b:b + n, :, P - c.pos:P] = c.values[:, :, :, :c.pos]
        mask[b:b + n, P - c.pos:P] = v[:, :c.pos]
        b += n
    bases = [c.rope_base for c in caches]
    if any(r is not None for r in bases) and not all(r is not None for r in bases):
        raise ValueError("cannot merge caches with and without per-row RoPE bases (one model writes both)")
    return KVCache(keys, values, P, torch.cat(bases) if bases[0] is not None else None), mask
