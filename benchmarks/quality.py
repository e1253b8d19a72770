"""Quality at a fixed wall-clock budget: test bits per byte of AGIFORMER, its ablations and a byte GPT
tuned for the budget, each trained by the same trainer for the same time, beside the compressors on
the same test split. AGIFORMER and its ablations follow the recipe's curriculum; the byte GPT trains on
the scored corpus alone, as its user would.

    python -m benchmarks.quality --corpus en-wiki --minutes 20 --systems agiformer,gpt-sweep
    python -m benchmarks.quality --corpus en-wiki --minutes 20              # every system, one by one
    python -m benchmarks.quality --report                                   # merge into quality.{md,png}
    python -m benchmarks.quality --corpus en-wiki --recipe my.toml --systems agiformer --out /tmp/my  # another recipe
    python -m benchmarks.quality --quick                                    # 2 systems × 20 s, en-wiki

The byte GPT is the one a user would pick at the budget, not one sized to lose: GPT_SWEEP is a small
sweep around a strong reference point (width and depth, context 256 / 512 / 1,024, learning rate, weight
decay), every point trained at the same budget; the report compares AGIFORMER with the point that has the
best *validation* bpb (so the test split picks nothing) and lists the whole sweep.

Equal wall-clock: each system's recipe gets the budget as `minutes` and the trainer fixes the step
count that fits after timing its first steps (`agiformer.train.loop`), so its warm-up + cosine
schedule ends within the budget; each picks its precision by measurement. The training time it
actually used (the sum of its step times) is reported beside the budget. Each system writes its own JSON (`OUT/quality/CORPUS/SYSTEM.json`), so systems can run in
separate processes, pinned to separate cores, and `--report` merges them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

import torch

from agiformer.data import corpus_compression_baselines, load_split
from agiformer.eval.bpb import evaluate_bpb
from agiformer.train.recipe import Recipe, load_recipe
from agiformer.train.trainer import Trainer
from benchmarks.common import (
    QUICK_RESULTS_DIR, RESULTS_DIR, ROOT, command_line, environment, finish_environment, log,
    markdown_table, write_json, write_text,
)

RECIPES = {"en-wiki": ROOT / "runs" / "en-wiki-baseline.toml", "tr-speech": ROOT / "runs" / "tr.toml",
           "code-py": ROOT / "runs" / "code-py.toml"}


class GPTPoint(NamedTuple):
    """One byte GPT of the sweep; trained with warmup and cosine over the budget."""
    d_model: int
    n_layers: int
    context: int  # training context in bytes
    lr: float
    batch_size: int  # rows
    weight_decay: float  # AdamW's


# the reference (d 256, 6 layers, context 512, lr 2e-3), then a sweep around d 192, 4 layers, whose
# steps are 2.6x faster on an AVX2 EPYC (docs/results/quality-screens.md)
GPT_SWEEP = {
    "gpt-d256-l6-c512": GPTPoint(256, 6, 512, 2e-3, 4, 0.1),
    "gpt-d192-l4-c512": GPTPoint(192, 4, 512, 2e-3, 4, 0.1),
    "gpt-d128-l4-c512": GPTPoint(128, 4, 512, 2e-3, 4, 0.1),
    "gpt-d256-l4-c512": GPTPoint(256, 4, 512, 2e-3, 4, 0.1),
    "gpt-d192-l4-c256": GPTPoint(192, 4, 256, 2e-3, 4, 0.1),
    "gpt-d192-l4-c1024": GPTPoint(192, 4, 1024, 2e-3, 4, 0.1),
    "gpt-d192-l4-c512-lr1e-3": GPTPoint(192, 4, 512, 1e-3, 4, 0.1),
    "gpt-d192-l4-c512-lr4e-3": GPTPoint(192, 4, 512, 4e-3, 4, 0.1),
    "gpt-d192-l4-c512-b8": GPTPoint(192, 4, 512, 2e-3, 8, 0.1),
    # d 128 and context 256 won among the points above with one thread per system (AMD EPYC Zen 4): the
    # sweep goes on past them
    "gpt-d128-l4-c512-lr3e-3": GPTPoint(128, 4, 512, 3e-3, 4, 0.1),
    "gpt-d128-l4-c256": GPTPoint(128, 4, 256, 2e-3, 4, 0.1),
    # ... and d 128, context 256 won those: past them again, narrower, and a higher learning rate
    "gpt-d96-l4-c256": GPTPoint(96, 4, 256, 2e-3, 4, 0.1),
    "gpt-d128-l4-c256-lr3e-3": GPTPoint(128, 4, 256, 3e-3, 4, 0.1),
    # ... d 128, context 256 won again: a shorter context still, and one layer fewer
    "gpt-d128-l4-c128": GPTPoint(128, 4, 128, 2e-3, 4, 0.1),
    "gpt-d128-l3-c256": GPTPoint(128, 3, 256, 2e-3, 4, 0.1),
    # weight decay 0.5 made AGIFORMER 2 % better at 60 minutes (screen 19): the GPTs that won each budget, with it too
    "gpt-d128-l4-c256-wd0.5": GPTPoint(128, 4, 256, 2e-3, 4, 0.5),
    "gpt-d192-l4-c512-wd0.5": GPTPoint(192, 4, 512, 2e-3, 4, 0.5),
}
SYSTEMS = {
    "agiformer": "the recipe's model: v2 blocks with window attention only (mixer = attention), GRU head reading hashed "
                 "2- to 6-grams and in-context continuations of 15 orders (1-64), rows of 2,048 bytes",
    **{name: f"byte GPT (full causal attention): d {p.d_model}, {p.n_layers} layers, context {p.context}, lr {p.lr:g}, "
             f"batch {p.batch_size}, weight decay {p.weight_decay:g}" for name, p in GPT_SWEEP.items()},
    "hebbian-memory": "AGIFORMER with the seed's hybrid block: window attention gated with the Hebbian fast-weight memory "
                      "(mixer = hybrid), α from the recipe's stages",
    "memory-only": "AGIFORMER with the Hebbian memory and no window attention (mixer = memory)",
    "no-reasoning": "AGIFORMER without the adaptive reasoning loop (reasoning_steps = 0)",
    "mlp-head": "AGIFORMER with the parallel MLP byte head instead of the GRU (and its n-grams and continuations)",
    "no-continuations": "AGIFORMER whose byte head reads no in-context continuations (head_continuations = [])",
    "v1-block": "AGIFORMER with the seed's v1 hybrid block: summed fusion, per-head decay, no encoder overlap",
    "constant-alpha": "hebbian-memory with α = 0.99 in every stage instead of the curriculum's α",
    "no-curriculum": "AGIFORMER trained on the scored corpus alone, α = 0.99, as the byte GPT is (the last stage's facts kept)",
    "discrepancy": "AGIFORMER with the token discrepancy loss (MVoT) against its own byte embeddings, weight 0.1",
    "neural-memory": "hebbian-memory with the Titans neural memory (gradient write) instead of the Hebbian one",
    "least-squares-memory": "hebbian-memory with the least-squares neural memory instead of the Hebbian one",
}
# the systems that put a memory beside the window attention again: the recipes' blocks have none (screen 17)
HYBRID = {"mixer": "hybrid"}
AT_THE_END_ONLY = 10 ** 9  # eval_every / checkpoint_every: the budget's calibration and the last step only


def system_recipe(path: Path, system: str, *, minutes: float, name: str) -> Recipe:
    recipe = load_recipe(path, minutes=minutes, name=name)
    values = recipe.to_dict()
    model = dict(values["model"])
    if system in GPT_SWEEP:
        point = GPT_SWEEP[system]
        model = {"type": "byte-gpt", "d_model": point.d_model, "n_layers": point.n_layers, "n_heads": point.d_model // 64}
        # what a user of a plain GPT does: train on the corpus it is scored on, no curriculum
        corpus = recipe.eval_corpus
        values.update(seq_len=point.context, lr=point.lr, batch_size=point.batch_size, weight_decay=point.weight_decay,
                      stages=[{"name": corpus, "corpora": {corpus: 1.0}, "plasticity": 0.99}])
    elif system == "no-curriculum":
        corpus = recipe.eval_corpus
        facts = values["stages"][-1].get("facts", 0.0)
        values["stages"] = [{"name": corpus, "corpora": {corpus: 1.0}, "plasticity": 0.99, "facts": facts}]
    elif system == "constant-alpha":
        model.update(HYBRID)
        values["stages"] = [{**stage, "plasticity": 0.99} for stage in values["stages"]]
    elif system != "agiformer":
        model.update({"hebbian-memory": HYBRID, "memory-only": {"mixer": "memory"},
                      "no-reasoning": {"reasoning_steps": 0}, "mlp-head": {"head": "mlp", "head_ngrams": 0, "head_continuations": []},
                      "no-continuations": {"head_continuations": []},
                      "v1-block": {**HYBRID, "fusion": "sum", "memory_decay": "head", "encoder_overlap": 0},
                      "discrepancy": {"discrepancy_weight": 0.1}, "neural-memory": {**HYBRID, "memory": "neural"},
                      "least-squares-memory": {**HYBRID, "memory": "neural", "memory_write": "least_squares"}}[system])
    values.update(model=model, steps=0, eval_every=AT_THE_END_ONLY, checkpoint_every=AT_THE_END_ONLY)
    return Recipe.from_dict(values, source=f"{path.name} ({system})")


def results_folder(corpus: str, budget_s: float) -> str:
    return f"{corpus}-{budget_s / 60:g}min" if budget_s >= 60 else f"{corpus}-{budget_s:g}s"


def run_system(system: str, corpus: str, budget_s: float, args) -> dict:
    out_dir = args.runs_dir / results_folder(corpus, budget_s) / system
    if (out_dir / "last").exists():
        raise SystemExit(f"{out_dir} already holds a run; remove it to measure {system} again")
    recipe = system_recipe(args.recipe, system, minutes=budget_s / 60, name=f"quality-{corpus}-{system}")
    trainer = Trainer(recipe, data_dir=args.data_dir, out_dir=out_dir, progress=not args.no_progress)
    log(f"{corpus} / {system}: {trainer.precision.describe()}")
    summary = trainer.train()
    if summary["stopped_early"]:  # a result needs the whole budget: a stopped run is not one
        raise SystemExit(f"{system}: training stopped by {summary['stopped_by'] or 'a signal'} at step "
                         f"{summary['steps']}; no result written (remove {out_dir} to measure it again)")
    steps = summary["steps"]
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    bytes_per_step = recipe.batch_size * recipe.seq_len * recipe.grad_accum
    train_time = sum(bytes_per_step / r["bytes_per_s"] for r in train_rows)
    plasticity = trainer.trained_stage().plasticity
    test = evaluate_bpb(trainer.model, load_split(args.data_dir, corpus, "test"), seq_len=recipe.seq_len,
                        batch_size=recipe.batch_size, plasticity=plasticity, precision=trainer.precision.precision)
    elapsed, curve = 0.0, []
    for r in train_rows:
        elapsed += bytes_per_step / r["bytes_per_s"]
        curve.append((round(elapsed, 2), r["train_bpb"]))
    return {"system": system, "description": SYSTEMS[system], "corpus": corpus, "recipe": str(args.recipe.name),
            "model": recipe.model, "parameters": summary["parameters"], "budget_s": budget_s,
            "last_timed_s_per_step": summary["budget"]["step_s"], "steps": steps,
            "precision": summary["precision"], "bytes_seen": summary["bytes_seen"],
            "train_time_s": train_time, "val_bpb": summary["last_val"]["val_bpb"], "test_bpb": test["bpb"],
            "test_bpc": test["bpc"], "test_bytes": test["bytes"], "curve": curve, "checkpoint": str(out_dir / "last")}


# ----------------------------------------------------------------------------- report

def tuned_gpt(results: list[dict]) -> dict | None:
    """The sweep's byte GPT with the best validation bpb: the test split chooses nothing."""
    swept = [r for r in results if r["system"].startswith("gpt-")]
    return min(swept, key=lambda r: r["val_bpb"]) if swept else None


