"""Singular-value fine-tuning (SVF, Transformer²: Sun et al. 2025): adapt a frozen linear layer by
scaling its singular values.

A weight W = U diag(σ) Vᵀ becomes W′ = c · U diag(σ ⊙ z) Vᵀ with c = Σσ / Σ(σ ⊙ z), which keeps the
sum of the singular values (the paper's rescaling); z, one value per singular value starting at 1, is
all that trains (an "expert"). The SVD is taken once, in float64, from the frozen weight.

It is computed as c · (W + U diag(σ ⊙ (z − 1)) Vᵀ), the same matrix, so that at z = 1 the layer is
exactly W (bit for bit, not W up to the SVD's rounding).

`add_svf(model)` parametrises every `nn.Linear` of a model (AGIFORMER's or a Hugging Face model's)
through torch's parametrisations and freezes everything else; `expert_vectors` reads the z's,
`set_expert_vectors` writes them (a dict, or a mix of several: Σ αₖ zₖ), `remove_svf` gives the
layers back their original weights.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from agiformer.errors import AGIFormerError
from agiformer.nn.adapters import parametrize_linear_layers

Tensor = torch.Tensor


class SingularValueScale(nn.Module):
    """The parametrisation of one weight (out, in): forward(W) → W′. Buffers U, σ, Vᵀ; parameter z."""

    def __init__(self, weight: Tensor):
        super().__init__()
        U, S, Vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
        self.register_buffer("U", U.to(weight.dtype))
        self.register_buffer("S", S.to(weight.dtype))
        self.register_buffer("Vh", Vh.to(weight.dtype))
        self.z = nn.Parameter(torch.ones_like(self.S))

    def forward(self, weight: Tensor) -> Tensor:
        delta = (self.U * (self.S * (self.z - 1))) @ self.Vh
        return (weight + delta) * (self.S.sum() / (self.S * self.z).sum())


def svf_weight(weight: Tensor, z: Tensor) -> Tensor:
    """Reference: c · U diag(σ ⊙ z) Vᵀ composed directly from a fresh SVD of `weight`."""
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
    return (U * (S * z)) @ Vh * (S.sum() / (S * z).sum())


def scaled_layers(model: nn.Module) -> Iterator[tuple[str, nn.Linear, SingularValueScale]]:
    """(qualified name, layer, its parametrisation) for every layer `add_svf` parametrised."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and parametrize.is_parametrized(module, "weight"):
            for scale in module.parametrizations.weight:
                if isinstance(scale, SingularValueScale):
                    yield name, module, scale


def add_svf(model: nn.Module, *, where: Callable[[str, nn.Linear], bool] | None = None) -> list[str]:
    """Parametrise each `nn.Linear` of `model` (those `where(name, layer)` accepts, if given) with a z
    starting at 1 and freeze every other parameter, the original weights included. Returns the
    parametrised layers' names. The model computes exactly what it did until a z moves."""
    names = parametrize_linear_layers(model, SingularValueScale, what="SVF", where=where)
    for _, _, scale in scaled_layers(model):
        scale.z.requires_grad_(True)
    return names


def expert_vectors(model: nn.Module) -> dict[str, Tensor]:
    """The z of every SVF layer, keyed "LAYER.z": what an expert is, and all that is saved of it."""
    return {f"{name}.z": scale.z.detach().clone() for name, _, scale in scaled_layers(model)}


def set_expert_vectors(model: nn.Module, experts: dict[str, Tensor] | list[dict[str, Tensor]],
                       weights: list[float] | None = None) -> None:
    """Load one expert's z's, or the mix Σₖ weights[k] · zₖ of several, into the model's SVF layers."""
    experts = [experts] if isinstance(experts, dict) else list(experts)
    weights = [1.0] * len(experts) if weights is None else list(weights)
    if len(weights) != len(experts) or not experts:
        raise AGIFormerError(f"{len(weights)} mixing weights for {len(experts)} experts")
    layers = {f"{name}.z": scale for name, _, scale in scaled_layers(model)}
    for expert in experts:
        if set(expert) != set(layers):
            missing, extra = sorted(set(layers) - set(expert)), sorted(set(expert) - set(layers))
            raise AGIFormerError(f"expert does not fit this model's SVF layers: missing {missing[:3]}, "
                                 f"unexpected {extra[:3]}")
    with torch.no_grad():
        for key, scale in layers.items():
            mixed = sum(w * expert[key].to(scale.z) for w, expert in zip(weights, experts))
            if mixed.shape != scale.z.shape:
                raise AGIFormerError(f"{key}: expert of shape {tuple(mixed.shape)}, layer needs {tuple(scale.z.shape)}")
            scale.z.copy_(mixed)


def remove_svf(model: nn.Module) -> None:
    """Give every SVF layer its original weight back (the one it had before `add_svf`, unchanged)."""
    for _, module, _ in list(scaled_layers(model)):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
