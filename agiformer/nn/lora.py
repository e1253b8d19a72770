"""Low-rank adaptation (LoRA, Hu et al. 2021) of a frozen linear layer, the usual comparison for SVF:
W′ = W + B A with A (r, in) and B (out, r) trained and B starting at zero, so the layer is
exactly W until B moves. `add_lora(model, rank=r)` parametrises every `nn.Linear` of a model (or those
`where` accepts) and freezes everything else."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from agiformer.errors import AGIFormerError
from agiformer.nn.adapters import parametrize_linear_layers


class LowRankDelta(nn.Module):
    """The parametrisation of one weight (out, in): forward(W) → W + B A."""

    def __init__(self, weight: torch.Tensor, *, rank: int):
        super().__init__()
        out_features, in_features = weight.shape
        self.A = nn.Parameter(torch.randn(rank, in_features, dtype=weight.dtype, device=weight.device)
                              / math.sqrt(in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank, dtype=weight.dtype, device=weight.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.B @ self.A


def add_lora(model: nn.Module, *, rank: int, where: Callable[[str, nn.Linear], bool] | None = None) -> list[str]:
    """Give each `nn.Linear` of `model` (those `where(name, layer)` accepts) a rank-`rank` delta and freeze
    every other parameter. Returns the adapted layers' names."""
    if rank < 1:
        raise AGIFormerError(f"LoRA rank must be ≥ 1, got {rank}")
    return parametrize_linear_layers(model, lambda weight: LowRankDelta(weight, rank=rank), what="LoRA", where=where)

