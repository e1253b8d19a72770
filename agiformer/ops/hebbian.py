"""Hebbian fast-weight memory: normalized, decayed linear attention per head.

Recurrence (per batch and head; q, k already feature-mapped and non-negative):

    M_t = λ_t M_{t-1} + k_t v_tᵀ        z_t = λ_t z_{t-1} + k_t
    out_t = q_tᵀ M_t / (q_tᵀ z_t + eps)

The normalizer z is carried as one extra value column, so the state is a single tensor
S = [M | z] of shape (B, H, E, Ev + 1). Decay enters as log λ_t ≤ 0, shape (B, H, L).

Three forms, equal up to rounding:
- `chunked_hebbian`: chunkwise-parallel, used for training and prefill.
- `naive_hebbian`: the plain per-step loop, the reference.
- `hebbian_step`: one position given the carried state, used for generation.

All arithmetic runs in float32 (float64 when given float64), whatever the autocast
context: decay products and states lose everything in bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# exp(−80) ≈ 1.8e−35 sits just above float32's smallest normal (1.2e−38): anything it multiplies
# becomes a subnormal, which x86 CPUs compute ~100× slower. At α = 0.1 the decays inside a chunk
# reach exp(−147), and without the flush the whole training step ran ~4× slower in that stage.
FLUSH_LOG_DECAY = -80.0


def decay_factor(log_decay: Tensor) -> Tensor:
    """exp(log λ) for log λ ≤ 0, exactly 0 below FLUSH_LOG_DECAY (no gradient flows there either)."""
    return log_decay.masked_fill(log_decay < FLUSH_LOG_DECAY, float("-inf")).exp()


def _with_normalizer_column(v: Tensor) -> Tensor:
    return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)


def _read(numerator_and_normalizer: Tensor, eps: float) -> Tensor:
    return numerator_and_normalizer[..., :-1] / (numerator_and_normalizer[..., -1:] + eps)


def initial_hebbian_state(batch: int, heads: int, key_dim: int, value_dim: int, *,
                          device=None, dtype=torch.float32) -> Tensor:
    return torch.zeros(batch, heads, key_dim, value_dim + 1, device=device, dtype=dtype)


def hebbian_step(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, state: Tensor | None = None,
                 *, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """One position. q, k: (B, H, E); v: (B, H, Ev); log_decay: (B, H); state: (B, H, E, Ev+1)."""
    dtype = _compute_dtype(q, k, v)
    with torch.autocast(q.device.type, enabled=False):
        q, k, v, log_decay = (t.to(dtype) for t in (q, k, v, log_decay))
        if state is None:
            state = initial_hebbian_state(q.shape[0], q.shape[1], q.shape[2], v.shape[2],
                                          device=q.device, dtype=dtype)
        state = decay_factor(log_decay)[..., None, None] * state.to(dtype) \
            + k.unsqueeze(-1) * _with_normalizer_column(v).unsqueeze(-2)
        out = _read(torch.einsum("bhe,bhef->bhf", q, state), eps)
    return out, state


def naive_hebbian(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, initial_state: Tensor | None = None,
                  *, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Reference: the per-step loop. q, k: (B, H, L, E); v: (B, H, L, Ev); log_decay: (B, H, L)."""
    state, outs = initial_state, []
    for t in range(q.shape[2]):
        out, state = hebbian_step(q[:, :, t], k[:, :, t], v[:, :, t], log_decay[:, :, t], state, eps=eps)
        outs.append(out)
    return torch.stack(outs, dim=2), state


def chunked_hebbian(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, initial_state: Tensor | None = None,
                    *, chunk_size: int = 64, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Chunkwise-parallel form. Shapes as `naive_hebbian`; returns (out (B,H,L,Ev), final state).

    Inside a chunk, b = inclusive cumsum of log λ; the weight of key t seen from query s ≥ t is
    exp(b_s − b_t) and the carried state reaches query s scaled by exp(b_s). Every exponent is a
    difference that is ≤ 0, so nothing overflows for any decay or length. Cost: O(L·C·E) for the
    intra-chunk part and O(L·E²) for the (L/C) state updates; memory O(L·(C + E²/C)).
    """
    B, H, L, E = q.shape
    Ev = v.shape[-1]
    dtype = _compute_dtype(q, k, v)
    with torch.autocast(q.device.type, enabled=False):
        q, k, v, log_decay = (t.to(dtype) for t in (q, k, v, log_decay))
        v = _with_normalizer_column(v)
        C = chunk_size
        n_chunks = -(-L // C)
        pad = n_chunks * C - L
        if pad:  # padded tail: k = 0 writes nothing, log λ = 0 keeps the state, outputs are dropped
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            log_decay = F.pad(log_decay, (0, pad))
        q, k, v = (t.reshape(B, H, n_chunks, C, -1) for t in (q, k, v))
        b = log_decay.reshape(B, H, n_chunks, C).cumsum(-1)

        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        relative = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
        intra = (q @ k.transpose(-1, -2)) * decay_factor(relative)
        out = intra @ v                                                   # (B,H,n,C,Ev+1)

        # what each chunk adds to the state, decayed to the chunk's end
        to_end = decay_factor(b[..., -1:] - b).unsqueeze(-1)               # (B,H,n,C,1)
        chunk_writes = (k * to_end).transpose(-1, -2) @ v                 # (B,H,n,E,Ev+1)
        chunk_decay = decay_factor(b[..., -1])                             # (B,H,n)
        from_start = decay_factor(b).unsqueeze(-1)                         # (B,H,n,C,1)

        state = initial_state.to(dtype) if initial_state is not None else \
            initial_hebbian_state(B, H, E, Ev, device=q.device, dtype=dtype)
        carried = []
        # unbind, not indexing: the backward of x[:, :, c] allocates a zero tensor the size of x for
        # every c, which made this loop quadratic in the number of chunks
        for decay_c, writes_c in zip(chunk_decay[..., None, None].unbind(2), chunk_writes.unbind(2)):
            carried.append(state)
            state = decay_c * state + writes_c
        carried = torch.stack(carried, dim=2)                             # (B,H,n,E,Ev+1)
        out = out + (q * from_start) @ carried
        out = _read(out, eps).reshape(B, H, n_chunks * C, Ev)[:, :, :L]
    return out, state
