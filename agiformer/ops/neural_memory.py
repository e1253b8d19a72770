"""Neural long-term memory (Titans): a bias-free MLP whose weights are written at test time.

Per sequence (batch × head, flattened to N), the memory is M_W(x) = x W_1 for depth 1 and
M_W(x) = silu(x W_1) W_2 for depth 2 (more layers: silu between each). The sequence is cut into
chunks of C tokens; chunk c, with keys k, values v, queries q and per-token learning rates θ_t:

    y_t = M_{W_{c−1}}(q_t)                                 read, every t in chunk c
    G_c = ∇_W Σ_{t∈c} θ_t ‖M_W(k_t) − v_t‖²  at W = W_{c−1}   surprise, per sequence
    S_c = η_c S_{c−1} − G_c                                momentum
    W_c = (1 − α_c) W_{c−1} + S_c                          decay, then write

Reads come before writes: a token reads weights that hold earlier chunks only, so neither it nor
anything after it in its chunk can leak into its own output (reading after the write did, and let
a token see its own value). The gradient is per sequence (summed over the chunk's tokens, never
averaged over the batch), and it is written with plain batched matmuls, so autograd goes through
the writes: keys, values, θ, η, α and the initial weights all learn from later reads.

Forms:
- `neural_memory_scan`: the chunk loop with the analytic `surprise_gradients`, used everywhere.
- `naive_neural_memory`: reference, one sequence and one token at a time, gradients by
  `torch.func.grad` of the explicit loss.
- `vmap_surprise_gradients`: reference for `surprise_gradients` via `vmap(grad(loss))`.

All arithmetic runs in float32 (float64 when given float64), whatever the autocast context.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from agiformer.errors import AGIFormerError

Tensor = torch.Tensor
Weights = tuple[Tensor, ...]


class NeuralMemoryState(NamedTuple):
    """weights, momentum: per layer, (N, fan_in, fan_out). pending: (k, v, lr) of the tokens of
    an incomplete trailing chunk, (N, P, ·) with 0 < P < C, or None. They are read already and
    are written once their chunk fills, so a stream cut anywhere continues exactly. recent: what a
    layer around the scan needs of the last inputs (`NeuralMemory`'s short convolution), or None;
    the scan passes it through untouched, so one value is the whole state."""

    weights: Weights
    momentum: Weights
    pending: tuple[Tensor, Tensor, Tensor] | None = None
    recent: Tensor | None = None


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def initial_neural_memory_state(weights: Weights) -> NeuralMemoryState:
    """The state before any token: the given weights (N, fan_in, fan_out) and zero momentum."""
    return NeuralMemoryState(tuple(weights), tuple(torch.zeros_like(w) for w in weights))


def memory_apply(weights: Weights, x: Tensor) -> Tensor:
    """M_W(x) for x (N, T, fan_in of weights[0]) → (N, T, fan_out of weights[-1])."""
    for i, w in enumerate(weights):
        x = torch.bmm(x, w)
        if i < len(weights) - 1:
            x = F.silu(x)
    return x


def surprise_gradients(weights: Weights, keys: Tensor, values: Tensor, lr: Tensor) -> Weights:
    """∇_W Σ_t lr_t ‖M_W(k_t) − v_t‖² per sequence: keys (N, C, Dk), values (N, C, Dv), lr (N, C).

    Backpropagation written out with bmm rather than torch.autograd.grad, so the result is an
    ordinary differentiable function of its inputs and training backpropagates through it.
    """
    inputs, pre_activations = [], []
    h = keys
    for i, w in enumerate(weights):
        inputs.append(h)
        h = torch.bmm(h, w)
        if i < len(weights) - 1:
            pre_activations.append(h)
            h = F.silu(h)
    delta = 2 * lr.unsqueeze(-1) * (h - values)                   # ∂loss/∂out
    grads: list[Tensor] = [keys] * len(weights)
    for i in reversed(range(len(weights))):
        grads[i] = torch.bmm(inputs[i].transpose(1, 2), delta)
        if i:
            z = pre_activations[i - 1]
            s = torch.sigmoid(z)
            delta = torch.bmm(delta, weights[i].transpose(1, 2)) * (s * (1 + z * (1 - s)))  # silu'(z)
    return tuple(grads)


def neural_memory_scan(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, momentum: Tensor, decay: Tensor,
                       state: NeuralMemoryState, *, chunk_size: int,
                       grad_chunks: int | None = None) -> tuple[Tensor, NeuralMemoryState]:
    """Read then write, chunk by chunk. q, k: (N, L, Dk); v: (N, L, Dv); lr, momentum, decay: (N, L)
    per token (θ ≥ 0, η and α in [0, 1]). Returns y (N, L, Dv) and the state after the last token.

    η and α of a chunk are those of its last token: the chunk is read whole before it is written, so
    the write may depend on any of its tokens but nothing after it, and the last token is the one
    that completes it whether the sequence arrives at once or token by token.

    grad_chunks=n cuts backpropagation through the writes into windows of n chunks: the state that
    enters chunk n+1, 2n+1, … is detached before that chunk's write (its read keeps the graph), so
    every read gets gradient through the last 1 to n writes. The windows count from the start of
    each call; values never depend on grad_chunks.
    """
    if chunk_size < 1:
        raise AGIFormerError(f"neural memory chunk_size must be ≥ 1, got {chunk_size}")
    if grad_chunks is not None and grad_chunks < 1:
        raise AGIFormerError(f"neural memory grad_chunks must be ≥ 1 or None, got {grad_chunks}")
    C = chunk_size
    weights, mom, pending = state.weights, state.momentum, state.pending
    dtype = _compute_dtype(q, k, v, *weights)
    with torch.autocast(q.device.type, enabled=False):
        q, k, v, lr, momentum, decay = (t.to(dtype) for t in (q, k, v, lr, momentum, decay))
        weights, mom = tuple(w.to(dtype) for w in weights), tuple(m.to(dtype) for m in mom)
        P = 0
        if pending is not None:
            P = pending[0].shape[1]
            k, v, lr = (torch.cat([p.to(dtype), t], dim=1) for p, t in zip(pending, (k, v, lr)))
            q = F.pad(q, (0, 0, P, 0))  # placeholders: the pending tokens were read by the call before
        T = k.shape[1]
        n_full = T // C
        # gates of each full chunk's last token, at position (c + 1)·C − 1 − P of this call's input
        etas = momentum[:, C - 1 - P::C, None, None].unbind(1)
        alphas = decay[:, C - 1 - P::C, None, None].unbind(1)
        # split, not slicing: the backward of x[:, a:b] allocates a zero tensor the size of x for
        # every chunk, which makes the loop quadratic in the number of chunks
        q_chunks, k_chunks, v_chunks, lr_chunks = (t.split(C, dim=1) for t in (q, k, v, lr))
        outs = []
        for c in range(n_full):
            outs.append(memory_apply(weights, q_chunks[c]))
            if grad_chunks is not None and c > 0 and c % grad_chunks == 0:
                weights, mom = tuple(w.detach() for w in weights), tuple(m.detach() for m in mom)
            grads = surprise_gradients(weights, k_chunks[c], v_chunks[c], lr_chunks[c])
            eta, alpha = etas[c], alphas[c]
            mom = tuple(eta * m - g for m, g in zip(mom, grads))
            weights = tuple((1 - alpha) * w + m for w, m in zip(weights, mom))
        pending = None
        if T > n_full * C:
            outs.append(memory_apply(weights, q_chunks[n_full]))
            pending = (k_chunks[n_full], v_chunks[n_full], lr_chunks[n_full])
        y = torch.cat(outs, dim=1)[:, P:] if outs else v[:, :0]
    return y, NeuralMemoryState(weights, mom, pending, state.recent)


# ----------------------------------------------------------------------------- references


def _mlp(weights: Weights, x: Tensor) -> Tensor:
    for i, w in enumerate(weights):
        x = x @ w
        if i < len(weights) - 1:
            x = F.silu(x)
    return x


def _surprise_loss(weights: Weights, keys: Tensor, values: Tensor, lr: Tensor) -> Tensor:
    """Σ_t lr_t ‖M_W(k_t) − v_t‖² for one sequence (or one token, with keys (Dk,) and lr ())."""
    return (lr * (_mlp(weights, keys) - values).pow(2).sum(-1)).sum()


def vmap_surprise_gradients(weights: Weights, keys: Tensor, values: Tensor, lr: Tensor) -> Weights:
    """Reference for `surprise_gradients`, same shapes: vmap over sequences of grad of the loss."""
    return torch.func.vmap(torch.func.grad(_surprise_loss))(tuple(weights), keys, values, lr)


def naive_neural_memory(q: Tensor, k: Tensor, v: Tensor, lr: Tensor, momentum: Tensor, decay: Tensor,
                        state: NeuralMemoryState, *, chunk_size: int = 1) -> tuple[Tensor, NeuralMemoryState]:
    """Reference: each sequence on its own, token by token, each token's gradient by torch.func.grad
    at the chunk-start weights, summed until the chunk's last token writes them. Shapes as
    `neural_memory_scan`; the state must have no pending tokens. A trailing incomplete chunk is
    read and never written; the returned state has no pending tokens either."""
    token_grad = torch.func.grad(_surprise_loss)
    outs, final_weights, final_momentum = [], [], []
    for n in range(q.shape[0]):
        weights = tuple(w[n] for w in state.weights)
        mom = tuple(m[n] for m in state.momentum)
        accumulated = tuple(torch.zeros_like(w) for w in weights)
        ys = []
        for t in range(q.shape[1]):
            ys.append(_mlp(weights, q[n, t]))
            g = token_grad(weights, k[n, t], v[n, t], lr[n, t])
            accumulated = tuple(a + gi for a, gi in zip(accumulated, g))
            if t % chunk_size == chunk_size - 1:
                mom = tuple(momentum[n, t] * m - a for m, a in zip(mom, accumulated))
                weights = tuple((1 - decay[n, t]) * w + m for w, m in zip(weights, mom))
                accumulated = tuple(torch.zeros_like(w) for w in weights)
        outs.append(torch.stack(ys))
        final_weights.append(weights)
        final_momentum.append(mom)
    stack = lambda per_sequence: tuple(torch.stack(layer) for layer in zip(*per_sequence))  # noqa: E731
    return torch.stack(outs), NeuralMemoryState(stack(final_weights), stack(final_momentum))
