"""Patching at equal wall-clock: the same AGIFORMER recipe with fixed, space, entropy and learned patches,
each trained for the same time, at the same mean patch length: test bits per byte, the patch-length
histogram on the test split, and forward FLOPs per byte (the entropy model's included).

    python -m benchmarks.patching --corpus en-wiki --minutes 20 --mean-bytes 4 --entropy-model out/entropy-en-wiki
    python -m benchmarks.patching --report                     # merge into docs/results/patching.{md,png}

Equal mean length: fixed patches are `mean-bytes` long; the dynamic modes may hold up to twice that.
The entropy threshold is calibrated on the corpus's train split to give the mean (`agiformer patch
calibrate`), the learned router's ratio loss aims at it, and word patches are as long as the text's
words (their mean is reported, not chosen). The window stays in patches, as in the recipe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from agiformer.data import load_split
from agiformer.eval.bpb import evaluate_bpb
from agiformer.eval.patching import calibrate_threshold, entropies, length_histogram, mean_patch_bytes, sample_rows
from agiformer.models import load_model, resolve_checkpoint
from agiformer.train.recipe import Recipe, load_recipe
from agiformer.train.trainer import Trainer
from benchmarks.common import RESULTS_DIR, ROOT, command_line, environment, finish_environment, log, markdown_table, write_json, write_text
from benchmarks.quality import AT_THE_END_ONLY, RECIPES

MODES = ("fixed", "space", "entropy", "learned")
SAMPLE_ROWS = 16  # test rows of the recipe's length whose patches make the histogram and the FLOP count


def mode_model(mode: str, mean_bytes: int, entropy_model: Path | None, corpus: str, data_dir: Path) -> dict:
    """[model] overrides of a mode at a mean patch length."""
    if mode == "fixed":
        return {"patching": "fixed", "patch_size": mean_bytes}
    overrides = {"patching": mode, "patch_size": 2 * mean_bytes}
    if mode == "learned":
        overrides["target_patch_bytes"] = float(mean_bytes)
    if mode == "entropy":
        if entropy_model is None:
            raise SystemExit("the entropy mode needs --entropy-model (train one: agiformer train runs/entropy-en-wiki.toml)")
        rows = sample_rows(load_split(data_dir, corpus, "train"), 1 << 20)
        threshold, _ = calibrate_threshold(entropies(load_model(resolve_checkpoint(entropy_model)), rows), mean_bytes=mean_bytes,
                                           rule="global", max_bytes=2 * mean_bytes)
        overrides.update(entropy_model=str(entropy_model), entropy_threshold=round(threshold, 4))
    return overrides


def mode_recipe(mode: str, args) -> Recipe:
    recipe = load_recipe(RECIPES[args.corpus], minutes=args.minutes, name=f"patching-{args.corpus}-{mode}")
    values = recipe.to_dict()
    values["model"] = {**values["model"], **mode_model(mode, args.mean_bytes, args.entropy_model, args.corpus,
                                                       args.data_dir)}
    values.update(steps=0, eval_every=AT_THE_END_ONLY, checkpoint_every=AT_THE_END_ONLY)
    return Recipe.from_dict(values, source=f"{RECIPES[args.corpus].name} ({mode})")


@torch.no_grad()
def patch_statistics(model, rows: torch.Tensor) -> dict:
    """Mean length and histogram of the patches of `rows` (unfinished last patches left out), and the
    forward's matmul FLOPs per byte."""
    model.eval()
    ends = model.patch_ends(rows)
    with FlopCounterMode(display=False) as counter:
        model(rows[:2])
    return {"mean_patch_bytes": mean_patch_bytes(ends),
            "histogram": length_histogram(ends, model.config.patch_size),
            "flops_per_byte": counter.get_total_flops() / rows[:2].numel()}


def run_mode(mode: str, args) -> dict:
    folder = f"{args.corpus}-{args.minutes:g}min-mean{args.mean_bytes}"
    out_dir = args.runs_dir / folder / mode
    if (out_dir / "last").exists():
        raise SystemExit(f"{out_dir} already holds a run; remove it to measure {mode} again")
    started = time.time()
    env = environment(torch.device("cpu"))
    recipe = mode_recipe(mode, args)
    trainer = Trainer(recipe, data_dir=args.data_dir, out_dir=out_dir, progress=not args.no_progress)
    log(f"{args.corpus} / {mode}: {trainer.precision.describe()}")
    summary = trainer.train()
    if summary["stopped_early"]:
        raise SystemExit(f"{mode}: training stopped at step {summary['steps']}; no result written")
    test_split = load_split(args.data_dir, args.corpus, "test")
    plasticity = trainer.trained_stage().plasticity
    test = evaluate_bpb(trainer.model, test_split, seq_len=recipe.seq_len, batch_size=recipe.batch_size,
                        plasticity=plasticity, precision=trainer.precision.precision)
    rows = torch.from_numpy(test_split[:SAMPLE_ROWS * recipe.seq_len].astype("int64")).view(-1, recipe.seq_len)
    result = {"mode": mode, "corpus": args.corpus, "minutes": args.minutes, "mean_bytes_target": args.mean_bytes,
              "model": recipe.model, "parameters": summary["parameters"], "steps": summary["steps"],
              "bytes_seen": summary["bytes_seen"], "precision": summary["precision"]["precision"],
              "val_bpb": summary["last_val"]["val_bpb"], "test_bpb": test["bpb"],
              **patch_statistics(trainer.model.float(), rows), "command": command_line("patching"), "environment": env}
    finish_environment(result["environment"], started)
    write_json(args.out / "patching" / folder / f"{mode}.json", result)
    log(f"{mode}: test {test['bpb']:.3f} bpb, {result['mean_patch_bytes']:.2f} bytes per patch, "
        f"{result['flops_per_byte'] / 1e6:.2f} MFLOP per byte")
    return result


