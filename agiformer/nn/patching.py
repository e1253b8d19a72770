"""Patchers: where AGIFORMER's patches end, decided causally from the bytes read so far.

Each patcher maps bytes x (B, L) to `natural_ends(x)` (B, L), the ends its rule places (the model adds
the ones that cap a patch's length), and reads only the last `context_bytes` bytes up to byte t to
decide ends[:, t]: a stream keeps that many bytes and gets the same decisions as the whole sequence.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from agiformer.nn.ngram import ByteNgramEmbedding
from agiformer.ops import histories
from agiformer.ops.patching import threshold_ends, word_ends


class SpacePatcher(nn.Module):
    """SpaceByte: a patch ends after the first separator that follows a word (`word_ends`)."""

    context_bytes = 2

    def natural_ends(self, x: torch.Tensor) -> torch.Tensor:
        return word_ends(x)

    def boundary_scores(self, x: torch.Tensor) -> None:
        """Word ends are decided by the byte itself: no score to draw."""
        return None


class EntropyPatcher(nn.Module):
    """BLT: a patch ends where a small frozen byte LM finds the next byte hard to predict.

    `model` is a local byte LM (`agiformer.models.ByteNgramLM`) with `context_bytes` K and
    `entropies(x)`; it runs in float32 whatever the autocast, so a boundary does
    not move with the training precision.
    """

    def __init__(self, model: nn.Module, *, threshold: float, rule: str = "global"):
        super().__init__()
        self.model = model.requires_grad_(False)
        self.threshold, self.rule = threshold, rule
        self.context_bytes = model.config.context_bytes + 1  # the entropies at t and at t − 1

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()  # frozen: always in inference mode
        return self

    def entropies(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L + 1) bits: [:, t] is the entropy of byte t given the bytes before it."""
        with torch.autocast(x.device.type, enabled=False), torch.no_grad():
            return self.model.entropies(x)

    def natural_ends(self, x: torch.Tensor) -> torch.Tensor:
        entropy = self.entropies(x)
        return threshold_ends(entropy[:, 1:], entropy[:, :-1], self.threshold, self.rule)

    def boundary_scores(self, x: torch.Tensor) -> dict:
        """What placed each boundary: (B, L) values, the entropy of the byte after each byte."""
        return {"name": "entropy of the next byte (bits)", "threshold": self.threshold, "rule": self.rule,
                "values": self.entropies(x)[:, 1:]}


def straight_through(confidence: torch.Tensor) -> torch.Tensor:
    """Exactly 1 in the forward, the gradient of `confidence` in the backward (H-Net's confidence scaling)."""
    return (confidence - confidence.detach()) + 1  # the difference first: exactly 0, whatever the rounding of 1 + c


class LearnedPatcher(nn.Module):
    """H-Net's routing module (Hwang, Wang, Gu 2025), made causal for a model that predicts a patch
    from the patches before it: the boundary after byte t has probability
    p_t = (1 − cos(q r_t, k r_{t−1})) / 2, where r_t represents the last `context_bytes` bytes up to t
    (a byte embedding plus hashed n-grams), and a patch ends after t where p_t > 1/2.

    The decision gets its gradient through the byte head, whose context for byte t + 1 is scaled by
    `straight_through(p_t or 1 − p_t)`, and from the ratio loss (`ratio_loss`) that holds the mean
    patch length at its target.
    """

    def __init__(self, *, dim: int = 64, context_bytes: int = 4, buckets: int = 16384):
        super().__init__()
        self.context_bytes = context_bytes + 1  # r_t and r_{t−1}
        self.order = context_bytes
        self.byte_embed = nn.Embedding(257, dim)
        self.ngrams = ByteNgramEmbedding(dim=dim, max_order=context_bytes, buckets=buckets)
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        for projection in (self.query, self.key):  # as in H-Net: start from the plain cosine of adjacent states
            nn.init.eye_(projection.weight)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) probability of a boundary after each byte."""
        context = histories(x, self.order)                 # [:, t] ends at byte t − 1
        r = self.byte_embed(context[..., -1]) + self.ngrams(context)
        q, k = self.query(r[:, 1:]), self.key(r[:, :-1])  # r_t for t = 0 … L − 1, and r_{t−1}
        dtype = torch.promote_types(q.dtype, torch.float32)  # bf16 up, float64 kept
        return (1 - F.cosine_similarity(q.to(dtype), k.to(dtype), dim=-1)) / 2

    def natural_ends(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities(x) > 0.5

    def boundary_scores(self, x: torch.Tensor) -> dict:
        """What placed each boundary: (B, L) values, the probability of a boundary after each byte."""
        return {"name": "boundary probability", "threshold": 0.5, "rule": "global", "values": self.probabilities(x)}


def ratio_loss(ends: torch.Tensor, probabilities: torch.Tensor, target_bytes: float) -> torch.Tensor:
    """H-Net's ratio loss: N/(N−1) · ((N−1)·F·G + (1−F)(1−G)) with F the fraction of bytes that end a
    patch, G the mean boundary probability and N the target mean patch length; its minimum, 1, is
    where F = G = 1/N."""
    n = target_bytes
    f, g = ends.float().mean(), probabilities.mean()
    return n / (n - 1) * ((n - 1) * f * g + (1 - f) * (1 - g))
