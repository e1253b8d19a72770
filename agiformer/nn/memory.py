"""Hebbian fast-weight memory layer: the `(input, state) → (output, state)` memory of a hybrid block."""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from agiformer.ops.hebbian import chunked_hebbian, hebbian_step


def effort_decay_exponent(effort: float) -> float:
    """λ → λ^(1.1 / (effort + 0.1)): the seed proposal's sharpening, normalised so effort 1 leaves λ as is."""
    return 1.1 / (effort + 0.1)


class HebbianMemory(nn.Module):
    """Per-head decayed linear attention with q, k = ELU + 1 and q scaled by 1/sqrt(E).

    decay="head" (seed v1): λ_h = 0.99 + 0.01·σ(θ_h), a learned constant per head.
    decay="input" (seed v2): λ_{t,h} = 0.9 + 0.1·σ(W x_t)_h, bias initialised to 4 (λ ≈ 0.998).
    The plasticity α ∈ (0, 1] multiplies λ, as in the seed curriculum (0.1 / 0.5 / 0.99).
    With `effort_sharpening`, low effort raises λ to a power > 1 so the memory forgets faster.
    """

    def __init__(self, *, dim: int, heads: int, decay: str = "input", chunk_size: int = 64,
                 effort_sharpening: bool = True, eps: float = 1e-6):
        super().__init__()
        if decay not in ("head", "input"):
            raise ValueError(f"memory decay must be 'head' or 'input', got {decay!r}")
        self.heads, self.head_dim = heads, dim // heads
        self.decay, self.chunk_size, self.eps = decay, chunk_size, eps
        self.effort_sharpening = effort_sharpening
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if decay == "head":
            self.decay_logits = nn.Parameter(torch.zeros(heads))
        else:
            self.decay_proj = nn.Linear(dim, heads)
            nn.init.normal_(self.decay_proj.weight, std=0.02)
            nn.init.constant_(self.decay_proj.bias, 4.0)

    def log_decay(self, x: torch.Tensor, *, plasticity: float, effort: float) -> torch.Tensor:
        """log λ of shape (B, H, L), computed in float32 or wider."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        if self.decay == "head":
            base = 0.99 + 0.01 * torch.sigmoid(self.decay_logits.to(dtype))
            log_base = base.log()[None, :, None].expand(x.shape[0], -1, x.shape[1])
        else:
            log_base = (0.9 + 0.1 * torch.sigmoid(self.decay_proj(x).to(dtype))).log().transpose(1, 2)
        log_decay = log_base + math.log(plasticity)
        if self.effort_sharpening:
            log_decay = log_decay * effort_decay_exponent(effort)
        return log_decay

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None, *,
                plasticity: float, effort: float) -> tuple[torch.Tensor, torch.Tensor]:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = (F.elu(q) + 1) / math.sqrt(self.head_dim)
        k = F.elu(k) + 1
        log_decay = self.log_decay(x, plasticity=plasticity, effort=effort)
        if L == 1 and state is not None:
            out, state = hebbian_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], log_decay[:, :, 0], state, eps=self.eps)
            out = out.unsqueeze(2)
        else:
            out, state = chunked_hebbian(q, k, v, log_decay, state, chunk_size=self.chunk_size, eps=self.eps)
        return out.to(x.dtype).transpose(1, 2).reshape(B, L, D), state
