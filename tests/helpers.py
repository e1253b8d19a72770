"""The causality probe used on every component and on the whole model.

Causality is a property, not a bit pattern: on some CPUs a matmul rounds differently when its row
count changes (the reasoning loop drops halted rows, so the shapes depend on other positions), which
leaves residues of ~1e-16 relative in float64. The probe therefore reports the change relative to the
output's scale, and the tests hold it to ROUNDING; a real leak (the negative controls) is above LEAK.
"""

from __future__ import annotations

import torch

ROUNDING = 1e-12   # float64: a few hundred ulps of the output's scale
LEAK = 1e-6        # what a real dependence shows at least (the controls show 1e-3 and more)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| over max |b| (the absolute difference where b is all zero), on the CPU."""
    a, b = a.detach().cpu(), b.detach().cpu()
    scale = b.abs().max()
    return ((a - b).abs().max() / scale).item() if scale > 0 else (a - b).abs().max().item()


def output_change(fn, x: torch.Tensor, perturbed: torch.Tensor, upto: int) -> float:
    """Largest change of fn(·)[:, :upto] between inputs x and perturbed, relative to fn(x)'s largest magnitude."""
    with torch.no_grad():
        reference = fn(x)
        difference = (reference[:, :upto] - fn(perturbed)[:, :upto]).abs()
    if not difference.numel():
        return 0.0
    return difference.max().item() / max(reference.abs().max().item(), torch.finfo(reference.dtype).tiny)


def with_byte_changed(x: torch.Tensor, t: int) -> torch.Tensor:
    x = x.clone()
    x[:, t] = (x[:, t] + 97) % 256
    return x


def with_vector_changed(x: torch.Tensor, t: int) -> torch.Tensor:
    x = x.clone()
    x[:, t] += 1.0 + torch.rand_like(x[:, t])
    return x


def worst_byte_leak(model_fn, x: torch.Tensor) -> float:
    """Over every position t: the largest relative change of the predictions of bytes ≤ t (logits[:, :t+1])
    when byte t changes. At most ROUNDING for a causal model (float64)."""
    return max(output_change(model_fn, x, with_byte_changed(x, t), t + 1) for t in range(x.shape[1]))
