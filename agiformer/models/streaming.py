"""Incremental decoding with constant memory per byte.

A `ByteStream` carries exactly what the next byte needs: each block's memory state and rolling
KV cache, the length of the patch being decoded, the last bytes that the encoder, the head and the
patcher read, the head's state, and the tables of its in-context continuations where it reads them.
Completing a patch costs one encoder call and one backbone step; the prefix is never re-run.
"""

from __future__ import annotations

import contextlib

import torch

from agiformer.nn import NO_BYTE


@contextlib.contextmanager
def inference(model: torch.nn.Module):
    """Eval mode and no autograd for the duration of one call only: a generator that held them
    across `yield` would leak them into the caller's code."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class ByteStream:
    """Feed bytes with `push`, read the logits of the next byte with `next_logits`.

    Equal to the full forward: after pushing bytes b_0 … b_{t−1}, `next_logits()` is
    `model(b)[0, t]` up to rounding. The prompt is prefilled in one parallel pass.
    """

    def __init__(self, model, prompt: bytes = b"", *, plasticity: float | None = None, effort: float | None = None):
        self.model = model
        self.plasticity, self.effort = model.resolve(plasticity, effort)
        self.device = next(model.parameters()).device
        config, patcher = model.config, model.patcher
        self.kernel = config.patch_size + config.encoder_overlap
        self.window = max(model.head.history_bytes, self.kernel, patcher.context_bytes if patcher is not None else 0)
        with inference(model):
            if patcher is None:
                whole = len(prompt) // config.patch_size * config.patch_size
                latents = model.fixed_latents(self._tensor(prompt[:whole]))
            else:  # the prompt's finished patches; the unfinished one is pushed byte by byte below
                layout = model.patches(self._tensor(prompt)).layout if prompt else None
                finished = int(layout.ends.sum()) if prompt else 0
                whole = int(layout.last[0, finished - 1]) + 1 if finished else 0
                latents = model.encoder.pooled(self._tensor(prompt), layout.last[:, :finished],
                                               layout.lengths[:, :finished]) if finished \
                    else model.fixed_latents(self._tensor(b""))
            h, self.states, reasoning = model.backbone(model.context_latents(latents), plasticity=self.plasticity,
                                                       effort=self.effort)
        self.reasoning_steps = int(reasoning.steps[0, -1])  # of the position decoding the current patch
        self.recent = ([NO_BYTE] * self.window + list(prompt[:whole]))[-self.window:]
        self.continuations = model.head.continuations
        self.continuation_tables = self.continuations.start(self._tensor(prompt[:whole])) \
            if self.continuations is not None else None
        self._begin_patch(h[:, -1])
        for byte in prompt[whole:]:
            self.push(byte)

    def _tensor(self, values) -> torch.Tensor:
        return torch.tensor([list(values)], dtype=torch.long, device=self.device)

    def _begin_patch(self, latent: torch.Tensor) -> None:
        with inference(self.model):
            self.head_state = self.model.head.start(latent)
        self.pending = 0  # bytes of the current patch so far
        self._next = None  # (logits, head state after this byte) once computed

    def next_logits(self) -> torch.Tensor:
        """Logits (256,) of the next byte."""
        if self._next is None:
            with inference(self.model):
                history = self._tensor(self.recent[-self.model.head.history_bytes:])
                continuations = self.continuations.step_ids(self.continuation_tables, history) \
                    if self.continuations is not None else None
                self._next = self.model.head.step(self.head_state, history, self.pending, continuations)
        return self._next[0][0]

    def push(self, byte: int) -> None:
        """Append one byte to the sequence."""
        if not 0 <= byte < 256:
            raise ValueError(f"a byte must be in [0, 255], got {byte}")
        self.next_logits()
        self.head_state = self._next[1]
        self._next = None
        self.pending += 1
        history = self._tensor(self.recent[-self.model.head.history_bytes:])
        if self.continuations is not None:
            self.continuations.write(self.continuation_tables, history, self._tensor([byte])[0])
        self.recent = self.recent[1:] + [byte]
        if self._patch_ends():
            model = self.model
            with inference(model):
                latent = model.encoder.pooled(self._tensor(self.recent[-self.kernel:]), self._tensor([self.kernel - 1]),
                                              self._tensor([self.pending]))
                h, self.states, reasoning = model.backbone(latent.to(model.start_latent.dtype), self.states,
                                                           plasticity=self.plasticity, effort=self.effort)
            self.reasoning_steps = int(reasoning.steps[0, -1])
            self._begin_patch(h[:, -1])

    def _patch_ends(self) -> bool:
        """Whether the byte just pushed ends its patch: the patcher decides from the last bytes, and no
        patch grows past patch_size."""
        patcher = self.model.patcher
        if self.pending == self.model.config.patch_size:
            return True
        if patcher is None:
            return False
        with inference(self.model):
            return bool(patcher.natural_ends(self._tensor(self.recent[-patcher.context_bytes:]))[0, -1])


def sample_byte(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> int:
    """Greedy at temperature 0; otherwise softmax(logits / T) restricted to the top-k and the top-p nucleus."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be ≥ 0, got {temperature}")
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.detach().float().cpu()
    logits = (logits - logits.max()) / temperature  # the top logit stays 0: a tiny T gives -inf, never inf - inf
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be ≥ 1, got {top_k}")
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = logits.sort(descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
