"""The causality probe used on every component and on the whole model."""

from __future__ import annotations

import torch


def output_change(fn, x: torch.Tensor, perturbed: torch.Tensor, upto: int) -> float:
    """Largest change of fn(·)[:, :upto] between inputs x and perturbed."""
    with torch.no_grad():
        difference = (fn(x)[:, :upto] - fn(perturbed)[:, :upto]).abs()
    return difference.max().item() if difference.numel() else 0.0


def with_byte_changed(x: torch.Tensor, t: int) -> torch.Tensor:
    x = x.clone()
    x[:, t] = (x[:, t] + 97) % 256
    return x


def with_vector_changed(x: torch.Tensor, t: int) -> torch.Tensor:
    x = x.clone()
    x[:, t] += 1.0 + torch.rand_like(x[:, t])
    return x


def worst_byte_leak(model_fn, x: torch.Tensor) -> float:
    """Over every position t: the largest change of the predictions of bytes ≤ t (logits[:, :t+1])
    when byte t changes. Zero for a causal model."""
    return max(output_change(model_fn, x, with_byte_changed(x, t), t + 1) for t in range(x.shape[1]))
