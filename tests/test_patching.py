"""Dynamic patches: the index arithmetic against plain loops, the pooled encoder and the per-patch head
against their references, and for every patching mode causality (with a leaky control), streaming
equal to the full forward, and batches whose rows have different patch counts."""

import json
import re

import pytest
import torch

from agiformer import AGIFormer, AGIFormerConfig, AGIFormerError
from agiformer.models import ByteNgramLM, ByteNgramLMConfig, ByteStream, load_model
from agiformer.nn import GRUByteHead, MLPByteHead, PatchEncoder
from agiformer.nn.patching import LearnedPatcher, SpacePatcher, ratio_loss
from agiformer.ops import NO_BYTE
from agiformer.ops.patching import (
    cap_patch_length, fixed_ends, naive_cap_patch_length, patch_layout, threshold_ends, word_ends,
)
from agiformer.cli import main
from agiformer.train.trainer import Trainer
from tests.helpers import LEAK, ROUNDING, worst_byte_leak
from tests.test_train import toy_recipe

ALPHABET = torch.tensor(list(b"ab cd.,\n"))  # words, separators and runs of them


def text(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return ALPHABET[torch.randint(0, len(ALPHABET), (rows, length), generator=generator)]


def naive_layout(ends: torch.Tensor):
    index, offset = torch.zeros_like(ends, dtype=torch.long), torch.zeros_like(ends, dtype=torch.long)
    for b, row in enumerate(ends.tolist()):
        patch = position = 0
        for t, end in enumerate(row):
            index[b, t], offset[b, t] = patch, position
            patch, position = (patch + 1, 0) if end else (patch, position + 1)
    return index, offset


@pytest.mark.parametrize("max_bytes", [1, 2, 3, 5])
def test_capped_ends_and_layout_equal_plain_loops(max_bytes):
    natural = torch.rand(4, 50, generator=torch.Generator().manual_seed(max_bytes)) < 0.15
    ends = cap_patch_length(natural, max_bytes)
    assert torch.equal(ends, naive_cap_patch_length(natural, max_bytes))
    layout = patch_layout(ends)
    index, offset = naive_layout(ends)
    assert torch.equal(layout.index, index) and torch.equal(layout.offset, offset)
    assert int(layout.offset.max()) < max_bytes
    for b in range(4):
        assert layout.counts[b] == index[b, -1] + 1
        for k in range(int(layout.counts[b])):
            members = (index[b] == k).nonzero().flatten()
            assert layout.last[b, k] == members.max() and layout.lengths[b, k] == len(members)


def test_word_ends_and_entropy_rules():
    x = torch.tensor([list(b"the cat,  sat.")])
    pieces, start = [], 0
    for t in word_ends(x)[0].nonzero().flatten().tolist():
        pieces.append(bytes(x[0, start:t + 1].tolist()))
        start = t + 1
    assert pieces == [b"the ", b"cat,", b"  sat."]
    entropy, previous = torch.tensor([[1.0, 3.0, 2.5]]), torch.tensor([[0.5, 1.0, 3.0]])
    assert threshold_ends(entropy, previous, 2.0, "global").tolist() == [[False, True, True]]
    assert threshold_ends(entropy, previous, 1.0, "monotonic").tolist() == [[False, True, False]]
    with pytest.raises(ValueError, match="rule"):
        threshold_ends(entropy, previous, 1.0, "local")


@pytest.mark.parametrize("overlap", [0, 2])
def test_pooled_encoder_equals_the_convolution_on_fixed_patches_and_a_plain_window_on_any(overlap):
    torch.manual_seed(0)
    encoder = PatchEncoder(dim=8, patch_size=4, overlap=overlap).double()
    x = text(2, 24)
    fixed = patch_layout(fixed_ends((2, 24), 4))
    pooled = encoder.pooled(x, fixed.last, fixed.lengths)
    assert (pooled - encoder(x).latents).abs().max() <= ROUNDING * pooled.abs().max()
    layout = patch_layout(cap_patch_length(word_ends(x), 4))
    pooled = encoder.pooled(x, layout.last, layout.lengths)
    for b in range(2):
        for k in range(int(layout.counts[b])):
            first = int(layout.last[b, k] - layout.lengths[b, k] + 1)
            window = x[b, max(0, first - overlap): int(layout.last[b, k]) + 1].tolist()
            window = [NO_BYTE] * (4 + overlap - len(window)) + window  # the kernel's taps before the window read nothing
            plain = encoder(torch.tensor([window[overlap:]])).latents[0, 0] if overlap == 0 else \
                encoder.conv(encoder.embed(torch.tensor([window])).transpose(1, 2))[0, :, 0]
            assert (pooled[b, k] - plain).abs().max() <= ROUNDING * plain.abs().max()
    shorter = encoder.pooled(x, layout.last, (layout.lengths - 1).clamp(min=0))
    assert (shorter - pooled).abs().max() > LEAK  # the mask matters: the control is far above rounding


@pytest.mark.parametrize("head", ["gru", "mlp"])
def test_head_on_a_layout_equals_the_fixed_path_and_a_loop_over_patches(head):
    torch.manual_seed(0)
    module = (GRUByteHead(dim=8, patch_size=4, hidden=8, ngram_order=3) if head == "gru"
              else MLPByteHead(dim=8, patch_size=4, hidden=8)).double()
    x = text(2, 22)
    K = module.history_bytes
    history = torch.nn.functional.pad(x, (K, 0), value=NO_BYTE).unfold(1, K, 1)[:, :22]
    h = torch.randn(2, 6, 8, dtype=torch.float64)
    fast = module(h, history)
    general = module(h, history, None, patch_layout(fixed_ends((2, 22), 4)))
    assert (fast - general).abs().max() <= ROUNDING * fast.abs().max()
    layout = patch_layout(cap_patch_length(word_ends(x), 4))
    h = torch.randn(2, int(layout.counts.max()), 8, dtype=torch.float64)
    logits = module(h, history, None, layout)
    for b in range(2):
        for k in range(int(layout.counts[b])):
            members = (layout.index[b] == k).nonzero().flatten()
            state = module.start(h[b:b + 1, k])
            for j, t in enumerate(members.tolist()):
                step, state = module.step(state, history[b:b + 1, t], j)
                assert (step[0] - logits[b, t]).abs().max() <= ROUNDING * logits.abs().max()


def entropy_model(seed: int = 0) -> ByteNgramLM:
    torch.manual_seed(seed)
    model = ByteNgramLM(ByteNgramLMConfig(d_model=16, context_bytes=3, buckets=64, n_layers=1)).double()
    model.head.weight.data *= 20  # spread the entropies out, so that the threshold splits them clearly
    return model


def tiny(patching: str, **overrides) -> AGIFormer:
    """A tiny float64 model with the given patching; an entropy model's threshold sits midway between two
    of the entropies it gives on the test text, so that no decision is a rounding away from flipping."""
    torch.manual_seed(0)
    if patching != "entropy":
        return AGIFormer(AGIFormerConfig.preset("tiny", patching=patching, **overrides)).double().eval()
    lm = entropy_model()
    with torch.no_grad():
        values = lm.entropies(text(1, 64))[:, 1:].flatten().unique().sort().values
    middle = len(values) // 2
    threshold = float(values[middle - 1] + values[middle]) / 2
    model = AGIFormer(AGIFormerConfig.preset("tiny", patching="entropy", entropy_model=lm.config.to_dict(),
                                             entropy_threshold=threshold, **overrides)).double().eval()
    model.patcher.model.load_state_dict(lm.state_dict())
    return model


MODES = ["space", "entropy", "entropy-monotonic", "learned"]


def build(mode: str) -> AGIFormer:
    patching, _, rule = mode.partition("-")
    if rule:
        model = tiny(patching, entropy_rule=rule)
        entropy = model.patcher.entropies(text(1, 64))
        rises = (entropy[:, 1:] - entropy[:, :-1]).flatten().sort().values
        model.patcher.threshold = float(rises[len(rises) // 2 - 1] + rises[len(rises) // 2]) / 2
        return model
    return tiny(patching)


@pytest.mark.parametrize("mode", MODES)
def test_patches_vary_and_stay_within_the_cap(mode):
    model = build(mode)
    layout = model.patches(text(2, 64)).layout
    lengths = layout.lengths[layout.lengths > 0]
    assert lengths.max() <= model.config.patch_size and lengths.min() >= 1
    assert len(lengths.unique()) > 1  # really dynamic


@pytest.mark.parametrize("mode", MODES)
def test_every_patching_is_causal(mode):
    model = build(mode)
    assert worst_byte_leak(model, text(1, 40, seed=1)) <= ROUNDING


def test_a_patcher_that_peeks_at_the_next_byte_is_caught(monkeypatch):
    model = tiny("space")
    peeking = lambda self, x: torch.cat([word_ends(x)[:, 1:], torch.zeros_like(x[:, :1], dtype=torch.bool)], dim=1)
    monkeypatch.setattr(SpacePatcher, "natural_ends", peeking)  # ends before a separator: decided by the next byte
    assert worst_byte_leak(model, text(1, 40, seed=1)) > LEAK


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prompt_length", [0, 3, 11])
def test_streamed_logits_equal_the_full_forward(mode, prompt_length):
    model = build(mode)
    x = text(1, 48, seed=2)
    full = model(x)[0].log_softmax(-1)
    stream = ByteStream(model, bytes(x[0, :prompt_length].tolist()))
    for t in range(prompt_length, 48):
        assert (stream.next_logits().log_softmax(-1) - full[t]).abs().max() <= 1e-9
        stream.push(int(x[0, t]))


@pytest.mark.parametrize("mode", MODES)
def test_a_batch_of_different_patch_counts_equals_its_rows_alone(mode):
    model = build(mode)
    x = text(3, 40, seed=3)
    x[1, :20] = ord(" ")  # fewer, longer patches in this row
    assert len(model.patches(x).layout.counts.unique()) > 1
    batch = model(x)
    for b in range(3):
        alone = model(x[b:b + 1])[0]
        assert (batch[b] - alone).abs().max() <= ROUNDING * alone.abs().max()


def test_greedy_generation_equals_the_argmax_of_the_full_forward():
    model = tiny("space")
    sequence = list(b"ab cd")
    for byte in model.generate(b"ab cd", 20, temperature=0):
        assert byte == int(model(torch.tensor([sequence + [0]]))[0, len(sequence)].argmax())
        sequence.append(byte)


def test_learned_patching_trains_its_router_and_holds_the_ratio():
    model = tiny("learned").float().train()
    out = model.loss(text(2, 64))
    out.loss.backward()
    router = model.patcher
    assert isinstance(router, LearnedPatcher)
    assert router.query.weight.grad.abs().max() > 0 and router.ngrams.table.weight.grad.abs().max() > 0
    ends = torch.zeros(1, 100, dtype=torch.bool)
    ends[:, ::4] = True
    assert torch.isclose(ratio_loss(ends, torch.full((1, 100), 0.25), 4.0), torch.tensor(1.0))
    half = torch.zeros(1, 100, dtype=torch.bool)
    half[:, ::2] = True
    assert ratio_loss(half, torch.full((1, 100), 0.5), 4.0) > 1.3  # patches of 2 bytes where 4 are the target


def test_entropy_patching_saves_its_frozen_model_and_round_trips(tmp_path):
    model = tiny("entropy")
    assert not any(p.requires_grad for p in model.patcher.parameters())
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m").double()
    x = text(1, 30)
    assert torch.equal(loaded.patches(x).layout.ends, model.patches(x).layout.ends)
    assert (loaded(x) - model(x)).abs().max() <= ROUNDING * model(x).abs().max()


@pytest.mark.parametrize("overrides, problem", [
    (dict(patching="entropy"), "needs entropy_model"),
    (dict(patching="learned", head="mlp"), "needs the GRU head"),
    (dict(patching="learned", target_patch_bytes=9.0), "target_patch_bytes"),
    (dict(patching="bpe"), "patching must be one of"),
])
def test_bad_patching_configs_are_refused_in_one_line(overrides, problem):
    with pytest.raises(AGIFormerError, match=problem) as error:
        AGIFormerConfig.preset("tiny", **overrides)
    assert "\n" not in str(error.value)


def test_calibrate_then_train_with_the_entropy_model_a_recipe_names_then_inspect(tmp_path, toy_data, capsys):
    lm = entropy_model().float()
    lm.save_pretrained(tmp_path / "lm")
    data = ["--data-dir", str(toy_data)]
    assert main(["patch", "calibrate", "--corpus", "toy", "--entropy-model", str(tmp_path / "lm"), "--mean-bytes", "3",
                 "--max-bytes", "6", *data]) == 0
    printed = capsys.readouterr().out
    threshold = float(re.search(r"threshold (-?[\d.]+) bits", printed).group(1))
    assert abs(float(re.search(r"gives ([\d.]+) bytes per patch", printed).group(1)) - 3) < 0.05
    recipe = toy_recipe(model=dict(preset="tiny", patching="entropy", patch_size=6, entropy_model=str(tmp_path / "lm"),
                                   entropy_threshold=threshold), steps=2)
    trainer = Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "run", progress=False)
    assert all(torch.equal(trainer.model.patcher.model.state_dict()[name], weight)
               for name, weight in lm.state_dict().items())
    trainer.train()
    trained = load_model(tmp_path / "run" / "last")
    assert all(torch.equal(trained.patcher.model.state_dict()[name], weight)  # frozen: saved as it was read
               for name, weight in lm.state_dict().items())
    assert main(["inspect", str(tmp_path / "run"), "--prompt", "the cat sat on the mat in the morning light",
                 "--out", str(tmp_path / "i")]) == 0
    result = json.loads((tmp_path / "i.json").read_text())
    assert result["patching"] == "entropy" and result["patch_ends"]
    assert len(result["boundary_score"]["values"]) == len(b"the cat sat on the mat in the morning light")
    assert (tmp_path / "i.png").stat().st_size > 5000


@pytest.mark.parametrize("argv, problem", [
    (["--mean-bytes", "7", "--max-bytes", "6"], "out of reach"),
    (["--entropy-model", "NOT_A_LM"], "needs a byte-ngram one"),
])
def test_calibrate_refuses_in_one_line(argv, problem, tmp_path, toy_data, capsys):
    entropy_model().float().save_pretrained(tmp_path / "lm")
    AGIFormer(AGIFormerConfig.preset("tiny")).save_pretrained(tmp_path / "agi")
    argv = [str(tmp_path / "agi") if a == "NOT_A_LM" else a for a in argv]
    base = ["patch", "calibrate", "--corpus", "toy", "--data-dir", str(toy_data), "--entropy-model", str(tmp_path / "lm")]
    assert main(base + argv) == 2
    error = capsys.readouterr().err
    assert problem in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("patching", ["space", "learned"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_dynamic_patching_trains_in_either_precision(patching, precision, tmp_path, toy_data):
    recipe = toy_recipe(model=dict(preset="tiny", patching=patching, patch_size=6), steps=3, precision=precision)
    summary = Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "run", progress=False).train()
    assert summary["steps"] == 3 and 0 < summary["last_val"]["val_bpb"] < 9
