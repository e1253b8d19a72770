"""The byte GPT baseline: causal, cached generation equal to the full forward, saved like AGIFormer."""

import pytest
import torch

from agiformer import AGIFormer, AGIFormerConfig, AGIFormerError
from agiformer.models import ByteGPT, ByteGPTConfig, load_model
from tests.helpers import ROUNDING, worst_byte_leak


def tiny_gpt() -> ByteGPT:
    torch.manual_seed(0)
    return ByteGPT(ByteGPTConfig(d_model=32, n_layers=2, n_heads=2))


def test_byte_gpt_is_causal():
    assert worst_byte_leak(tiny_gpt().double(), torch.randint(0, 256, (1, 20))) <= ROUNDING


def test_cached_logits_equal_the_full_forward():
    model = tiny_gpt().double().eval()
    x = torch.randint(0, 256, (1, 30))
    full = model(x)[0]
    logits, caches = model._run(torch.tensor([[256] + x[0, :9].tolist()]))
    assert (logits[0] - full[:10]).abs().max() <= 1e-9
    for t in range(10, 30):
        logits, caches = model._run(x[:, t - 1: t], caches)
        assert (logits[0, -1] - full[t]).abs().max() <= 1e-9


def test_greedy_generation_equals_argmax_of_full_forward():
    model = tiny_gpt().double().eval()
    sequence = list(b"abc")
    for byte in model.generate(b"abc", 15, temperature=0):
        assert byte == int(model(torch.tensor([sequence + [0]]))[0, len(sequence)].argmax())
        sequence.append(byte)


def test_save_load_dispatches_on_model_type(tmp_path):
    model = tiny_gpt().eval()
    model.save_pretrained(tmp_path / "gpt")
    loaded = load_model(tmp_path / "gpt")
    x = torch.randint(0, 256, (2, 12))
    assert isinstance(loaded, ByteGPT) and torch.equal(loaded(x), model(x))
    with pytest.raises(AGIFormerError, match="byte-gpt model, not agiformer"):
        AGIFormer.from_pretrained(tmp_path / "gpt")
    AGIFormer(AGIFormerConfig.preset("tiny")).save_pretrained(tmp_path / "agi")
    assert isinstance(load_model(tmp_path / "agi"), AGIFormer)


def test_loss_is_bits_per_byte():
    model = tiny_gpt()
    out = model.loss(torch.randint(0, 256, (2, 16)))
    assert out.n_bytes == 32 and torch.allclose(out.total_bits / 32, out.bpb) and torch.equal(out.loss, out.bpb)
