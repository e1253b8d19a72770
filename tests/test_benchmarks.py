"""The benchmark's reimplementation of the seed's parallel Hebbian form is faithful (so the
comparison in benchmarks/memory_kernel.py is fair), and it reproduces the seed's overflow defect;
the quality benchmark's systems are the ablations they claim to be; helpers measure what they say."""

import argparse
import json
import math
import os
import signal
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agiformer import AGIFormer, AGIFormerConfig
from agiformer.eval.bpb import evaluate_bpb
from agiformer.models import ByteGPTConfig
from agiformer.ops import chunked_hebbian, naive_hebbian
from agiformer.train import Recipe, Trainer
from benchmarks import embedding_sum, patching, quality, training_profile
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


@pytest.mark.parametrize("system", list(quality.SYSTEMS))
def test_quality_systems_change_what_they_say(system):
    base = quality.system_recipe(quality.RECIPES["en-wiki"], "agiformer", minutes=12, name="base")
    recipe = quality.system_recipe(quality.RECIPES["en-wiki"], system, minutes=12, name=system)
    config, reference = recipe.model_config(), base.model_config()
    changed = {k for k, v in config.to_dict().items() if reference.to_dict().get(k) != v} \
        if config.model_type == "agiformer" else None
    expected = {"agiformer": set(), "constant-alpha": {"mixer"}, "hebbian-memory": {"mixer"}, "memory-only": {"mixer"},
                "no-reasoning": {"reasoning_steps"}, "mlp-head": {"head", "head_ngrams", "head_continuations"},
                "no-continuations": {"head_continuations"}, "no-curriculum": set(),
                "v1-block": {"mixer", "fusion", "memory_decay", "encoder_overlap"}, "discrepancy": {"discrepancy_weight"},
                "neural-memory": {"mixer", "memory"}, "least-squares-memory": {"mixer", "memory", "memory_write"}}
    assert recipe.minutes == 12 and recipe.steps == 0  # the trainer fixes the steps that fit
    assert recipe.eval_every == recipe.checkpoint_every == quality.AT_THE_END_ONLY
    if system in quality.GPT_SWEEP:
        point = quality.GPT_SWEEP[system]
        assert isinstance(config, ByteGPTConfig)
        assert (config.d_model, config.n_layers, recipe.seq_len, recipe.lr, recipe.batch_size, recipe.weight_decay) == \
            point  # the GPT's own, not the recipe's
        assert f"d {point.d_model}, {point.n_layers} layers, context {point.context}" in quality.SYSTEMS[system]
        assert [stage.corpora for stage in recipe.stages] == [{"en-wiki": 1.0}]  # the scored corpus alone
        return
    assert changed == expected[system] and (recipe.seq_len, recipe.lr) == (base.seq_len, base.lr)
    assert config.mixer == ("attention" if "mixer" not in changed else
                            "memory" if system == "memory-only" else "hybrid")  # the recipe's blocks have no memory
    if system == "no-curriculum":  # the Turkish recipe's three stages become its scored corpus alone
        curriculum = quality.system_recipe(quality.RECIPES["tr-speech"], "agiformer", minutes=12, name="tr")
        alone = quality.system_recipe(quality.RECIPES["tr-speech"], system, minutes=12, name=system)
        assert len(curriculum.stages) == 3 and curriculum.stages[0].corpora == {"tr-dict": 1.0}
        assert [(s.corpora, s.plasticity, s.facts) for s in alone.stages] == [({"tr-speech": 1.0}, 0.99, 0.0)]
        assert [(s.corpora, s.facts) for s in recipe.stages] == [({"en-wiki": 1.0}, 0.25)]  # facts kept
        return
    plasticities = [s.plasticity for s in recipe.stages]
    assert plasticities == ([0.99] * len(plasticities) if system == "constant-alpha"
                            else [s.plasticity for s in base.stages])


