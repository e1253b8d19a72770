"""The trainer: recipes, curriculum, checkpoints, exact resume, divergence handling, DDP."""

import dataclasses
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agiformer import AGIFormer, AGIFormerConfig, AGIFormerError
from agiformer.cli.common import resolve_checkpoint
from agiformer.serialization import load_tensors, save_tensors
from agiformer.models import ByteGPTConfig, ByteNgramLMConfig
from agiformer.train import Recipe, Trainer, load_recipe
from agiformer.train.recipe import Stage
from agiformer.train.plots import read_metrics
from agiformer.nn import ByteNgramEmbedding
from agiformer.train.optim import SparseRowGradients, optimizer_for
from agiformer.validation import type_problems
from tests.helpers import relative_error


def toy_recipe(**overrides) -> Recipe:
    values = dict(name="toy", model=dict(preset="tiny"), steps=6, batch_size=4, seq_len=64, lr=3e-3, warmup_steps=2,
                  eval_every=3, checkpoint_every=3,
                  stages=[dict(name="first", corpora={"toy": 1.0}, plasticity=0.5, share=0.5),
                          dict(name="second", corpora={"toy": 1.0}, plasticity=0.99, share=0.5)])
    values.update(overrides)
    if "warmup_steps" not in overrides and isinstance(values["steps"], int) and values["steps"] >= 1:
        values["warmup_steps"] = min(2, values["steps"])
    return Recipe.from_dict(values)


def train_losses(out_dir: Path) -> list[float]:
    return [r["train_bpb"] for r in read_metrics(out_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_curriculum_run_writes_checkpoints_metrics_and_curves(toy_data, tmp_path):
    summary = Trainer(toy_recipe(), data_dir=toy_data, out_dir=tmp_path, progress=False).train()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["stage"] for r in train] == ["first"] * 3 + ["second"] * 3
    assert [r["plasticity"] for r in train] == [0.5] * 3 + [0.99] * 3
    assert len({r["effort"] for r in train}) == 6  # effort drawn per batch
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in val] == [3, 6] and val[0]["plasticity"] == 0.5 and val[1]["plasticity"] == 0.99
    assert summary["steps"] == 6 and math.isclose(summary["best_val_bpb"], min(r["val_bpb"] for r in val))
    for name in ("last", "best"):
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == \
            ["config.json", "model.safetensors", "optimizer.safetensors", "trainer.json"]
    model = AGIFormer.from_pretrained(tmp_path / "last")
    assert model.config.plasticity == 0.99  # the trained α travels with the weights
    assert (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("facts, model", [(0.0, dict(preset="tiny")), (0.5, dict(preset="tiny")),
                                          (0.0, dict(preset="tiny", head="gru", head_hidden=16, head_ngrams=6))],
                         ids=["plain", "facts", "ngram-head"])
def test_resume_after_a_signal_repeats_the_uninterrupted_losses(toy_data, tmp_path, facts, model):
    recipe = toy_recipe(steps=8, checkpoint_every=100, eval_every=4, seq_len=128, model=model,
                        stages=[dict(name="only", corpora={"toy": 1.0}, facts=facts)])
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "straight", progress=False).train()

    interrupted = Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", progress=False)
    original_step = interrupted.train_step

    def step_then_signal(step):
        row = original_step(step)
        if step == 2:  # during the third step, as a user's Ctrl-C would
            os.kill(os.getpid(), signal.SIGINT)
        return row

    interrupted.train_step = step_then_signal
    summary = interrupted.train()
    assert summary["stopped_early"] and summary["steps"] == 3
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", resume=True, progress=False).train()
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    straight = AGIFormer.from_pretrained(tmp_path / "straight" / "last").state_dict()
    resumed = AGIFormer.from_pretrained(tmp_path / "split" / "last").state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_stage_with_facts_trains_on_rows_that_carry_them_and_validates_on_plain_text(toy_data, tmp_path):
    recipe = toy_recipe(steps=4, seq_len=128, stages=[dict(name="plain", corpora={"toy": 1.0}, share=0.5),
                                                       dict(name="facts", corpora={"toy": 1.0}, share=0.5, facts=1.0)])
    trainer = Trainer(recipe, data_dir=toy_data, out_dir=tmp_path, progress=False)
    seen, forward = [], trainer.step_module.forward
    trainer.step_module.forward = lambda rows, *args: (seen.append(bytes(rows.flatten().tolist())), forward(rows, *args))[1]
    trainer.train()
    with_digits = [any(chr(b).isdigit() for b in rows) for rows in seen]  # the toy corpus has no digits
    assert with_digits[:len(seen) - 2] == [False] * (len(seen) - 2) and with_digits[-2:] == [True, True]
    with pytest.raises(AGIFormerError, match="plants facts of up to"):
        toy_recipe(stages=[dict(name="facts", corpora={"toy": 1.0}, facts=0.5)])  # 64-byte windows
    with pytest.raises(AGIFormerError, match=r"facts must be in \[0, 1\]"):
        toy_recipe(seq_len=128, stages=[dict(name="facts", corpora={"toy": 1.0}, facts=1.5)])


