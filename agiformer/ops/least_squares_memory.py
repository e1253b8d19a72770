"""Least-squares memory: a linear map refitted, at every chunk, to all the key/value pairs written so far.

Per sequence (batch × head, flattened to N) the state holds two decayed sums; chunk c, with keys k,
values v, queries q, per-token write weights θ_t ≥ 0 and the forgetting α_c of its last token:

    y_t = q_t (A_{c−1} + λI)⁻¹ B_{c−1}                   read, every t in chunk c
    A_c = (1 − α_c) A_{c−1} + Σ_{t∈c} θ_t k_t k_tᵀ         (Dk × Dk)
    B_c = (1 − α_c) B_{c−1} + Σ_{t∈c} θ_t k_t v_tᵀ         (Dk × Dv)

(A + λI)⁻¹ B is the map W minimising Σ_s θ_s ‖k_s W − v_s‖² (decayed) + λ‖W‖² over every earlier
chunk's pairs: the optimum the Titans write (`neural_memory`) steps towards by one gradient step per
chunk, here solved exactly (the Mesa layer's rule, von Oswald et al. 2023, with chunked reads). It
matters when many keys share a direction: in MAG on SmolLM2 the gradient-written depth-1 memory
brought a hash-hop needle's token back for 0–4 % of answer tokens where this map would for 54–69 %
(`python -m experiments.mag_lookup`).

Causality as in `neural_memory_scan`: a chunk is read before it is written. The sums are a cheap
recurrence (two rank-C updates per chunk); the reads of all chunks are independent once the sums
are known, so they are solved together: one batched Cholesky factorisation (Dk³/3 per chunk) and
C triangular solves per chunk. Gradients flow through both into q, k, v, θ and α; the backward pass
reuses the forward's factors (`spd_solve`) instead of differentiating the factorisation: the read's
forward and backward over a 2,048-token sequence take 190 ms instead of 712 at Dk = 576, 1.8 s
instead of 14.0 at 1,728 (2 threads of a Xeon, `python -m benchmarks.least_squares_solve`).

Forms:
- `least_squares_memory_scan`: the recurrence and the batched solve, used by `NeuralMemory`.
- `naive_least_squares_memory`: reference, one sequence and one token at a time, the decayed sums
  built from scratch for every token and solved with `torch.linalg.solve`.

All arithmetic runs in float32 (float64 when given float64), whatever the autocast context.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from agiformer.errors import AGIFormerError

Tensor = torch.Tensor


class LeastSquaresMemoryState(NamedTuple):
    """keys: A, (N, Dk, Dk); values: B, (N, Dk, Dv), the decayed sums of θ k kᵀ and θ k vᵀ.
    pending, recent: as `NeuralMemoryState`'s, with (k, v, θ) of an incomplete trailing chunk."""

    keys: Tensor
    values: Tensor
    pending: tuple[Tensor, Tensor, Tensor] | None = None
    recent: Tensor | None = None


class _SPDSolve(torch.autograd.Function):
    """X = A⁻¹ Q for symmetric positive definite A: factorised once; backward solves with the same
    factor, dQ = A⁻¹ G and dA = −dQ Xᵀ (the gradient for a general A, which for the symmetric sums
    the scan builds gives the same parameter gradients as its symmetric part)."""

    @staticmethod
    def forward(ctx, A: Tensor, Q: Tensor) -> Tensor:
        factor = torch.linalg.cholesky(A)
        X = torch.cholesky_solve(Q, factor)
        ctx.save_for_backward(factor, X)
        return X

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, G: Tensor) -> tuple[Tensor, Tensor]:
        factor, X = ctx.saved_tensors
        dQ = torch.cholesky_solve(G, factor)
        return -dQ @ X.transpose(-1, -2), dQ


def spd_solve(A: Tensor, Q: Tensor) -> Tensor:
    """A⁻¹ Q for symmetric positive definite A (..., D, D) and Q (..., D, C), one Cholesky
    factorisation serving forward and backward."""
    return _SPDSolve.apply(A, Q)


def initial_least_squares_state(rows: int, key_dim: int, value_dim: int, *, dtype: torch.dtype = torch.float32,
                                device: torch.device | str | None = None) -> LeastSquaresMemoryState:
    """An empty memory: nothing written, every read returns zero."""
    return LeastSquaresMemoryState(torch.zeros(rows, key_dim, key_dim, dtype=dtype, device=device),
                                   torch.zeros(rows, key_dim, value_dim, dtype=dtype, device=device))