def test_a_quality_run_stopped_by_a_signal_writes_no_result(tmp_path, toy_data, write_toy_recipe, monkeypatch):
    monkeypatch.setitem(quality.RECIPES, "en-wiki", write_toy_recipe(tmp_path / "toy.toml", steps=40,
                                                                      eval_corpus="toy"))
    real_step = Trainer.train_step

    def step_then_sigterm(self, step):  # the run is told to stop half-way, as by a scheduler
        if step == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    out = tmp_path / "report"
    with pytest.raises(SystemExit, match="stopped by SIGTERM"):
        quality.main(["--corpus", "en-wiki", "--minutes", "1", "--systems", "agiformer", "--data-dir", str(toy_data),
                      "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--no-progress"])
    assert not list(out.rglob("*.json"))


def test_quality_refuses_a_recipe_scored_on_another_corpus(tmp_path, write_toy_recipe, capsys):
    recipe = write_toy_recipe(tmp_path / "toy.toml", steps=10, eval_corpus="toy")
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as stopped:
        quality.main(["--corpus", "en-wiki", "--recipe", str(recipe), "--systems", "agiformer", "--out", str(out),
                      "--runs-dir", str(tmp_path / "runs")])
    assert stopped.value.code == 2 and "is scored on toy, not on --corpus en-wiki" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_embedding_sum_benchmark_sizes_the_tables_as_the_head_does():
    config = AGIFormerConfig.preset("tiny", head_ngrams=4, head_ngram_buckets=64, head_continuations=(1, 3))
    head = AGIFormer(config).head
    recipe = types.SimpleNamespace(model_config=lambda: config)
    tables = list(embedding_sum.recipe_tables(recipe).values())
    assert tables == [(head.ngrams.table.num_embeddings, 3), (head.continuations.table.num_embeddings, 2)]


def test_the_tuned_gpt_is_chosen_by_validation_not_test():
    results = [{"system": "agiformer", "val_bpb": 2.0, "test_bpb": 2.0},
               {"system": "gpt-a", "val_bpb": 2.1, "test_bpb": 2.3},
               {"system": "gpt-b", "val_bpb": 2.2, "test_bpb": 2.2}]
    assert quality.tuned_gpt(results)["system"] == "gpt-a"
    assert quality.tuned_gpt(results[:1]) is None


def test_evaluate_bpb_reports_mean_reasoning_steps():
    torch.manual_seed(0)
    model = AGIFormer(AGIFormerConfig.preset("tiny", reasoning_steps=3))
    data = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8)
    result = evaluate_bpb(model, data, seq_len=64)
    single = model.loss(torch.from_numpy(data.astype(np.int64)).unsqueeze(0))
    assert result["mean_steps"] == pytest.approx(float(single.mean_steps), rel=1e-6)
    assert 1 <= result["mean_steps"] <= 3


@pytest.mark.parametrize("op, kind", [("aten::mm", "matmul"), ("aten::bmm", "matmul"),
                                      ("aten::copy_", "dtype casts and copies"), ("aten::mul", "elementwise"),
                                      ("aten::silu_backward", "elementwise"), ("aten::_foreach_add_", "optimizer"),
                                      ("aten::sum", "reductions and norms"), ("aten::empty", "other")])
def test_profile_operator_kinds(op, kind):
    assert training_profile.kind_of(op) == kind


def test_a_question_asked_as_the_needle_is_written_is_the_needle_line_without_its_value():
    from agiformer.mag.data import format_prompt, generate_samples
    from experiments.mag_lookup import ask_as_the_needle_is_written

    for sample in generate_samples("hash-hop", 3, seed=5, context_tokens=600, window=128):
        asked = ask_as_the_needle_is_written(sample)
        key = asked["query"].rsplit("\n", 1)[1].removesuffix(" =")
        assert f"\n{key} ={sample['answer']}\n" in sample["context"]
        assert format_prompt(asked).startswith(sample["context"])
        assert asked["query"].rsplit("\n", 1)[0] == sample["query"].rsplit("\n", 1)[0]
    with pytest.raises(SystemExit, match="single-hop"):
        ask_as_the_needle_is_written(generate_samples("hash-hop", 1, seed=5, context_tokens=600, window=128, hops=2)[0])


