"""Two-pass inference with SVF experts (Transformer²): a first pass reads some text with the model as
it is, a classifier on that pass's states weighs the experts, and the second pass runs with their
mixed z-vectors, Σₖ pₖ zₖ; the model's own z-vectors come back after. The experts are SVF adapters of
one base (`agiformer.train.adapt.load_experts`).

The classifier is a multinomial logistic regression on the mean of the model's final (normed) states
over the first pass's positions, fitted on windows of each expert's training text
(`fit_dispatcher`). `dispatched_bpb` scores a text window by window, each window with the mix chosen
from the window before it (the first with the model as it is), so no byte's score depends on itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agiformer.data import disjoint_windows, random_windows
from agiformer.errors import AGIFormerError
from agiformer.models import AGIFormer
from agiformer.nn.svf import expert_vectors, set_expert_vectors
from agiformer.precision import autocast

Tensor = torch.Tensor


@contextlib.contextmanager
def mixed_experts(model: nn.Module, experts: dict[str, dict[str, Tensor]], weights: Tensor):
    """The model with z = Σₖ weights[k] · z of expert k for the duration, its own z-vectors put back after."""
    own = expert_vectors(model)
    set_expert_vectors(model, list(experts.values()), weights.tolist())
    try:
        yield model
    finally:
        set_expert_vectors(model, own)


@torch.no_grad()
def pooled_states(model: nn.Module, x: Tensor, *, precision: str = "fp32") -> Tensor:
    """The first pass: the mean over positions of the model's final normed states, (B, D)."""
    captured = {}
    norm = model.final_norm if isinstance(model, AGIFormer) else model.norm
    handle = norm.register_forward_hook(lambda module, args, output: captured.update(states=output))
    try:
        with autocast(x.device, precision):
            model(x)
    finally:
        handle.remove()
    return captured["states"].float().mean(dim=1)


@dataclass
class Dispatcher:
    names: list[str]
    mean: Tensor        # (D,) feature standardisation, from the fitting windows
    scale: Tensor       # (D,)
    weight: Tensor      # (K, D)
    bias: Tensor        # (K,)

    def probabilities(self, features: Tensor) -> Tensor:
        """(B, D) pooled states → (B, K) expert probabilities."""
        z = (features - self.mean) / self.scale
        return torch.softmax(z @ self.weight.T + self.bias, dim=-1)


def fit_dispatcher(model: nn.Module, texts: dict[str, np.ndarray], *, seq_len: int, windows: int = 64,
                   seed: int = 0, precision: str = "fp32") -> Dispatcher:
    """A logistic regression from pooled states to which text (expert) a window came from, fitted on
    `windows` random windows of each text with L-BFGS."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    features, labels = [], []
    for k, data in enumerate(texts.values()):
        batch = random_windows(data, windows, seq_len, generator)
        features += [pooled_states(model, chunk.to(device), precision=precision).cpu() for chunk in batch.split(8)]
        labels += [k] * windows
    features, labels = torch.cat(features).double(), torch.tensor(labels)
    mean, scale = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mean) / scale
    weight = torch.zeros(len(texts), z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(texts), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(z @ weight.T + bias, labels) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return Dispatcher(list(texts), mean.float(), scale.float(), weight.detach().float(), bias.detach().float())


@torch.no_grad()
def dispatched_bpb(model: nn.Module, dispatcher: Dispatcher, experts: dict[str, dict[str, Tensor]],
                   data: np.ndarray, *, seq_len: int, precision: str = "fp32") -> dict:
    """Bits per byte of `data` in consecutive windows, each scored with the experts mixed as the
    dispatcher weighed the window before it (the first window: the model's own z-vectors); also the
    expert chosen most for the windows."""
    if dispatcher.names != list(experts):
        raise AGIFormerError(f"the dispatcher was fitted for experts {dispatcher.names}, got {list(experts)}")
    device = next(model.parameters()).device
    window_bits, n_bytes, choices, weights = [], 0, [], None
    for window in disjoint_windows(data, seq_len):
        x = window.unsqueeze(0).to(device)
        with mixed_experts(model, experts, weights) if weights is not None else contextlib.nullcontext():
            with autocast(device, precision):
                window_bits.append(model.loss(x).total_bits.item())
        n_bytes += x.numel()
        weights = dispatcher.probabilities(pooled_states(model, x, precision=precision).cpu())[0]
        choices.append(dispatcher.names[int(weights.argmax())])
    bits = sum(window_bits)
    return {"bits": bits, "bytes": n_bytes, "bpb": bits / max(n_bytes, 1), "window_bits": window_bits,
            "chosen": {name: choices.count(name) for name in dispatcher.names}}
