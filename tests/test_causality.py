"""Changing input t never changes an output that must not see it, for each component and the model.

The negative control (the seed v2 encoder's symmetric padding, defect D1) proves the probe can fail.
"""

import pytest
import torch

from agiformer import AGIFormer, AGIFormerConfig
from agiformer.nn import NO_BYTE, AdaptiveReasoning, GRUByteHead, HebbianMemory, HybridBlock, MLPByteHead, PatchEncoder
from agiformer.nn.attention import WindowAttention
from agiformer.nn.neural_memory import BlockNeuralMemory
from agiformer.nn import continuation
from agiformer.ops import NO_CONTINUATION
from tests.helpers import LEAK, ROUNDING, output_change, with_byte_changed, with_vector_changed, worst_byte_leak

torch.manual_seed(0)
D, P = 16, 4


class SymmetricPadEncoder(PatchEncoder):
    """The seed v2 encoder before its fix: Conv1d(k=6, s=4, padding=1), latent n covers bytes 4n−1 … 4n+4."""

    def forward(self, x):
        pad = x.new_full((x.shape[0], 1), NO_BYTE)
        latents = self.conv(self.embed(torch.cat([pad, x, pad], dim=1)).transpose(1, 2)).transpose(1, 2)
        return type(super().forward(x))(latents, torch.arange(0, x.shape[1], self.patch_size))


@pytest.mark.parametrize("overlap", [0, 2])
def test_encoder_latent_never_sees_the_patch_it_predicts(overlap):
    encoder = PatchEncoder(dim=D, patch_size=P, overlap=overlap).double()
    x = torch.randint(0, 256, (2, 6 * P))
    latents = lambda b: encoder(b).latents
    for t in range(x.shape[1]):
        # latent n must not see bytes ≥ (n+1)P: byte t may only reach latents n ≥ t // P
        first_allowed = t // P
        assert output_change(latents, x, with_byte_changed(x, t), first_allowed) <= ROUNDING
        assert output_change(latents, x, with_byte_changed(x, t), first_allowed + 1) > LEAK  # and it does see its own