def test_key_span_finds_a_needle_only_when_the_key_spans_what_tells_lines_apart():
    """Token states one-hot: every line "k1 k2 = v1 v2" ends its key with the same "=", so a one-token
    key for the first value is "=" everywhere (ties, the first line wins), while a three-token key
    "k1 k2 =" is the needle's alone."""
    from experiments.mag_key_span import key_hits_by_index

    EQ, NL, A, B, C, D = 1, 2, 3, 4, 5, 6
    filler = iter(range(10, 64))
    line = lambda k1, k2, v1, v2: [k1, k2, EQ, v1, v2, NL]  # noqa: E731
    before = [t for _ in range(4) for t in line(*(next(filler) for _ in range(4)))]
    after = [t for _ in range(4) for t in line(*(next(filler) for _ in range(4)))]
    tokens = before + line(A, B, C, D) + after + [A, B, EQ, C, D]
    states = torch.eye(64, dtype=torch.float64)[tokens]
    needle, answer = (len(before), len(before) + 5), (len(tokens) - 2, len(tokens))
    assert key_hits_by_index(states, tokens, answer, needle, window=8, span=3) == [1, 1]
    assert key_hits_by_index(states, tokens, answer, needle, window=8, span=1) == [0, 1]


def test_benchmark_prompts_put_the_needle_as_deep_as_asked():
    from argparse import Namespace

    from experiments.mag_lookup import hash_hop_prompts

    def prompts(depth):
        return hash_hop_prompts("bytes", Namespace(samples=2, context_tokens=600, depth=depth), 128)

    assert [s["needle_token_start"] for s in prompts(0.0)] == [0, 0]
    assert all(s["metadata"]["depth"] == 1.0 and not s["metadata"]["depth_drawn"] for s in prompts(1.0))
    assert all(s["metadata"]["depth_drawn"] for s in prompts(None))


def test_value_positions_mark_the_tokens_after_each_lines_equals_sign():
    from experiments.mag_capacity import value_positions

    pieces = ["ab", "c", " =", " x", "y", "\n", "d", " =", " z", "w\n", "e"]
    assert value_positions(pieces).tolist() == [False, False, False, True, True, False,
                                                False, False, True, True, False]
    assert value_positions(pieces, with_end=True).tolist() == [False, False, False, True, True, True,
                                                              False, False, True, True, False]


def test_values_only_write_sets_theta_at_the_asked_for_tokens_and_nowhere_else():
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from experiments.mag_write_oracle import ValuesOnlyWrite
    from tests.test_mag_model import tiny_mag

    pieces = {1: "k", 2: " =", 3: " v", 4: "\n"}
    codec = SimpleNamespace(decode=lambda ids: "".join(pieces[i] for i in ids))
    model = tiny_mag("llama", memory_write="least_squares")
    hooks = ValuesOnlyWrite(model, codec)
    used = []
    for mag in model.mag.values():  # registered after the oracle's hook: sees what it returns
        mag.memory.lr_proj.register_forward_hook(lambda module, inputs, output: used.append(torch.sigmoid(output[0]).mean(-1)))
    ids = torch.tensor([[1, 1, 2, 3, 3, 4, 1, 2, 3, 4]])
    asked = torch.tensor([False, False, False, True, True, True, False, False, True, True])
    with torch.no_grad():
        _, state = model(ids, window=5)
        assert len(hooks.seen) == 2 and all(torch.equal(marks, asked) for _, marks in hooks.seen)
        assert torch.allclose(used[0].float(), hooks.seen[0][0])  # recording leaves θ alone
        hooks.theta = (0.5, 1e-4)
        used.clear()
        model(ids, window=5)
        model(ids[:, :1], state, window=5)  # a continuation: the answer being decoded, never asked for
    expected = torch.where(asked, 0.5, 1e-4).double()
    assert all(torch.allclose(u, expected) for u in used[:2])
    assert all(torch.allclose(u, torch.tensor([1e-4], dtype=torch.float64)) for u in used[2:]) and len(used) == 4


