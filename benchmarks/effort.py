"""The effort knob on a trained model: test bits per byte, mean reasoning steps, forward FLOPs and
time for effort ∈ {0, 0.25, 0.5, 0.75, 1}.

    python -m benchmarks.effort out/quality/en-wiki-20min/agiformer/last --corpus en-wiki
    python -m benchmarks.effort --quick      # the checkpoint of `benchmarks.quality --quick`, 64 KB of test

Effort does two things (docs/model.md): it lowers the halting threshold of the reasoning loop, so
positions stop after fewer steps, and it sharpens the memory's decay (faster forgetting). FLOPs are
the matmul FLOPs torch's FlopCounterMode counts in one forward of a batch of test windows, in all
and inside the reasoning loop; time is the wall time of scoring the whole (or quick) test split.

Writes docs/results/effort.{json,md,png} (docs/results/quick/ with --quick).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from agiformer.data import disjoint_windows, load_split
from agiformer.eval.bpb import evaluate_bpb
from agiformer.models.pretrained import load_model
from agiformer.train.checkpoint import find_checkpoint
from benchmarks.common import (
    QUICK_RESULTS_DIR, RESULTS_DIR, ROOT, command_line, environment, environment_markdown, finish_environment, log,
    markdown_table, write_json, write_text,
)

EFFORTS = (0.0, 0.25, 0.5, 0.75, 1.0)
QUICK_CHECKPOINT = ROOT / "out" / "quality-quick" / "en-wiki" / "agiformer" / "last"


def forward_flops(model, batch: torch.Tensor, effort: float, plasticity: float) -> tuple[int, int]:
    """(whole forward, reasoning loop) matmul FLOPs of one forward."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch, effort=effort, plasticity=plasticity)
    counts = {name: sum(per_op.values()) for name, per_op in counter.get_flop_counts().items()}
    return counts["Global"], counts.get(f"{type(model).__name__}.reasoning", 0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", type=Path, help="a trained AGIFORMER (model directory or checkpoint)")
    parser.add_argument("--corpus", default="en-wiki")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or (QUICK_CHECKPOINT if args.quick else None)
    if checkpoint is None:
        parser.error("give the checkpoint of a trained AGIFORMER "
                     "(or --quick after `python -m benchmarks.quality --quick`)")
    found = find_checkpoint(checkpoint) or checkpoint
    model = load_model(found).eval()
    if not hasattr(model, "reasoning"):
        parser.error(f"{checkpoint} holds a {model.config.model_type} model: the effort knob is AGIFORMER's")
    plasticity = model.config.plasticity
    data = load_split(args.data_dir, args.corpus, "test")
    if args.quick:
        data = data[: 64 * 1024]
    batch = torch.stack([w for w in disjoint_windows(data, args.seq_len) if len(w) == args.seq_len][: args.batch_size])
    started = time.perf_counter()
    env = environment(torch.device("cpu"))
    results = []
    for effort in EFFORTS:
        tick = time.perf_counter()
        scored = evaluate_bpb(model, data, seq_len=args.seq_len, batch_size=args.batch_size, effort=effort,
                              plasticity=plasticity)
        seconds = time.perf_counter() - tick
        total, reasoning = forward_flops(model, batch, effort, plasticity)
        results.append({"effort": effort, "test_bpb": scored["bpb"], "mean_steps": scored["mean_steps"],
                        "forward_flops": total, "reasoning_flops": reasoning, "time_s": seconds})
        log(f"effort {effort:.2f}: {scored['bpb']:.4f} bpb, {scored['mean_steps']:.2f} steps, "
            f"reasoning {reasoning / 1e9:.2f} GFLOP of {total / 1e9:.2f}, {seconds:.1f} s")
    finish_environment(env, started)
    full = results[-1]
    rows = [[f"{r['effort']:.2f}", f"{r['test_bpb']:.4f}", f"{100 * (r['test_bpb'] / full['test_bpb'] - 1):+.2f} %",
             f"{r['mean_steps']:.2f}", f"{r['forward_flops'] / 1e9:.2f}", f"{r['reasoning_flops'] / 1e9:.3f}",
             f"{full['reasoning_flops'] / max(r['reasoning_flops'], 1):.2f}×", f"{r['time_s']:.1f}"] for r in results]
    quarter = next(r for r in results if r["effort"] == 0.25)
    saving = full["reasoning_flops"] / max(quarter["reasoning_flops"], 1)
    cost = 100 * (quarter["test_bpb"] / full["test_bpb"] - 1)
    command = command_line("effort", argv)
    text = (f"# The effort knob\n\n`{command}`\n\n{environment_markdown(env)}\n\n"
            f"Model: `{found}` ({model.num_parameters():,} parameters, reasoning_steps {model.config.reasoning_steps}, "
            f"α {plasticity}); {args.corpus} test split{' (first 64 KB)' if args.quick else ''}, {len(data):,} bytes "
            f"in windows of {args.seq_len}; FLOPs of one forward of {args.batch_size} × {args.seq_len} bytes.\n\n"
            + markdown_table(["effort", "test bpb", "vs effort 1", "mean steps", "forward GFLOP", "reasoning GFLOP",
                              "reasoning saving vs effort 1", "scoring time (s)"], rows)
            + f"\n\nTarget: effort 0.25 saves ≥ 2× reasoning FLOPs vs effort 1 for ≤ 3 % worse bpb. Measured: "
              f"{saving:.2f}× fewer reasoning FLOPs for {cost:+.2f} % bpb: "
              f"{'met' if saving >= 2 and cost <= 3 else 'not met'}.\n")
    out = args.out or (QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)
    write_json(out / "effort.json", {"command": command, "checkpoint": str(found), "corpus": args.corpus,
                                     "environment": env, "results": results})
    png = out / "effort.png"
    if plot(results, png):
        text += f"\n![bpb, steps and FLOPs against effort]({png.name})\n"
    write_text(out / "effort.md", text)
    print(text)


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    efforts = [r["effort"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(efforts, [r["test_bpb"] for r in results], "o-", color="tab:blue")
    left.set(title="test bits per byte", xlabel="effort", ylabel="bits per byte")
    steps = left.twinx()
    steps.plot(efforts, [r["mean_steps"] for r in results], "s--", color="tab:orange")
    steps.set_ylabel("mean reasoning steps", color="tab:orange")
    right.plot(efforts, [r["reasoning_flops"] / 1e9 for r in results], "o-", label="reasoning loop")
    right.plot(efforts, [r["forward_flops"] / 1e9 for r in results], "s-", label="whole forward")
    right.set(title="forward GFLOP per batch", xlabel="effort", ylabel="GFLOP", yscale="log")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    main()
