"""Neural long-term memory layer (Titans): per head, an MLP written at test time by its surprise.

Each chunk of C tokens is first read with weights that hold earlier chunks only, then written:
S ← η S − ∇_W Σ_t θ_t ‖M_W(k_t) − v_t‖², W ← (1 − α) W + S (see `agiformer.ops.neural_memory`).
Reading first keeps a token from seeing itself or anything later in its chunk.

Stability: a chunk's write is ONE gradient step on the sum of its C token losses. With unit keys
all alike (a repeated byte pattern), it scales the error along k by 1 − 2 Σ_t θ_t, so it overshoots
once Σ_t θ_t > 1 (1 + η with momentum). θ_t = (max_lr / C)·σ(·) keeps Σ_t θ_t ≤ max_lr whatever
the chunk size. Values are L2-normalised like keys so the memory's targets, and with them the
weights and the depth-2 curvature, do not grow with the input scale. Without these two, the
defaults (C = 64, θ = max_lr·σ(·)) diverge to NaN within 2,048 random inputs of standard
deviation 3 at depth 2. They are not enough for depth ≥ 2 once the gates are learned: as MAG on
SmolLM2 drove η to 0.99 and α to 1e-6 within 25 steps, a depth-2 memory's weights grew from 0.2 to
NaN within 160 tokens of one sequence (its curvature grows with its weights; momentum near 1 keeps
adding), where depth 1, a linear map whose curvature along unit keys is fixed, stays bounded.

Short convolution (Titans §4.4): q, k and v each pass a causal depthwise convolution over the last
`conv_kernel` positions after their projection, and it keeps the last conv_kernel − 1 projections in
the state. Queries and values start as the identity (the plain projections), keys as the previous
position: token t is written under the key of what came before it, so a query holding that same
context reads back what followed it (an induction head's lookup, in memory); training moves the taps.
key_span = s > 1 starts them as sums over s positions instead (q: t − s + 1 … t, k: t − s … t − 1),
so a key holds the last s tokens before what it stores: a hash-hop value's first token follows
" =", which ends every line, and only the tokens before it tell the lines apart (`python -m
experiments.mag_key_span`: 0 of 8 first answer tokens found with s = 1, 8 of 8 with s = 3).
key_form="concat" puts those s positions side by side instead (q: the convolution's outputs at
t, t − 1, …, t − s + 1; k: its outputs there, each already one position back), s·head_dim
dimensions per head: a sum of s linear maps of dim-dimensional states has rank ≤ dim, so a
least-squares map keyed by sums cannot hold apart more pairs than that, where hash-hop stores ~760
(1,024 tokens) to ~1,780 (2,048) beyond the window. Untrained, with SmolLM2's layer-4 states and s = 3,
the read brings back 94 % / 54 % of answer tokens at 1,024 / 2,048 tokens, against 26 % / 22 % for
the sum (`python -m experiments.mag_capacity`). Least-squares write only (keys and values differ in
size); the state keeps the last conv_kernel + s − 2 projections.

Associative start: q and k share one orthogonal projection, so from the first step a query finds
the keys of inputs like its own; v is orthogonal and out its transpose, so a read returns inputs as
they were stored; a depth-1 memory starts empty (zero weights; deeper ones need random weights for
their gradients). Measured in MAG on SmolLM2 (`python -m experiments.mag_lookup`): the needle's key
is a hash-hop query's most similar of ~700 for 74–78 % of answer tokens at layers 8 and 12, yet the
depth-1 read brings the needle's token back for only 0–4 %, where the least-squares map over the
same pairs would for 69/54 %: one gradient step per chunk does not converge when many keys share a
common direction, so the read is a blend.

write="least_squares" keeps that map instead (`agiformer.ops.least_squares_memory`): depth 1, the
sums Σ θ k kᵀ and Σ θ k vᵀ in the state, each chunk read through the ridge solution over all
earlier pairs. θ = σ(·) weighs a token's pair, α forgets; there is no momentum and no initial map
(an empty memory reads zero). Its fresh read brings the needle's token back for 63 % of answer
tokens at layer 8 (λ = 1e-3; 54 % at λ = 1e-2) and 57–65 % at layers 2–8 where the gradient write's
did for 0–4 % (`python -m experiments.mag_lookup --write least_squares --ridge 1e-3 [--layers ...]`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from agiformer.errors import AGIFormerError
from agiformer.ops.least_squares_memory import (
    LeastSquaresMemoryState, initial_least_squares_state, least_squares_memory_scan,
)
from agiformer.ops.neural_memory import NeuralMemoryState, initial_neural_memory_state, neural_memory_scan

WRITES = ("gradient", "least_squares")
KEY_FORMS = ("sum", "concat")
MemoryState = NeuralMemoryState | LeastSquaresMemoryState


def memory_problems(*, depth: int, chunk_size: int, conv_kernel: int, key_span: int, key_form: str, write: str,
                    ridge: float) -> list[str]:
    """What is wrong with a memory's keys (span, form, convolution) and write (kind, depth, ridge, chunk);
    empty when nothing is. The layer and the configs that build it (MAG's) check with this one function."""
    problems = []
    if write not in WRITES:
        problems.append(f"write must be one of {', '.join(WRITES)}, got {write!r}")
    if depth < 1 or chunk_size < 1:
        problems.append(f"depth and chunk_size must be ≥ 1, got {depth} and {chunk_size}")
    if not (ridge > 0 and math.isfinite(ridge)):
        problems.append(f"ridge must be > 0, got {ridge}")
    if write == "least_squares" and depth != 1:
        problems.append(f"the least_squares write fits a linear map: it needs depth 1, got {depth}")
    if conv_kernel < 1:
        problems.append(f"conv_kernel must be ≥ 1 (1: no convolution), got {conv_kernel}")
    if key_form not in KEY_FORMS:
        problems.append(f"key_form must be one of {', '.join(KEY_FORMS)}, got {key_form!r}")
    elif key_form == "sum" and not (key_span == 1 or 1 < key_span < conv_kernel):
        problems.append(f"a key summed over key_span positions before its own needs key_span 1 or between 2 and "
                        f"conv_kernel − 1 ({conv_kernel - 1}), got {key_span}")
    elif key_form == "concat" and (write != "least_squares" or key_span < 2 or conv_kernel < 2):
        problems.append(f"key_form 'concat' needs the least_squares write, key_span ≥ 2 and conv_kernel ≥ 2, "
                        f"got write {write!r}, key_span {key_span}, conv_kernel {conv_kernel}")
    return problems


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class NeuralMemory(nn.Module):
    """(B, L, dim) → (B, L, dim) with an explicit state: forward(x, state) → (y, state).

    Per head: q, k, v L2-normalised (bounds the surprise gradient whatever the input scale).
    Gates per token and head: θ = (max_lr / chunk_size)·σ(·) (learning rate; max_lr bounds a whole
    chunk's), η = σ(·) (momentum), α = σ(·) (forgetting); their biases start at σ(−2) ≈ 0.12 of
    the maximum so early writes are gentle, η = 0.9 so surprise persists over ~10 chunks, α = 0.01
    so the memory forgets slowly.
    Every sequence starts from the same learned initial weights and writes its own copy.
    depth ≥ 1 layers, hidden width head_dim·hidden_mult, silu between them.
    write="least_squares": see the module docstring; θ = σ(·) (no max_lr), ridge λ, depth 1 only.
    """

    def __init__(self, *, dim: int, heads: int = 1, head_dim: int | None = None, depth: int = 2,
                 hidden_mult: float = 2.0, chunk_size: int = 64, grad_chunks: int | None = None,
                 max_lr: float = 0.1, conv_kernel: int = 4, key_span: int = 1, key_form: str = "sum",
                 write: str = "gradient", ridge: float = 1e-2):
        super().__init__()
        problems = memory_problems(depth=depth, chunk_size=chunk_size, conv_kernel=conv_kernel, key_span=key_span,
                                   key_form=key_form, write=write, ridge=ridge)
        if grad_chunks is not None and grad_chunks < 1:
            problems.append(f"grad_chunks must be ≥ 1 or None, got {grad_chunks}")
        if head_dim is None and dim % heads:
            problems.append(f"dim {dim} is not divisible by heads {heads}; pass head_dim")
        if problems:
            raise AGIFormerError("neural memory: " + "; ".join(problems))
        head_dim = dim // heads if head_dim is None else head_dim
        hidden = int(head_dim * hidden_mult)
        if depth > 1 and hidden < 1:
            raise AGIFormerError(f"neural memory needs a hidden width ≥ 1 at depth {depth}, got {hidden}")
        self.dim, self.heads, self.head_dim, self.depth = dim, heads, head_dim, depth
        self.key_span, self.key_form = key_span, key_form
        self.key_dim = key_span * head_dim if key_form == "concat" else head_dim  # per head, for q and k
        self.chunk_size, self.grad_chunks, self.max_lr = chunk_size, grad_chunks, max_lr
        self.write, self.ridge = write, ridge
        inner = heads * head_dim
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.conv = None
        if conv_kernel > 1:
            self.conv = nn.Conv1d(3 * inner, 3 * inner, conv_kernel, groups=3 * inner, bias=False)
            nn.init.zeros_(self.conv.weight)
            summed = key_span if key_form == "sum" else 1  # concat: each side-by-side position is one tap
            with torch.no_grad():  # channels are q | k | v: q, v end at the position itself, k at the one before
                self.conv.weight[:inner, 0, conv_kernel - summed:] = 1.0
                self.conv.weight[inner:2 * inner, 0, conv_kernel - summed - 1:conv_kernel - 1] = 1.0
                self.conv.weight[2 * inner:, 0, -1] = 1.0
        self.lr_proj = nn.Linear(dim, heads)
        self.decay_proj = nn.Linear(dim, heads)
        gates = [(self.lr_proj, -2.0), (self.decay_proj, _logit(0.01))]
        if write == "gradient":
            self.momentum_proj = nn.Linear(dim, heads)
            gates.append((self.momentum_proj, _logit(0.9)))
        for proj, bias in gates:
            nn.init.normal_(proj.weight, std=0.02)
            nn.init.constant_(proj.bias, bias)
        nn.init.orthogonal_(self.q_proj.weight)
        nn.init.orthogonal_(self.v_proj.weight)
        with torch.no_grad():
            self.k_proj.weight.copy_(self.q_proj.weight)
            self.out_proj.weight.copy_(self.v_proj.weight.T)
        if write == "gradient":
            widths = [head_dim] + [hidden] * (depth - 1) + [head_dim]
            self.initial_weights = nn.ParameterList(
                nn.Parameter(torch.randn(heads, fan_in, fan_out) / math.sqrt(fan_in) if depth > 1
                             else torch.zeros(heads, fan_in, fan_out))
                for fan_in, fan_out in zip(widths[:-1], widths[1:]))

    def _state_dtype(self) -> torch.dtype:
        return torch.promote_types(self.q_proj.weight.dtype, torch.float32)

    def initial_state(self, batch_size: int) -> MemoryState:
        """One memory per sequence and head (B·heads rows): for the gradient write, copies of the
        learned initial weights ((B·heads, fan_in, fan_out) per layer); for least squares, empty sums."""
        dtype = self._state_dtype()
        if self.write == "least_squares":
            return initial_least_squares_state(batch_size * self.heads, self.key_dim, self.head_dim, dtype=dtype,
                                               device=self.q_proj.weight.device)
        return initial_neural_memory_state(tuple(
            w.to(dtype).unsqueeze(0).expand(batch_size, *w.shape).reshape(batch_size * self.heads, *w.shape[1:])
            for w in self.initial_weights))

    def project(self, x: torch.Tensor, recent: torch.Tensor | None = None, values: torch.Tensor | None = None
                ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """(q, k, v) before normalisation, after the short convolution, whose input starts with `recent`
        (the last projections before x); and the new `recent`. q and k are (B, L, heads·key_dim), each
        head's s positions side by side for key_form "concat"; v is (B, L, heads·head_dim), projecting
        `values` (B, L, dim) where given, x otherwise.
        recent=None is the sequence's start, padded with copies of its first projection, not zeros: a
        zero key has no direction, and normalising it multiplies its gradient by 1/eps (a 7e6 gradient
        norm in MAG training)."""
        projected = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x if values is None else values)], dim=-1)
        if self.conv is None:
            return projected.chunk(3, dim=-1), None
        earlier = self.key_span - 1 if self.key_form == "concat" else 0  # outputs before x's, to set beside them
        width = self.conv.kernel_size[0] - 1 + earlier
        if recent is None:
            recent = projected[:, :1].expand(-1, width, -1)
        projected = torch.cat([recent.to(projected.dtype), projected], dim=1)
        q, k, v = self.conv(projected.transpose(1, 2)).transpose(1, 2).chunk(3, dim=-1)
        if earlier:
            L, H = x.shape[1], self.heads
            q, k = (torch.stack([t[:, earlier - j:earlier - j + L] for j in range(self.key_span)], dim=2)
                    .unflatten(-1, (H, self.head_dim)).transpose(2, 3).flatten(2) for t in (q, k))
            v = v[:, earlier:]
        return (q, k, v), projected[:, -width:]

    def unit_projections(self, x: torch.Tensor, recent: torch.Tensor | None = None,
                         values: torch.Tensor | None = None
                         ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """(q, k, v) as the memory writes and reads them: `project`, then each head's vector unit
        length, in the state's dtype (at least float32), shaped as `project` returns them; and the new
        `recent`."""
        (q, k, v), recent = self.project(x, recent, values)
        dtype = torch.promote_types(x.dtype, self._state_dtype())
        return tuple(F.normalize(t.to(dtype).unflatten(-1, (self.heads, -1)), dim=-1).flatten(-2)
                     for t in (q, k, v)), recent

    def forward(self, x: torch.Tensor, state: MemoryState | None = None, values: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, MemoryState]:
        """x (B, L, dim) → (B, L, dim) and the state after it. values (B, L, dim): what the memory stores
        at each position (through v_proj), where it is not x itself."""
        B, L, _ = x.shape
        if values is not None and values.shape != x.shape:
            raise AGIFormerError(f"neural memory values must match the input's shape {tuple(x.shape)}, "
                                 f"got {tuple(values.shape)}")
        H, E = self.heads, self.head_dim
        if state is None:
            state = self.initial_state(B)
        elif not isinstance(state, LeastSquaresMemoryState if self.write == "least_squares" else NeuralMemoryState):
            raise AGIFormerError(f"a {type(state).__name__} does not belong to a neural memory with the "
                                 f"{self.write} write")
        rows = (state.keys if self.write == "least_squares" else state.weights[0]).shape[0]
        if rows != B * H:
            raise AGIFormerError(f"neural memory state holds {rows} sequences × heads, the input needs {B} × {H}")
        dtype = torch.promote_types(x.dtype, self._state_dtype())

        def per_head(t: torch.Tensor) -> torch.Tensor:          # (B, L, H·E) → (B·H, L, E)
            return t.view(B, L, H, -1).transpose(1, 2).reshape(B * H, L, -1)

        def gate(proj: nn.Linear) -> torch.Tensor:              # (B, L, dim) → (B·H, L) in [0, 1]
            return torch.sigmoid(proj(x).to(dtype)).transpose(1, 2).reshape(B * H, L)

        (q, k, v), recent = self.unit_projections(x, state.recent, values)
        q, k, v = (per_head(t) for t in (q, k, v))
        if self.write == "least_squares":
            y, state = least_squares_memory_scan(q, k, v, gate(self.lr_proj), gate(self.decay_proj), state,
                                                 chunk_size=self.chunk_size, ridge=self.ridge,
                                                 grad_chunks=self.grad_chunks)
        else:
            lr = (self.max_lr / self.chunk_size) * gate(self.lr_proj)
            y, state = neural_memory_scan(q, k, v, lr, gate(self.momentum_proj),
                                          gate(self.decay_proj), state, chunk_size=self.chunk_size,
                                          grad_chunks=self.grad_chunks)
        state = state._replace(recent=recent)
        y = y.view(B, H, L, E).transpose(1, 2).reshape(B, L, H * E).to(x.dtype)
        return self.out_proj(y), state


class BlockNeuralMemory(nn.Module):
    """A `NeuralMemory` in an AGIFORMER block, called like the Hebbian memory:
    memory(n, state, plasticity=, effort=) → (output, state). Plasticity and effort shape the Hebbian
    memory's decay; this memory's learning rate and forgetting are gates predicted per position, so it
    takes neither."""

    def __init__(self, *, dim: int, heads: int, chunk_size: int, write: str):
        super().__init__()
        # depth 1: deeper memories diverged in MAG (see the module docstring); ridge: MAG's best, 1e-3
        self.memory = NeuralMemory(dim=dim, heads=heads, depth=1, chunk_size=chunk_size, write=write, ridge=1e-3)

    def forward(self, x: torch.Tensor, state: MemoryState | None = None, *,
                plasticity: float, effort: float) -> tuple[torch.Tensor, MemoryState]:
        return self.memory(x, state)

