"""Byte heads: from the latent at backbone position n, the P byte logits of patch n.

Both heads share one interface:
- forward(h (B, N, D), history (B, L, K), continuations (B, L, C) | None, layout) → logits
  (B, L, 256), teacher-forced, where history[:, t] are the K = `history_bytes` bytes before byte t,
  most recent last (NO_BYTE before the first byte of the sequence), continuations its in-context
  continuation ids (`ContinuationEmbedding`, heads that read them), and `layout`
  (`agiformer.ops.patching.PatchLayout`) says which patch each byte is in; without one, patches are
  P = patch_size bytes each (a faster path), the last one cut short by the end of x;
- start(h (B, D)) → state, then step(state, history (B, K), j, continuations (B, C) | None)
  → (logits (B, 256), state) to decode a patch one byte at a time.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from agiformer.nn.continuation import ContinuationEmbedding
from agiformer.nn.ngram import ByteNgramEmbedding
from agiformer.ops import NO_BYTE, NO_CONTINUATION
from agiformer.ops.patching import PatchLayout


def fixed_patches(tensor: torch.Tensor, patch_size: int, value: int) -> torch.Tensor:
    """(B, L, ...) → (B, N, P, ...), padded with `value` to N = ⌈L / P⌉ whole patches."""
    B, L = tensor.shape[:2]
    N = -(-L // patch_size)
    padding = [0, 0] * (tensor.dim() - 2) + [0, N * patch_size - L]
    return F.pad(tensor, padding, value=value).view(B, N, patch_size, *tensor.shape[2:])


def per_patch_rnn(rnn: nn.RNNBase, inputs: torch.Tensor, layout: PatchLayout) -> torch.Tensor:
    """Run `rnn` over each patch's bytes from a fresh state: inputs (B, L, F) → outputs (B, L, H).

    The patches of the whole batch go in as one packed sequence: no Python loop over samples, and no
    step is computed for padding whatever the spread of patch lengths.
    """
    B, N = layout.lengths.shape
    real = torch.arange(N, device=inputs.device) < layout.counts.unsqueeze(1)
    row = (real.flatten().cumsum(0) - 1).view(B, N).gather(1, layout.index)  # each byte's patch among the real ones
    lengths = layout.lengths[real]
    padded = inputs.new_zeros(len(lengths), int(lengths.max()), inputs.shape[-1])
    padded = padded.index_put((row, layout.offset), inputs)
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True)
    return outputs[row, layout.offset]


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

    def forward(self, h: torch.Tensor, history: torch.Tensor, continuations: torch.Tensor | None = None,
                layout: PatchLayout | None = None, context_scale: torch.Tensor | None = None) -> torch.Tensor:
        """`context_scale` (B, L), if given, multiplies each byte's patch context (a learned patcher's
        straight-through confidence)."""
        B, L, _ = history.shape
        context = self.latent_proj(h)
        if layout is None:
            P = self.patch_size
            if continuations is not None:
                continuations = fixed_patches(continuations, P, NO_CONTINUATION)
            embedded = self.embed_history(fixed_patches(history, P, NO_BYTE), continuations)
            inputs = torch.cat([context.unsqueeze(2).expand(-1, -1, P, -1), embedded.to(context.dtype)], dim=-1)
            outputs, _ = self.gru(inputs.flatten(0, 1))
            return self.out(outputs.reshape(B, -1, outputs.shape[-1]))[:, :L]  # cut after: a strided input can take another kernel (bit-exact SVF at z = 1)
        context = context.gather(1, layout.index.unsqueeze(-1).expand(-1, -1, context.shape[-1]))
        if context_scale is not None:
            context = context * context_scale.unsqueeze(-1).to(context.dtype)
        inputs = torch.cat([context, self.embed_history(history, continuations).to(context.dtype)], dim=-1)
        return self.out(per_patch_rnn(self.gru, inputs, layout))

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

    def forward(self, h: torch.Tensor, history: torch.Tensor, continuations: torch.Tensor | None = None,
                layout: PatchLayout | None = None) -> torch.Tensor:
        B, N, _ = h.shape
        logits = self.net(h).view(B, N * self.patch_size, 256)
        if layout is None:
            return logits[:, :history.shape[1]]
        slot = layout.index * self.patch_size + layout.offset
        return logits.gather(1, slot.unsqueeze(-1).expand(-1, -1, 256))

    def start(self, h: torch.Tensor):
        return self.net(h).view(h.shape[0], self.patch_size, 256)

    def step(self, state, history: torch.Tensor, position: int, continuations: torch.Tensor | None = None):
        return state[:, position], state

