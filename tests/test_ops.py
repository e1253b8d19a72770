"""Parity of every fast op with its plain reference, in float64."""

import math

import pytest
import torch
import torch.nn.functional as F

from agiformer.errors import AGIFormerError
from agiformer.ops import (
    apply_rotary, blockwise_window_attention, chunked_hebbian, codebook_distances, embedding_sum, hebbian_step,
    naive_embedding_sum, naive_hebbian, naive_token_discrepancy, naive_window_attention, rolling_kv_from_sequence,
    rotary_angles, token_discrepancy, window_attention_step,
)
from tests.helpers import relative_error

ALPHAS = [0.1, 0.5, 0.99, 1.0]


def hebbian_inputs(B=2, H=3, L=37, E=8, Ev=6, *, alpha=1.0, decay="input", dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = (F.elu(torch.randn(B, H, L, E, generator=g, dtype=dtype)) + 1) / math.sqrt(E)
    k = F.elu(torch.randn(B, H, L, E, generator=g, dtype=dtype)) + 1
    v = torch.randn(B, H, L, Ev, generator=g, dtype=dtype)
    if decay == "head":  # seed v1: one constant per head
        base = (0.99 + 0.01 * torch.sigmoid(torch.randn(H, generator=g, dtype=dtype)))[None, :, None].expand(B, H, L)
    else:                # seed v2: per position and head
        base = 0.9 + 0.1 * torch.sigmoid(torch.randn(B, H, L, generator=g, dtype=dtype))
    return q, k, v, base.log() + math.log(alpha)


def quadratic_hebbian(q, k, v, log_decay, eps=1e-6):
    """Closed form: out_t = Σ_{j≤t} w_tj v_j / Σ_{j≤t} w_tj with w_tj = (q_t·k_j) Π_{j<m≤t} λ_m."""
    b = log_decay.cumsum(-1)
    L = q.shape[2]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    decay = (b[..., :, None] - b[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    w = (q @ k.transpose(-1, -2)) * decay
    return (w @ v) / (w.sum(-1, keepdim=True) + eps)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("decay", ["head", "input"])
@pytest.mark.parametrize("chunk_size", [1, 16, 64])
@pytest.mark.parametrize("length", [37, 100])
def test_hebbian_chunked_equals_naive_equals_closed_form(alpha, decay, chunk_size, length):
    q, k, v, log_decay = hebbian_inputs(L=length, alpha=alpha, decay=decay)
    chunked, chunked_state = chunked_hebbian(q, k, v, log_decay, chunk_size=chunk_size)
    naive, naive_state = naive_hebbian(q, k, v, log_decay)
    assert relative_error(chunked, naive) <= 1e-10
    assert relative_error(chunked_state, naive_state) <= 1e-10
    assert relative_error(naive, quadratic_hebbian(q, k, v, log_decay)) <= 1e-10


@pytest.mark.parametrize("alpha", ALPHAS)
def test_hebbian_carried_state_continues_the_sequence(alpha):
    q, k, v, log_decay = hebbian_inputs(L=50, alpha=alpha)
    whole, whole_state = chunked_hebbian(q, k, v, log_decay, chunk_size=16)
    first, state = chunked_hebbian(q[:, :, :23], k[:, :, :23], v[:, :, :23], log_decay[:, :, :23], chunk_size=16)
    outs = [first]
    for t in range(23, 50):  # then one step at a time, as generation does
        out, state = hebbian_step(q[:, :, t], k[:, :, t], v[:, :, t], log_decay[:, :, t], state)
        outs.append(out.unsqueeze(2))
    assert relative_error(torch.cat(outs, dim=2), whole) <= 1e-10
    assert relative_error(state, whole_state) <= 1e-10


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("autocast", [False, True])
def test_hebbian_stays_finite_at_16k_positions(alpha, autocast):
    dtype = torch.bfloat16 if autocast else torch.float32
    q, k, v, log_decay = hebbian_inputs(B=1, H=2, L=16384, E=8, Ev=8, alpha=alpha, dtype=torch.float32)
    # the effort-0 sharpening (exponent 11) is the steepest decay the model can ask for
    for sharpen in (1.0, 11.0):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, state = chunked_hebbian(q.to(dtype), k.to(dtype), v.to(dtype), log_decay * sharpen, chunk_size=64)
        assert out.dtype == torch.float32  # computed in fp32 even from bf16 inputs
        assert torch.isfinite(out).all() and torch.isfinite(state).all()


@pytest.mark.parametrize("length", [1, 5, 16, 37])
@pytest.mark.parametrize("window", [1, 4, 8, 50])
def test_blockwise_window_attention_equals_dense(length, window):
    g = torch.Generator().manual_seed(length * 100 + window)
    q, k, v = (torch.randn(2, 3, length, 8, generator=g, dtype=torch.float64) for _ in range(3))
    blockwise = blockwise_window_attention(q, k, v, window)
    assert relative_error(blockwise, naive_window_attention(q, k, v, window)) <= 1e-12


def test_dense_reference_is_really_windowed():
    """The reference itself: query i must be a softmax over keys i−W+1 … i, computed by hand."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 9, 4, generator=g, dtype=torch.float64) for _ in range(3))
    W, i = 3, 7
    scores = (q[0, 0, i] @ k[0, 0, i - W + 1: i + 1].T) / 2.0
    expected = scores.softmax(-1) @ v[0, 0, i - W + 1: i + 1]
    assert torch.allclose(naive_window_attention(q, k, v, W)[0, 0, i], expected, atol=1e-12)


@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("prefill", [0, 2, 11])
def test_rolling_cache_steps_equal_dense(window, prefill):
    g = torch.Generator().manual_seed(window + prefill)
    L = 20
    q, k, v = (torch.randn(2, 2, L, 6, generator=g, dtype=torch.float64) for _ in range(3))
    dense = naive_window_attention(q, k, v, window)
    cache = rolling_kv_from_sequence(k[:, :, :prefill], v[:, :, :prefill], window) if prefill else None
    for t in range(prefill, L):
        out, cache = window_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], cache, window)
        assert relative_error(out, dense[:, :, t]) <= 1e-12


def test_rotary_scores_depend_on_relative_position_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)

    def score(i, j):
        cos, sin = rotary_angles(torch.tensor([i, j]), 8, dtype=torch.float64)
        return apply_rotary(q, cos[0], sin[0]) @ apply_rotary(k, cos[1], sin[1])

    assert abs(score(5, 2) - score(105, 102)) < 1e-9
    assert abs(score(5, 2) - score(5, 3)) > 1e-3


@pytest.mark.parametrize("shape", [(2, 7, 4, 5), (3, 1), (2, 0, 3)])
def test_embedding_sum_equals_lookup_then_add(shape):
    g = torch.Generator().manual_seed(len(shape))
    weight = torch.randn(50, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 50, shape, generator=g)
    ids.view(-1)[:2] = 7  # a row used twice in one sum: its gradient adds up
    upstream = torch.randn(*shape[:-1], 6, generator=g, dtype=torch.float64)
    fused, plain = embedding_sum(ids, weight), naive_embedding_sum(ids, weight)
    assert fused.shape == plain.shape
    (fused_grad,) = torch.autograd.grad((fused * upstream).sum(), weight)
    (plain_grad,) = torch.autograd.grad((plain * upstream).sum(), weight)
    (sparse_grad,) = torch.autograd.grad((embedding_sum(ids, weight, sparse_gradient=True) * upstream).sum(), weight)
    assert sparse_grad.is_sparse
    if ids.numel():
        assert relative_error(fused, plain) <= 1e-12 and relative_error(fused_grad, plain_grad) <= 1e-12
        assert relative_error(sparse_grad.to_dense(), plain_grad) <= 1e-12
        # negative control: one id off by one is a real difference, far above rounding
        wrong = ids.clone()
        wrong.view(-1)[-1] = (wrong.view(-1)[-1] + 1) % 50
        assert relative_error(embedding_sum(wrong, weight), plain) > 1e-3
    else:
        assert fused.numel() == 0 and fused_grad.abs().max() == 0


# ----------------------------------------------------------------------------- token discrepancy (MVoT)

def discrepancy_inputs(shape=(3, 5), K=7, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, K, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, K, shape, generator=g)
    codebook = torch.randn(K, d, generator=g, dtype=torch.float64)
    return logits, targets, codebook


@pytest.mark.parametrize("shape", [(1,), (3, 5), (2, 2, 3)])
def test_token_discrepancy_equals_the_loop_with_its_gradient(shape):
    logits, targets, codebook = discrepancy_inputs(shape)
    fast = token_discrepancy(logits, targets, codebook)
    (fast_grad,) = torch.autograd.grad(fast, logits)
    slow = naive_token_discrepancy(logits, targets, codebook)
    (slow_grad,) = torch.autograd.grad(slow, logits)
    assert torch.allclose(fast, slow, rtol=1e-12, atol=0)
    assert torch.allclose(fast_grad, slow_grad, rtol=1e-10, atol=1e-14)
    # negative control: each target replaced by the next token id gives a loss far outside that tolerance
    shifted = naive_token_discrepancy(logits, (targets + 1) % logits.shape[-1], codebook)
    assert not torch.allclose(fast, shifted, rtol=1e-3)


def test_token_discrepancy_charges_a_near_token_less_and_the_target_nothing():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]], dtype=torch.float64)
    assert torch.equal(codebook_distances(codebook), torch.tensor([[0, 1, 5], [1, 0, 4], [5, 4, 0]], dtype=torch.float64))
    sure = lambda k: torch.full((1, 3), -1e9, dtype=torch.float64).index_fill_(1, torch.tensor([k]), 0.0)  # noqa: E731
    target = torch.tensor([0])
    assert token_discrepancy(sure(0), target, codebook) == 0
    assert token_discrepancy(sure(1), target, codebook) == 1 and token_discrepancy(sure(2), target, codebook) == 5
    codebook.requires_grad_(True)  # the distances are a constant: the codebook gets no gradient through them
    logits = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    token_discrepancy(logits, target, codebook).backward()
    assert codebook.grad is None and logits.grad is not None


def test_token_discrepancy_refuses_without_a_codebook_or_with_mismatched_shapes():
    logits, targets, codebook = discrepancy_inputs()
    for bad, message in [((logits, targets, None), "needs a codebook"),
                         ((logits, targets, codebook[:-1]), "does not match logits over 7 tokens"),
                         ((logits, targets[:, :-1], codebook), "do not match logits"),
                         ((logits, targets + 7, codebook), r"token ids in \[0, 7\)")]:
        with pytest.raises(AGIFormerError, match=message) as error:
            token_discrepancy(*bad)
        assert "\n" not in str(error.value)
