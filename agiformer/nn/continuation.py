"""In-context continuations as features of the byte head: a copy memory with no weights to train.

For each order n, the byte that followed the last earlier occurrence of the n bytes before this one
(`agiformer.ops.byte_continuation`) is embedded, and the embeddings are summed: a name or a number
seen once anywhere before in the sequence is offered as the next byte when its context recurs.
"""

from __future__ import annotations

import torch
from torch import nn

from agiformer.ops import (
    NO_CONTINUATION, continuation_ids, embedding_sum, continuation_step, continuation_table, continuation_write,
)

CONTINUATION_BUCKETS = 1 << 18  # contexts per order in the streaming table (int16: 512 KiB per order and sequence)


class ContinuationEmbedding(nn.Module):
    def __init__(self, *, dim: int, orders: tuple[int, ...], buckets: int = CONTINUATION_BUCKETS):
        super().__init__()
        self.orders, self.buckets = tuple(orders), buckets
        self.table = nn.Embedding(len(self.orders) * (NO_CONTINUATION + 1), dim)
        nn.init.normal_(self.table.weight, std=len(self.orders) ** -0.5)

    def ids(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C) continuation of every position of bytes x (B, L), one per order."""
        return torch.stack([continuation_ids(x, order, self.buckets) for order in self.orders], dim=-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (..., C) → (..., dim)."""
        offsets = torch.arange(len(self.orders), device=ids.device) * (NO_CONTINUATION + 1)
        return embedding_sum(ids + offsets, self.table.weight)

    # streaming: one table per order, updated with every byte

    def start(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Tables after the bytes x (B, L)."""
        return [continuation_table(x, order, self.buckets) for order in self.orders]

    def step_ids(self, tables: list[torch.Tensor], history: torch.Tensor) -> torch.Tensor:
        """(B, C) continuations of the context `history` (B, K ≥ max order), most recent byte last."""
        return torch.stack([continuation_step(t, history, o) for t, o in zip(tables, self.orders)], dim=-1)

    def write(self, tables: list[torch.Tensor], history: torch.Tensor, byte: torch.Tensor) -> None:
        for table, order in zip(tables, self.orders):
            continuation_write(table, history, byte, order)