def test_a_signal_during_the_last_step_ends_a_complete_run(toy_data, tmp_path):
    trainer = Trainer(toy_recipe(steps=4), data_dir=toy_data, out_dir=tmp_path, progress=False)
    original_step = trainer.train_step

    def step_then_signal(step):
        row = original_step(step)
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return row

    trainer.train_step = step_then_signal
    summary = trainer.train()
    assert summary["steps"] == 4 and not summary["stopped_early"] and summary["stopped_by"] is None


def test_resume_after_a_kill_mid_append_drops_the_partial_metrics_line(toy_data, tmp_path, capsys):
    recipe = toy_recipe(steps=6, checkpoint_every=3, eval_every=3)
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "straight", progress=False).train()
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", progress=False).train(max_steps=3)
    with (tmp_path / "split" / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "step": 4, "train_b')  # a SIGKILL in the middle of log()
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", resume=True, progress=False).train()
    assert "dropped a partial last line" in capsys.readouterr().err
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(AGIFormerError, match="line 2: not a JSON row"):
        read_metrics(tmp_path / "bad.jsonl")


def test_a_run_directory_in_use_is_refused_naming_its_holder(toy_data, tmp_path):
    holder = Trainer(toy_recipe(steps=2), data_dir=toy_data, out_dir=tmp_path, progress=False)
    for resume in (False, True):
        with pytest.raises(AGIFormerError, match=f"in use by another run \\(pid {os.getpid()} "):
            Trainer(toy_recipe(steps=2), data_dir=toy_data, out_dir=tmp_path, resume=resume, progress=False)
    holder.train()  # the lock is released when the run ends
    Trainer(toy_recipe(steps=2), data_dir=toy_data, out_dir=tmp_path, resume=True, progress=False).train()
    (tmp_path / "file").write_text("x")
    with pytest.raises(AGIFormerError, match="is a file, not a run directory"):
        Trainer(toy_recipe(steps=2), data_dir=toy_data, out_dir=tmp_path / "file", progress=False)


def test_resume_with_a_changed_recipe_is_refused_unless_allowed_and_then_recorded(toy_data, tmp_path):
    Trainer(toy_recipe(steps=4), data_dir=toy_data, out_dir=tmp_path, progress=False).train(max_steps=2)
    changed = toy_recipe(steps=4, lr=1e-3, stages=[dict(name="first", corpora={"toy": 1.0}, plasticity=0.7)])
    with pytest.raises(AGIFormerError, match=r"recipe changed .*lr 0.003 → 0.001.*stages\[0\].plasticity 0.5 → 0.7"):
        Trainer(changed, data_dir=toy_data, out_dir=tmp_path, resume=True, progress=False)
    Trainer(changed, data_dir=toy_data, out_dir=tmp_path, resume=True, allow_recipe_change=True, progress=False).train()
    change = next(r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "recipe_change")
    assert change["step"] == 2 and change["changes"]["lr"] == [3e-3, 1e-3]
    assert json.loads((tmp_path / "recipe.json").read_text())["lr"] == 1e-3
    with pytest.raises(AGIFormerError, match=r"\(steps 4 → 6\); resume with the run's own recipe \(pass --steps 4 again\)"):
        Trainer(toy_recipe(steps=6, lr=1e-3, stages=[dict(name="first", corpora={"toy": 1.0}, plasticity=0.7)]),
                data_dir=toy_data, out_dir=tmp_path, resume=True, progress=False)


def test_resume_refuses_an_optimizer_state_of_the_wrong_shape(toy_data, tmp_path):
    Trainer(toy_recipe(steps=2), data_dir=toy_data, out_dir=tmp_path, progress=False).train()
    path = tmp_path / "last" / "optimizer.safetensors"
    tensors = load_tensors(path)
    name = next(k for k in tensors if k.endswith(".exp_avg") and tensors[k].dim() == 2)
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_tensors(path, tensors)
    with pytest.raises(AGIFormerError, match=f"optimizer state {name} has shape"):
        Trainer(toy_recipe(steps=2), data_dir=toy_data, out_dir=tmp_path, resume=True, progress=False)


def test_eval_finds_the_previous_checkpoint_when_a_swap_was_cut_short(toy_data, tmp_path):
    Trainer(toy_recipe(steps=2), data_dir=toy_data, out_dir=tmp_path, progress=False).train()
    shutil.rmtree(tmp_path / "best")
    (tmp_path / "last").rename(tmp_path / "last.old")  # killed between the two renames of save_checkpoint
    assert resolve_checkpoint(str(tmp_path)) == tmp_path / "last.old"


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(toy_data, tmp_path):
    trainer = Trainer(toy_recipe(checkpoint_every=2), data_dir=toy_data, out_dir=tmp_path, progress=False)
    trainer.train(max_steps=2)
    with torch.no_grad():
        trainer.model.head.out.weight.fill_(float("nan"))
    with pytest.raises(AGIFormerError, match="non-finite loss at step 3"):
        trainer.train()
    kept = AGIFormer.from_pretrained(tmp_path / "last")
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert json.loads((tmp_path / "last" / "trainer.json").read_text())["step"] == 2


def test_a_second_run_into_the_same_directory_is_refused(toy_data, tmp_path):
    Trainer(toy_recipe(steps=1), data_dir=toy_data, out_dir=tmp_path, progress=False).train()
    with pytest.raises(AGIFormerError, match="--resume"):
        Trainer(toy_recipe(steps=1), data_dir=toy_data, out_dir=tmp_path, progress=False)


@pytest.mark.parametrize("change, message", [
    (dict(seq_len=32), "shorter than 4 × the attention span"),
    (dict(stages=[]), "at least one"),
    (dict(stages=[dict(name="a", corpora={"toy": 1.0}, plasticity=0.0)]), "plasticity"),
    (dict(precision="fp16"), "precision"),
    (dict(model=dict(preset="tiny", d_modle=3)), "unknown config key"),
    (dict(stages=[dict(name="a", corpora={"toy": 1.0}, plasticty=0.5)]), "unknown key"),
    (dict(steps="six"), "steps must be an integer"),
    (dict(steps=6.5), "steps must be an integer"),
    (dict(lr=float("nan")), "lr must be finite"),
    (dict(grad_clip=-1.0), "grad_clip must be > 0"),
    (dict(warmup_steps=10), "warmup_steps 10 is longer than the run's 6 steps"),
    (dict(model="tiny"), "model must be a table"),
    (dict(stages="x"), "stages must be"),
    (dict(stages=[dict(name="a", corpora="x")]), "corpora must be a table"),
    (dict(stages=[dict(name="a", corpora={"toy": 1.0}, plasticity="high")]), "plasticity must be a number"),
    (dict(stages=[dict(name="a", corpora={"toy": 1.0}, share=float("nan"))]), "share must be finite"),
    (dict(model=dict(preset="tiny", d_model="wide")), "d_model must be an integer"),
    (dict(model=dict(preset="tiny", dropout=1.5)), "dropout must be in"),
])
def test_bad_recipes_are_refused_with_one_line(change, message):
    with pytest.raises(AGIFormerError, match=message) as error:
        toy_recipe(**change)
    assert "\n" not in str(error.value)


def test_two_problems_are_reported_together():
    with pytest.raises(AGIFormerError, match="batch_size must be an integer.*lr must be a number"):
        toy_recipe(batch_size=2.5, lr="fast")


FUZZ_VALUES = ["six", "", 6.5, -2.5, float("nan"), float("-inf"), 0, -1, 2 ** 70, True, [1], {"a": 1}, None]


def fuzzed(seed: int, count: int) -> list:
    """The fixed bad values above and `count` generated ones: random strings, floats of any scale, big integers."""
    rng = random.Random(seed)
    made = [rng.choice([lambda: "".join(rng.choices("ab1.-e ", k=rng.randint(1, 6))),
                        lambda: rng.uniform(-1, 1) * 10.0 ** rng.randint(-40, 40),
                        lambda: rng.randint(-2 ** 66, 2 ** 66)])() for _ in range(count)]
    return FUZZ_VALUES + made


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Recipe)] + [
    f"stage.{f.name}" for f in dataclasses.fields(Stage)] + [f"model.{f.name}" for f in dataclasses.fields(AGIFormerConfig)]
    + ["model.preset", "model.type"] + [f"gpt.{f.name}" for f in dataclasses.fields(ByteGPTConfig)]
    + [f"ngram.{f.name}" for f in dataclasses.fields(ByteNgramLMConfig)])
