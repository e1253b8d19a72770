"""The optimizer every trainer uses: AdamW in parameter groups, and its learning-rate schedule's setter."""

from __future__ import annotations

import torch
from torch import nn

from agiformer.train.recipe import Recipe


def optimizer_for(model: nn.Module, recipe: Recipe, *, lr_scales: dict[str, float] | None = None) -> torch.optim.AdamW:
    """The trainable parameters; weight decay on matrices only, not on biases, norms, embeddings' padding
    or scalars per head (nor an SVF's z-vectors).
    lr_scales: parameters whose names end with a key train at the recipe's learning rate times its
    value, in groups of their own (`scheduled_lr` applies each group's "lr_scale")."""
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:  # frozen (an adapter's base)
            continue
        scale = next((s for suffix, s in (lr_scales or {}).items() if name.endswith(suffix)), 1.0)
        groups.setdefault((p.dim() >= 2, scale), []).append(p)
    order = sorted(groups, key=lambda key: (key[1] != 1.0, not key[0], key[1]))  # unscaled first, as before
    # fused: one kernel per parameter instead of torch's default loop of elementwise ops on CPU, which took
    # 205 ms of a ~1.2 s step on the 19.7 M parameters of runs/en-wiki-baseline.toml (fused: 19 ms)
    return torch.optim.AdamW([{"params": groups[key], "weight_decay": recipe.weight_decay if key[0] else 0.0,
                               **({"lr_scale": key[1]} if key[1] != 1.0 else {})} for key in order],
                             lr=recipe.lr, betas=(0.9, 0.95), fused=True)


def scheduled_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to `lr`, times the group's "lr_scale" where it has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class SparseRowGradients:
    """Dense gradients of lookup tables rebuilt from the rows a step looked up, in buffers kept between steps.

    A dense gradient of the byte head's n-gram tables (84 M parameters in the recipes) allocated afresh by
    every backward cost 130-210 ms a step on one core of an AMD EPYC Zen 4, most of it page faults: the
    CPU allocator hands blocks that large back to the system when they are freed. Here the tables
    (modules with a `sparse_gradient` attribute) backpropagate the rows they looked up, and `densify`
    writes them into a buffer after zeroing the rows of the step before, so the clipping and the optimizer
    see the same dense gradient as without it. The buffer is reused: a gradient read after the next
    `densify` has changed.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.buffers: dict[nn.Parameter, tuple[torch.Tensor, torch.Tensor]] = {}
        for module in model.modules():
            if hasattr(module, "sparse_gradient"):
                module.sparse_gradient = True

    def densify(self) -> None:
        """Replace every sparse gradient of the model by the dense one (call after the backward passes)."""
        for p in self.model.parameters():
            if p.grad is None or not p.grad.is_sparse:
                continue
            # one entry per row looked up, repeats included: index_add_ sums them, which costs less than
            # coalescing (sorting) them first
            rows, values = p.grad._indices()[0], p.grad._values()
            if p in self.buffers:
                buffer, last_rows = self.buffers[p]
                buffer.index_fill_(0, last_rows, 0)
            else:
                buffer = torch.zeros_like(p)
            buffer.index_add_(0, rows, values)
            self.buffers[p] = (buffer, rows)
            p.grad = buffer
