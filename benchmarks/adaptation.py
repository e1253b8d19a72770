"""Adapting a trained byte model to other text: SVF, LoRA and a full fine-tune at equal steps, two-pass
dispatch among the SVF experts, and test-time adaptation while scoring.

    python -m benchmarks.adaptation --base out/quality-replan/en-wiki-20min/agiformer/last \\
        --corpora tr-speech,code-py,en-lit --steps 200

For each corpus and method: an adapter trained `--steps` steps on the corpus's train split (`agiformer
adapt`'s recipe: batch 4, the base's context), then test-split bits per byte of the base and of each
adapter, with the parameters each trained: SVF (one z per singular value of every linear layer), LoRA
rank 1 on every linear layer, LoRA rank 1 on as many layers as SVF's parameter count allows
(`lora-matched`), and a full fine-tune. Dispatch: a classifier on the base's pooled states, fitted
on 64 train windows per corpus, picks each test window's mix of SVF experts from the window before it
(`agiformer.eval.dispatch`); reported as bpb and as how often the right corpus's expert led. Test-time
adaptation: the base scored while its SVF z-vectors learn from each window after scoring it
(`agiformer.eval.dynamic`), with its time against the static score's. Writes OUT/adaptation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from agiformer.data import load_split
from agiformer.eval import evaluate_bpb
from agiformer.eval.dispatch import dispatched_bpb, fit_dispatcher
from agiformer.eval.dynamic import dynamic_bpb
from agiformer.models import resolve_checkpoint
from agiformer.precision import choose_precision
from agiformer.train import Recipe, Trainer
from agiformer.train.adapt import load_experts, load_trained
from benchmarks.common import RESULTS_DIR, command_line, environment, finish_environment, log, markdown_table, \
    write_json, write_text

# the learning rates `agiformer adapt` starts from; "lora-matched" is rank-1 LoRA on as many layers as SVF's
# parameter count allows
METHODS = {"svf": 2e-3, "lora": 1e-3, "lora-matched": 1e-3, "full": 3e-4}


def matched_lora_layers(model: nn.Module) -> list[str]:
    """Linear layers for rank-1 LoRA with at most SVF's trainable parameters (Σ min(out, in) over every
    linear layer): from the output backwards, each layer whose out + in still fits."""
    layers = [(name, *module.weight.shape) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    budget, chosen = sum(min(out, inp) for _, out, inp in layers), []
    for name, out, inp in reversed(layers):
        if out + inp <= budget:
            chosen.append(name)
            budget -= out + inp
    return sorted(chosen)


def adapter_recipe(base: Path, corpus: str, method: str, *, steps: int, seq_len: int, plasticity: float,
                   layers: list[str]) -> Recipe:
    adapt = {"base": str(base), "method": method.removesuffix("-matched")}
    if method == "lora-matched":
        adapt["layers"] = layers
    return Recipe.from_dict({"name": f"adapt-{method}-{corpus}", "steps": steps, "batch_size": 4, "seq_len": seq_len,
                             "lr": METHODS[method], "warmup_steps": min(30, steps), "eval_corpus": corpus,
                             "eval_every": steps, "checkpoint_every": steps, "adapt": adapt,
                             "stages": [{"name": corpus, "corpora": {corpus: 1.0}, "plasticity": plasticity}]},
                            source="benchmarks.adaptation")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the trained model (a run or checkpoint directory)")
    parser.add_argument("--corpora", default="tr-speech,code-py,en-lit")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per adapter (equal for every method)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--runs-dir", type=Path, default=Path("out/adaptation"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    started = time.time()
    base = resolve_checkpoint(args.base)
    corpora, methods = args.corpora.split(","), args.methods.split(",")
    model = load_trained(base)
    seq_len = json.loads((base / "trainer.json").read_text())["seq_len"] if (base / "trainer.json").is_file() else 2048
    plasticity = getattr(model.config, "plasticity", 0.99)
    precision = choose_precision("auto", torch.device("cpu"), width=model.config.d_model).precision
    env = environment(torch.device("cpu"))
    rows, adapters = [], {}
    for corpus in corpora:
        test = load_split(args.data_dir, corpus, "test")
        score = lambda m: evaluate_bpb(m, test, seq_len=seq_len, batch_size=4, precision=precision)["bpb"]
        rows.append({"corpus": corpus, "method": "base", "trained_parameters": 0, "test_bpb": score(model)})
        for method in methods:
            out = args.runs_dir / corpus / method
            if not (out / "summary.json").is_file():
                log(f"{corpus} / {method}: {args.steps} steps")
                recipe = adapter_recipe(base, corpus, method, steps=args.steps, seq_len=seq_len, plasticity=plasticity,
                                        layers=matched_lora_layers(model))
                Trainer(recipe, data_dir=args.data_dir, out_dir=out, progress=False).train()
            summary = json.loads((out / "summary.json").read_text())
            adapters[corpus, method] = out / "last"
            rows.append({"corpus": corpus, "method": method, "trained_parameters": summary["trained_parameters"],
                         "train_s": summary["elapsed_s"], "test_bpb": score(load_trained(out / "last"))})
            log(f"{corpus} / {method}: test bpb {rows[-1]['test_bpb']:.4f}")
    dispatch = []
    if "svf" in methods and len(corpora) > 1:
        experts_model, experts = load_experts({c: adapters[c, "svf"] for c in corpora})
        dispatcher = fit_dispatcher(experts_model, {c: load_split(args.data_dir, c, "train") for c in corpora},
                                    seq_len=seq_len, precision=precision)
        for corpus in corpora:
            result = dispatched_bpb(experts_model, dispatcher, experts, load_split(args.data_dir, corpus, "test"),
                                    seq_len=seq_len, precision=precision)
            windows = sum(result["chosen"].values())
            dispatch.append({"corpus": corpus, "test_bpb": result["bpb"], "chosen": result["chosen"],
                             "right_share": result["chosen"][corpus] / max(1, windows)})
    dynamic = []
    for corpus in corpora:
        test = load_split(args.data_dir, corpus, "test")
        tick = time.perf_counter()
        static = evaluate_bpb(model, test, seq_len=seq_len, batch_size=1, precision=precision)["bpb"]
        static_s = time.perf_counter() - tick
        adapted = dynamic_bpb(model, test, seq_len=seq_len, steps=1, lr=1e-3, precision=precision)
        dynamic.append({"corpus": corpus, "static_bpb": static, "static_s": static_s, "adapted_bpb": adapted["bpb"],
                        "adapted_s": adapted["seconds"]})
        log(f"{corpus}: static {static:.4f}, adapting while scoring {adapted['bpb']:.4f}")
    finish_environment(env, started)
    result = {"command": command_line("adaptation", argv), "base": str(base), "steps": args.steps, "seq_len": seq_len,
              "precision": precision, "environment": env, "rows": rows, "dispatch": dispatch, "dynamic": dynamic}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "adaptation.json", result)
    write_text(args.out / "adaptation.md", render(result))


def render(result: dict) -> str:
    env = result["environment"]
    lines = [f"# Adapting `{result['base']}` to other text", "",
             f"`{result['command']}`; {env['cpu_model']}, {env['torch_threads']} threads, torch {env['torch_version']}, "
             f"{result['precision']}, commit {env['git_commit']}, "
             f"{result['steps']} steps per adapter of 4 × {result['seq_len']} bytes.", "",
             markdown_table(["corpus", "method", "trained parameters", "training (s)", "test bpb"],
                            [[r["corpus"], r["method"], f"{r['trained_parameters']:,}", f"{r.get('train_s', 0):.0f}",
                              f"{r['test_bpb']:.4f}"] for r in result["rows"]])]
    if result["dispatch"]:
        lines += ["", "Two-pass dispatch among the SVF experts (each window's mix chosen from the window before it):", "",
                  markdown_table(["corpus", "test bpb", "windows led by its own expert"],
                                 [[d["corpus"], f"{d['test_bpb']:.4f}", f"{100 * d['right_share']:.0f} %"]
                                  for d in result["dispatch"]])]
    lines += ["", "Test-time adaptation of the base while scoring (1 step per window, lr 1e-3):", "",
              markdown_table(["corpus", "static bpb", "adapted bpb", "static (s)", "adapted (s)"],
                             [[d["corpus"], f"{d['static_bpb']:.4f}", f"{d['adapted_bpb']:.4f}", f"{d['static_s']:.0f}",
                               f"{d['adapted_s']:.0f}"] for d in result["dynamic"]])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
