"""Causal sliding-window softmax attention: query i sees keys i−W+1 … i.

- `blockwise_window_attention`: blocks of W queries, each attending to its own block and the
  previous one through `scaled_dot_product_attention`; O(L·W) time and memory, no L×L matrix.
- `naive_window_attention`: a dense L×L masked reference.
- `window_attention_step`: one query against a rolling cache of W slots (slot = position mod W);
  slots never written are masked, so early positions are not diluted by empty keys.

Tensors are (B, H, L, E). Rotary position embeddings (`apply_rotary`) are applied to q and k
before calling these, so attention depends on relative positions only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def rotary_angles(positions: Tensor, dim: int, *, base: float = 10000.0, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """cos and sin of shape (len(positions), dim) for the rotate-half convention."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=dtype) / dim)
    angles = positions.to(dtype)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (d, d + E/2) of x (..., L, E) by position-dependent angles."""
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-second, first], dim=-1) * sin.to(x.dtype)


def window_mask(query_positions: Tensor, key_positions: Tensor, window: int) -> Tensor:
    """Boolean (Lq, Lk): True where the key is visible (causal and within the window)."""
    distance = query_positions[:, None] - key_positions[None, :]
    return (distance >= 0) & (distance < window)


def naive_window_attention(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    positions = torch.arange(q.shape[-2], device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(positions, positions, window))


def blockwise_window_attention(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    B, H, L, E = q.shape
    W = window
    n_blocks = -(-L // W)
    pad = n_blocks * W - L
    # one block of zeros in front serves as the "previous block" of block 0 (masked out below)
    q = F.pad(q, (0, 0, 0, pad))
    k, v = (F.pad(t, (0, 0, W, pad)) for t in (k, v))
    q = q.reshape(B, H, n_blocks, W, E)
    k, v = (torch.cat([t[:, :, :-W].reshape(B, H, n_blocks, W, -1),
                       t[:, :, W:].reshape(B, H, n_blocks, W, -1)], dim=-2) for t in (k, v))
    local = torch.arange(2 * W, device=q.device)
    mask = window_mask(local[W:], local, W).expand(n_blocks, W, 2 * W).clone()
    mask[0, :, :W] = False
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2).reshape(B * n_blocks, H, W, E),
        k.transpose(1, 2).reshape(B * n_blocks, H, 2 * W, E),
        v.transpose(1, 2).reshape(B * n_blocks, H, 2 * W, -1),
        attn_mask=mask.repeat(B, 1, 1).unsqueeze(1),
    )
    out = out.reshape(B, n_blocks, H, W, -1).transpose(1, 2).reshape(B, H, n_blocks * W, -1)
    return out[:, :, :L]


class RollingKV(NamedTuple):
    """The last W keys/values in slots (position mod W) and the number of positions seen."""
    keys: Tensor      # (B, H, W, E)
    values: Tensor    # (B, H, W, Ev)
    length: int


def rolling_kv_from_sequence(k: Tensor, v: Tensor, window: int) -> RollingKV:
    """The cache a step-by-step run would hold after seeing the whole of k, v (B, H, L, E)."""
    B, H, L, E = k.shape
    keys = k.new_zeros(B, H, window, E)
    values = v.new_zeros(B, H, window, v.shape[-1])
    kept = torch.arange(max(0, L - window), L, device=k.device)
    keys[:, :, kept % window] = k[:, :, kept]
    values[:, :, kept % window] = v[:, :, kept]
    return RollingKV(keys, values, L)


def window_attention_step(q: Tensor, k: Tensor, v: Tensor, cache: RollingKV | None, window: int
                          ) -> tuple[Tensor, RollingKV]:
    """One position: q, k (B, H, E), v (B, H, Ev), already rotated for position `cache.length`."""
    if cache is None:
        B, H, E = k.shape
        cache = RollingKV(k.new_zeros(B, H, window, E), v.new_zeros(B, H, window, v.shape[-1]), 0)
    slot = cache.length % window
    keys = cache.keys.clone()
    values = cache.values.clone()
    keys[:, :, slot] = k
    values[:, :, slot] = v
    written = torch.arange(window, device=q.device) <= cache.length
    out = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=written[None, :])
    return out.squeeze(2), RollingKV(keys, values, cache.length + 1)
