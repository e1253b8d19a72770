"""What the adapter parametrisations (SVF, LoRA) share: putting one on every linear layer of a model
and freezing everything else."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from agiformer.errors import AGIFormerError


def parametrize_linear_layers(model: nn.Module, make: Callable[[torch.Tensor], nn.Module], *, what: str,
                              where: Callable[[str, nn.Linear], bool] | None = None) -> list[str]:
    """Freeze every parameter of `model`, then register `make(weight)` as the weight parametrisation of
    each `nn.Linear` not parametrised yet (those `where(name, layer)` accepts, if given); the parameters
    the parametrisations create are what trains. Returns the layers' names."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and not parametrize.is_parametrized(module, "weight")
             and (where is None or where(name, module))]
    if not names:
        raise AGIFormerError(f"{what} found no linear layer to adapt")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    modules = dict(model.named_modules())
    for name in names:
        parametrize.register_parametrization(modules[name], "weight", make(modules[name].weight))
    return names
