"""Variable-length patches: where they end, and the index arithmetic that places bytes in them.

A patching is a boolean `ends` (B, L): ends[b, t] says that a patch ends after byte t, so byte t + 1
starts a new one. Every rule here decides ends[b, t] from bytes ≤ t: which patch a byte belongs to is
then known before the byte is read, and a model can predict it from the patches before.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

Tensor = torch.Tensor


def spacelike(x: Tensor) -> Tensor:
    """SpaceByte's word separators: ASCII bytes that are neither letters nor digits (a UTF-8 lead or
    continuation byte is part of a word; 256, no byte, is not a separator)."""
    letter = ((x >= 65) & (x <= 90)) | ((x >= 97) & (x <= 122))
    digit = (x >= 48) & (x <= 57)
    return (x < 128) & ~letter & ~digit


def word_ends(x: Tensor) -> Tensor:
    """A patch ends after the first separator following a word: "the cat, sat" → "the ", "cat,", " sat"."""
    separator = spacelike(x)
    previous = torch.cat([torch.zeros_like(separator[:, :1]), separator[:, :-1]], dim=1)
    return separator & ~previous


def threshold_ends(entropy: Tensor, previous_entropy: Tensor, threshold: float, rule: str) -> Tensor:
    """BLT's boundary rules on next-byte entropies (bits): `entropy[:, t]` is the entropy of byte t + 1
    given bytes ≤ t, `previous_entropy[:, t]` that of byte t. "global": the next byte is hard to
    predict; "monotonic": it is harder than the one before."""
    if rule == "global":
        return entropy > threshold
    if rule == "monotonic":
        return entropy - previous_entropy > threshold
    raise ValueError(f"unknown boundary rule {rule!r}; use 'global' or 'monotonic'")


def cap_patch_length(natural_ends: Tensor, max_bytes: int) -> Tensor:
    """`natural_ends` plus the ends that keep every patch ≤ max_bytes bytes long.

    Between two natural ends the forced ones fall every max_bytes bytes, counted from the byte after
    the first: no sequential scan is needed.
    """
    B, L = natural_ends.shape
    positions = torch.arange(L, device=natural_ends.device).expand(B, L)
    begins = torch.cat([torch.ones_like(natural_ends[:, :1]), natural_ends[:, :-1]], dim=1)
    segment_start = torch.where(begins, positions, torch.zeros_like(positions)).cummax(dim=1).values
    return natural_ends | ((positions - segment_start + 1) % max_bytes == 0)


def naive_cap_patch_length(natural_ends: Tensor, max_bytes: int) -> Tensor:
    """Reference: walk the bytes, counting the current patch's length."""
    ends = natural_ends.clone()
    for row in ends:
        length = 0
        for t in range(len(row)):
            length += 1
            if length == max_bytes:
                row[t] = True
            if row[t]:
                length = 0
    return ends


class PatchLayout(NamedTuple):
    """Where each byte lies: patch `index[b, t]`, position `offset[b, t]` in it. Sequence b has
    `counts[b]` patches, the last maybe unfinished; `last[b, k]` is the final byte of patch k and
    `lengths[b, k]` its length (0 past counts[b])."""

    ends: Tensor     # (B, L) bool
    index: Tensor    # (B, L) long
    offset: Tensor   # (B, L) long
    counts: Tensor   # (B,) long
    last: Tensor     # (B, N) long, N = counts.max()
    lengths: Tensor  # (B, N) long


def patch_layout(ends: Tensor) -> PatchLayout:
    B, L = ends.shape
    index = ends.long().cumsum(dim=1) - ends.long()
    positions = torch.arange(L, device=ends.device).expand(B, L)
    begins = torch.cat([torch.ones_like(ends[:, :1]), ends[:, :-1]], dim=1)
    offset = positions - torch.where(begins, positions, torch.zeros_like(positions)).cummax(dim=1).values
    counts = index[:, -1] + 1
    N = int(counts.max())
    last = torch.zeros(B, N, dtype=torch.long, device=ends.device).scatter_reduce(
        1, index, positions, reduce="amax", include_self=False)
    lengths = torch.zeros(B, N, dtype=torch.long, device=ends.device).scatter_add(1, index, torch.ones_like(index))
    return PatchLayout(ends, index, offset, counts, last, lengths)


def fixed_ends(shape: tuple[int, int], patch_size: int, device=None) -> Tensor:
    """Ends of fixed patches: after every patch_size-th byte."""
    return (torch.arange(shape[1], device=device) % patch_size == patch_size - 1).expand(shape)
