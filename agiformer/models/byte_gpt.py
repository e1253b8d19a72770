"""Byte GPT: the baseline AGIFORMER is measured against.

A plain decoder-only transformer over bytes (one position per byte): byte embedding, pre-norm
blocks of full causal attention (rotary q/k, `scaled_dot_product_attention`) and SwiGLU, RMSNorm,
tied-free output head. Generation keeps a KV cache that grows with the context, which is what
AGIFORMER's constant-size state is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
import torch.nn.functional as F

from agiformer.models.config import ConfigMixin
from agiformer.models.outputs import LossOutput, next_byte_loss
from agiformer.models.pretrained import load_model, save_model
from agiformer.models.streaming import inference, sample_byte
from agiformer.nn.mlp import SwiGLU
from agiformer.ops.window_attention import apply_rotary, rotary_angles


@dataclass
class ByteGPTConfig(ConfigMixin):
    model_type = "byte-gpt"
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    mlp_ratio: float = 4.0
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self):
        self.check_types()
        self.check(min(self.d_model, self.n_layers, self.n_heads) >= 1 and self.mlp_ratio > 0 and self.rope_base > 0
                   and self.norm_eps > 0, "d_model, n_layers and n_heads must be ≥ 1, mlp_ratio, rope_base and "
                   f"norm_eps > 0, got {self}")
        self.check(self.d_model % self.n_heads == 0 and (self.d_model // self.n_heads) % 2 == 0,
                   f"d_model {self.d_model} must split into n_heads {self.n_heads} heads of even size")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ByteGPTConfig):
        super().__init__()
        self.heads, self.head_dim, self.rope_base = config.n_heads, config.d_model // config.n_heads, config.rope_base
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None):
        B, L, D = x.shape
        start = cache[0].shape[2] if cache is not None else 0
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = rotary_angles(torch.arange(start, start + L, device=x.device), self.head_dim, base=self.rope_base,
                                 dtype=torch.promote_types(x.dtype, torch.float32))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        # with a cache, the new queries see every cached key; among themselves they are causal
        mask = torch.ones(L, start + L, dtype=torch.bool, device=x.device).tril(start)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if cache is None else mask,
                                             is_causal=cache is None)
        return self.out(out.transpose(1, 2).reshape(B, L, D)), (k, v)


class Block(nn.Module):
    def __init__(self, config: ByteGPTConfig):
        super().__init__()
        self.attention_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.attention = CausalSelfAttention(config)
        self.mlp_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mlp = SwiGLU(config.d_model, int(config.mlp_ratio * config.d_model))

    def forward(self, x, cache=None):
        attended, cache = self.attention(self.attention_norm(x), cache)
        x = x + attended
        return x + self.mlp(self.mlp_norm(x)), cache


class ByteGPT(nn.Module):
    config_class = ByteGPTConfig

    def __init__(self, config: ByteGPTConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(257, config.d_model)  # 256 = start of text, read before byte 0
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.head = nn.Linear(config.d_model, 256, bias=False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def resolve(self, plasticity, effort):
        return plasticity, effort  # no memory and no reasoning loop: both are accepted and ignored

    def _run(self, tokens: torch.Tensor, caches=None):
        x = self.embed(tokens)
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, caches[i] if caches is not None else None)
            new_caches.append(cache)
        return self.head(self.norm(x)), new_caches

    def forward(self, x: torch.Tensor, *, plasticity=None, effort=None) -> torch.Tensor:
        """Logits (B, L, 256); logits[:, t] predicts byte t from bytes < t (position 0 reads the start token)."""
        start = torch.full_like(x[:, :1], 256)
        return self._run(torch.cat([start, x[:, :-1]], dim=1))[0]

    def loss(self, x: torch.Tensor, *, plasticity=None, effort=None) -> LossOutput:
        return next_byte_loss(self(x), x)

    def generate(self, prompt: bytes, max_new_bytes: int = 256, *, temperature: float = 1.0, top_k=None, top_p=None,
                 effort=None, plasticity=None, seed: int | None = None) -> Iterator[int]:
        device = next(self.parameters()).device
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        tokens = torch.tensor([[256] + list(prompt)], device=device)
        with inference(self):
            logits, caches = self._run(tokens)
        for _ in range(max_new_bytes):
            byte = sample_byte(logits[0, -1], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            yield byte
            with inference(self):
                logits, caches = self._run(torch.tensor([[byte]], device=device), caches)

    def save_pretrained(self, directory: str | Path) -> None:
        save_model(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location="cpu") -> "ByteGPT":
        return load_model(directory, expected=cls, map_location=map_location)
