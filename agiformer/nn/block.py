"""Hybrid block: sliding-window attention and a fast-weight memory read the same normed input."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from agiformer.nn.attention import WindowAttention
from agiformer.nn.mlp import SwiGLU
from agiformer.ops.window_attention import RollingKV


class BlockState(NamedTuple):
    attention: RollingKV | None
    memory: torch.Tensor | None


class HybridBlock(nn.Module):
    """n = norm(x); x + out(SWA(n) + Mem(n)) (fusion="sum", seed v1) or
    x + out(g·SWA(n) + (1 − g)·Mem(n)) with g = σ(Linear(D, 1)(n)) (fusion="gated", seed v2);
    then x + SwiGLU(norm(x)).

    `memory` is any module called as memory(n, state, plasticity=, effort=) → (output, state).
    Ablations: memory=None keeps attention only; attention=False keeps the memory only.
    """

    def __init__(self, *, dim: int, heads: int, window: int, memory: nn.Module | None, attention: bool = True,
                 fusion: str = "gated",
                 mlp_ratio: float = 4.0, dropout: float = 0.0, rope_base: float = 10000.0, norm_eps: float = 1e-6):
        super().__init__()
        if fusion not in ("sum", "gated"):
            raise ValueError(f"fusion must be 'sum' or 'gated', got {fusion!r}")
        self.fusion = fusion
        self.mix_norm = nn.RMSNorm(dim, eps=norm_eps)
        if memory is None and not attention:
            raise ValueError("a block needs attention, memory or both")
        self.attention = WindowAttention(dim=dim, heads=heads, window=window, rope_base=rope_base) if attention else None
        self.memory = memory
        self.gate = nn.Linear(dim, 1) if fusion == "gated" and attention and memory is not None else None
        self.out = nn.Linear(dim, dim, bias=False)
        self.mlp_norm = nn.RMSNorm(dim, eps=norm_eps)
        self.mlp = SwiGLU(dim, int(mlp_ratio * dim))
        self.dropout = nn.Dropout(dropout)

    def attention_share(self, n: torch.Tensor) -> torch.Tensor | None:
        """g per position (B, L, 1), the weight of attention against memory; None unless fusion is "gated"."""
        return torch.sigmoid(self.gate(n)) if self.gate is not None else None

    def forward(self, x: torch.Tensor, state: BlockState | None = None, *,
                plasticity: float, effort: float) -> tuple[torch.Tensor, BlockState]:
        n = self.mix_norm(x)
        attended = recalled = attention_cache = memory_state = None
        if self.attention is not None:
            attended, attention_cache = self.attention(n, state.attention if state is not None else None)
        if self.memory is not None:
            recalled, memory_state = self.memory(n, state.memory if state is not None else None,
                                                 plasticity=plasticity, effort=effort)
        g = self.attention_share(n)
        if attended is None or recalled is None:
            mixed = recalled if attended is None else attended
        else:
            mixed = attended + recalled if g is None else g * attended + (1 - g) * recalled
        x = x + self.dropout(self.out(mixed))
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x, BlockState(attention_cache, memory_state)
