"""Adaptive-depth reasoning: a weight-tied refinement loop with per-position ACT halting (Graves, 2016)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from agiformer.nn.mlp import SwiGLU


class ReasoningOutput(NamedTuple):
    z: torch.Tensor          # (B, N, D) halting-weighted mix of the refined states
    steps: torch.Tensor      # (B, N) refinement steps taken per position
    ponder: torch.Tensor     # (B, N) ACT ponder cost N(t) + R(t); gradient flows through R
    mlp_evals: int           # positions × steps actually computed


def no_reasoning(z: torch.Tensor) -> ReasoningOutput:
    """What a model without the reasoning block reports: z unchanged, zero steps."""
    zeros = z.new_zeros(z.shape[:2])
    return ReasoningOutput(z, zeros.long(), zeros, 0)


def step_cap(effort: float, max_steps: int) -> int:
    """Most steps allowed at this effort: ceil(effort · max_steps), at least 1."""
    return max(1, math.ceil(effort * max_steps - 1e-9))


class AdaptiveReasoning(nn.Module):
    """z ← z + g ⊙ SwiGLU(norm z), g = σ(W_g norm z), halting probability h = σ(w_h · norm z + b).

    A position halts at the first step where its cumulative h would reach the threshold
    (act_threshold − (1 − effort)·effort_threshold_shift), or at the effort's step cap; its output is
    Σ h_n z_n with the remainder R = 1 − Σ h weighting the last state. Halted positions are dropped
    from the batch of the next step, so fewer steps cost less compute. (The row count of each matmul
    then depends on which other positions halted, which on some CPUs changes the rounding: each
    position's result equals its computation alone to float64 rounding, tests/test_reasoning.py.)
    """

    def __init__(self, *, dim: int, max_steps: int = 4, mlp_ratio: float = 4.0, act_threshold: float = 0.99,
                 effort_threshold_shift: float = 0.5, halt_bias_init: float = -1.0, norm_eps: float = 1e-6):
        super().__init__()
        self.max_steps, self.act_threshold, self.effort_threshold_shift = max_steps, act_threshold, effort_threshold_shift
        self.norm = nn.RMSNorm(dim, eps=norm_eps)
        self.mlp = SwiGLU(dim, int(mlp_ratio * dim))
        self.update_gate = nn.Linear(dim, dim)
        self.halt = nn.Linear(dim, 1)
        nn.init.constant_(self.halt.bias, halt_bias_init)

    def halting_threshold(self, effort: float) -> float:
        return self.act_threshold - (1.0 - effort) * self.effort_threshold_shift

    def forward(self, z: torch.Tensor, *, effort: float) -> ReasoningOutput:
        B, N, D = z.shape
        cap, threshold = step_cap(effort, self.max_steps), self.halting_threshold(effort)
        flat = z.reshape(B * N, D)
        active = torch.arange(B * N, device=z.device)   # indices of positions still refining
        halted_so_far = flat.new_zeros(B * N)             # Σ h over the steps taken, active positions only
        out = torch.zeros_like(flat)
        steps = torch.zeros(B * N, dtype=torch.long, device=z.device)
        ponder = flat.new_zeros(B * N)
        mlp_evals = 0
        for step in range(1, cap + 1):
            n = self.norm(flat)
            flat = flat + torch.sigmoid(self.update_gate(n)) * self.mlp(n)
            h = torch.sigmoid(self.halt(n)).squeeze(-1)
            mlp_evals += active.numel()
            halts = (halted_so_far + h >= threshold) | (step == cap)
            remainder = 1.0 - halted_so_far
            weight = torch.where(halts, remainder, h)
            out = out.index_add(0, active, weight.unsqueeze(-1) * flat)
            steps = steps.index_fill(0, active[halts], step)
            ponder = ponder.index_add(0, active[halts], step + remainder[halts])
            keep = ~halts
            flat, active, halted_so_far = flat[keep], active[keep], (halted_so_far + h)[keep]
            if active.numel() == 0:
                break
        return ReasoningOutput(out.view(B, N, D), steps.view(B, N), ponder.view(B, N), mlp_evals)
