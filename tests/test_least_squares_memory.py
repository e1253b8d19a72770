"""Least-squares memory op: the chunked scan against the per-token reference (float64), the read against
the ridge regression it claims to solve, streaming split anywhere and read-before-write causality.
The `NeuralMemory` layer with write="least_squares" is tested beside the gradient write in
test_neural_memory.py."""

import pytest
import torch
import torch.nn.functional as F

from agiformer.errors import AGIFormerError
from agiformer.ops.least_squares_memory import (
    LeastSquaresMemoryState, initial_least_squares_state, least_squares_memory_scan, naive_least_squares_memory,
    spd_solve,
)
from tests.helpers import relative_error

RIDGE = 0.05


def memory_inputs(*, N, L, Dk=4, Dv=5, seed=0, start_empty=False):
    """Unit q, k as the layer makes them, θ in [0, 1], α up to 0.3, and (unless start_empty) a
    non-zero starting state, a positive semi-definite A and any B, so every term is exercised."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    q, k = F.normalize(randn(N, L, Dk), dim=-1), F.normalize(randn(N, L, Dk), dim=-1)
    inputs = (q, k, randn(N, L, Dv), rand(N, L), 0.3 * rand(N, L))
    if start_empty:
        return inputs, initial_least_squares_state(N, Dk, Dv, dtype=torch.float64)
    root = randn(N, Dk, Dk)
    return inputs, LeastSquaresMemoryState(root @ root.transpose(1, 2), randn(N, Dk, Dv))


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
@pytest.mark.parametrize("length", [1, 7, 16, 21])
def test_scan_equals_per_token_reference(chunk_size, length):
    inputs, state = memory_inputs(N=3, L=length, seed=length)
    y, final = least_squares_memory_scan(*inputs, state, chunk_size=chunk_size, ridge=RIDGE)
    assert relative_error(y, naive_least_squares_memory(*inputs, state, chunk_size=chunk_size, ridge=RIDGE)) <= 1e-10
    trailing = length % chunk_size
    if trailing:  # the incomplete chunk waits, unwritten
        for pending, full in zip(final.pending, (inputs[1], inputs[2], inputs[3])):
            assert torch.equal(pending, full[:, length - trailing:])
    else:
        assert final.pending is None


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_scan_gradients_equal_the_references(chunk_size):
    """The solve's backward reuses the forward's Cholesky factor: every input's gradient, the starting
    state's included (its A built symmetric, as the scan builds it), matches autograd through the
    per-token reference's torch.linalg.solve."""
    inputs, state = memory_inputs(N=2, L=13, seed=chunk_size)
    root = torch.linalg.cholesky(state.keys)
    leaves = [t.clone().requires_grad_(True) for t in (*inputs, root, state.values)]
    probe = torch.randn(2, 13, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def gradients(read):
        start = LeastSquaresMemoryState(leaves[5] @ leaves[5].transpose(1, 2), leaves[6])
        y = read(*leaves[:5], start, chunk_size=chunk_size, ridge=RIDGE)
        return torch.autograd.grad(((y[0] if isinstance(y, tuple) else y) * probe).sum(), leaves)

    for fast, reference in zip(gradients(least_squares_memory_scan), gradients(naive_least_squares_memory)):
        assert relative_error(fast, reference) <= 1e-9


def test_spd_solve_passes_gradcheck():
    g = torch.Generator().manual_seed(0)
    root = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    A = (root @ root.transpose(-1, -2) + torch.eye(4, dtype=torch.float64)).requires_grad_(True)
    Q = torch.randn(2, 3, 4, 2, dtype=torch.float64, generator=g, requires_grad=True)
    # a symmetric input's perturbations stay symmetric: check through the symmetric part
    assert torch.autograd.gradcheck(lambda A, Q: spd_solve((A + A.transpose(-1, -2)) / 2, Q), (A, Q))


def test_read_is_the_ridge_regression_of_earlier_chunks():
    """No forgetting, from empty: chunk c reads q W* with W* = argmin Σ_s θ_s ‖k_s W − v_s‖² + λ‖W‖²
    over the tokens of chunks before c, solved here by least squares on the stacked system."""
    (q, k, v, weight, _), state = memory_inputs(N=2, L=12, start_empty=True)
    C = 4
    y, _ = least_squares_memory_scan(q, k, v, weight, torch.zeros_like(weight), state, chunk_size=C, ridge=RIDGE)
    assert y[:, :C].abs().max().item() == 0.0  # nothing written yet: an empty memory reads zero
    for n in range(2):
        for c in (1, 2):
            root = weight[n, :c * C].sqrt().unsqueeze(-1)
            system = torch.cat([root * k[n, :c * C], RIDGE ** 0.5 * torch.eye(4, dtype=k.dtype)])
            target = torch.cat([root * v[n, :c * C], torch.zeros(4, 5, dtype=v.dtype)])
            best = torch.linalg.lstsq(system, target).solution
            assert relative_error(y[n, c * C:(c + 1) * C], q[n, c * C:(c + 1) * C] @ best) <= 1e-10


def test_a_stored_pair_comes_back_when_keys_are_few():
    """Fewer keys than dimensions, small λ: the fitted map returns each stored value at its key."""
    g = torch.Generator().manual_seed(1)
    keys = F.normalize(torch.randn(1, 6, 16, generator=g, dtype=torch.float64), dim=-1)
    values = torch.randn(1, 6, 3, generator=g, dtype=torch.float64)
    ones = torch.ones(1, 6, dtype=torch.float64)
    state = initial_least_squares_state(1, 16, 3, dtype=torch.float64)
    _, state = least_squares_memory_scan(keys, keys, values, ones, 0 * ones, state, chunk_size=6, ridge=1e-8)
    y, _ = least_squares_memory_scan(keys, keys, values, ones, 0 * ones, state, chunk_size=6, ridge=1e-8)
    assert relative_error(y, values) <= 1e-6


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_scan_split_anywhere_equals_one_call(chunk_size):
    L = 21
    inputs, state = memory_inputs(N=2, L=L, seed=chunk_size)
    y, final = least_squares_memory_scan(*inputs, state, chunk_size=chunk_size, ridge=RIDGE)
    for split in range(L + 1):
        y_a, middle = least_squares_memory_scan(*(t[:, :split] for t in inputs), state, chunk_size=chunk_size,
                                                ridge=RIDGE)
        y_b, end = least_squares_memory_scan(*(t[:, split:] for t in inputs), middle, chunk_size=chunk_size,
                                             ridge=RIDGE)
        assert relative_error(torch.cat([y_a, y_b], dim=1), y) <= 1e-12
        assert relative_error(end.keys, final.keys) <= 1e-12 and relative_error(end.values, final.values) <= 1e-12
        assert (end.pending is None) == (final.pending is None)
        if final.pending is not None:
            assert all(torch.equal(a, b) for a, b in zip(end.pending, final.pending))


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_write_inputs_never_reach_their_own_chunk(chunk_size):
    """k, v, θ, α of token t leave every output up to the end of t's chunk unchanged, and change later ones."""
    L = 9
    inputs, state = memory_inputs(N=2, L=L)
    y, _ = least_squares_memory_scan(*inputs, state, chunk_size=chunk_size, ridge=RIDGE)
    for t in range(L):
        chunk_end = (t // chunk_size + 1) * chunk_size
        for which in range(1, 5):
            if which == 4 and t % chunk_size != chunk_size - 1:
                continue  # a chunk forgets by its last token's α only
            changed = [x.clone() for x in inputs]
            changed[which][:, t] += 0.25
            y_changed, _ = least_squares_memory_scan(*changed, state, chunk_size=chunk_size, ridge=RIDGE)
            assert (y[:, :chunk_end] - y_changed[:, :chunk_end]).abs().max().item() == 0.0
            if chunk_end < L:
                assert (y[:, chunk_end:] - y_changed[:, chunk_end:]).abs().max().item() > 0.0


def test_bad_arguments_are_one_line_errors():
    inputs, state = memory_inputs(N=1, L=4)
    with pytest.raises(AGIFormerError, match="ridge"):
        least_squares_memory_scan(*inputs, state, chunk_size=2, ridge=0.0)
    with pytest.raises(AGIFormerError, match="chunk_size"):
        least_squares_memory_scan(*inputs, state, chunk_size=0, ridge=RIDGE)
    with pytest.raises(AGIFormerError, match="grad_chunks"):
        least_squares_memory_scan(*inputs, state, chunk_size=2, ridge=RIDGE, grad_chunks=0)
