"""Byte heads: from the latent at backbone position n, the P byte logits of patch n.

Both heads share one interface:
- forward(h (B, N, D), history (B, N, P, K), continuations (B, N, P, C) | None) → logits
  (B, N, P, 256), teacher-forced, where history[..., j, :] are the K = `history_bytes` bytes
  before byte j of the patch, most recent last (NO_BYTE before the first byte of the sequence),
  and continuations its in-context continuation ids (`ContinuationEmbedding`, heads that read them);
- start(h (B, D)) → state, then step(state, history (B, K), j, continuations (B, C) | None)
  → (logits (B, 256), state) to decode a patch one byte at a time.
"""

from __future__ import annotations

import torch
from torch import nn

from agiformer.nn.continuation import ContinuationEmbedding
from agiformer.nn.ngram import ByteNgramEmbedding


class GRUByteHead(nn.Module):
    """Intra-patch autoregressive head (seed v1): a GRU reads [latent, previous byte] at each byte.

    With ngram_order ≥ 2 the previous byte's embedding also gets the hashed n-grams of orders
    2 … ngram_order that end at it (`ByteNgramEmbedding`), so the head sees the last few bytes at
    once, across the patch boundary too. With continuation_orders it also gets, for each order n,
    the byte that followed the last earlier occurrence of the n bytes before it, anywhere in the
    sequence (`ContinuationEmbedding`).
    """

    def __init__(self, *, dim: int, patch_size: int, hidden: int = 256, ngram_order: int = 0,
                 ngram_buckets: int = 16384, continuation_orders: tuple[int, ...] = ()):
        super().__init__()
        self.patch_size = patch_size
        self.history_bytes = max(1, ngram_order, *continuation_orders)
        self.latent_proj = nn.Linear(dim, hidden)
        self.byte_embed = nn.Embedding(257, hidden)
        self.ngrams = ByteNgramEmbedding(dim=hidden, max_order=ngram_order, buckets=ngram_buckets) \
            if ngram_order >= 2 else None
        self.continuations = ContinuationEmbedding(dim=hidden, orders=continuation_orders) \
            if continuation_orders else None
        self.gru = nn.GRU(2 * hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 256)

    def embed_history(self, history: torch.Tensor, continuations: torch.Tensor | None) -> torch.Tensor:
        embedded = self.byte_embed(history[..., -1])
        if self.ngrams is not None:
            embedded = embedded + self.ngrams(history)
        if self.continuations is not None:
            embedded = embedded + self.continuations(continuations)
        return embedded

    def forward(self, h: torch.Tensor, history: torch.Tensor, continuations: torch.Tensor | None = None) -> torch.Tensor:
        B, N, P, _ = history.shape
        context = self.latent_proj(h).unsqueeze(2).expand(-1, -1, P, -1)
        inputs = torch.cat([context, self.embed_history(history, continuations).to(context.dtype)], dim=-1)
        outputs, _ = self.gru(inputs.reshape(B * N, P, -1))
        return self.out(outputs).view(B, N, P, 256)

    def start(self, h: torch.Tensor):
        return self.latent_proj(h), None

    def step(self, state, history: torch.Tensor, position: int, continuations: torch.Tensor | None = None):
        context, hidden = state
        inputs = torch.cat([context, self.embed_history(history, continuations).to(context.dtype)], dim=-1)
        output, hidden = self.gru(inputs.unsqueeze(1), hidden)
        return self.out(output.squeeze(1)), (context, hidden)


class MLPByteHead(nn.Module):
    """Parallel head (seed v2): all P bytes of a patch from the latent alone, independently."""

    def __init__(self, *, dim: int, patch_size: int, hidden: int = 512):
        super().__init__()
        self.patch_size = patch_size
        self.history_bytes = 1
        self.continuations = None  # reads no in-context continuations
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, patch_size * 256))

    def forward(self, h: torch.Tensor, history: torch.Tensor, continuations: torch.Tensor | None = None) -> torch.Tensor:
        B, N, _ = h.shape
        return self.net(h).view(B, N, self.patch_size, 256)

    def start(self, h: torch.Tensor):
        return self.net(h).view(h.shape[0], self.patch_size, 256)

    def step(self, state, history: torch.Tensor, position: int, continuations: torch.Tensor | None = None):
        return state[:, position], state

