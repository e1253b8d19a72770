"""Causal patch encoder: bytes → one latent per patch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from agiformer.ops import NO_BYTE  # embedding index with a fixed zero vector: left padding before the first byte


class Patches(NamedTuple):
    latents: torch.Tensor  # (B, N, D)
    starts: torch.Tensor   # (N,) byte offset where each patch begins


class PatchEncoder(nn.Module):
    """Byte embedding, then Conv1d(kernel P + overlap, stride P) over the bytes left-padded by `overlap`.

    Latent n covers bytes [nP − overlap, nP + P − 1]: the seed v1 encoder is overlap 0, v2 is overlap 2.
    Only *left* context is ever added, so latent n never sees a byte of patch n + 1, the patch it is
    used to predict (the seed's symmetric padding did, defect D1).

    Patches of other lengths (`pooled`, at most P bytes) use the same kernel right-aligned on the
    patch's last byte, its taps before the patch's first byte − overlap set to zero: on fixed patches
    of P bytes that is exactly the convolution, which `forward` computes faster.
    """

    def __init__(self, *, dim: int, patch_size: int = 4, overlap: int = 0):
        super().__init__()
        self.patch_size = patch_size
        self.overlap = overlap
        self.embed = nn.Embedding(257, dim, padding_idx=NO_BYTE)
        self.conv = nn.Conv1d(dim, dim, kernel_size=patch_size + overlap, stride=patch_size)

    def forward(self, x: torch.Tensor) -> Patches:
        """x: (B, L) bytes from the start of a sequence, L a multiple of P."""
        B, L = x.shape
        if L % self.patch_size:
            raise ValueError(f"encoder input length {L} is not a multiple of the patch size {self.patch_size}")
        h = self.embed(F.pad(x, (self.overlap, 0), value=NO_BYTE)).transpose(1, 2)
        latents = self.conv(h).transpose(1, 2)
        return Patches(latents, torch.arange(0, L, self.patch_size, device=x.device))

    def pooled(self, x: torch.Tensor, last: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Latents (B, N, D) of the patches of x (B, L) ending at bytes `last` (B, N), `lengths` (B, N) ≤ P long."""
        (B, N), D, W = last.shape, self.conv.out_channels, self.conv.kernel_size[0]
        embedded = self.embed(F.pad(x, (W - 1, 0), value=NO_BYTE))  # byte t at row t + W − 1
        taps = torch.arange(W, device=x.device)
        rows = (last.unsqueeze(-1) + taps).reshape(B, N * W, 1).expand(-1, -1, D)  # tap i reads byte last − W + 1 + i
        windows = embedded.gather(1, rows).view(B, N, W, D)
        windows = windows * (taps >= self.patch_size - lengths.unsqueeze(-1)).unsqueeze(-1).to(windows.dtype)
        weight = self.conv.weight.permute(0, 2, 1).reshape(D, W * D)
        return F.linear(windows.reshape(B, N, W * D), weight, self.conv.bias)
