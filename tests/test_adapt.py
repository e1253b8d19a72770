"""Adapters of a trained model: only the adapter trains and is saved, it loads back onto an unchanged
base only, it resumes exactly, and `agiformer adapt` drives it end to end."""

import json

import pytest
import torch

from agiformer import AGIFormerError
from agiformer.cli import main
from agiformer.data import load_split
from agiformer.eval.dynamic import dynamic_bpb
from agiformer.serialization import load_tensors, save_tensors
from agiformer.train import Recipe, Trainer
from agiformer.train.adapt import load_trained, weights_digest
from agiformer.train.plots import read_metrics


@pytest.fixture(scope="module")
def base(toy_data, tmp_path_factory):
    """A tiny AGIFORMER trained a few steps on the toy corpus: the model every test adapts."""
    out = tmp_path_factory.mktemp("base")
    recipe = Recipe.from_dict(dict(name="base", model=dict(preset="tiny"), steps=4, batch_size=4, seq_len=64, lr=3e-3,
                                   warmup_steps=2, precision="fp32",
                                   stages=[dict(name="only", corpora={"toy": 1.0}, plasticity=0.9)]))
    Trainer(recipe, data_dir=toy_data, out_dir=out, progress=False).train()
    return out / "last"


def adapt_recipe(base, method, steps=3, **adapt):
    return Recipe.from_dict(dict(name=f"adapt-{method}", steps=steps, batch_size=4, seq_len=64, lr=1e-2, warmup_steps=1,
                                 precision="fp32", adapt=dict(base=str(base), method=method, **adapt),
                                 stages=[dict(name="only", corpora={"toy": 1.0}, plasticity=0.9)]))


@pytest.mark.parametrize("method, kept", [("svf", {"z"}), ("lora", {"A", "B"}), ("full", None)])
def test_an_adapter_saves_only_what_trained_and_loads_onto_its_base(base, toy_data, tmp_path, method, kept):
    digest = weights_digest(base)
    trainer = Trainer(adapt_recipe(base, method), data_dir=toy_data, out_dir=tmp_path, progress=False)
    trainer.train()
    saved = load_tensors(tmp_path / "last" / "model.safetensors")
    base_weights = load_tensors(base / "model.safetensors")
    if kept is None:  # a full fine-tune trains, and saves, every weight
        assert len(saved) == len(base_weights)
    else:
        assert {key.rsplit(":", 1)[-1] for key in saved} == kept
        assert sum(t.numel() for t in saved.values()) < sum(t.numel() for t in base_weights.values()) / 10
    assert weights_digest(base) == digest  # the base is never written
    x = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    adapted, plain = load_trained(tmp_path / "last"), load_trained(base)
    with torch.no_grad():
        assert torch.equal(adapted(x), trainer.model.eval()(x))
        assert (adapted(x) - plain(x)).abs().max().item() > 1e-4  # the adapter changed the model


def test_an_adapter_refuses_a_changed_base_and_a_recipe_with_a_model(base, toy_data, tmp_path):
    copy = tmp_path / "base"
    copy.mkdir()
    for path in base.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    Trainer(adapt_recipe(copy, "svf", steps=1), data_dir=toy_data, out_dir=tmp_path / "a", progress=False).train()
    weights = load_tensors(copy / "model.safetensors")
    weights["start_latent"] = weights["start_latent"] + 1
    save_tensors(copy / "model.safetensors", weights)
    with pytest.raises(AGIFormerError, match="trained on other weights"):
        load_trained(tmp_path / "a" / "last")
    with pytest.raises(AGIFormerError, match="remove the \\[model\\] table"):
        Recipe.from_dict({**adapt_recipe(base, "svf").to_dict(), "model": {"preset": "tiny"}})
    with pytest.raises(AGIFormerError, match="method must be one of"):
        adapt_recipe(base, "prefix")


def test_an_adapter_run_resumes_exactly(base, toy_data, tmp_path):
    recipe = adapt_recipe(base, "svf", steps=4)
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "straight", progress=False).train()
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", progress=False).train(max_steps=2)
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", resume=True, progress=False).train()
    losses = [[r["train_bpb"] for r in read_metrics(tmp_path / run / "metrics.jsonl") if r["kind"] == "train"]
              for run in ("straight", "split")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_adapt_command_trains_and_eval_scores_the_adapter(base, toy_data, tmp_path, capsys):
    d = ["--data-dir", str(toy_data)]
    out = tmp_path / "adapter"
    assert main(["adapt", str(base), "--corpus", "toy", "--method", "svf", "--steps", "2",
                 "--out", str(out), "--quiet", "--device", "cpu", *d]) == 0
    assert "svf adapter of" in capsys.readouterr().err
    before = load_tensors(out / "best" / "model.safetensors")
    assert main(["eval", str(out), "--corpus", "toy", "--json", str(tmp_path / "e.json"), "--max-bytes", "256",
                 "--adapt", "svf", "--adapt-steps", "2", *d]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["bytes"] == result["adapted"]["bytes"] == 256 and result["adapted"]["steps"] == 2
    assert load_tensors(out / "best" / "model.safetensors").keys() == before.keys()  # eval writes nothing back
    lora = Trainer(adapt_recipe(base, "lora", steps=1), data_dir=toy_data, out_dir=tmp_path / "lora", progress=False)
    lora.train()
    with pytest.raises(AGIFormerError, match="not a LoRA adapter"):
        dynamic_bpb(lora.model, load_split(toy_data, "toy", "val")[:128], seq_len=64)
    assert main(["adapt", str(tmp_path / "nowhere"), "--corpus", "toy", "--steps", "2", *d]) == 2
    capsys.readouterr()
    assert main(["adapt", str(out), "--corpus", "toy", "--steps", "2", *d]) == 2  # an adapter of an adapter
    assert "holds an adapter of" in capsys.readouterr().err


def test_experts_load_onto_their_shared_base(base, toy_data, tmp_path):
    from agiformer.train.adapt import load_experts
    from agiformer.nn.svf import expert_vectors

    for name, lr in (("one", 1e-2), ("two", 3e-2)):
        recipe = Recipe.from_dict({**adapt_recipe(base, "svf", steps=2).to_dict(), "lr": lr})
        Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / name, progress=False).train()
    model, experts = load_experts({"one": tmp_path / "one" / "last", "two": tmp_path / "two" / "last"})
    assert list(experts) == ["one", "two"] and experts["one"].keys() == experts["two"].keys()
    assert all(torch.equal(z, torch.ones_like(z)) for z in expert_vectors(model).values())
    assert max((experts["one"][k] - experts["two"][k]).abs().max().item() for k in experts["one"]) > 1e-4
    Trainer(adapt_recipe(base, "lora", steps=1), data_dir=toy_data, out_dir=tmp_path / "lora", progress=False).train()
    with pytest.raises(AGIFormerError, match="must be SVF adapters"):
        load_experts({"one": tmp_path / "one" / "last", "lora": tmp_path / "lora" / "last"})