def least_squares_memory_scan(q: Tensor, k: Tensor, v: Tensor, weight: Tensor, decay: Tensor,
                              state: LeastSquaresMemoryState, *, chunk_size: int, ridge: float,
                              grad_chunks: int | None = None) -> tuple[Tensor, LeastSquaresMemoryState]:
    """Read then write, chunk by chunk. q, k: (N, L, Dk); v: (N, L, Dv); weight, decay: (N, L) per
    token (θ ≥ 0, α in [0, 1]; a chunk forgets by its last token's α). ridge: λ > 0.
    Returns y (N, L, Dv) and the state after the last token. grad_chunks: as `neural_memory_scan`'s."""
    if chunk_size < 1:
        raise AGIFormerError(f"least-squares memory chunk_size must be ≥ 1, got {chunk_size}")
    if not ridge > 0:
        raise AGIFormerError(f"least-squares memory ridge must be > 0, got {ridge}")
    if grad_chunks is not None and grad_chunks < 1:
        raise AGIFormerError(f"least-squares memory grad_chunks must be ≥ 1 or None, got {grad_chunks}")
    C = chunk_size
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in (q, k, v, state.keys)) else torch.float32
    with torch.autocast(q.device.type, enabled=False):
        q, k, v, weight, decay = (t.to(dtype) for t in (q, k, v, weight, decay))
        A, B = state.keys.to(dtype), state.values.to(dtype)
        P = 0
        if state.pending is not None:
            P = state.pending[0].shape[1]
            k, v, weight = (torch.cat([p.to(dtype), t], dim=1) for p, t in zip(state.pending, (k, v, weight)))
            q = F.pad(q, (0, 0, P, 0))  # placeholders: the pending tokens were read by the call before
        N, T, Dk = k.shape
        n_full, n_read = T // C, -(-T // C)
        alphas = decay[:, C - 1 - P::C, None, None].unbind(1)
        k_chunks, v_chunks, w_chunks = (t.split(C, dim=1) for t in (k, v, weight))
        read_keys, read_values = [], []
        for c in range(n_full):
            read_keys.append(A)
            read_values.append(B)
            if grad_chunks is not None and c > 0 and c % grad_chunks == 0:
                A, B = A.detach(), B.detach()
            weighted = (k_chunks[c] * w_chunks[c].unsqueeze(-1)).transpose(1, 2)
            A = (1 - alphas[c]) * A + weighted @ k_chunks[c]
            B = (1 - alphas[c]) * B + weighted @ v_chunks[c]
        pending = None
        if n_read > n_full:
            read_keys.append(A)
            read_values.append(B)
            pending = (k_chunks[n_full], v_chunks[n_full], w_chunks[n_full])
        if n_read:
            eye = ridge * torch.eye(Dk, dtype=dtype, device=k.device)
            queries = F.pad(q, (0, 0, 0, n_read * C - T)).view(N, n_read, C, Dk)
            solved = spd_solve(torch.stack(read_keys, dim=1) + eye, queries.transpose(-1, -2))  # (A + λI)⁻¹ qᵀ
            y = (solved.transpose(-1, -2) @ torch.stack(read_values, dim=1)).flatten(1, 2)[:, P:T]
        else:
            y = v[:, :0]
    return y, LeastSquaresMemoryState(A, B, pending, state.recent)


# ----------------------------------------------------------------------------- reference


def naive_least_squares_memory(q: Tensor, k: Tensor, v: Tensor, weight: Tensor, decay: Tensor,
                               state: LeastSquaresMemoryState, *, chunk_size: int = 1, ridge: float
                               ) -> Tensor:
    """Reference for the reads of `least_squares_memory_scan` from a state without pending tokens:
    per sequence and token t of chunk c, A and B summed afresh over the tokens of chunks 0 … c − 1,
    each weighted by θ_s and the product of the forgetting of every later chunk before c, plus the
    initial sums forgotten by every chunk before c; then W = solve(A + λI, B)."""
    N, L, Dk = k.shape
    C = chunk_size
    eye = ridge * torch.eye(Dk, dtype=k.dtype)
    chunk_decay = [decay[:, min(c * C + C - 1, L - 1)] for c in range(-(-L // C))]
    outs = []
    for n in range(N):
        for t in range(L):
            c = t // C
            kept = torch.ones((), dtype=k.dtype)
            for later in range(c):
                kept = kept * (1 - chunk_decay[later][n])
            A, B = kept * state.keys[n], kept * state.values[n]
            for s in range(c * C):
                factor = weight[n, s]
                for later in range(s // C + 1, c):
                    factor = factor * (1 - chunk_decay[later][n])
                A = A + factor * torch.outer(k[n, s], k[n, s])
                B = B + factor * torch.outer(k[n, s], v[n, s])
            outs.append(q[n, t] @ torch.linalg.solve(A + eye, B))
    return torch.stack(outs).view(N, L, -1)