def test_symmetric_pad_encoder_is_caught():
    leaky = SymmetricPadEncoder(dim=D, patch_size=P, overlap=2).double()
    x = torch.randint(0, 256, (1, 6 * P))
    t = 2 * P  # first byte of patch 2 ...
    assert output_change(lambda b: leaky(b).latents, x, with_byte_changed(x, t), t // P) > LEAK  # ... leaks into latent 1


@pytest.mark.parametrize("layer", ["memory-head", "memory-input", "neural-gradient", "neural-least_squares",
                                   "attention", "block-sum", "block-gated"])
def test_sequence_layers_are_causal(layer):
    kind, _, variant = layer.partition("-")
    if kind == "memory":
        module = HebbianMemory(dim=D, heads=2, decay=variant, chunk_size=4)
        fn = lambda x: module(x, plasticity=0.5, effort=1.0)[0]
    elif kind == "neural":
        module = BlockNeuralMemory(dim=D, heads=2, chunk_size=1, write=variant)  # chunk 1: t + 1 reads t's write
        fn = lambda x: module(x, plasticity=0.5, effort=1.0)[0]
    elif kind == "attention":
        module = WindowAttention(dim=D, heads=2, window=3)
        fn = lambda x: module(x)[0]
    else:
        module = HybridBlock(dim=D, heads=2, window=3, fusion=variant,
                             memory=HebbianMemory(dim=D, heads=2, chunk_size=4))
        fn = lambda x: module(x, plasticity=0.5, effort=1.0)[0]
    module.double()
    x = torch.randn(2, 13, D, dtype=torch.float64)
    # a neural memory reads what earlier positions wrote: position t's own input shows from t + 1 on
    # (at t through the query only, and the first read of an empty memory is zero)
    reach = 2 if kind == "neural" else 1
    for t in range(13):
        assert output_change(fn, x, with_vector_changed(x, t), t) <= ROUNDING
        if t + reach <= 13:
            assert output_change(fn, x, with_vector_changed(x, t), t + reach) > LEAK


def test_reasoning_with_halting_is_per_position():
    reasoning = AdaptiveReasoning(dim=D, max_steps=5).double()
    reasoning.halt.weight.data.normal_(std=2.0)  # positions halt after different numbers of steps
    x = torch.randn(2, 11, D, dtype=torch.float64)
    assert len(set(reasoning(x, effort=1.0).steps.flatten().tolist())) > 1
    z = lambda b: reasoning(b, effort=1.0).z
    for t in range(11):
        changed = with_vector_changed(x, t)
        assert output_change(z, x, changed, t) <= ROUNDING
        assert output_change(lambda b: z(b)[:, t + 1:], x, changed, 11) <= ROUNDING


@pytest.mark.parametrize("head", ["gru", "gru-ngrams", "mlp"])
def test_byte_heads_are_causal_within_a_patch(head):
    head = {"gru": lambda: GRUByteHead(dim=D, patch_size=P, hidden=16),
            "gru-ngrams": lambda: GRUByteHead(dim=D, patch_size=P, hidden=16, ngram_order=3),
            "mlp": lambda: MLPByteHead(dim=D, patch_size=P, hidden=16)}[head]().double()
    h = torch.randn(2, 3, D, dtype=torch.float64)
    history = torch.randint(0, 256, (2, 3 * P, head.history_bytes))
    logits = lambda hist: head(h, hist).view(2, 3, P, 256).transpose(1, 2)  # positions within the patch first
    for j in range(P):
        changed = history.clone()
        changed[:, j::P] = (changed[:, j::P] + 1) % 256
        assert output_change(logits, history, changed, j) <= ROUNDING  # the bytes before byte j feed logits j onwards only


VARIANTS = {
    "tiny": {},
    "tiny-v1-like": dict(encoder_overlap=0, fusion="sum", memory_decay="head", head="gru"),
    "tiny-mlp-head": dict(head="mlp", head_hidden=32),
    "tiny-ngram-head": dict(head_ngrams=4),
    "tiny-ngram-head-4096-buckets": dict(head_ngrams=4, head_ngram_buckets=4096),
    "tiny-p3-window2": dict(patch_size=3, window=2, encoder_overlap=1),
    "tiny-memory-only": dict(mixer="memory"),
    "tiny-attention-only-no-reasoning": dict(mixer="attention", reasoning_steps=0),
    "tiny-neural-memory-gradient": dict(memory="neural", memory_chunk_size=2),
    "tiny-neural-memory-least-squares-only": dict(memory="neural", memory_write="least_squares", memory_chunk_size=2,
                                                  mixer="memory"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_whole_model_is_causal(variant):
    model = AGIFormer(AGIFormerConfig.preset("tiny", **VARIANTS[variant])).double()
    x = torch.randint(0, 256, (1, 31))  # not a multiple of P, longer than the window
    assert worst_byte_leak(model, x) <= ROUNDING


def test_in_context_continuations_are_causal_and_a_leaky_one_is_caught(monkeypatch):
    model = AGIFormer(AGIFormerConfig.preset("tiny", head_ngrams=3, head_continuations=(1, 2, 5))).double()
    x = torch.randint(0, 3, (1, 31))  # a small alphabet: contexts recur, so continuations are found
    assert (model.head.continuations.ids(x) != NO_CONTINUATION).float().mean() > 0.5
    assert worst_byte_leak(model, x) <= ROUNDING
    monkeypatch.setattr(continuation, "continuation_ids", lambda x, order, buckets: x)  # "continues" with byte t itself
    assert worst_byte_leak(model, x) > LEAK


@pytest.mark.parametrize("preset", ["v1", "v2"])
def test_full_size_presets_are_causal(preset):
    model = AGIFormer(AGIFormerConfig.preset(preset)).double().eval()
    x = torch.randint(0, 256, (1, 14))
    assert worst_byte_leak(model, x) <= ROUNDING


def test_model_with_leaky_encoder_is_caught():
    model = AGIFormer(AGIFormerConfig.preset("tiny")).double()
    leaky = SymmetricPadEncoder(dim=32, patch_size=4, overlap=2).double()
    leaky.load_state_dict(model.encoder.state_dict())
    model.encoder = leaky
    assert worst_byte_leak(model, torch.randint(0, 256, (1, 31))) > LEAK