def test_concatenated_keys_tell_apart_lines_whose_key_tokens_sum_alike():
    """One-hot states: "A B = V" and twice "B A = W" have the same summed key, so a map keyed by sums
    reads mostly W for the question "A B ="; keyed by the three tokens side by side it reads V."""
    from experiments.mag_capacity import reads_right

    A, B, EQ, NL, C, D, V, W, X = range(9)
    tokens = [A, B, EQ, V, NL, B, A, EQ, W, NL, C, D, EQ, X, NL, B, A, EQ, W, NL, A, B, EQ, V]
    states = torch.eye(9, dtype=torch.float64)[tokens[:-1]]
    embeddings = torch.eye(9, dtype=torch.float64)

    def read(form):
        return reads_right(states, embeddings, tokens, (23, 24), (0, 5), window=3, span=3, form=form, writes=None,
                           ridge=1e-3)

    assert read("concat") == [(1, True)]
    assert read("sum") == [(1, False)]


def test_kept_fraction_is_what_the_memory_keeps_of_an_early_write():
    """One pair written in chunk 0, nothing after it (zero keys have no surprise), no momentum: every
    later read is the first read after the write scaled by what the forgetting left of it."""
    from agiformer.ops.neural_memory import initial_neural_memory_state, neural_memory_scan
    from experiments.mag_lookup import kept_fraction

    g = torch.Generator().manual_seed(0)
    C, L, D = 4, 29, 5
    q = torch.randn(1, L, D, generator=g, dtype=torch.float64)
    k = torch.zeros(1, L, D, dtype=torch.float64)
    k[0, 1] = torch.randn(D, generator=g, dtype=torch.float64)
    v = torch.randn(1, L, D, generator=g, dtype=torch.float64)
    decay = 0.3 * torch.rand(1, L, generator=g, dtype=torch.float64)
    state = initial_neural_memory_state((torch.zeros(1, D, D, dtype=torch.float64),))
    lr, momentum = torch.full((1, L), 0.5, dtype=torch.float64), torch.zeros(1, L, dtype=torch.float64)
    read, _ = neural_memory_scan(q, k, v, lr, momentum, decay, state, chunk_size=C)
    unforgotten, _ = neural_memory_scan(q, k, v, lr, momentum, torch.zeros_like(decay), state, chunk_size=C)
    assert unforgotten[0, C:].abs().min() > 1e-6  # the write is there to be kept
    for p in range(L):
        torch.testing.assert_close(read[0, p], kept_fraction(decay[0], 1, p, C) * unforgotten[0, p],
                                   rtol=1e-10, atol=1e-12)
    assert kept_fraction(decay[0], 1, 2 * C - 1, C) == 1.0
    assert kept_fraction(decay[0], 1, L - 1, C) < 0.9


