"""Hashed n-gram embeddings of the bytes just before a position: local statistics by table lookup."""

from __future__ import annotations

import torch
from torch import nn

from agiformer.ops import embedding_sum, ngram_ids


class ByteNgramEmbedding(nn.Module):
    """Σ over n = 2 … max_order of E_n[hash(the last n bytes of history)], one table of `buckets` rows per order.

    A lookup costs no matmul: a byte-level layer gets the last few bytes at the price of a gather and
    the optimizer's update of the tables, which hold (orders − 1) × buckets × dim parameters.
    `sparse_gradient = True` makes the table's gradient the rows looked up only (a sparse tensor): the
    trainer sets it and makes the gradient dense again in a buffer it keeps (`SparseRowGradients`).
    """

    def __init__(self, *, dim: int, max_order: int, buckets: int = 16384):
        super().__init__()
        if max_order < 2:
            raise ValueError(f"max_order must be ≥ 2 (order 1 is the byte embedding itself), got {max_order}")
        self.max_order, self.buckets = max_order, buckets
        self.sparse_gradient = False
        self.table = nn.Embedding((max_order - 1) * buckets, dim)
        nn.init.normal_(self.table.weight, std=(max_order - 1) ** -0.5)  # the sum starts at unit variance, like a byte embedding

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """history (..., K ≥ max_order) of bytes (256 = none), most recent last → (..., dim)."""
        ids = torch.stack([ngram_ids(history, order, self.buckets) + (order - 2) * self.buckets
                           for order in range(2, self.max_order + 1)], dim=-1)
        return embedding_sum(ids, self.table.weight, sparse_gradient=self.sparse_gradient)
