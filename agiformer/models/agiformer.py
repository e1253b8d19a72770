"""AGIFORMER: a byte-level language model.

    bytes ─► PatchEncoder ─► [start latent, patch 0, …, patch N−2] ─► N × HybridBlock
          ─► AdaptiveReasoning ─► RMSNorm ─► byte head ─► logits of patch 0 … N−1

Backbone position n sees the start latent and patches < n, and its head predicts the bytes of
patch n, so every input byte is scored and logits[:, t] depends on bytes < t only. Patches are
P bytes each, or end where a patcher (`agiformer.nn.patching`: after words, at high next-byte
entropy, or where a learned router says) decides from the bytes up to there, at most P bytes long.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from agiformer.models.byte_ngram_lm import ByteNgramLM, ByteNgramLMConfig
from agiformer.models.config import AGIFormerConfig
from agiformer.models.streaming import ByteStream, sample_byte
from agiformer.nn import (
    AdaptiveReasoning, BlockState, GRUByteHead, HebbianMemory, HybridBlock, MLPByteHead, PatchEncoder,
)
from agiformer.nn.neural_memory import BlockNeuralMemory
from agiformer.nn.patching import EntropyPatcher, LearnedPatcher, SpacePatcher, ratio_loss, straight_through
from agiformer.nn.reasoning import ReasoningOutput, no_reasoning
from agiformer.models.outputs import LossOutput
from agiformer.models.pretrained import load_model, save_model
from agiformer.ops import histories
from agiformer.ops.patching import PatchLayout, cap_patch_length, fixed_ends, patch_layout
from agiformer.ops.token_discrepancy import token_discrepancy


class Patching(NamedTuple):
    layout: PatchLayout
    probabilities: torch.Tensor | None  # (B, L) a learned patcher's boundary probabilities


class ModelOutput(NamedTuple):
    logits: torch.Tensor           # (B, L, 256)
    reasoning: ReasoningOutput     # steps / ponder cost per backbone position
    patching: Patching | None      # where the patches end, unless they are fixed


class AGIFormer(nn.Module):
    config_class = AGIFormerConfig

    def __init__(self, config: AGIFormerConfig):
        super().__init__()
        self.config = c = config
        self.encoder = PatchEncoder(dim=c.d_model, patch_size=c.patch_size, overlap=c.encoder_overlap)
        self.start_latent = nn.Parameter(torch.randn(c.d_model) * 0.02)
        self.blocks = nn.ModuleList(
            HybridBlock(dim=c.d_model, heads=c.n_heads, window=c.window,
                        memory=self._build_memory() if c.mixer != "attention" else None,
                        attention=c.mixer != "memory", fusion=c.fusion, mlp_ratio=c.mlp_ratio, dropout=c.dropout, rope_base=c.rope_base,
                        norm_eps=c.norm_eps)
            for _ in range(c.n_layers))
        self.reasoning = AdaptiveReasoning(dim=c.d_model, max_steps=c.reasoning_steps, mlp_ratio=c.mlp_ratio,
                                           act_threshold=c.act_threshold,
                                           effort_threshold_shift=c.effort_threshold_shift,
                                           halt_bias_init=c.halt_bias_init, norm_eps=c.norm_eps) \
            if c.reasoning_steps > 0 else None
        self.final_norm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.head = GRUByteHead(dim=c.d_model, patch_size=c.patch_size, hidden=c.head_hidden, ngram_order=c.head_ngrams,
                                ngram_buckets=c.head_ngram_buckets, continuation_orders=c.head_continuations) \
            if c.head == "gru" else MLPByteHead(dim=c.d_model, patch_size=c.patch_size, hidden=c.head_hidden)
        self.patcher = self._build_patcher()

    def _build_patcher(self) -> nn.Module | None:
        c = self.config
        if c.patching == "space":
            return SpacePatcher()
        if c.patching == "entropy":
            return EntropyPatcher(ByteNgramLM(ByteNgramLMConfig.from_dict(c.entropy_model)),
                                  threshold=c.entropy_threshold, rule=c.entropy_rule)
        if c.patching == "learned":
            return LearnedPatcher()
        return None

    def _build_memory(self) -> nn.Module:
        c = self.config
        if c.memory == "neural":
            return BlockNeuralMemory(dim=c.d_model, heads=c.n_heads, chunk_size=c.memory_chunk_size, write=c.memory_write)
        return HebbianMemory(dim=c.d_model, heads=c.n_heads, decay=c.memory_decay, chunk_size=c.memory_chunk_size,
                             effort_sharpening=c.effort_sharpens_memory)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def resolve(self, plasticity: float | None, effort: float | None) -> tuple[float, float]:
        """Fill in the config's values for None and check ranges."""
        plasticity = self.config.plasticity if plasticity is None else float(plasticity)
        effort = self.config.effort if effort is None else float(effort)
        if not 0 < plasticity <= 1:
            raise ValueError(f"plasticity must be in (0, 1], got {plasticity}")
        if not 0 <= effort <= 1:
            raise ValueError(f"effort must be in [0, 1], got {effort}")
        return plasticity, effort

    def backbone(self, latents: torch.Tensor, states: list[BlockState] | None = None, *,
                 plasticity: float, effort: float) -> tuple[torch.Tensor, list[BlockState], ReasoningOutput]:
        """Latents (B, N, D) → head inputs (B, N, D). Without states they start at position 0; with
        states (from an earlier call) they continue that sequence."""
        x, new_states = latents, []
        for i, block in enumerate(self.blocks):
            x, state = block(x, states[i] if states is not None else None, plasticity=plasticity, effort=effort)
            new_states.append(state)
        reasoning = self.reasoning(x, effort=effort) if self.reasoning is not None else no_reasoning(x)
        return self.final_norm(reasoning.z), new_states, reasoning

    def context_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Backbone inputs: the start latent, then the encoded patches' latents (B, N, D)."""
        start = self.start_latent.expand(latents.shape[0], 1, -1)
        return torch.cat([start, latents.to(start.dtype)], dim=1)

    def fixed_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Latents of the fixed patches of x (B, kP)."""
        if x.shape[1] == 0:
            return self.start_latent.new_zeros(x.shape[0], 0, self.config.d_model)
        return self.encoder(x).latents

    def patches(self, x: torch.Tensor) -> Patching:
        """Where the patches of x (B, L) end: the patcher's ends, and those capping a patch at P bytes."""
        probabilities = self.patcher.probabilities(x) if isinstance(self.patcher, LearnedPatcher) else None
        natural = probabilities > 0.5 if probabilities is not None else self.patcher.natural_ends(x)
        return Patching(patch_layout(cap_patch_length(natural, self.config.patch_size)), probabilities)

    def patch_ends(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) True at the last byte of each patch of x, in every patching mode."""
        if self.patcher is None:
            return fixed_ends(tuple(x.shape), self.config.patch_size)
        return self.patches(x).layout.ends

    def boundary_scores(self, x: torch.Tensor) -> dict | None:
        """What the patcher compared with its threshold after each byte of x (B, L): {name, threshold, rule,
        values (B, L)}; None where patches are fixed or end after words."""
        return self.patcher.boundary_scores(x) if self.patcher is not None else None

    def run(self, x: torch.Tensor, *, plasticity: float | None = None, effort: float | None = None) -> ModelOutput:
        if x.dim() != 2 or x.shape[1] < 1:
            raise ValueError(f"expected bytes of shape (B, L) with L ≥ 1, got {tuple(x.shape)}")
        plasticity, effort = self.resolve(plasticity, effort)
        L = x.shape[1]
        history = histories(x, self.head.history_bytes)[:, :L]  # bytes t−K … t−1 for each t
        continuations = self.head.continuations.ids(x) if self.head.continuations is not None else None
        if self.patcher is None:
            N = math.ceil(L / self.config.patch_size)  # the last patch is predicted, never encoded
            latents = self.fixed_latents(x[:, :(N - 1) * self.config.patch_size])
            h, _, reasoning = self.backbone(self.context_latents(latents), plasticity=plasticity, effort=effort)
            return ModelOutput(self.head(h, history, continuations), reasoning, None)
        patching = self.patches(x)
        layout = patching.layout
        encoded = layout.last.shape[1] - 1  # here too the last patch is only predicted
        latents = self.encoder.pooled(x, layout.last[:, :encoded], layout.lengths[:, :encoded])
        h, _, reasoning = self.backbone(self.context_latents(latents), plasticity=plasticity, effort=effort)
        if patching.probabilities is None:
            return ModelOutput(self.head(h, history, continuations, layout), reasoning, patching)
        # H-Net's confidence in the decision after byte t scales the context of byte t + 1: 1 in the forward
        p = patching.probabilities
        confidence = straight_through(torch.where(layout.ends, p, 1 - p)[:, :-1])
        scale = torch.cat([torch.ones_like(p[:, :1]), confidence], dim=1)
        return ModelOutput(self.head(h, history, continuations, layout, scale), reasoning, patching)

    def forward(self, x: torch.Tensor, *, plasticity: float | None = None, effort: float | None = None) -> torch.Tensor:
        """Logits (B, L, 256); logits[:, t] predicts byte t from bytes < t."""
        return self.run(x, plasticity=plasticity, effort=effort).logits

    def loss(self, x: torch.Tensor, *, plasticity: float | None = None, effort: float | None = None) -> LossOutput:
        out = self.run(x, plasticity=plasticity, effort=effort)
        logits = out.logits.to(torch.promote_types(out.logits.dtype, torch.float32))  # bf16 up, float64 kept
        nats = F.cross_entropy(logits.reshape(-1, 256), x.reshape(-1), reduction="sum")
        total_bits = nats / math.log(2)
        bpb = total_bits / x.numel()
        ponder, steps = out.reasoning.ponder, out.reasoning.steps.float()
        if out.patching is not None:  # positions past a sequence's last patch are padding
            real = torch.arange(ponder.shape[1], device=x.device) < out.patching.layout.counts.unsqueeze(1)
            ponder, steps = ponder[real], steps[real]
        loss = bpb + self.config.ponder_weight * ponder.mean()
        if out.patching is not None and out.patching.probabilities is not None:
            loss = loss + self.config.ratio_loss_weight * ratio_loss(
                out.patching.layout.ends, out.patching.probabilities, self.config.target_patch_bytes)
        if self.config.discrepancy_weight > 0:
            loss = loss + self.config.discrepancy_weight * token_discrepancy(logits, x, self.byte_codebook())
        return LossOutput(loss, bpb, total_bits, x.numel(), ponder.mean(), steps.mean())

    def byte_codebook(self) -> torch.Tensor:
        """The encoder's embeddings of the 256 bytes (256, D), scaled to a mean row norm of 1 so that the
        discrepancy's weight means the same as the embeddings grow; a constant of the loss (detached)."""
        rows = self.encoder.embed.weight[:256].detach()
        return rows / rows.norm(dim=-1).mean()

    def generate(self, prompt: bytes, max_new_bytes: int = 256, *, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, effort: float | None = None, plasticity: float | None = None,
                 seed: int | None = None) -> Iterator[int]:
        """Stream sampled bytes one at a time, with constant memory per byte (see `ByteStream`)."""
        stream = ByteStream(self, prompt, plasticity=plasticity, effort=effort)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for _ in range(max_new_bytes):
            byte = sample_byte(stream.next_logits(), temperature=temperature, top_k=top_k, top_p=top_p,
                               generator=generator)
            yield byte
            stream.push(byte)

    def save_pretrained(self, directory: str | Path) -> None:
        save_model(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, map_location: str | torch.device = "cpu") -> "AGIFormer":
        return load_model(directory, expected=cls, map_location=map_location)
