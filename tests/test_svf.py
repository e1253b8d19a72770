"""Singular-value fine-tuning: exactly the base at z = 1, the composed weight against a fresh SVD,
only z trains, experts mix, and the original weights come back."""

import pytest
import torch
from torch import nn

from agiformer import AGIFormer, AGIFormerConfig, AGIFormerError
from agiformer.nn.svf import add_svf, expert_vectors, remove_svf, scaled_layers, set_expert_vectors, svf_weight


def tiny(dtype=torch.float64) -> AGIFormer:
    torch.manual_seed(0)
    return AGIFormer(AGIFormerConfig.preset("tiny", head_ngrams=3)).to(dtype).eval()


def bytes_(length=23, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_at_z_one_the_model_is_exactly_the_base(dtype):
    model, x = tiny(dtype), bytes_()
    with torch.no_grad():
        before = model(x)
        names = add_svf(model)
        after = model(x)
    assert len(names) == sum(isinstance(m, nn.Linear) for m in tiny().modules())
    assert torch.equal(before, after)


def test_the_weight_is_the_rescaled_singular_value_product():
    layer = nn.Linear(12, 7).double()
    original = layer.weight.detach().clone()
    add_svf(layer)
    (_, _, scale), = scaled_layers(layer)
    with torch.no_grad():
        scale.z.copy_(torch.rand(7, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2)
    expected = svf_weight(original, scale.z.detach())
    error = ((layer.weight - expected).abs().max() / expected.abs().max()).item()
    assert error <= 1e-12
    U, S, Vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    assert abs(S.sum().item() - torch.linalg.svdvals(original).sum().item()) <= 1e-12 * S.sum().item()  # Σσ kept
    with torch.no_grad():  # negative control: the same z in another order is a different weight
        wrong = svf_weight(original, scale.z.detach().flip(0))
    assert ((layer.weight - wrong).abs().max() / expected.abs().max()).item() > 1e-3


def test_only_the_z_vectors_train_and_removal_restores_the_base():
    model, x = tiny(torch.float32), bytes_()
    originals = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x)
    add_svf(model)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.endswith(".z") for name in trainable)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model.loss(x).loss.backward()
        optimizer.step()
    moved = expert_vectors(model)
    assert max((z - 1).abs().max().item() for z in moved.values()) > 1e-3
    with torch.no_grad():
        assert (model(x) - before).abs().max().item() > 1e-4  # the expert changes the model
    remove_svf(model)
    assert model.state_dict().keys() == originals.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in originals.items())
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_experts_load_and_mix():
    model = tiny()
    add_svf(model)
    ones = expert_vectors(model)
    a = {k: torch.full_like(v, 0.5) for k, v in ones.items()}
    b = {k: torch.full_like(v, 1.5) for k, v in ones.items()}
    set_expert_vectors(model, [a, b], [0.25, 0.75])
    assert all(torch.allclose(z, torch.full_like(z, 1.25), rtol=0, atol=1e-15) for z in expert_vectors(model).values())
    set_expert_vectors(model, ones)
    x = bytes_()
    with torch.no_grad():
        mixed_back = model(x)
        remove_svf(model)
        assert torch.equal(mixed_back, model(x))  # z = 1 again: exactly the base
    with pytest.raises(AGIFormerError, match="does not fit"):
        add_svf(model, where=lambda name, layer: name.startswith("blocks.0"))
        set_expert_vectors(model, a)


def test_svf_refuses_a_model_without_linear_layers():
    with pytest.raises(AGIFormerError, match="no linear layer"):
        add_svf(nn.Sequential(nn.Embedding(4, 3)))


# ----------------------------------------------------------------------------- test-time adaptation


