"""The benchmark's reimplementation of the seed's parallel Hebbian form is faithful (so the
comparison in benchmarks/memory_kernel.py is fair), and it reproduces the seed's overflow defect."""

import math

import torch
import torch.nn.functional as F

from agiformer.ops import chunked_hebbian, naive_hebbian
from benchmarks.common import cpu_peak_bytes_dispatch, cpu_peak_bytes_profiler, loglog_slope
from benchmarks.seed_parallel_memory import seed_parallel_hebbian


def inputs(B=2, H=3, L=37, E=8, Ev=6, *, alpha=1.0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = (F.elu(torch.randn(B, H, L, E, generator=g, dtype=dtype)) + 1) / math.sqrt(E)
    k = F.elu(torch.randn(B, H, L, E, generator=g, dtype=dtype)) + 1
    v = torch.randn(B, H, L, Ev, generator=g, dtype=dtype)
    base = 0.9 + 0.1 * torch.sigmoid(torch.randn(B, H, L, generator=g, dtype=dtype))   # seed v2 decay range
    return q, k, v, base.log() + math.log(alpha)


def test_seed_form_equals_naive_hebbian_in_float64():
    q, k, v, log_decay = inputs(alpha=1.0)
    expected, _ = naive_hebbian(q, k, v, log_decay)
    got = seed_parallel_hebbian(q, k, v, log_decay)
    assert got.dtype == torch.float64 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_seed_form_gradients_match_chunked_in_float64():
    q, k, v, log_decay = (t.requires_grad_() for t in inputs(L=20, alpha=1.0))
    cotangent = torch.randn(2, 3, 20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads_seed = torch.autograd.grad(seed_parallel_hebbian(q, k, v, log_decay), (q, k, v, log_decay), cotangent)
    grads_chunked = torch.autograd.grad(chunked_hebbian(q, k, v, log_decay, chunk_size=8)[0], (q, k, v, log_decay),
                                        cotangent)
    for a, b in zip(grads_seed, grads_chunked):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_seed_form_overflows_at_fast_forgetting_in_float32():
    """Seed defect D3: at α = 0.1 exp(−Σ log λ) overflows to inf and the output is NaN; agiformer's
    chunked form stays finite on the same inputs."""
    q, k, v, log_decay = inputs(B=1, H=2, L=2048, E=8, Ev=8, alpha=0.1, dtype=torch.float32)
    assert not torch.isfinite(seed_parallel_hebbian(q, k, v, log_decay)).all()
    assert torch.isfinite(chunked_hebbian(q, k, v, log_decay)[0]).all()


def test_cpu_peak_memory_sees_a_known_allocation():
    def allocate():
        x = torch.ones(1 << 20)            # 4 MiB, freed before the 8 MiB one is made
        del x
        return torch.ones(2 << 20).sum()   # 8 MiB
    for measure in (cpu_peak_bytes_dispatch, cpu_peak_bytes_profiler):
        assert 8 * 2 ** 20 <= measure(allocate) < 9 * 2 ** 20


def test_cpu_peak_memory_methods_agree_on_forward_backward():
    """The op-by-op tracker the memory benchmark uses agrees with torch.profiler's allocator events,
    and ignores views of tensors that existed before (the fp32 inputs are used without a copy)."""
    q, k, v, log_decay = (t.float().requires_grad_() for t in inputs(B=1, H=2, L=256, E=16, Ev=16))

    def forward_backward():
        for t in (q, k, v, log_decay):
            t.grad = None
        out = seed_parallel_hebbian(q, k, v, log_decay) + chunked_hebbian(q, k, v, log_decay)[0]
        out.sum().backward()
        return out

    forward_backward()
    tracked, profiled = cpu_peak_bytes_dispatch(forward_backward), cpu_peak_bytes_profiler(forward_backward)
    assert tracked > 256 * 2 * 16 * 16 * 4                                  # at least one (L, H, E, Ev) tensor
    assert abs(tracked - profiled) <= 0.02 * profiled


def test_loglog_slope():
    assert abs(loglog_slope([256, 512, 1024], [1.0, 2.0, 4.0]) - 1.0) < 1e-12
    assert abs(loglog_slope([256, 512, 1024], [1.0, 4.0, 16.0]) - 2.0) < 1e-12
