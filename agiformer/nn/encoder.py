"""Causal patch encoder: bytes → one latent per patch of P bytes."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from agiformer.ops import NO_BYTE  # embedding index with a fixed zero vector: left padding before the first byte


class Patches(NamedTuple):
    latents: torch.Tensor  # (B, N, D)
    starts: torch.Tensor   # (N,) byte offset where each patch begins


class PatchEncoder(nn.Module):
    """Byte embedding, then Conv1d(kernel P + overlap, stride P) over the bytes left-padded by `overlap`.

    Latent n covers bytes [nP − overlap, nP + P − 1]: the seed v1 encoder is overlap 0, v2 is overlap 2.
    Only *left* context is ever added, so latent n never sees a byte of patch n + 1, the patch it is
    used to predict (the seed's symmetric padding did, defect D1).
    """

    def __init__(self, *, dim: int, patch_size: int = 4, overlap: int = 0):
        super().__init__()
        self.patch_size = patch_size
        self.overlap = overlap
        self.embed = nn.Embedding(257, dim, padding_idx=NO_BYTE)
        self.conv = nn.Conv1d(dim, dim, kernel_size=patch_size + overlap, stride=patch_size)

    def forward(self, x: torch.Tensor, left_context: torch.Tensor | None = None) -> Patches:
        """x: (B, L) bytes with L a multiple of P; left_context: (B, overlap) bytes before x, if any."""
        B, L = x.shape
        if L % self.patch_size:
            raise ValueError(f"encoder input length {L} is not a multiple of the patch size {self.patch_size}")
        if left_context is None:
            left_context = x.new_full((B, self.overlap), NO_BYTE)
        h = self.embed(torch.cat([left_context, x], dim=1)).transpose(1, 2)
        latents = self.conv(h).transpose(1, 2)
        return Patches(latents, torch.arange(0, L, self.patch_size, device=x.device))
