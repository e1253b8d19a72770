"""The byte n-gram LM (the entropy model of entropy patching): causal and local (a prediction reads the K bytes
before it and nothing else), its entropies those of its own forward one byte on, streamed generation equal to
the full forward, saved, loaded and trained like the other byte models."""

import math

import pytest
import torch
import torch.nn.functional as F

from agiformer import AGIFormer, AGIFormerConfig, AGIFormerError
from agiformer.models import ByteGPT, ByteGPTConfig, ByteNgramLM, ByteNgramLMConfig, load_model, saved_config
from agiformer.train import Recipe, Trainer
from agiformer.train.plots import read_metrics
from tests.helpers import LEAK, ROUNDING, worst_byte_leak

K = 4


def tiny_lm(**overrides) -> ByteNgramLM:
    torch.manual_seed(0)
    return ByteNgramLM(ByteNgramLMConfig(**{"d_model": 32, "context_bytes": K, "buckets": 64, **overrides}))


def bits(logits: torch.Tensor) -> torch.Tensor:
    """−Σ p log2 p of softmax(logits), written out."""
    p = torch.softmax(logits, dim=-1)
    return -(p * torch.log2(p)).sum(-1)


def test_byte_ngram_lm_is_causal_and_a_leak_is_caught():
    model = tiny_lm().double()
    x = torch.randint(0, 256, (2, 20))
    assert worst_byte_leak(model, x) <= ROUNDING
    # negative control: reading the K bytes ending at t as the prediction of byte t
    assert worst_byte_leak(lambda x: model.next_logits(model.histories(x)[:, 1:]), x) > LEAK


def test_logits_are_next_logits_of_the_k_bytes_before_and_nothing_further_back():
    model = tiny_lm().double()
    x = torch.randint(0, 256, (2, 16))
    logits = model(x)
    padded = [[256] * K + row for row in x.tolist()]
    for t in range(16):
        history = torch.tensor([row[t: t + K] for row in padded])
        assert (logits[:, t] - model.next_logits(history)).abs().max() <= 1e-12
    s = 5
    changed = x.clone()
    changed[:, s] = (changed[:, s] + 97) % 256
    difference = (model(changed) - logits).abs().amax(dim=(0, 2))
    assert difference[s + K] > LEAK                   # byte s is the K-th before s + K …
    assert difference[s + K + 1:].max() <= 1e-12      # … and read by no later position


def test_entropies_are_those_of_the_forward_and_of_the_byte_after_the_text():
    model = tiny_lm().double()
    x = torch.randint(0, 256, (3, 12))
    entropy = model.entropies(x)
    assert entropy.shape == (3, 13) and entropy.dtype == torch.float64
    assert (entropy[:, :-1] - bits(model(x))).abs().max() <= 1e-12
    assert (entropy[:, -1] - bits(model.next_logits(x[:, -K:]))).abs().max() <= 1e-12
    assert 0 <= entropy.min() and entropy.max() <= 8


@pytest.mark.parametrize("prompt", [b"", b"ab", b"a longer prompt than K"])
def test_greedy_generation_equals_argmax_of_full_forward(prompt):
    model = tiny_lm().double().eval()
    sequence = list(prompt)
    for byte in model.generate(prompt, 12, temperature=0):
        assert byte == int(model(torch.tensor([sequence + [0]]))[0, len(sequence)].argmax())
        sequence.append(byte)
    assert len(sequence) == len(prompt) + 12