def test_adaptation_benchmark_runs_end_to_end_on_two_small_corpora(toy_data, tmp_path):
    import random
    import shutil

    from agiformer.data import build_user_corpus
    from benchmarks import adaptation

    data = tmp_path / "data"
    shutil.copytree(toy_data / "toy", data / "toy")
    rng = random.Random(1)
    (tmp_path / "code").mkdir()
    for i in range(30):
        (tmp_path / "code" / f"m{i}.txt").write_text("\n".join(f"def f{rng.randint(0, 99)}(x):\n    return x + {i}"
                                                             for _ in range(40)))
    build_user_corpus("code", [str(tmp_path / "code")], data, progress=False)
    recipe = Recipe.from_dict(dict(name="base", model=dict(preset="tiny"), steps=2, batch_size=4, seq_len=64, lr=3e-3,
                                   warmup_steps=1, precision="fp32", stages=[dict(name="only", corpora={"toy": 1.0})]))
    Trainer(recipe, data_dir=data, out_dir=tmp_path / "base", progress=False).train()
    adaptation.main(["--base", str(tmp_path / "base"), "--corpora", "toy,code", "--steps", "2", "--data-dir", str(data),
                     "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    result = json.loads((tmp_path / "out" / "adaptation.json").read_text())
    assert [(r["corpus"], r["method"]) for r in result["rows"]] == \
        [(c, m) for c in ("toy", "code") for m in ("base", "svf", "lora", "lora-matched", "full")]
    counts = {r["method"]: r["trained_parameters"] for r in result["rows"] if r["corpus"] == "toy"}
    assert 0 == counts["base"] < counts["svf"] < counts["lora"] < counts["full"]
    assert 0.8 * counts["svf"] <= counts["lora-matched"] <= counts["svf"]  # LoRA at SVF's parameter count
    assert [d["corpus"] for d in result["dispatch"]] == ["toy", "code"]
    assert all(0 <= d["right_share"] <= 1 for d in result["dispatch"]) and len(result["dynamic"]) == 2
    assert "Two-pass dispatch" in (tmp_path / "out" / "adaptation.md").read_text()


@pytest.mark.parametrize("mode", ["fixed", "space", "learned"])
@pytest.mark.parametrize("mean_bytes", [4, 6])
def test_patching_modes_change_only_the_patching(mode, mean_bytes):
    args = argparse.Namespace(corpus="en-wiki", minutes=20.0, mean_bytes=mean_bytes, entropy_model=None, data_dir=None)
    base = quality.system_recipe(quality.RECIPES["en-wiki"], "agiformer", minutes=20, name="base")
    recipe = patching.mode_recipe(mode, args)
    defaults = AGIFormerConfig.preset(base.model["preset"]).to_dict()  # what the recipe leaves unsaid
    changed = {k: v for k, v in recipe.model.items() if base.model.get(k, defaults.get(k)) != v}
    overrides = {"fixed": {"patching": "fixed", "patch_size": mean_bytes},
                 "space": {"patching": "space", "patch_size": 2 * mean_bytes},
                 "learned": {"patching": "learned", "patch_size": 2 * mean_bytes, "target_patch_bytes": float(mean_bytes)}}
    assert changed == {k: v for k, v in overrides[mode].items() if base.model.get(k, defaults[k]) != v}
    config = recipe.model_config()
    assert {k: getattr(config, k) for k in overrides[mode]} == overrides[mode]
    assert recipe.minutes == 20 and recipe.stages == base.stages and recipe.eval_every == quality.AT_THE_END_ONLY


def test_patching_report_puts_each_corpus_and_mean_length_in_its_section_and_panel(tmp_path):
    def result(corpus, mean, mode, bpb, histogram):
        return {"mode": mode, "corpus": corpus, "minutes": 20, "mean_bytes_target": mean,
                "model": {"patching": mode, "patch_size": mean if mode == "fixed" else 2 * mean},
                "mean_patch_bytes": sum((i + 1) * c for i, c in enumerate(histogram)) / sum(histogram),
                "flops_per_byte": 4e6, "steps": 100, "bytes_seen": 8e5, "precision": "fp32", "val_bpb": bpb,
                "test_bpb": bpb, "histogram": histogram, "command": "python -m benchmarks.patching",
                "environment": {"cpu_model": "cpu", "torch_version": "2", "torch_threads": 1,
                                "date_utc": "2026-12-06 00:00:00", "git_commit": "abc"}}
    folders = {"toy-20min-mean4": [result("toy", 4, "space", 1.9, [1, 2, 3, 4, 5, 6, 7, 8]),
                                   result("toy", 4, "fixed", 2.0, [0, 0, 0, 10])],
               "toy-20min-mean6": [result("toy", 6, "learned", 2.1, [5] * 12)]}
    for folder, results in folders.items():
        (tmp_path / "patching" / folder).mkdir(parents=True)
        for r in results:
            (tmp_path / "patching" / folder / f"{r['mode']}.json").write_text(json.dumps(r))
    patching.report(argparse.Namespace(out=tmp_path))
    text = (tmp_path / "patching.md").read_text()
    mean4, mean6 = text.split("## toy, 20 minutes per mode, mean patch length ")[1:]
    assert mean4.index("| fixed |") < mean4.index("| space |") and "| 0.950 |" in mean4  # space against fixed
    assert "| learned |" in mean6 and "| fixed |" not in mean6  # no fixed run: no ratio
    assert (tmp_path / "patching.png").stat().st_size > 10_000
