"""Test-time adaptation while scoring (dynamic evaluation, Krause et al. 2018), done causally.

The text is scored in consecutive windows, in order. Each window is scored by the model as the
windows before it left it; then, with the bytes just scored, the model's SVF z-vectors
(`agiformer.nn.svf`, one scale per singular value of every linear layer) take `steps` optimizer steps.
No window's score depends on its own bytes or on anything after it, so the figure is one a decoder
could reproduce byte by byte, like a compressor that adapts to the text. The first step reuses the
scoring forward (its loss is taken before the step), so one step costs one forward and one backward
per window. The model is given back exactly as it came, weights and trainable flags; an SVF adapter
(`agiformer adapt --method svf`) adapts its own z-vectors further and gets them back after.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.nn.utils import parametrize

from agiformer.data import disjoint_windows
from agiformer.errors import AGIFormerError
from agiformer.nn.svf import add_svf, expert_vectors, remove_svf, scaled_layers, set_expert_vectors
from agiformer.precision import autocast


def dynamic_bpb(model, data: np.ndarray, *, seq_len: int, steps: int = 1, lr: float = 1e-3,
                plasticity: float | None = None, effort: float | None = None, precision: str = "fp32") -> dict:
    """Bits per byte of `data` scored window by window while adapting; returns bits, bytes, bpb, the
    bits of each window, and the seconds it took."""
    if steps < 1 or not lr > 0:
        raise AGIFormerError(f"test-time adaptation needs steps ≥ 1 and lr > 0, got {steps} and {lr}")
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    device = next(model.parameters()).device
    # an SVF adapter goes on adapting its own z-vectors (put back after); another model gets fresh ones
    expert = expert_vectors(model) if any(True for _ in scaled_layers(model)) else None
    if expert is None:
        if any(parametrize.is_parametrized(m) for m in model.modules()):
            raise AGIFormerError("test-time adaptation adapts SVF z-vectors: it takes a plain model or an SVF "
                                 "adapter, not a LoRA adapter")
        add_svf(model)
    else:
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(".z"))
    model.eval()  # no dropout: a window's score is a function of the windows before it
    try:
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        started, window_bits = time.perf_counter(), []
        for window in disjoint_windows(data, seq_len):
            x = window.unsqueeze(0).to(device)
            for step in range(steps):
                with autocast(device, precision):
                    out = model.loss(x, plasticity=plasticity, effort=effort)
                if step == 0:  # the score, taken before this window's own update
                    window_bits.append(out.total_bits.item())
                out.loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
    finally:
        if expert is None:
            remove_svf(model)
        else:
            set_expert_vectors(model, expert)
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
        model.train(was_training)
    bits, n_bytes = sum(window_bits), len(data)
    return {"bits": bits, "bytes": n_bytes, "bpb": bits / max(n_bytes, 1), "window_bits": window_bits,
            "seconds": seconds, "steps": steps, "lr": lr}