def test_fuzzed_recipe_values_give_a_one_line_error_or_a_recipe_of_the_right_types(field):
    """Whatever value a recipe key gets, loading it either gives a recipe whose values all have their
    declared types, or refuses it in one line naming the key: never another exception."""
    for value in fuzzed(seed=len(field), count=12):
        if field.startswith("stage."):
            change = dict(stages=[{**dict(name="s", corpora={"toy": 1.0}), field[6:]: value}])
        elif field.startswith("model."):
            change = dict(model={"preset": "tiny", field[6:]: value})
        elif field.startswith("gpt."):
            change = dict(model={"type": "byte-gpt", "d_model": 32, "n_layers": 1, "n_heads": 2, field[4:]: value})
        elif field.startswith("ngram."):
            change = dict(model={"type": "byte-ngram", "d_model": 32, "buckets": 64, field[6:]: value})
        else:
            change = {field: value}
        try:
            recipe = toy_recipe(**change)
        except AGIFormerError as error:
            assert "\n" not in str(error) and field.split(".")[-1] in str(error), (field, value, str(error))
        else:
            assert not type_problems(recipe) and not type_problems(recipe.stages[0]), (field, value)
            assert not type_problems(recipe.model_config()), (field, value)


def test_stage_boundaries_and_schedule():
    recipe = toy_recipe(steps=100, warmup_steps=10, stages=[
        dict(name="a", corpora={"toy": 1}, plasticity=0.1, share=0.15),
        dict(name="b", corpora={"toy": 1}, plasticity=0.5, share=0.25),
        dict(name="c", corpora={"toy": 1}, plasticity=0.99, share=0.6)])
    assert recipe.stage_boundaries() == [0, 15, 40]
    assert [recipe.stage_at(s) for s in (0, 14, 15, 39, 40, 99)] == [0, 0, 1, 1, 2, 2]
    lrs = [recipe.lr_at(s) for s in range(100)]
    assert lrs[9] == pytest.approx(recipe.lr) and lrs[-1] == pytest.approx(recipe.lr * recipe.min_lr_ratio, rel=0.01)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize("lr_control", [False, True])
