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
