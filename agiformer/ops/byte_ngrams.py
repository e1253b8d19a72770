"""Hashed byte n-grams (as in BLT's hash n-gram embeddings, Pagnoni et al. 2024): an id per n-gram, from its bytes alone."""

from __future__ import annotations

import torch

NO_BYTE = 256              # the entry of a history before the first byte (the encoder's zero embedding row)
MULTIPLIER = 2654435761    # Knuth's multiplicative hash constant (odd, ≈ 2^32 / φ)
MODULUS = 2 ** 31 - 1      # a prime: the polynomial is reduced by it before mixing, so nothing overflows int64


def histories(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, L + 1, length): [:, t] holds the `length` bytes before position t of x (B, L), most recent
    last and NO_BYTE before the start, for t = 0 … L."""
    return torch.nn.functional.pad(x, (length, 0), value=NO_BYTE).unfold(1, length, 1)


def ngram_ids(history: torch.Tensor, order: int, buckets: int) -> torch.Tensor:
    """Bucket in [0, buckets) of the n-gram formed by the last `order` entries of `history` (..., K).

    Entries are byte values 0…255 or 256 (no byte, before the start). The id depends on those
    `order` entries only, so an n-gram of bytes before position t never carries a later byte.
    """
    if not 1 <= order <= history.shape[-1]:
        raise ValueError(f"n-gram order {order} needs 1 ≤ order ≤ {history.shape[-1]} bytes of history")
    polynomial = torch.zeros(history.shape[:-1], dtype=torch.long, device=history.device)
    for byte in history[..., -order:].long().unbind(-1):
        polynomial = (polynomial * 257 + byte) % MODULUS
    return (polynomial * MULTIPLIER) % MODULUS % buckets