def test_fused_adamw_matches_the_reference_loop(lr_control):
    """The trainer's fused AdamW against torch's plain for-loop AdamW with the same groups, in float64."""
    torch.manual_seed(0)
    model = AGIFormer(AGIFormerConfig.preset("tiny")).double()
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
    fused = optimizer_for(model, toy_recipe(weight_decay=0.1))
    loop = torch.optim.AdamW([{**{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
                               "params": [reference[i] for i, p in enumerate(model.parameters())
                                          if any(p is q for q in g["params"])]} for g in fused.param_groups],
                             foreach=False)
    if lr_control:  # a real difference (lr 1 % off) must be far above the tolerance
        for group in loop.param_groups:
            group["lr"] *= 1.01
    for _ in range(4):
        for p, q in zip(model.parameters(), reference):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        loop.step()
    error = max(((p - q).abs().max() / q.abs().max()).item() for p, q in zip(model.parameters(), reference))
    assert fused.param_groups[0]["fused"] and loop.param_groups[0]["foreach"] is False
    assert (error > 1e-6) if lr_control else (error < 1e-12)


def test_sparse_row_gradients_equal_the_dense_gradient_step_after_step():
    """The table's gradient rebuilt from its looked-up rows equals the dense backward's, in float64, over steps
    whose rows differ (the reused buffer must not keep the last step's rows) and with two backward passes
    accumulated before `densify`."""
    torch.manual_seed(0)
    table = ByteNgramEmbedding(dim=4, max_order=3, buckets=16).double()
    dense = ByteNgramEmbedding(dim=4, max_order=3, buckets=16).double()
    dense.load_state_dict(table.state_dict())
    rows = SparseRowGradients(table)
    assert table.sparse_gradient and not dense.sparse_gradient
    g = torch.Generator().manual_seed(1)
    buffers, looked_up = [], []
    for passes in (1, 2, 1):
        for _ in range(passes):
            history = torch.randint(0, 257, (2, 3, 3), generator=g)
            upstream = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
            (table(history) * upstream).sum().backward()
            (dense(history) * upstream).sum().backward()
        assert table.table.weight.grad.is_sparse
        rows.densify()
        grad, expected = table.table.weight.grad, dense.table.weight.grad
        assert not grad.is_sparse and relative_error(grad, expected) <= 1e-12
        buffers.append(grad.data_ptr())
        looked_up.append(set(expected.abs().sum(1).nonzero().flatten().tolist()))
        table.zero_grad(set_to_none=True)
        dense.zero_grad(set_to_none=True)
    # the same buffer served every step, and rows looked up before but not since are zero again in it
    assert len(set(buffers)) == 1 and looked_up[0] - looked_up[2]


def test_shipped_and_screen_recipes_load():
    for path in sorted(Path("runs").glob("*.toml")) + sorted(Path("experiments/byte").glob("*.toml")):
        recipe = load_recipe(path)
        config = recipe.model_config()
        if config.model_type == "agiformer":  # a row holds ≥ 4 attention spans of window patches
            # a dynamic patch holds at most patch_size bytes; the bound takes half of it, and with the
            # measured means (5.1-7.2 bytes, docs/results/patching.md) the recipes' rows hold 4.4-6.2 spans
            patch_bytes = config.patch_size if config.patching == "fixed" else config.patch_size / 2
            assert recipe.seq_len >= 4 * config.window * patch_bytes
        assert recipe.minutes > 0  # every shipped recipe is a time budget


def test_ddp_with_two_gloo_processes_matches_one_process(toy_data, tmp_path, write_toy_recipe):
    recipe_file = write_toy_recipe(tmp_path / "toy.toml", minutes=10, steps=5, warmup_steps=4, eval_every=3,
                                   checkpoint_every=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["train", str(recipe_file), "--data-dir", str(toy_data), "--device", "cpu", "--quiet"]
    subprocess.run([sys.executable, "-m", "agiformer", *common, "--out", str(tmp_path / "one")],
                   check=True, env=env, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    done = subprocess.run([*torchrun, "-m", "agiformer", *common, "--out", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(one) == len(two) == 5  # both processes fixed the same count after timing 4 steps
    assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(one, two)), (one, two)
    val = lambda d: [r["val_bpb"] for r in read_metrics(d / "metrics.jsonl") if r["kind"] == "val"]
    assert math.isclose(val(tmp_path / "one")[0], val(tmp_path / "two")[0], rel_tol=1e-4)


def test_byte_gpt_trains_with_the_same_trainer_and_resumes(toy_data, tmp_path):
    recipe = toy_recipe(steps=4, checkpoint_every=2, eval_every=2,
                        model=dict(type="byte-gpt", d_model=32, n_layers=2, n_heads=2))
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "straight", progress=False).train()
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", progress=False).train(max_steps=2)
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "split", resume=True, progress=False).train()
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")


def budget_recipe(**overrides) -> Recipe:
    return toy_recipe(**{"steps": 0, "minutes": 10.0, "warmup_steps": 4, "eval_every": 0, "checkpoint_every": 0,
                         **overrides})


def test_a_time_budget_fixes_the_steps_after_timing_the_warmup(toy_data, tmp_path):
    summary = Trainer(budget_recipe(steps=9), data_dir=toy_data, out_dir=tmp_path, progress=False).train()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    budget, *replans = [r for r in rows if r["kind"] == "budget"]
    assert budget["step"] == 4 and budget["timed_steps"] == 2  # min(warmup_steps, CALIBRATION_STEPS), later half
    assert budget["steps"] == 9 and summary["steps"] == 9 and summary["budget"] == {
        k: v for k, v in (replans or [budget])[-1].items() if k not in ("kind", "step")}
    assert budget["step_s"] > 0 and budget["validation_s"] > 0 and budget["save_s"] > 0
    # re-timed once 4 more steps are timed (MIN_CALIBRATION_STEPS), the cap still binding
    assert [(r["step"], r["timed_steps"], r["steps"]) for r in replans] == [(8, 4, 9)]
    # the calibration's validation is the run's first; the stage split follows the fixed count
    assert [r["step"] for r in rows if r["kind"] == "val"][0] == 4
    assert [r["stage"] for r in rows if r["kind"] == "train"] == ["first"] * 4 + ["second"] * 5  # round(4.5) = 4
    assert json.loads((tmp_path / "last" / "trainer.json").read_text())["planned_steps"] == 9


def planned_trainer(toy_data, tmp_path, recipe: Recipe, *, done: int, steps: int, spent: float) -> Trainer:
    """A trainer `done` steps into a budgeted run whose count is fixed at `steps`, `spent` seconds in."""
    trainer = Trainer(recipe, data_dir=toy_data, out_dir=tmp_path, progress=False)
    trainer.recipe.steps = trainer.state["planned_steps"] = steps
    trainer.state["step"], trainer.validation_s, trainer.save_s = done, 5.0, 1.0
    trainer.elapsed = lambda: spent  # the clock, not the planner, is what this stands in for
    return trainer


def test_a_budget_re_times_its_steps_and_fixes_the_count_again(toy_data, tmp_path):
    """A count fixed from slow first steps grows when the later steps run faster (and shrinks when they
    run slower): what remains of the budget over the steps timed since, plus the validations and saves."""
    recipe = budget_recipe(minutes=10.0, eval_every=100, checkpoint_every=100)  # 600 s
    trainer = planned_trainer(toy_data, tmp_path, recipe, done=100, steps=400, spent=150.0)
    assert trainer.replan_due(600.0, timed_steps=84) and not trainer.replan_due(600.0, timed_steps=3)
    trainer.plan_steps(600.0, 0, [1.0] * 84)
    # 450 s left: 420 steps of 1 s and a validation (5 s) and save (1 s) at 200, 300, 400, 500 and the last
    assert trainer.recipe.steps == trainer.state["planned_steps"] == 520 and trainer.state["replans"] == 1
    assert not trainer.replan_due(600.0, timed_steps=84)  # the next one at half of 520 steps
    trainer.state["step"] = 260
    assert trainer.replan_due(600.0, timed_steps=84)
    trainer.elapsed = lambda: 500.0
    trainer.plan_steps(600.0, 0, [2.0] * 84)  # slower now: 100 s left: 44 steps of 2 s, events at 300 and the last
    assert trainer.recipe.steps == 304 and trainer.state["replans"] == 2
    row = read_metrics(tmp_path / "metrics.jsonl")[-1]
    assert row["kind"] == "budget" and (row["step"], row["steps"], row["step_s"]) == (260, 304, 2.0)


def test_a_re_timed_count_never_moves_a_passed_stage_boundary_ahead(toy_data, tmp_path):
    """Stages split the count by share: 100 steps of two halves switch at step 50. Fixed again at step 55
    with time for 200, the boundary would move to step 100 and send the run back to the first stage;
    the count grows only as far as keeps it at step 55 or before (110 steps)."""
    recipe = budget_recipe(minutes=10.0, eval_every=1000, checkpoint_every=1000)
    trainer = planned_trainer(toy_data, tmp_path, recipe, done=55, steps=100, spent=55.0)
    assert recipe.stage_at(54) == 1
    trainer.plan_steps(600.0, 0, [1.0] * 30)
    assert trainer.recipe.steps == 110 and recipe.stage_at(55) == 1 and recipe.stage_boundaries() == [0, 55]


def test_a_step_cap_below_the_calibration_steps_holds(toy_data, tmp_path):
    summary = Trainer(budget_recipe(steps=2), data_dir=toy_data, out_dir=tmp_path, progress=False).train()
    assert summary["steps"] == 2 and summary["budget"]["steps"] == 2


def test_a_spent_budget_ends_the_run_after_calibration(toy_data, tmp_path):
    summary = Trainer(budget_recipe(minutes=1e-4), data_dir=toy_data, out_dir=tmp_path, progress=False).train()
    assert summary["steps"] == 4 and summary["budget"]["steps"] == 4 and summary["last_val"]["step"] == 4


def test_a_budgeted_run_resumes_exactly_with_its_fixed_step_count(toy_data, tmp_path):
    recipe = budget_recipe(steps=8)   # the cap binds on any machine: both runs fix 8 steps
    Trainer(recipe, data_dir=toy_data, out_dir=tmp_path / "straight", progress=False).train()
    Trainer(budget_recipe(steps=8), data_dir=toy_data, out_dir=tmp_path / "split", progress=False).train(max_steps=6)
    resumed = Trainer(budget_recipe(steps=8), data_dir=toy_data, out_dir=tmp_path / "split", resume=True,
                      progress=False)
    assert resumed.state["planned_steps"] == 8
    assert resumed.train()["steps"] == 8
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")


@pytest.mark.parametrize("eval_every, seconds, expected", [
    (20, 100.0, 60),   # 60 steps of 1 s + validations of 10 s at steps 20, 40, 60 = 90 s; 61 steps need 4: 101 s
    (0, 100.0, 69),    # DEFAULT_EVALS = 3: validations at 23, 46, 69 (interval round(69 / 3)): 99 s
    (0, 5.0, 0),       # not even the final validation fits: no step beyond those done
])
def test_steps_within_counts_the_validations_and_saves_to_come(eval_every, seconds, expected):
    recipe = toy_recipe(steps=0, minutes=1.0, warmup_steps=4, eval_every=eval_every, checkpoint_every=0)
    total = recipe.steps_within(seconds, done=0, step_s=1.0, validation_s=10.0, save_s=0.0)
    assert total == expected
    assert recipe.steps_within(seconds, done=0, step_s=1.0, validation_s=10.0, save_s=0.1) <= expected


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_run_saves_and_exits_with_the_signals_code(toy_data, tmp_path, write_toy_recipe, sig, code):
    """A scheduler's SIGTERM (or Ctrl-C) stops `agiformer train` after a save with 128 + the signal's
    number, never 0 and "done"; --resume then finishes the run and exits 0."""
    recipe_file = write_toy_recipe(tmp_path / "toy.toml", steps=60, warmup_steps=2)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "agiformer", "train", str(recipe_file), "--data-dir", str(toy_data),
               "--device", "cpu", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((out / "metrics.jsonl").is_file()
                                               and (out / "metrics.jsonl").read_text().count('"train"') >= 3):
        time.sleep(0.05)
    run.send_signal(sig)
    stdout, stderr = run.communicate(timeout=120)
    summary = json.loads((out / "summary.json").read_text())
    assert run.returncode == code, stderr[-2000:]
    assert f"stopped by {sig.name}" in stderr and "done:" not in stdout
    assert summary["stopped_by"] == sig.name and 3 <= summary["steps"] < 60
    saved = json.loads((out / "last" / "trainer.json").read_text())
    assert saved["step"] == summary["steps"]
    finish = subprocess.run([*command, "--resume"], env=env,
                            capture_output=True, text=True)
    assert finish.returncode == 0 and "done: 60 steps" in finish.stdout, finish.stderr[-2000:]
