"""THE SEED'S parallel HebbianMemory form, reimplemented for comparison only (not used by agiformer).

This is the math of `HebbianMemory.forward` in the seed repository (inkbytefo/agi-former,
`src/models/memory.py`, v2 on `main`, after the exponent clamp was removed), restricted to the
memory kernel itself: the projections, feature map, decay network, output projection and norm are
left out, so it takes the same (q, k, v, log λ) as `agiformer.ops.naive_hebbian` /
`chunked_hebbian` and returns the same output. See /work/shared/research/seeds.md §1.2 and
defect D3.

The seed's method, "multiply k by λ^{−t}, q by λ^{t}" in log space:

    b_t   = Σ_{m ≤ t} log λ_m                        (cumsum over the whole sequence)
    k̃_t   = k_t · exp(−b_t)        q̃_t = q_t · exp(b_t)
    S_t   = Σ_{j ≤ t} k̃_j ⊗ v_j   (materialised for every t: shape (B, L, H, E, Ev))
    z_t   = Σ_{j ≤ t} k̃_j
    out_t = q̃_tᵀ S_t / (q̃_tᵀ z_t + 1e-6)

Mathematically q̃_tᵀ k̃_j = (q_t·k_j)·exp(b_t − b_j), the decayed weight. Numerically:
- memory and time are O(L·E²) per head with an (L, E, E) tensor per head kept for backward;
- exp(−b_t) grows without bound: it overflows to inf once −b_t > 88.7 (fp32 and bf16), after
  which inf · 0 gives NaN. With α = 0.1 (λ ≈ 0.1, log λ ≈ −2.3) that happens after ~39 positions;
  with λ ≈ 0.95 after ~1 700; with λ ≈ 0.998 (the seed's decay at initialisation) after ~49 000.

Differences from the seed code, none of which changes the arithmetic:
- inputs are (B, H, L, E) like agiformer's ops and are transposed to the seed's (B, L, H, E);
- log λ is given directly (the seed computes log(λ.clamp(min=1e-6)) from λ);
- the arithmetic runs in the inputs' dtype with autocast disabled (the seed forced float32 by
  `x.float()` under a disabled CUDA autocast; here a bf16 benchmark computes it in bf16, which
  halves its memory — the comparison is then in its favour).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def seed_parallel_hebbian(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, *, eps: float = 1e-6) -> Tensor:
    """The seed's parallel form. q, k: (B, H, L, E); v: (B, H, L, Ev); log_decay: (B, H, L).

    Returns out (B, H, L, Ev), in the dtype of q (no final state: the seed has none)."""
    dtype = q.dtype
    with torch.autocast(q.device.type, enabled=False):
        q, k, v = (t.to(dtype).transpose(1, 2) for t in (q, k, v))                 # (B, L, H, E)
        log_lambda = log_decay.to(dtype).transpose(1, 2).unsqueeze(-1)              # (B, L, H, 1)
        log_lambda_cum = torch.cumsum(log_lambda, dim=1)                            # b_t, no clamp
        k_decayed = k * torch.exp(-log_lambda_cum)
        q_decayed = q * torch.exp(log_lambda_cum)
        kv = torch.einsum("blhe,blhf->blhef", k_decayed, v)                         # (B, L, H, E, Ev)
        memory_state = torch.cumsum(kv, dim=1)
        k_sum_decayed = torch.cumsum(k_decayed, dim=1)                              # (B, L, H, E)
        num = torch.einsum("blhe,blhef->blhf", q_decayed, memory_state)
        den = torch.einsum("blhe,blhe->blh", q_decayed, k_sum_decayed).unsqueeze(-1) + eps
        out = num / den
    return out.transpose(1, 2)