def describe(result: dict) -> str:
    """The system's description, and how its patches were cut where the recipe chose a patching."""
    model = result.get("model", {})
    if model.get("patching", "fixed") == "fixed":
        return result["description"]
    return f"{result['description']}; {model['patching']} patches of at most {model['patch_size']} bytes"


def report(args) -> None:
    sections, figures = [], {}
    for folder in sorted(p for p in (args.out / "quality").iterdir() if p.is_dir()):
        results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if not results:
            continue
        corpus, minutes = results[0]["corpus"], results[0]["budget_s"] / 60
        compressors = corpus_compression_baselines(args.data_dir, corpus, split="test")
        by_bpb = sorted(results, key=lambda r: r["test_bpb"])
        agiformer = next((r for r in results if r["system"] == "agiformer"), None)
        reference = agiformer["test_bpb"] if agiformer else None
        rows = [[r["system"], f"{r['parameters']:,}", f"{r['steps']:,}", f"{r['bytes_seen'] / 1e6:.1f} M",
                 f"{r['train_time_s']:.0f} / {r['budget_s']:.0f}", r.get("precision", {}).get("precision", "bf16"),
                 f"{r['val_bpb']:.3f}", f"{r['test_bpb']:.3f}",
                 "" if reference is None else f"{r['test_bpb'] - reference:+.3f}", describe(r)] for r in by_bpb]
        rows += [[f"{c['name']} (alone / given train)", "", "", "", "", "", "",
                  f"{c['bpb']:.3f} / {c['conditional_bpb']:.3f}" if c["bpb"] is not None
                  and c["conditional_bpb"] is not None else (c["note"] or "—"), "", ""] for c in compressors]
        machines = sorted({"{cpu_model}, torch {torch_version}, {torch_threads} thread(s)".format(**r["environment"])
                           for r in results})
        best_gpt = tuned_gpt(results)
        verdict = ""
        ours = [r for r in by_bpb if not r["system"].startswith("gpt-")]
        if ours and best_gpt:
            n_swept = sum(r["system"].startswith("gpt-") for r in results)
            which = "the tuned byte GPT" if n_swept == len(GPT_SWEEP) else \
                f"the best byte GPT so far ({n_swept} of the sweep's {len(GPT_SWEEP)} points measured)"
            verdict = (f"\n\nAGIFORMER against {which} (`{best_gpt['system']}`, best validation bpb), test bpb: "
                       + "; ".join(f"`{r['system']}` {r['test_bpb']:.3f} / {best_gpt['test_bpb']:.3f} = "
                                   f"**{r['test_bpb'] / best_gpt['test_bpb']:.3f}**" for r in ours) + ".")
        sections.append(
            f"## {corpus}, {minutes:g} minutes per system (recipe runs/{results[0]['recipe']})\n\n"
            + "\n".join(f"- `{r['system']}`: {r['environment']['date_utc']} UTC, commit "
                        f"{r['environment']['git_commit']}, `{r['command']}`" for r in results)
            + "\n- machine: " + "; ".join(machines) + "\n\n"
            + markdown_table(["system", "parameters", "steps", "bytes seen", "train time / budget (s)", "precision",
                              "val bpb", "test bpb", "vs agiformer", "what"], rows) + verdict)
        figures[folder.name] = (results, compressors)
    text = ("# Quality at equal wall-clock\n\nTest-split bits per byte (every byte scored once) after "
            "training each system for the same wall-clock budget with the same trainer and batch (AGIFORMER on its recipe's curriculum, the byte GPT on the scored corpus alone). "
            "Each system's trainer times its first steps, fixes as many steps as fit the budget, and re-times them at a quarter, a half and three quarters of the count.\n\n"
            + "\n\n".join(sections) + "\n")
    png = args.out / "quality.png"
    if plot(figures, png):
        text += f"\n![learning curves and test bpb]({png.name})\n"
    write_text(args.out / "quality.md", text)
    print(text)


