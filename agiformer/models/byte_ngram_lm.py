"""Byte n-gram LM: the small causal byte model whose next-byte entropy places patch boundaries (as BLT's
entropy model does, Pagnoni et al. 2024): the entropy model that `patching = "entropy"` AGIFORMER models read.

Byte t is predicted from the K = context_bytes bytes before it and from nothing else: the embedding of
byte t−1 plus hashed n-gram embeddings (orders 2 … K) of bytes t−K … t−1, then pre-norm residual SwiGLU
MLPs, RMSNorm and a linear head. Being local, its forward over a sequence equals `next_logits` of each
position's K-byte history: generation keeps only the last K bytes (constant memory, exact), and the
entropy after a byte depends on the K bytes ending there and on nothing further back.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from agiformer.models.config import ConfigMixin
from agiformer.models.outputs import LossOutput, next_byte_loss
from agiformer.models.pretrained import load_model, save_model
from agiformer.models.streaming import inference, sample_byte
from agiformer.nn.mlp import SwiGLU
from agiformer.nn.ngram import ByteNgramEmbedding
from agiformer.ops import NO_BYTE, histories


@dataclass
class ByteNgramLMConfig(ConfigMixin):
    model_type = "byte-ngram"
    d_model: int = 128
    context_bytes: int = 6              # K: bytes of history per prediction; n-gram orders 2 … K
    buckets: int = 16384                # rows of the n-gram table per order
    n_layers: int = 2
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6

    def __post_init__(self):
        self.check_types()
        self.check(min(self.d_model, self.buckets, self.n_layers) >= 1 and self.context_bytes >= 2
                   and self.mlp_ratio > 0 and self.norm_eps > 0, "d_model, buckets and n_layers must be ≥ 1, "
                   f"context_bytes ≥ 2 (order 1 is the byte embedding), mlp_ratio and norm_eps > 0, got {self}")


class ByteNgramLM(nn.Module):
    config_class = ByteNgramLMConfig

    def __init__(self, config: ByteNgramLMConfig):
        super().__init__()
        self.config = config
        self.byte_embed = nn.Embedding(257, config.d_model)  # 256 = NO_BYTE: before the start of the text
        self.ngrams = ByteNgramEmbedding(dim=config.d_model, max_order=config.context_bytes, buckets=config.buckets)
        self.blocks = nn.ModuleList(  # each block adds mlp(norm(x)) to x: pre-norm residual
            nn.Sequential(nn.RMSNorm(config.d_model, eps=config.norm_eps),
                          SwiGLU(config.d_model, int(config.mlp_ratio * config.d_model)))
            for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.head = nn.Linear(config.d_model, 256)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def resolve(self, plasticity, effort):
        return plasticity, effort  # no memory and no reasoning loop: both are accepted and ignored

    def next_logits(self, history: torch.Tensor) -> torch.Tensor:
        """history (..., K) of bytes (256 = none), most recent last → logits (..., 256) of the byte after it."""
        if history.shape[-1] != self.config.context_bytes:
            raise ValueError(f"expected histories of {self.config.context_bytes} bytes, got shape {tuple(history.shape)}")
        x = self.byte_embed(history[..., -1]) + self.ngrams(history)
        for block in self.blocks:
            x = x + block(x)
        return self.head(self.norm(x))

    def histories(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L + 1, K): [:, t] holds bytes t−K … t−1 of x (NO_BYTE before its start), for t = 0 … L."""
        if x.dim() != 2 or x.shape[1] < 1:
            raise ValueError(f"expected bytes of shape (B, L) with L ≥ 1, got {tuple(x.shape)}")
        return histories(x, self.config.context_bytes)

    def forward(self, x: torch.Tensor, *, plasticity=None, effort=None) -> torch.Tensor:
        """Logits (B, L, 256); logits[:, t] predicts byte t from bytes t−K … t−1."""
        return self.next_logits(self.histories(x)[:, :-1])

    def entropies(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L + 1) bits: [:, t] is the entropy of the distribution of byte t given the K bytes before it, for
        t = 0 … L; a high value after byte t − 1 is where a patcher starts a new patch."""
        logits = self.next_logits(self.histories(x))
        log_p = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        return -(log_p.exp() * log_p).sum(-1) / math.log(2)

    def loss(self, x: torch.Tensor, *, plasticity=None, effort=None) -> LossOutput:
        return next_byte_loss(self(x), x)

    def generate(self, prompt: bytes, max_new_bytes: int = 256, *, temperature: float = 1.0, top_k=None, top_p=None,
                 effort=None, plasticity=None, seed: int | None = None) -> Iterator[int]:
        device = next(self.parameters()).device
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        K = self.config.context_bytes
        history = collections.deque([NO_BYTE] * K + list(prompt[-K:]), maxlen=K)  # all the model ever reads
        for _ in range(max_new_bytes):
            with inference(self):
                logits = self.next_logits(torch.tensor(list(history), device=device))
            byte = sample_byte(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            yield byte
            history.append(byte)

    def save_pretrained(self, directory: str | Path) -> None:
        save_model(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location="cpu") -> "ByteNgramLM":
        return load_model(directory, expected=cls, map_location=map_location)