def test_dynamic_evaluation_scores_each_window_before_learning_from_it():
    import numpy as np

    from agiformer.eval import evaluate_bpb
    from agiformer.eval.dynamic import dynamic_bpb

    model = tiny(torch.float64)
    pattern = np.frombuffer(b"the cat sat on the mat. ", dtype=np.uint8)
    data = np.tile(pattern, 20)[:400].copy()  # 5 windows of 80 bytes
    originals = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = dynamic_bpb(model, data, seq_len=80, steps=2, lr=3e-2)
    static = evaluate_bpb(model, data, seq_len=80, batch_size=1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in originals.items())  # given back as it came
    assert all(p.requires_grad for p in model.parameters())
    # the first window meets the untouched model; later ones gain from what came before them
    assert abs(adapted["window_bits"][0] - evaluate_bpb(model, data[:80], seq_len=80)["bits"]) <= 1e-9
    assert adapted["bpb"] < static["bpb"] - 0.05
    # changing the last window's bytes changes no earlier score, and changing window 2 changes window 3's
    last_changed, middle_changed = data.copy(), data.copy()
    last_changed[320:] = (last_changed[320:].astype(np.int64) + 7) % 256
    middle_changed[160:240] = (middle_changed[160:240].astype(np.int64) + 7) % 256
    assert dynamic_bpb(model, last_changed, seq_len=80, steps=2, lr=3e-2)["window_bits"][:4] == adapted["window_bits"][:4]
    moved = dynamic_bpb(model, middle_changed, seq_len=80, steps=2, lr=3e-2)["window_bits"]
    assert moved[:2] == adapted["window_bits"][:2] and abs(moved[3] - adapted["window_bits"][3]) > 1e-3


def test_dynamic_evaluation_of_an_svf_expert_adapts_its_z_and_gives_them_back():
    import numpy as np

    from agiformer.eval import evaluate_bpb
    from agiformer.eval.dynamic import dynamic_bpb

    model = tiny(torch.float64)
    add_svf(model)
    expert = {k: torch.full_like(v, 0.7) for k, v in expert_vectors(model).items()}
    set_expert_vectors(model, expert)
    data = np.tile(np.frombuffer(b"abcabd ", dtype=np.uint8), 40)[:240].copy()
    adapted = dynamic_bpb(model, data, seq_len=60, steps=1, lr=3e-2)
    assert all(torch.equal(z, expert[k]) for k, z in expert_vectors(model).items())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == len(expert) and all(n.endswith(".z") for n in trainable)
    assert adapted["bpb"] < evaluate_bpb(model, data, seq_len=60)["bpb"]  # the expert, adapted further, does better


# ----------------------------------------------------------------------------- two-pass dispatch


def test_two_pass_dispatch_picks_the_expert_of_the_text_and_mixes_from_the_window_before():
    import numpy as np

    from agiformer.eval.dispatch import dispatched_bpb, fit_dispatcher, mixed_experts, pooled_states

    model = tiny(torch.float64)
    add_svf(model)
    ones = expert_vectors(model)
    rng = torch.Generator().manual_seed(3)
    experts = {name: {k: 1 + 0.3 * sign * torch.rand(v.shape, generator=rng, dtype=v.dtype) for k, v in ones.items()}
               for name, sign in (("letters", 1), ("digits", -1))}
    texts = {"letters": np.frombuffer(b"abc fed cab " * 100, dtype=np.uint8),
             "digits": np.frombuffer(b"0123 987 45 " * 100, dtype=np.uint8)}
    dispatcher = fit_dispatcher(model, texts, seq_len=32, windows=16)
    held = torch.tensor([list(b"fed abc cab fed abc fed cab abc "), list(b"987 0123 45 987 45 0123 987 45  ")])
    assert dispatcher.probabilities(pooled_states(model, held)).argmax(-1).tolist() == [0, 1]
    data = np.concatenate([texts["letters"][:64], texts["digits"][:64]])  # 4 windows of 32
    result = dispatched_bpb(model, dispatcher, experts, data, seq_len=32)
    assert all(torch.equal(z, ones[k]) for k, z in expert_vectors(model).items())  # own z back after
    windows = torch.tensor(data, dtype=torch.long).view(4, 1, 32)
    expected = [model.loss(windows[0]).total_bits.item()]
    for i in range(1, 4):  # window i: the mix the dispatcher chose from window i − 1
        weights = dispatcher.probabilities(pooled_states(model, windows[i - 1]))[0]
        with mixed_experts(model, experts, weights):
            expected.append(model.loss(windows[i]).total_bits.item())
    assert all(abs(a - b) <= 1e-12 * abs(b) for a, b in zip(result["window_bits"], expected))
    assert result["chosen"] == {"letters": 2, "digits": 2}
    assert abs(result["window_bits"][1] - model.loss(windows[1]).total_bits.item()) > 1e-3  # the mix matters
