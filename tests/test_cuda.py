"""The CUDA paths against the CPU ones, in float64: every fast op (values and gradients), the AGIFORMER
model with its streamed generation, and MAG around a tiny random base. Skipped where there is no GPU
(CI has none); on a GPU machine: `pytest tests/test_cuda.py`."""

import pytest
import torch

from agiformer.models import ByteStream
from agiformer.ops import blockwise_window_attention, chunked_hebbian
from agiformer.ops.least_squares_memory import LeastSquaresMemoryState, least_squares_memory_scan
from agiformer.ops.neural_memory import initial_neural_memory_state, neural_memory_scan
from tests.helpers import relative_error
from tests import test_mag_model as mag  # skips this module where transformers is missing
from tests.test_least_squares_memory import RIDGE, memory_inputs
from tests.test_model import VARIANTS, tiny
from tests.test_ops import hebbian_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TOL = 1e-9
# Hugging Face's rotary embedding computes cos/sin in float32 whatever the model's dtype, and the CPU's
# and the GPU's float32 sin differ in the last bit: a float64 base agrees across devices to ~1e-7 only
HF_ROTARY_TOL = 1e-6


def on(device: str, tensors):
    """Fresh leaf copies of `tensors` on `device`, floating ones requiring grad."""
    return [t.detach().clone().to(device).requires_grad_(t.is_floating_point()) for t in tensors]


def outputs_and_gradients(op, inputs):
    """op(*inputs) and the gradients of a fixed random projection of it with respect to every input."""
    out = op(*inputs)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype).to(out.device)
    (out * weight).sum().backward()
    return [out.detach()] + [t.grad for t in inputs if t.requires_grad]


def least_squares(q, k, v, weight, decay, keys, values):
    return least_squares_memory_scan(q, k, v, weight, decay, LeastSquaresMemoryState(keys, values),
                                     chunk_size=8, ridge=RIDGE)[0]


def gradient_write(q, k, v, lr, momentum, decay, weights):
    return neural_memory_scan(q, k, v, lr, momentum, decay, initial_neural_memory_state((weights,)),
                              chunk_size=8)[0]


def op_cases():
    g = torch.Generator().manual_seed(1)
    (q, k, v, weight, decay), state = memory_inputs(N=3, L=45, Dk=6, Dv=5, seed=3)
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return {
        "hebbian": (lambda *t: chunked_hebbian(*t, chunk_size=16)[0], list(hebbian_inputs(L=45))),
        "window_attention": (lambda *t: blockwise_window_attention(*t, window=7),
                             [torch.randn(2, 3, 45, 8, generator=g, dtype=torch.float64) for _ in range(3)]),
        "least_squares": (least_squares, [q, k, v, weight, decay, state.keys, state.values]),
        "gradient_write": (gradient_write, [q, k, torch.randn(3, 45, 6, generator=g, dtype=torch.float64),
                                            0.1 * rand(3, 45), rand(3, 45), 0.1 * rand(3, 45),
                                            0.1 * torch.randn(3, 6, 6, generator=g, dtype=torch.float64)]),
    }


@pytest.mark.parametrize("name", ["hebbian", "window_attention", "least_squares", "gradient_write"])
def test_fast_ops_and_their_gradients_on_cuda_equal_cpu(name):
    op, inputs = op_cases()[name]
    cpu = outputs_and_gradients(op, on("cpu", inputs))
    cuda = outputs_and_gradients(op, on("cuda", inputs))
    assert all(c.device.type == "cuda" for c in cuda)
    for expected, got in zip(cpu, cuda, strict=True):
        assert relative_error(got, expected) <= TOL


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_agiformer_on_cuda_equals_cpu_and_streams_like_its_forward(variant):
    model = tiny(**VARIANTS[variant]).double().eval()
    x = torch.randint(0, 256, (2, 45), generator=torch.Generator().manual_seed(2))
    expected = model(x, effort=0.7)
    model.cuda()
    full = model(x.cuda(), effort=0.7)
    assert relative_error(full, expected) <= TOL
    stream = ByteStream(model, bytes(x[0, :5].tolist()), effort=0.7)
    for t in range(5, 45):
        assert relative_error(stream.next_logits().log_softmax(-1), full[0, t].log_softmax(-1)) <= TOL
        stream.push(int(x[0, t]))


def test_agiformer_trains_in_bf16_autocast_on_cuda():
    model = tiny().cuda()
    x = torch.randint(0, 256, (2, 64), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.loss(x).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("architecture", mag.ARCHITECTURES)
@pytest.mark.parametrize("memory", mag.MEMORIES)
def test_mag_on_cuda_equals_cpu_streams_and_decodes_alike(architecture, memory):
    model = mag.tiny_mag(architecture, **mag.MEMORIES[memory])
    x = mag.tokens(2, 23, seed=2)
    with torch.no_grad():
        expected, _ = model(x, window=5)
    generated = model.greedy_generate(x[:, :8], 6, window=5)
    model.cuda()
    x = x.cuda()
    with torch.no_grad():
        full, _ = model(x, window=5)
        pieces, state = [], None
        for a, b in [(0, 7), (7, 16)] + [(t, t + 1) for t in range(16, 23)]:
            logits, state = model(x[:, a:b], state, window=5)
            pieces.append(logits)
    assert relative_error(full, expected) <= HF_ROTARY_TOL
    assert relative_error(torch.cat(pieces, dim=1), full) <= TOL
    assert torch.equal(model.greedy_generate(x[:, :8], 6, window=5).cpu(), generated)


def test_mag_trains_with_a_bf16_base_on_cuda():
    base = mag.tiny_base("qwen3", dtype=torch.float32).cuda()
    torch.manual_seed(1)
    model = mag.MAGModel(base, mag.MAGConfig.for_base(base, layers="last_2", memory_chunk_size=4,
                                                      memory_write="least_squares", memory_key_span=2,
                                                      memory_key_form="concat"), base_dtype=torch.bfloat16)
    logits, _ = model(mag.tokens(2, 29, seed=6).cuda(), window=5)
    logits.float().logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.trainable_parameters()]
    assert torch.isfinite(logits).all() and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.mag["3"].memory.k_proj.weight.grad.abs().max() > 0