def report(args) -> None:
    sections, figures = [], []
    for folder in sorted(p for p in (args.out / "patching").iterdir() if p.is_dir()):
        results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        results.sort(key=lambda r: MODES.index(r["mode"]))
        fixed = next((r for r in results if r["mode"] == "fixed"), None)
        rows = [[r["mode"], f"{r['mean_patch_bytes']:.2f}", f"{r['flops_per_byte'] / 1e6:.2f}", f"{r['steps']:,}",
                 f"{r['bytes_seen'] / 1e6:.1f} M", r["precision"], f"{r['val_bpb']:.3f}", f"{r['test_bpb']:.3f}",
                 f"{r['test_bpb'] / fixed['test_bpb']:.3f}" if fixed else "",
                 ", ".join(f"{k}: {v}" for k, v in r["model"].items() if k in ("patching", "patch_size",
                                                                                "entropy_threshold", "target_patch_bytes"))]
                for r in results]
        first = results[0]
        machines = sorted({f"{r['environment']['cpu_model']}, torch {r['environment']['torch_version']}, "
                           f"{r['environment']['torch_threads']} thread(s)" for r in results})
        sections.append(
            f"## {first['corpus']}, {first['minutes']:g} minutes per mode, mean patch length {first['mean_bytes_target']}\n\n"
            + "\n".join(f"- `{r['mode']}`: {r['environment']['date_utc']} UTC, commit {r['environment']['git_commit']}, "
                        f"`{r['command']}`" for r in results)
            + "\n- machine: " + "; ".join(machines) + "\n\n"
            + markdown_table(["mode", "bytes per patch (test)", "MFLOP per byte (forward)", "steps", "bytes seen",
                              "precision", "val bpb", "test bpb", "vs fixed", "model"], rows))
        figures.append((folder.name, results))
    text = ("# Patching at equal wall-clock\n\nTest-split bits per byte of the same AGIFORMER recipe with fixed, word "
            "(space), entropy and learned patches, each trained for the same time; bytes per patch and the "
            "patch-length histograms are measured on the first rows of the test split, FLOPs per byte are the "
            "matmul FLOPs of one forward (torch's FlopCounterMode), the entropy model's included.\n\n"
            + "\n\n".join(sections) + "\n")
    if plot(figures, args.out / "patching.png"):
        text += "\n![patch-length histograms](patching.png)\n"
    write_text(args.out / "patching.md", text)
    print(text)


def plot(figures: list, path: Path) -> bool:
    """One panel per corpus (columns) and mean patch length (rows): the dynamic modes' histograms as bars,
    fixed patches (all one length) as a dashed line, each labelled with its test bpb."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not figures:
        return False
    corpora = sorted({results[0]["corpus"] for _, results in figures})
    means = sorted({results[0]["mean_bytes_target"] for _, results in figures})
    fig, axes = plt.subplots(len(means), len(corpora), figsize=(5.5 * len(corpora), 3.6 * len(means)), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    colours = dict(zip(MODES, ["tab:blue", "tab:orange", "tab:green", "tab:red"]))
    for name, results in figures:
        ax = axes[means.index(results[0]["mean_bytes_target"])][corpora.index(results[0]["corpus"])]
        ax.set_visible(True)
        dynamic = [r for r in results if r["mode"] != "fixed"]
        width = 0.8 / max(1, len(dynamic))
        for i, r in enumerate(dynamic):
            total = sum(r["histogram"])
            ax.bar([n + 1 + (i - len(dynamic) / 2 + 0.5) * width for n in range(len(r["histogram"]))],
                   [100 * c / total for c in r["histogram"]], width=width, color=colours[r["mode"]],
                   label=f"{r['mode']}: {r['mean_patch_bytes']:.2f} B a patch, test {r['test_bpb']:.3f} bpb")
        for r in results:
            if r["mode"] == "fixed":
                ax.axvline(r["model"]["patch_size"], color=colours["fixed"], linestyle="--",
                           label=f"fixed: {r['model']['patch_size']} B a patch, test {r['test_bpb']:.3f} bpb")
        top = max((100 * max(r["histogram"]) / sum(r["histogram"]) for r in dynamic), default=100)
        ax.set(title=f"{name}: patch lengths on the test split", xlabel="bytes in the patch", ylabel="% of patches",
               ylim=(0, 1.5 * top))  # room for the legend above the bars
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="en-wiki", choices=sorted(RECIPES))
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from: {', '.join(MODES)}")
    parser.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget per mode")
    parser.add_argument("--mean-bytes", type=int, default=4, help="mean patch length (fixed patches: their length)")
    parser.add_argument("--entropy-model", type=Path, default=None, help="a trained byte-ngram model (the entropy mode)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--report", action="store_true", help="measure nothing: merge the stored results")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "out" / "patching")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.report:
        report(args)
        return
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    for mode in modes:
        run_mode(mode, args)
    report(args)


if __name__ == "__main__":
    main()
