"""Neural long-term memory: the analytic surprise gradient and the chunk scan against references
that use autograd (float64), per-sequence independence, read-before-write causality, streaming
split anywhere, gradients through the writes, activation checkpointing and long-run finiteness.
The layer tests run for both writes (`LAYERS`); the least-squares op has its own file.

Write rule per chunk: S ← η S − ∇_W Σ_t θ_t ‖M_W(k_t) − v_t‖² at the chunk-start W, W ← (1 − α) W + S;
the chunk is read before it is written, so no token can see itself or the rest of its chunk.
"""

import pytest
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from agiformer.errors import AGIFormerError
from agiformer.nn import NeuralMemory
from agiformer.ops.least_squares_memory import LeastSquaresMemoryState
from agiformer.ops.neural_memory import (
    NeuralMemoryState, memory_apply, naive_neural_memory, neural_memory_scan, surprise_gradients,
    vmap_surprise_gradients,
)
from tests.helpers import relative_error

DEPTHS = [1, 2]
HEADS = [1, 2]
CHUNK_SIZES = [1, 3, 8]
LENGTHS = [1, 7, 16, 21]
# (write, depth) of a NeuralMemory; "least_squares+concat": keyed by 2 positions side by side
LAYERS = [("gradient", 1), ("gradient", 2), ("least_squares", 1), ("least_squares+concat", 1)]


def layer_kind(write: str) -> dict:
    """NeuralMemory keyword arguments for a LAYERS write."""
    if write == "least_squares+concat":
        return {"write": "least_squares", "key_form": "concat", "key_span": 2}
    return {"write": write}


def state_tensors(state) -> tuple[torch.Tensor, ...]:
    held = (state.keys, state.values) if isinstance(state, LeastSquaresMemoryState) else state.weights + state.momentum
    return held + ((state.recent,) if state.recent is not None else ())


def states_error(a, b) -> float:
    assert type(a) is type(b) and (a.recent is None) == (b.recent is None)
    return max(relative_error(x, y) for x, y in zip(state_tensors(a), state_tensors(b)))


