"""Sliding-window self-attention over patch latents, with rotary positions on q and k."""

from __future__ import annotations

import torch
from torch import nn

from agiformer.ops.window_attention import (
    RollingKV, apply_rotary, blockwise_window_attention, rolling_kv_from_sequence, rotary_angles,
    window_attention_step,
)


class WindowAttention(nn.Module):
    def __init__(self, *, dim: int, heads: int, window: int, rope_base: float = 10000.0):
        super().__init__()
        if (dim // heads) % 2:
            raise ValueError(f"head dimension {dim // heads} must be even for rotary embeddings")
        self.heads, self.head_dim, self.window, self.rope_base = heads, dim // heads, window, rope_base
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def _rotated_qkv(self, x: torch.Tensor, first_position: int):
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        positions = torch.arange(first_position, first_position + L, device=x.device)
        cos, sin = rotary_angles(positions, self.head_dim, base=self.rope_base,
                                 dtype=torch.promote_types(x.dtype, torch.float32))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, x: torch.Tensor, cache: RollingKV | None = None) -> tuple[torch.Tensor, RollingKV]:
        """x: (B, L, D). Without a cache, x starts at position 0; with one, x continues it step by step."""
        B, L, D = x.shape
        q, k, v = self._rotated_qkv(x, cache.length if cache is not None else 0)
        if cache is None:
            out = blockwise_window_attention(q, k, v, self.window)
            cache = rolling_kv_from_sequence(k, v, self.window)
        else:
            outs = []
            for t in range(L):
                out_t, cache = window_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], cache, self.window)
                outs.append(out_t)
            out = torch.stack(outs, dim=2)
        return out.transpose(1, 2).reshape(B, L, D), cache
