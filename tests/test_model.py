"""The whole model: shapes at any length, loss, streaming parity, generation, save/load."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from agiformer import AGIFormer, AGIFormerConfig, AGIFormerError
from agiformer.models import ByteStream, sample_byte

VARIANTS = {
    "gru-overlap2": dict(),
    "gru-overlap0-sum-headdecay": dict(encoder_overlap=0, fusion="sum", memory_decay="head"),
    "mlp-overlap2": dict(head="mlp", head_hidden=32),
    "gru-ngrams4": dict(head_ngrams=4),
    "gru-ngrams4-256-buckets": dict(head_ngrams=4, head_ngram_buckets=256),
    "gru-continuations": dict(head_ngrams=3, head_continuations=(1, 2, 5)),
    "gru-ngrams3-p3": dict(head_ngrams=3, patch_size=3, encoder_overlap=1, window=2),
    "mlp-p3": dict(head="mlp", head_hidden=32, patch_size=3, encoder_overlap=1, window=2),
    "no-effort-sharpening": dict(effort_sharpens_memory=False),
    "ablation-attention-only": dict(mixer="attention"),
    "ablation-memory-only": dict(mixer="memory"),
    "ablation-no-reasoning": dict(reasoning_steps=0),
    # chunks of 2 latents: most positions read a memory that earlier chunks wrote
    "neural-memory-gradient": dict(memory="neural", memory_chunk_size=2),
    "neural-memory-least-squares": dict(memory="neural", memory_write="least_squares", memory_chunk_size=2),
}


def tiny(**overrides) -> AGIFormer:
    torch.manual_seed(0)
    return AGIFormer(AGIFormerConfig.preset("tiny", **overrides))


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 8, 9, 31])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_for_every_byte_at_any_length(variant, length):
    logits = tiny(**VARIANTS[variant])(torch.randint(0, 256, (2, length)))
    assert logits.shape == (2, length, 256) and torch.isfinite(logits).all()


def test_loss_is_bits_per_byte_over_every_byte():
    model = tiny()
    x = torch.randint(0, 256, (3, 29))
    out = model.loss(x, plasticity=0.5, effort=0.5)
    logits = model(x, plasticity=0.5, effort=0.5)
    expected = F.cross_entropy(logits.reshape(-1, 256), x.reshape(-1)) / math.log(2)
    assert torch.allclose(out.bpb, expected, atol=1e-5)
    assert out.n_bytes == 87 and torch.allclose(out.total_bits, out.bpb * 87)
    assert torch.allclose(out.loss, out.bpb + model.config.ponder_weight * out.ponder)


def test_discrepancy_weight_adds_the_token_discrepancy_against_the_byte_embeddings():
    from agiformer.ops import naive_token_discrepancy
    model = tiny(discrepancy_weight=0.3).double()
    x = torch.randint(0, 256, (2, 9))
    out = model.loss(x, plasticity=0.5, effort=0.5)
    logits = model(x, plasticity=0.5, effort=0.5)
    embeddings = model.encoder.embed.weight[:256].detach()
    expected = naive_token_discrepancy(logits, x, embeddings / embeddings.norm(dim=-1).mean()).detach()
    assert torch.allclose(out.loss - out.bpb - model.config.ponder_weight * out.ponder, 0.3 * expected,
                          rtol=1e-12, atol=0)
    assert expected.item() > 0.5  # a real contribution, far above the tolerance
    with pytest.raises(AGIFormerError, match="discrepancy_weight"):
        AGIFormerConfig.preset("tiny", discrepancy_weight=-1.0)


def test_plasticity_and_effort_default_to_the_config():
    model = tiny(plasticity=0.5, effort=0.25).eval()
    x = torch.randint(0, 256, (1, 40))
    assert torch.equal(model(x), model(x, plasticity=0.5, effort=0.25))
    assert not torch.equal(model(x), model(x, plasticity=0.99, effort=0.25))
    with pytest.raises(ValueError):
        model(x, plasticity=0.0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("prompt_length", [0, 1, 4, 7, 13])
def test_streamed_logits_equal_full_forward(variant, prompt_length):
    model = tiny(**VARIANTS[variant]).double().eval()
    alphabet = 3 if "head_continuations" in VARIANTS[variant] else 256  # contexts must recur to be continued
    x = torch.randint(0, alphabet, (1, 45))  # 11 patches: past the window (4) and the memory chunk (8)
    full = model(x, effort=0.7)[0].log_softmax(-1)
    stream = ByteStream(model, bytes(x[0, :prompt_length].tolist()), effort=0.7)
    for t in range(prompt_length, 45):
        assert (stream.next_logits().log_softmax(-1) - full[t]).abs().max() <= 1e-9
        stream.push(int(x[0, t]))


def test_greedy_generation_equals_argmax_of_full_forward():
    model = tiny().double().eval()
    prompt = b"The history of "
    generated = list(model.generate(prompt, 20, temperature=0))
    sequence = list(prompt)
    for byte in generated:
        # logits[:, L] predicts the byte after the sequence; the placeholder at L is never seen
        next_logits = model(torch.tensor([sequence + [0]]))[0, len(sequence)]
        assert byte == int(next_logits.argmax())
        sequence.append(byte)


def test_generation_streams_with_constant_state():
    model = tiny().eval()
    stream = ByteStream(model, b"x" * 100)
    sizes = lambda: sum(t.numel() for s in stream.states for t in (s.attention.keys, s.attention.values, s.memory))
    before = sizes()
    for _ in range(200):
        stream.push(sample_byte(stream.next_logits(), temperature=1.0))
    assert sizes() == before and stream.pending < model.config.patch_size


def test_sampling_is_seeded_and_restricted():
    model = tiny().eval()
    first = list(model.generate(b"abc", 30, temperature=1.0, seed=3))
    assert first == list(model.generate(b"abc", 30, temperature=1.0, seed=3))
    assert list(model.generate(b"abc", 10, top_k=1, seed=5)) == list(model.generate(b"abc", 10, temperature=0))
    logits = torch.tensor([0.0, 5.0, 4.9, -3.0] + [-50.0] * 252)
    drawn = {sample_byte(logits, top_p=0.9, generator=torch.Generator().manual_seed(s)) for s in range(50)}
    assert drawn == {1, 2}


def test_generation_accepts_any_bytes_and_leaves_training_mode_alone():
    model = tiny().train()
    out = list(model.generate(bytes([0xff, 0xfe, 0x00, 0xc3]), 5, seed=0))
    assert len(out) == 5 and all(0 <= b < 256 for b in out) and model.training


def test_bf16_autocast_forward_backward_is_finite():
    model = tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(torch.randint(0, 256, (2, 64)), plasticity=0.1, effort=0.0)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_tiny_model_learns_a_repeating_text():
    model = tiny()
    text = torch.tensor([list(b"the cat sat on the mat. " * 3)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(text).bpb.item()
    for _ in range(60):
        optimizer.zero_grad()
        model.loss(text).loss.backward()
        optimizer.step()
    assert model.loss(text).bpb.item() < first / 3


def copy_bpb(continuation_orders: tuple[int, ...], steps: int = 160) -> float:
    """Train on random 24-byte strings each written twice, 24 bytes apart (beyond the tiny attention
    span of 16 bytes); the bits per byte of the second copies, which only recall can predict."""
    model = tiny(head_continuations=continuation_orders)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)

    def batch():
        strings = torch.randint(0, 256, (16, 24), generator=generator)
        return torch.cat([strings, strings], dim=1)

    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(batch()).loss.backward()
        optimizer.step()
    x = batch()
    with torch.no_grad():
        logits = model(x)[:, 28:]  # the second copy after its first 4 bytes (the order-4 context)
    return F.cross_entropy(logits.reshape(-1, 256), x[:, 28:].reshape(-1)).item() / math.log(2)


def test_in_context_continuations_let_a_model_recall_beyond_its_attention_span():
    assert copy_bpb((4,)) < 1.0
    assert copy_bpb(()) > 6.0  # random bytes are 8 bits each: without continuations nearly nothing is recalled


# ---- save / load -------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model = tiny(head="mlp", plasticity=0.5).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = AGIFormer.from_pretrained(tmp_path / "m")
    x = torch.randint(0, 256, (2, 30))
    assert loaded.config == model.config
    assert torch.equal(loaded(x), model(x))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def damage(directory, how):
    weights, config = directory / "model.safetensors", directory / "config.json"
    if how == "missing directory":
        return directory / "nope"
    if how == "missing config":
        config.unlink()
    elif how == "missing weights":
        weights.unlink()
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "corrupt header":
        data = bytearray(weights.read_bytes())
        data[10:20] = b"\xff" * 10
        weights.write_bytes(bytes(data))
    elif how == "corrupt tensor bytes":
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "empty weights":
        weights.write_bytes(b"")
    elif how == "config does not match weights":
        values = json.loads(config.read_text())
        values["d_model"] = 64
        config.write_text(json.dumps(values))
    elif how == "layer count does not match weights":
        values = json.loads(config.read_text())
        values["n_layers"] = 3
        config.write_text(json.dumps(values))
    elif how == "unknown config key":
        values = json.loads(config.read_text())
        values["d_modle"] = 32
        config.write_text(json.dumps(values))
    elif how == "invalid config JSON":
        config.write_text("{not json")
    elif how == "config too large to allocate":
        values = json.loads(config.read_text())
        values["d_model"] = 2 ** 70
        config.write_text(json.dumps(values))
    elif how == "invalid config value":
        values = json.loads(config.read_text())
        values["head"] = "transformer"
        config.write_text(json.dumps(values))
    return directory


DAMAGE = ["missing directory", "missing config", "missing weights", "truncated weights", "corrupt header",
          "corrupt tensor bytes", "empty weights", "config does not match weights",
          "layer count does not match weights", "unknown config key", "invalid config JSON", "invalid config value",
          "config too large to allocate"]


@pytest.mark.parametrize("how", DAMAGE)
def test_bad_checkpoint_gives_a_one_line_error(tmp_path, how):
    tiny().save_pretrained(tmp_path / "m")
    with pytest.raises(AGIFormerError) as error:
        AGIFormer.from_pretrained(damage(tmp_path / "m", how))
    message = str(error.value)
    assert "\n" not in message and len(message) < 400, message


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_import_pulls_in_no_optional_heavy_dependency():
    code = ("import sys, agiformer; "
            "print(sorted(m for m in ('matplotlib', 'transformers', 'pandas', 'scipy', 'datasets', 'gguf') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_presets_have_the_seed_shapes():
    v1, v2 = AGIFormerConfig.preset("v1"), AGIFormerConfig.preset("v2")
    assert (v1.d_model, v1.n_layers, v1.n_heads, v1.window, v1.encoder_overlap, v1.head) == (512, 6, 8, 128, 0, "gru")
    assert (v2.d_model, v2.n_layers, v2.n_heads, v2.window, v2.encoder_overlap, v2.head) == (768, 12, 12, 256, 2, "mlp")
    with pytest.raises(AGIFormerError):
        AGIFormerConfig.preset("v3")
    assert AGIFormerConfig.from_dict(json.loads(json.dumps(v2.to_dict()))) == v2