def plot(figures: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(figures), 2, figsize=(13, 4.5 * len(figures)), squeeze=False)
    # one colour per system in every panel, in SYSTEMS' order (then systems measured under names since retired)
    measured = [r["system"] for results, _ in figures.values() for r in results]
    present = [s for s in SYSTEMS if s in measured] + list(dict.fromkeys(s for s in measured if s not in SYSTEMS))
    palette = plt.get_cmap("tab10" if len(present) <= 10 else "tab20")
    colour = {system: palette(i) for i, system in enumerate(present)}
    for (curve_ax, bar_ax), (corpus, (results, compressors)) in zip(axes, figures.items()):
        for r in sorted(results, key=lambda r: r["test_bpb"]):
            t, bpb = zip(*r["curve"])
            k = max(1, len(bpb) // 40)
            smooth = [sum(bpb[max(0, i - k):i + 1]) / len(bpb[max(0, i - k):i + 1]) for i in range(len(bpb))]
            curve_ax.plot([x / 60 for x in t], smooth, label=r["system"], linewidth=1.3, color=colour[r["system"]])
        finals = [min(s for _, s in r["curve"][len(r["curve"]) // 2:]) for r in results]
        curve_ax.set(title=f"{corpus}: training bpb (running mean) against training time", xlabel="minutes",
                     ylabel="train bits per byte", ylim=(min(finals) - 0.1, max(finals) + 1.5))
        curve_ax.legend(fontsize=8)
        curve_ax.grid(alpha=0.3)
        ordered = sorted(results, key=lambda r: r["test_bpb"], reverse=True)
        bar_ax.barh([r["system"] for r in ordered], [r["test_bpb"] for r in ordered],
                    color=[colour[r["system"]] for r in ordered])
        for r_index, r in enumerate(ordered):
            bar_ax.text(r["test_bpb"], r_index, f" {r['test_bpb']:.3f}", va="center", fontsize=8)
        for c, color in zip([c for c in compressors if c["conditional_bpb"] is not None],
                            ["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:gray"]):
            bar_ax.axvline(c["conditional_bpb"], color=color, linestyle="--", linewidth=1,
                           label=f"{c['name']} given train: {c['conditional_bpb']:.3f}")
        low = min([r["test_bpb"] for r in results] + [c["conditional_bpb"] for c in compressors
                                                      if c["conditional_bpb"] is not None])
        bar_ax.set(title=f"{corpus}: test bits per byte at equal wall-clock", xlabel="test bits per byte",
                   xlim=(low - 0.3, None))
        bar_ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="en-wiki", choices=sorted(RECIPES))
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, from: {', '.join(SYSTEMS)}; gpt-sweep = every gpt-* point")
    parser.add_argument("--recipe", type=Path, default=None,
                        help="the recipe AGIFORMER and its ablations start from (default: the corpus's, runs/*.toml)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget per system")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="agiformer and the reference byte GPT, 20 s each")
    parser.add_argument("--report", action="store_true", help="measure nothing: merge the stored results")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--runs-dir", type=Path, default=None, help="checkpoints (default: out/quality[-quick])")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.out = args.out or (QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)
    args.runs_dir = args.runs_dir or ROOT / "out" / ("quality-quick" if args.quick else "quality")
    if args.report:
        report(args)
        return
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    systems = ["agiformer", next(iter(GPT_SWEEP))] if args.quick else \
        [name for s in args.systems.split(",") for name in (GPT_SWEEP if s == "gpt-sweep" else [s])]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    budget_s = 20.0 if args.quick else 60 * args.minutes
    if args.recipe is not None:  # a recipe of the user's: scored where the GPTs train and the test split is read
        scored = load_recipe(args.recipe, minutes=budget_s / 60).eval_corpus
        if scored != args.corpus:
            parser.error(f"{args.recipe} is scored on {scored}, not on --corpus {args.corpus}")
    args.recipe = args.recipe or RECIPES[args.corpus]
    if args.quick:
        import shutil
        shutil.rmtree(args.runs_dir, ignore_errors=True)
    command = command_line("quality", argv)
    for system in systems:
        started = time.perf_counter()
        env = environment(torch.device("cpu"))
        result = run_system(system, args.corpus, budget_s, args)
        finish_environment(env, started)
        write_json(args.out / "quality" / results_folder(args.corpus, budget_s) / f"{system}.json",
                   {**result, "command": command, "environment": env})
        log(f"{args.corpus} / {system}: test {result['test_bpb']:.3f} bpb after {result['steps']} steps "
            f"({result['train_time_s']:.0f} s of training)")
    if args.quick:
        report(args)


if __name__ == "__main__":
    main()