def memory_inputs(*, N, L, depth, Dk=4, Dv=5, Dh=6, seed=0, dtype=torch.float64):
    """Normalised q, k as the layer makes them; θ up to 0.5 and a non-zero starting momentum so that
    every term of the write rule is exercised."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=dtype)  # noqa: E731
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    q, k = F.normalize(randn(N, L, Dk), dim=-1), F.normalize(randn(N, L, Dk), dim=-1)
    v = randn(N, L, Dv)
    lr, momentum, decay = 0.5 * rand(N, L), rand(N, L), 0.3 * rand(N, L)
    widths = [Dk] + [Dh] * (depth - 1) + [Dv]
    weights = tuple(randn(N, a, b) / a ** 0.5 for a, b in zip(widths[:-1], widths[1:]))
    state = NeuralMemoryState(weights, tuple(0.1 * randn(*w.shape) for w in weights))
    return (q, k, v, lr, momentum, decay), state


def small_layer(*, heads=2, depth=2, chunk_size=4, grad_chunks=None, dim=8, seed=0, dtype=torch.float64,
                conv_kernel=3, write="gradient"):
    """A layer whose convolution (if any) mixes positions from the start: random taps, not the identity."""
    torch.manual_seed(seed)
    layer = NeuralMemory(dim=dim, heads=heads, depth=depth, chunk_size=chunk_size, grad_chunks=grad_chunks,
                         max_lr=0.5, conv_kernel=conv_kernel, **layer_kind(write)).to(dtype)
    if layer.conv is not None:
        torch.nn.init.normal_(layer.conv.weight, std=0.5)
    return layer


@pytest.mark.parametrize("depth", DEPTHS)
def test_surprise_gradients_equal_vmap_grad_and_autograd_loop(depth):
    (_, k, v, lr, _, _), state = memory_inputs(N=3, L=7, depth=depth)
    analytic = surprise_gradients(state.weights, k, v, lr)
    vmapped = vmap_surprise_gradients(state.weights, k, v, lr)
    for n in range(3):
        weights = tuple(w[n].clone().requires_grad_() for w in state.weights)
        h = k[n]
        for i, w in enumerate(weights):
            h = h @ w if i == len(weights) - 1 else F.silu(h @ w)
        loss = (lr[n] * ((h - v[n]) ** 2).sum(-1)).sum()
        for a, b, c in zip(analytic, vmapped, torch.autograd.grad(loss, weights)):
            assert relative_error(a[n], c) <= 1e-12
            assert relative_error(b[n], c) <= 1e-12


@pytest.mark.parametrize("depth", DEPTHS)
def test_surprise_gradients_are_differentiable_like_autograd(depth):
    """Second order: what training backpropagates through the writes."""
    (_, k, v, lr, _, _), state = memory_inputs(N=2, L=5, depth=depth)
    inputs = [t.clone().requires_grad_() for t in (*state.weights, k, v, lr)]

    def through(fn):
        grads = fn(tuple(inputs[:depth]), *inputs[depth:])
        return torch.autograd.grad(sum((g * g).sum() for g in grads), inputs)

    for a, b in zip(through(surprise_gradients), through(vmap_surprise_gradients)):
        assert relative_error(a, b) <= 1e-10


def test_reference_is_really_read_then_write():
    """The reference itself, two tokens, chunk size 1, by hand: y_1 reads W_1 = (1 − α_0) W_0 + S_1."""
    (q, k, v, lr, momentum, decay), state = memory_inputs(N=1, L=2, depth=1)
    y, _ = naive_neural_memory(q, k, v, lr, momentum, decay, state, chunk_size=1)
    W0, S0 = state.weights[0][0], state.momentum[0][0]
    G = 2 * lr[0, 0] * torch.outer(k[0, 0], k[0, 0] @ W0 - v[0, 0])
    W1 = (1 - decay[0, 0]) * W0 + momentum[0, 0] * S0 - G
    assert torch.allclose(y[0, 0], q[0, 0] @ W0, atol=1e-14)
    assert torch.allclose(y[0, 1], q[0, 1] @ W1, atol=1e-14)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("length", LENGTHS)
def test_scan_equals_naive_per_token_reference(depth, heads, chunk_size, length):
    inputs, state = memory_inputs(N=2 * heads, L=length, depth=depth, seed=length)
    y, final = neural_memory_scan(*inputs, state, chunk_size=chunk_size)
    y_ref, final_ref = naive_neural_memory(*inputs, state, chunk_size=chunk_size)
    assert relative_error(y, y_ref) <= 1e-10
    assert states_error(final, final_ref) <= 1e-10
    trailing = length % chunk_size
    if trailing:  # the incomplete chunk waits, unwritten
        k, v, lr = inputs[1], inputs[2], inputs[3]
        for pending, full in zip(final.pending, (k, v, lr)):
            assert torch.equal(pending, full[:, length - trailing:])
    else:
        assert final.pending is None


@pytest.mark.parametrize("depth", DEPTHS)
def test_chunk_size_one_writes_after_every_token(depth):
    """Chunk size 1 is the per-token recurrence: every token but the first reads a different memory."""
    inputs, state = memory_inputs(N=2, L=6, depth=depth)
    q = inputs[0][:, :1].expand(-1, 6, -1).contiguous()       # the same query everywhere
    y, _ = neural_memory_scan(q, *inputs[1:], state, chunk_size=1)
    assert all(relative_error(y[:, t], y[:, t + 1]) > 1e-3 for t in range(5))
    y_chunked, _ = neural_memory_scan(q, *inputs[1:], state, chunk_size=6)
    assert relative_error(y_chunked, y[:, :1].expand(-1, 6, -1)) <= 1e-14


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("chunk_size", [1, 3])
def test_batched_equals_one_sequence_at_a_time(depth, chunk_size):
    inputs, state = memory_inputs(N=4, L=10, depth=depth)
    y, final = neural_memory_scan(*inputs, state, chunk_size=chunk_size)
    for n in range(4):
        one = [t[n:n + 1] for t in inputs]
        one_state = NeuralMemoryState(tuple(w[n:n + 1] for w in state.weights),
                                      tuple(m[n:n + 1] for m in state.momentum))
        y_n, final_n = neural_memory_scan(*one, one_state, chunk_size=chunk_size)
        assert relative_error(y_n, y[n:n + 1]) <= 1e-12
        assert max(relative_error(a, b[n:n + 1]) for a, b in zip(final_n.weights, final.weights)) <= 1e-12


@pytest.mark.parametrize("write, depth", LAYERS)
@pytest.mark.parametrize("heads", HEADS)
def test_sequences_never_share_memory(write, depth, heads):
    layer = small_layer(heads=heads, depth=depth, chunk_size=3, write=write)
    x = torch.randn(3, 10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[1] += torch.randn(10, 8, dtype=torch.float64)
    with torch.no_grad():
        y, _ = layer(x)
        y_changed, _ = layer(changed)
    assert (y[[0, 2]] - y_changed[[0, 2]]).abs().max().item() == 0.0
    assert (y[1] - y_changed[1]).abs().max().item() > 0.0


@pytest.mark.parametrize("write, depth", LAYERS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("chunk_size", [1, 4])
@pytest.mark.parametrize("conv_kernel", [1, 3])
def test_layer_is_causal_and_blind_to_its_own_chunk(write, depth, heads, chunk_size, conv_kernel):
    """Changing x_t changes y_t itself (its query) and later chunks, never y_s for s < t nor the other
    positions of t's chunk (they were read before the chunk was written), except the next
    conv_kernel − 1, whose queries the short convolution mixes x_t into (and key_span − 1 more with
    concatenated keys, whose queries hold earlier positions' outputs too)."""
    if write == "least_squares+concat" and conv_kernel == 1:
        pytest.skip("concatenated keys need the convolution")
    layer = small_layer(heads=heads, depth=depth, chunk_size=chunk_size, conv_kernel=conv_kernel, write=write)
    reach = conv_kernel + (layer.key_span - 1 if layer.key_form == "concat" else 0)
    L = 12
    x = torch.randn(2, L, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, _ = layer(x)
        for t in range(L):
            changed = x.clone()
            changed[:, t] += 1.0
            y_changed, _ = layer(changed)
            chunk_end = (t // chunk_size + 1) * chunk_size
            untouched = [s for s in range(min(chunk_end, L)) if s < t or s >= t + reach]
            if untouched:
                assert (y[:, untouched] - y_changed[:, untouched]).abs().max().item() == 0.0
            if chunk_end < L:  # and the write does reach the next chunk
                assert (y[:, chunk_end:] - y_changed[:, chunk_end:]).abs().max().item() > 0.0


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_write_inputs_never_reach_their_own_chunk(chunk_size):
    """At the op: k, v, θ, η, α of token t leave every output up to the end of t's chunk unchanged."""
    inputs, state = memory_inputs(N=2, L=9, depth=2)
    y, _ = neural_memory_scan(*inputs, state, chunk_size=chunk_size)
    for t in range(9):
        chunk_end = (t // chunk_size + 1) * chunk_size
        for which in range(1, 6):
            changed = [x.clone() for x in inputs]
            changed[which][:, t] += 0.25
            y_changed, _ = neural_memory_scan(*changed, state, chunk_size=chunk_size)
            assert (y[:, :chunk_end] - y_changed[:, :chunk_end]).abs().max().item() == 0.0


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_scan_split_anywhere_equals_one_call(depth, heads, chunk_size):
    L = 21
    inputs, state = memory_inputs(N=2 * heads, L=L, depth=depth, seed=chunk_size)
    y, final = neural_memory_scan(*inputs, state, chunk_size=chunk_size)
    for split in range(L + 1):
        y_a, middle = neural_memory_scan(*(t[:, :split] for t in inputs), state, chunk_size=chunk_size)
        y_b, end = neural_memory_scan(*(t[:, split:] for t in inputs), middle, chunk_size=chunk_size)
        assert relative_error(torch.cat([y_a, y_b], dim=1), y) <= 1e-12
        assert states_error(end, final) <= 1e-12
        assert (end.pending is None) == (final.pending is None)
        if final.pending is not None:
            assert all(torch.equal(a, b) for a, b in zip(end.pending, final.pending))


def test_convolution_starts_with_keys_on_the_previous_position():
    """Default init: q and v are the plain projections of their own position, k that of the position
    before (the first position's own at the start), so token t is written under its predecessor's key."""
    torch.manual_seed(0)
    layer = NeuralMemory(dim=8, heads=2, conv_kernel=4).double()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    with torch.no_grad():
        (q, k, v), recent = layer.project(x)
        assert torch.equal(q, layer.q_proj(x)) and torch.equal(v, layer.v_proj(x))
        assert torch.equal(k[:, 1:], layer.k_proj(x)[:, :-1]) and torch.equal(k[:, 0], layer.k_proj(x)[:, 0])
        (_, k_next, _), _ = layer.project(x[:, :1], recent)  # a continuation sees the last position
        assert torch.equal(k_next[:, 0], layer.k_proj(x)[:, -1])
    assert NeuralMemory(dim=8, conv_kernel=1).conv is None


@pytest.mark.parametrize("span", [2, 3])
def test_a_key_span_starts_queries_and_keys_as_sums_over_that_many_positions(span):
    """key_span = s: q of t sums the projections of t − s + 1 … t, k of t those of t − s … t − 1 (the
    first position's copies before the start), v stays on t; the same after a split."""
    torch.manual_seed(0)
    layer = NeuralMemory(dim=8, heads=2, conv_kernel=4, key_span=span).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    padded = lambda y: torch.cat([y[:, :1].expand(-1, span, -1), y], dim=1)  # noqa: E731
    with torch.no_grad():
        (q, k, v), _ = layer.project(x)
        pq, pk = padded(layer.q_proj(x)), padded(layer.k_proj(x))
        torch.testing.assert_close(q, sum(pq[:, span - i: span - i + 9] for i in range(span)), rtol=0, atol=1e-12)
        torch.testing.assert_close(k, sum(pk[:, span - i - 1: span - i + 8] for i in range(span)), rtol=0, atol=1e-12)
        assert torch.equal(v, layer.v_proj(x))
        (q_head, k_head, _), recent = layer.project(x[:, :5])
        (q_tail, k_tail, _), _ = layer.project(x[:, 5:], recent)
        torch.testing.assert_close(torch.cat([q_head, q_tail], 1), q, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.cat([k_head, k_tail], 1), k, rtol=0, atol=1e-12)
    with pytest.raises(AGIFormerError, match="key_span"):
        NeuralMemory(dim=8, conv_kernel=3, key_span=3)


@pytest.mark.parametrize("span", [2, 3])
def test_concatenated_keys_set_that_many_positions_side_by_side(span):
    """key_form "concat": per head, q of t is the projections of t, t − 1, …, t − s + 1 side by side,
    k of t those of t − 1, …, t − s (the first position's copies before the start), v stays on t; the
    same after a split; the state's keys are s·head_dim wide."""
    torch.manual_seed(0)
    layer = NeuralMemory(dim=8, heads=2, depth=1, conv_kernel=2, key_span=span, key_form="concat",
                         write="least_squares").double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    padded = lambda y: torch.cat([y[:, :1].expand(-1, span, -1), y], dim=1)  # noqa: E731

    def side_by_side(rows: list[torch.Tensor]) -> torch.Tensor:   # per head: its 4 channels of each row in turn
        return torch.cat([torch.cat([r[..., 4 * h:4 * (h + 1)] for r in rows], -1) for h in range(2)], -1)

    with torch.no_grad():
        (q, k, v), _ = layer.project(x)
        pq, pk = padded(layer.q_proj(x)), padded(layer.k_proj(x))
        torch.testing.assert_close(q, side_by_side([pq[:, span - i: span - i + 9] for i in range(span)]),
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(k, side_by_side([pk[:, span - i - 1: span - i + 8] for i in range(span)]),
                                   rtol=0, atol=1e-12)
        assert torch.equal(v, layer.v_proj(x))
        (q_head, k_head, _), recent = layer.project(x[:, :5])
        (q_tail, k_tail, _), _ = layer.project(x[:, 5:], recent)
        torch.testing.assert_close(torch.cat([q_head, q_tail], 1), q, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.cat([k_head, k_tail], 1), k, rtol=0, atol=1e-12)
        _, state = layer(x)
    assert state.keys.shape == (2 * 2, span * 4, span * 4) and state.values.shape == (2 * 2, span * 4, 4)
    for bad in ({"write": "gradient"}, {"key_span": 1}, {"conv_kernel": 1}):
        with pytest.raises(AGIFormerError, match="key_form 'concat'"):
            NeuralMemory(dim=8, depth=1, **{"key_form": "concat", "key_span": 2, "write": "least_squares", **bad})


@pytest.mark.parametrize("write", ["gradient", "least_squares"])
@pytest.mark.parametrize("tied", [True, False])
def test_fresh_layer_reads_back_what_followed_a_repeated_input(write, tied):
    """Untrained, a depth-1 layer is already an associative memory: an input repeated later reads back
    (after out_proj) the input that followed its first occurrence, most similar of all stored ones.
    With independent random q and k (the control) it does not."""
    torch.manual_seed(0)
    layer = NeuralMemory(dim=64, depth=1, chunk_size=4, write=write).double()
    if not tied:
        torch.nn.init.orthogonal_(layer.k_proj.weight)
    x = torch.randn(1, 40, 64, dtype=torch.float64)
    x[0, 36] = x[0, 9]  # read at 36 sees the writes of positions 0…35, token 10 stored under x[9]'s key
    with torch.no_grad():
        y, _ = layer(x)
    similarity = F.cosine_similarity(y[0, 36][None], x[0, :36], dim=-1)
    assert (similarity.argmax().item() == 10) == tied, similarity.topk(3)


@pytest.mark.parametrize("write, depth", LAYERS)
def test_layer_streams_token_by_token(write, depth):
    """Greedy decoding: one token per call reproduces the whole-sequence forward."""
    layer = small_layer(chunk_size=4, write=write, depth=depth)
    x = torch.randn(2, 11, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y, final = layer(x)
        state, outs = None, []
        for t in range(11):
            out, state = layer(x[:, t:t + 1], state)
            outs.append(out)
    assert relative_error(torch.cat(outs, dim=1), y) <= 1e-12
    assert states_error(state, final) <= 1e-12


def grads_after_last_chunk_loss(layer, x):
    """Loss on the outputs of the last chunk only; returns (dict of parameter grads, grad of x)."""
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y, _ = layer(x)
    weights = torch.linspace(-1, 1, y[:, -layer.chunk_size:].numel(), dtype=y.dtype).view_as(y[:, -layer.chunk_size:])
    (y[:, -layer.chunk_size:] * weights).sum().backward()
    return {name: p.grad for name, p in layer.named_parameters()}, x.grad


def is_zero(grad):
    return grad is None or grad.abs().max().item() == 0.0


@pytest.mark.parametrize("write, depth", LAYERS)
@pytest.mark.parametrize("heads", HEADS)
def test_gradients_reach_the_write_path(write, depth, heads):
    C = 4
    x = torch.randn(2, 3 * C, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    full, dx_full = grads_after_last_chunk_loss(small_layer(heads=heads, depth=depth, chunk_size=C, write=write), x)
    write_path = ["k_proj.weight", "v_proj.weight", "conv.weight", "lr_proj.weight", "lr_proj.bias",
                  "decay_proj.weight", "decay_proj.bias"]
    initial = []
    if write == "gradient":
        write_path += ["momentum_proj.weight", "momentum_proj.bias"]
        initial = [f"initial_weights.{i}" for i in range(depth)]
    for name in write_path + initial:
        assert full[name] is not None and full[name].abs().max() > 0, name
    assert dx_full[:, :C].abs().max() > 0          # chunk 0 reaches the last read through two writes

    # grad_chunks=1: each write starts from a detached state, so the last read (of W_2) gets gradient
    # through write 1 only: from chunk 1's tokens and gates and from the detached W_1, S_1 (through
    # α and η), never from chunk 0 nor from the initial weights, except chunk 0's last K − 1 inputs,
    # which the convolution (kernel K = 3) mixes into chunk 1's keys and values (and s − 1 more that
    # concatenated keys set beside them)
    layer = small_layer(heads=heads, depth=depth, chunk_size=C, grad_chunks=1, write=write)
    mixed = 2 + (layer.key_span - 1 if layer.key_form == "concat" else 0)
    truncated, dx = grads_after_last_chunk_loss(layer, x)
    for name in write_path:
        assert truncated[name] is not None and truncated[name].abs().max() > 0, name
    # (the graph still reaches them through chunk 0's read, whose output the loss ignores: zeros)
    assert all(is_zero(truncated[name]) for name in initial)
    assert dx[:, :C - mixed].abs().max().item() == 0.0 and dx[:, C - mixed:C].abs().max() > 0
    assert dx[:, C:2 * C].abs().max() > 0
    assert relative_error(truncated["k_proj.weight"], full["k_proj.weight"]) > 1e-6

    # a window as long as the sequence truncates nothing
    windowed, _ = grads_after_last_chunk_loss(
        small_layer(heads=heads, depth=depth, chunk_size=C, grad_chunks=3, write=write), x)
    assert all(relative_error(windowed[name], full[name]) <= 1e-12 for name in full)


@pytest.mark.parametrize("write, depth", LAYERS)
def test_grad_chunks_changes_no_value(write, depth):
    x = torch.randn(2, 13, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y, state = small_layer(chunk_size=3, write=write, depth=depth)(x)
    y_truncated, state_truncated = small_layer(chunk_size=3, grad_chunks=1, write=write, depth=depth)(x)
    assert torch.equal(y, y_truncated) and states_error(state, state_truncated) == 0.0


@pytest.mark.parametrize("write, depth", LAYERS)
@pytest.mark.parametrize("grad_chunks", [None, 2])
def test_activation_checkpointing_recomputes_identically(write, depth, grad_chunks):
    layer = small_layer(chunk_size=4, grad_chunks=grad_chunks, write=write, depth=depth)
    x = torch.randn(2, 14, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def run(fn):
        layer.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_()
        y, _ = fn(xg)
        (y * y).sum().backward()
        return y.detach(), xg.grad, [p.grad.clone() for p in layer.parameters()]

    y, dx, grads = run(layer)
    y_ckpt, dx_ckpt, grads_ckpt = run(lambda t: checkpoint(layer, t, use_reentrant=False))
    assert torch.equal(y, y_ckpt)
    assert relative_error(dx_ckpt, dx) <= 1e-12
    assert all(relative_error(a, b) <= 1e-12 for a, b in zip(grads_ckpt, grads))


@pytest.mark.parametrize("write, depth", LAYERS)
@pytest.mark.parametrize("case", ["random", "repeated, gates saturated"])
def test_long_sequence_stays_finite_in_float32(write, depth, case):
    """2,048 positions in chunks of 64 at the default max_lr; also the worst case for one summed
    chunk step (every token alike, θ at its maximum, η = 1, α = 0; for least squares, one key
    direction summed 2,048 times against the ridge λ: a condition number of 2e5)."""
    torch.manual_seed(0)
    layer = NeuralMemory(dim=32, heads=2, chunk_size=64, depth=depth, **layer_kind(write))
    g = torch.Generator().manual_seed(6)
    if case == "random":
        x = 3 * torch.randn(1, 2048, 32, generator=g)
    else:
        x = 10 * torch.randn(1, 1, 32, generator=g).expand(1, 2048, 32)
        gates = [(layer.lr_proj, 30.0), (layer.decay_proj, -30.0)]
        gates += [(layer.momentum_proj, 30.0)] if write == "gradient" else []
        for proj, bias in gates:
            nn.init.zeros_(proj.weight)
            nn.init.constant_(proj.bias, bias)
    y, state = layer(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(w).all() for w in state_tensors(state))
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("write, depth", LAYERS)
def test_autocast_keeps_the_state_in_float32(write, depth):
    layer = small_layer(dtype=torch.float32, write=write, depth=depth)
    x = torch.randn(2, 9, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = layer(x)
    held = state_tensors(state._replace(recent=None))  # recent: projections in the autocast dtype
    assert all(t.dtype == torch.float32 for t in held) and torch.isfinite(y).all()


def test_errors_are_one_line():
    with pytest.raises(AGIFormerError):
        NeuralMemory(dim=10, heads=3)
    with pytest.raises(AGIFormerError):
        NeuralMemory(dim=8, chunk_size=0)
    with pytest.raises(AGIFormerError, match="write must be one of"):
        NeuralMemory(dim=8, write="hebbian")
    with pytest.raises(AGIFormerError, match="depth 1"):
        NeuralMemory(dim=8, depth=2, write="least_squares")
    layer = small_layer()
    _, state = layer(torch.randn(2, 5, 8, dtype=torch.float64))
    with pytest.raises(AGIFormerError, match="sequences"):
        layer(torch.randn(3, 5, 8, dtype=torch.float64), state)
    with pytest.raises(AGIFormerError, match="least_squares write"):
        small_layer(depth=1, write="least_squares")(torch.randn(2, 5, 8, dtype=torch.float64), state)


def test_memory_apply_matches_the_mlp():
    (q, *_), state = memory_inputs(N=2, L=3, depth=2)
    W1, W2 = state.weights
    assert torch.allclose(memory_apply(state.weights, q), F.silu(q @ W1) @ W2, atol=1e-14)