def test_save_load_dispatches_on_model_type_and_saved_config_reads_every_type(tmp_path):
    model = tiny_lm().eval()
    model.save_pretrained(tmp_path / "ngram")
    loaded = load_model(tmp_path / "ngram")
    x = torch.randint(0, 256, (2, 12))
    assert isinstance(loaded, ByteNgramLM) and torch.equal(loaded(x), model(x))
    assert isinstance(ByteNgramLM.from_pretrained(tmp_path / "ngram"), ByteNgramLM)
    with pytest.raises(AGIFormerError, match="byte-ngram model, not byte-gpt"):
        ByteGPT.from_pretrained(tmp_path / "ngram")
    ByteGPT(ByteGPTConfig(d_model=32, n_layers=1, n_heads=2)).save_pretrained(tmp_path / "gpt")
    AGIFormer(AGIFormerConfig.preset("tiny")).save_pretrained(tmp_path / "agi")
    assert saved_config(tmp_path / "ngram") == model.config
    assert type(saved_config(tmp_path / "gpt")) is ByteGPTConfig
    assert type(saved_config(tmp_path / "agi")) is AGIFormerConfig
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "byte-rnn"}')
    with pytest.raises(AGIFormerError, match=r"unknown model_type 'byte-rnn'; known: .*byte-ngram") as error:
        saved_config(tmp_path / "odd")
    assert "\n" not in str(error.value)


def test_loss_is_bits_per_byte():
    model = tiny_lm().double()
    x = torch.randint(0, 256, (2, 16))
    out = model.loss(x)
    expected = F.cross_entropy(model(x).reshape(-1, 256), x.reshape(-1), reduction="sum") / math.log(2)
    assert out.n_bytes == 32 and torch.allclose(out.total_bits, expected) and torch.equal(out.loss, out.bpb)
    assert torch.allclose(out.total_bits / 32, out.bpb) and out.ponder == 0 and out.mean_steps == 0


@pytest.mark.parametrize("bad", [dict(context_bytes=1), dict(d_model=0), dict(buckets=0), dict(n_layers=0),
                                 dict(mlp_ratio=0.0), dict(norm_eps=-1.0), dict(context_bytes=6.5),
                                 dict(d_model="wide")])
def test_a_bad_config_is_a_one_line_error(bad):
    with pytest.raises(AGIFormerError, match="invalid byte-ngram config") as error:
        ByteNgramLMConfig(**bad)
    assert "\n" not in str(error.value) and next(iter(bad)) in str(error.value)


def ngram_recipe(**overrides) -> Recipe:
    return Recipe.from_dict({**dict(name="entropy", steps=4, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=2,
                                    eval_every=2, checkpoint_every=2, precision="fp32",
                                    model=dict(type="byte-ngram", d_model=32, context_bytes=K, buckets=64),
                                    stages=[dict(name="only", corpora={"toy": 1.0})]), **overrides})


def test_a_recipe_builds_the_config_and_an_adapt_recipe_reads_it_back(tmp_path):
    config = ngram_recipe().model_config()
    assert config == ByteNgramLMConfig(d_model=32, context_bytes=K, buckets=64)
    with pytest.raises(AGIFormerError, match="unknown model type 'byte-rnn'; use one of .*'byte-ngram'"):
        ngram_recipe(model=dict(type="byte-rnn"))
    ByteNgramLM(config).save_pretrained(tmp_path / "ngram")
    adapt = ngram_recipe(model={}, adapt=dict(base=str(tmp_path / "ngram"), method="lora"))
    assert adapt.model_config() == config


def test_the_trainer_trains_it_and_resumes_exactly(toy_data, tmp_path):
    recipe = ngram_recipe()
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "straight", progress=False).train()
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", progress=False).train(max_steps=2)
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", resume=True, progress=False).train()
    losses = [[r["train_bpb"] for r in read_metrics(path / "metrics.jsonl") if r["kind"] == "train"]
              for path in (tmp_path / "straight", tmp_path / "split")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    assert isinstance(load_model(tmp_path / "straight" / "last"), ByteNgramLM)


def test_a_tiny_model_learns_a_repeated_text():
    model = tiny_lm(d_model=48, buckets=512)
    x = torch.tensor([list(b"the quick brown fox jumps over the lazy dog. " * 6)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(x).bpb.item()
    for _ in range(100):
        optimizer.zero_grad()
        model.loss(x).loss.backward()
        optimizer.step()
    assert first > 7 and model.loss(x).bpb.item() < 0.5
