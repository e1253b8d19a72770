"""Deterministic train/val/test assignment of documents from a hash of their bytes.

A document's split depends only on its own bytes, so adding or removing other documents never
moves it, and identical documents always share a split (no duplicate leaks from train to test).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from agiformer.data.manifest import SPLITS
from agiformer.errors import AGIFormerError

DEFAULT_FRACTIONS = (0.90, 0.05, 0.05)

SPLIT_RULE = (
    "u = first 8 bytes of sha256(document) as a big-endian fraction of 2**64; "
    "train if u < f_train, val if u < f_train + f_val, else test; identical documents share a split. "
    "With >= 3 distinct documents, each empty split (checked in train, val, test order) takes the distinct "
    "document whose u is nearest its interval (ties: smaller u, then smaller digest) from a split that holds "
    ">= 2 distinct documents."
)


def document_digest(document: bytes) -> bytes:
    return hashlib.sha256(document).digest()


def hash_fraction(digest: bytes) -> float:
    return int.from_bytes(digest[:8], "big") / 2**64


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = [float(f) for f in fractions]
    if len(values) != 3 or min(values) <= 0 or abs(sum(values) - 1.0) > 1e-9:
        raise AGIFormerError(
            f"split fractions must be three positive numbers (train, val, test) that sum to 1, got {tuple(fractions)}"
        )
    train, val, test = values
    return train, val, test


def _intervals(fractions: tuple[float, float, float]) -> list[tuple[float, float]]:
    train, val, _ = fractions
    return [(0.0, train), (train, train + val), (train + val, 1.0)]


def _distance(u: float, interval: tuple[float, float]) -> float:
    low, high = interval
    return max(low - u, u - high, 0.0)


def assign_splits(digests: Sequence[bytes], fractions: tuple[float, float, float]) -> list[str]:
    """The split of each document, given its sha256 digest (see ``SPLIT_RULE``).

    b"a", b"b" and b"c" all hash into train (u = 0.79, 0.24, 0.18); the fill rule then moves
    b"a" to val and b"b" to test:

    >>> assign_splits([document_digest(t) for t in (b"a", b"b", b"c")], DEFAULT_FRACTIONS)
    ['val', 'test', 'train']
    """
    intervals = _intervals(fractions)
    position = {digest: hash_fraction(digest) for digest in digests}
    split_of = {
        digest: next((i for i, (_, high) in enumerate(intervals) if u < high), len(SPLITS) - 1)
        for digest, u in position.items()
    }
    if len(position) >= len(SPLITS):
        for empty in range(len(SPLITS)):
            sizes = [0] * len(SPLITS)
            for index in split_of.values():
                sizes[index] += 1
            if sizes[empty]:
                continue
            donor = min(
                (digest for digest, index in split_of.items() if sizes[index] >= 2),
                key=lambda digest: (_distance(position[digest], intervals[empty]), position[digest], digest),
            )
            split_of[donor] = empty
    return [SPLITS[split_of[digest]] for digest in digests]
