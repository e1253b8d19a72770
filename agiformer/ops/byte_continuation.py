"""In-context continuations: the byte that followed the last earlier occurrence of the current context.

For position t and order n, the context is the n bytes before t; its continuation is the byte that
followed the most recent earlier position with the same context (the same hash bucket of
`ngram_ids`), or NO_CONTINUATION where there is none. It is what PPM-style compressors and
induction heads copy: a name, a number or a phrase seen once is predicted when its start recurs,
at any distance, with no weights. The parallel form sorts the contexts once; the streaming form
keeps one table of `buckets` entries per order (constant memory, later writes overwrite), and
both give the same ids, collisions included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agiformer.ops.byte_ngrams import NO_BYTE, ngram_ids

NO_CONTINUATION = 256  # the id where a context never occurred before


def context_ids(x: torch.Tensor, order: int, buckets: int) -> torch.Tensor:
    """(B, L) bucket of the `order` bytes before each position (NO_BYTE before the start)."""
    history = F.pad(x, (order, 0), value=NO_BYTE).unfold(1, order, 1)[:, :x.shape[1]]
    return ngram_ids(history, order, buckets)


def sorted_contexts(x: torch.Tensor, order: int, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, positions): every flat position of x (B, L) sorted by its context's key (bucket, made
    distinct per row), and by position within a context; keys are in that sorted order."""
    B = x.shape[0]
    keys = (context_ids(x, order, buckets) + torch.arange(B, device=x.device)[:, None] * buckets).flatten()
    positions = torch.sort(keys, stable=True).indices
    return keys[positions], positions


def continuation_ids(x: torch.Tensor, order: int, buckets: int) -> torch.Tensor:
    """(B, L) continuation of each position's context in bytes x (B, L); depends on bytes < t only."""
    keys, positions = sorted_contexts(x, order, buckets)
    same = keys[1:] == keys[:-1]
    later, earlier = positions[1:][same], positions[:-1][same]  # each occurrence and the one just before it
    out = torch.full((x.numel(),), NO_CONTINUATION, dtype=x.dtype, device=x.device)
    out[later] = x.flatten()[earlier]  # the byte that followed the earlier occurrence of the context
    return out.view(x.shape)


def naive_continuation_ids(x: torch.Tensor, order: int, buckets: int) -> torch.Tensor:
    """Reference: walk each sequence with a dictionary from context bucket to the byte that followed."""
    contexts = context_ids(x, order, buckets).tolist()
    out = torch.full_like(x, NO_CONTINUATION)
    for b, row in enumerate(x.tolist()):
        seen: dict[int, int] = {}
        for t, byte in enumerate(row):
            out[b, t] = seen.get(contexts[b][t], NO_CONTINUATION)
            seen[contexts[b][t]] = byte
    return out


def initial_continuation_table(batch: int, buckets: int, device=None) -> torch.Tensor:
    return torch.full((batch, buckets), NO_CONTINUATION, dtype=torch.int16, device=device)


def continuation_step(table: torch.Tensor, history: torch.Tensor, order: int) -> torch.Tensor:
    """(B,) continuation of the context `history` (B, K ≥ order), most recent byte last."""
    bucket = ngram_ids(history, order, table.shape[1])
    return table.gather(1, bucket[:, None]).squeeze(1).long()


def continuation_write(table: torch.Tensor, history: torch.Tensor, byte: torch.Tensor, order: int) -> None:
    """Record in place that `byte` (B,) followed the context `history` (B, K)."""
    bucket = ngram_ids(history, order, table.shape[1])
    table.scatter_(1, bucket[:, None], byte[:, None].to(table.dtype))


def continuation_table(x: torch.Tensor, order: int, buckets: int) -> torch.Tensor:
    """The streaming table after bytes x (B, L): for each context bucket, the byte that followed its last occurrence."""
    table = initial_continuation_table(x.shape[0], buckets, device=x.device)
    if x.shape[1] == 0:
        return table
    keys, positions = sorted_contexts(x, order, buckets)
    last = torch.ones_like(keys, dtype=torch.bool)
    last[:-1] = keys[1:] != keys[:-1]  # the latest position of each context
    table.view(-1)[keys[last]] = x.flatten()[positions[last]].to(table.dtype)
    return table
