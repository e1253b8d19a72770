"""Bits per byte over a whole split, in disjoint windows, so every byte is scored exactly once."""

from __future__ import annotations

import math

import numpy as np
import torch

from agiformer.data import disjoint_windows
from agiformer.precision import autocast


def count_characters(data: np.ndarray) -> int:
    """UTF-8 characters: every byte that is not a continuation byte (0b10xxxxxx)."""
    return int(((np.asarray(data) & 0xC0) != 0x80).sum())


@torch.no_grad()
def evaluate_bpb(model, data: np.ndarray, *, seq_len: int, batch_size: int = 8, plasticity: float | None = None,
                 effort: float | None = None, precision: str = "fp32", rank: int = 0, world_size: int = 1,
                 progress=None) -> dict:
    """Score `data` in consecutive windows of `seq_len` bytes (the last may be shorter).

    With world_size > 1 each rank scores every world_size-th batch and returns its partial sums;
    the caller all-reduces `bits` and `bytes`. Returns bits, bytes, bpb, bpc (bits per UTF-8
    character, meaningful for text) and mean_steps (reasoning steps per position, weighted by bytes;
    0 for a model without adaptive reasoning).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    windows = list(disjoint_windows(data, seq_len))
    full = [w for w in windows if len(w) == seq_len]
    batches = [torch.stack(full[i:i + batch_size]) for i in range(0, len(full), batch_size)]
    batches += [w.unsqueeze(0) for w in windows if len(w) < seq_len]
    bits, n_bytes, steps = 0.0, 0, 0.0
    for index, batch in enumerate(batches):
        if index % world_size == rank:
            with autocast(device, precision):
                out = model.loss(batch.to(device), plasticity=plasticity, effort=effort)
            bits += out.total_bits.item()
            n_bytes += out.n_bytes
            steps += float(out.mean_steps) * out.n_bytes
        if progress is not None:
            progress(batch.numel())
    model.train(was_training)
    characters = count_characters(data)
    return {"bits": bits, "bytes": n_bytes, "bpb": bits / max(n_bytes, 1), "mean_steps": steps / max(n_bytes, 1),
            "characters": characters, "bpc": bits / max(characters, 1) if world_size == 1 else math.nan}
