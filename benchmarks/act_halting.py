"""Does halting save compute? Forward time and MLP evaluations of the reasoning loop, and of a
whole model, with the halting bias forcing every position to stop at step 1 vs run to the cap.

    python -m benchmarks.act_halting            # full: the v1 preset's width, 6 reasoning steps
    python -m benchmarks.act_halting --quick    # tiny widths, seconds

Writes docs/results/act_halting.{json,md} (docs/results/quick/ with --quick).
"""

from __future__ import annotations

import argparse
import time

import torch

from agiformer import AGIFormer, AGIFormerConfig
from benchmarks.common import (
    QUICK_RESULTS_DIR, RESULTS_DIR, command_line, environment, environment_markdown, finish_environment, markdown_table,
    time_fn,
    write_json, write_text,
)


def forced_halting(model: AGIFormer, bias: float) -> None:
    torch.nn.init.zeros_(model.reasoning.halt.weight)
    torch.nn.init.constant_(model.reasoning.halt.bias, bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    device = torch.device("cpu")
    env = environment(device)
    width, layers, length, batch = (64, 2, 512, 2) if args.quick else (512, 6, 4096, 2)
    config = AGIFormerConfig.preset("v1", d_model=width, n_layers=layers, n_heads=max(1, width // 64),
                                    reasoning_steps=6, window=32)
    torch.manual_seed(0)
    model = AGIFormer(config).eval()
    x = torch.randint(0, 256, (batch, length))
    rows, results = [], {}
    with torch.no_grad():
        latents = model.context_latents(model.fixed_latents(x[:, : (length // 4 - 1) * 4]))
        for label, bias in (("runs to the cap (bias −10)", -10.0), ("halts at step 1 (bias +10)", 10.0)):
            forced_halting(model, bias)
            evals = model.reasoning(latents, effort=1.0).mlp_evals
            reasoning = time_fn(lambda: model.reasoning(latents, effort=1.0), device, warmup=1,
                                repeats=3 if args.quick else 7, budget_s=2 if args.quick else 10)
            whole = time_fn(lambda: model(x), device, warmup=1, repeats=2 if args.quick else 5,
                            budget_s=2 if args.quick else 20)
            results[label] = {"mlp_evals": evals, "reasoning_s": reasoning["median_s"], "model_s": whole["median_s"],
                              "contended": reasoning["contended"] or whole["contended"]}
    (cap, early) = results.values()
    for label, r in results.items():
        rows.append([label, f"{r['mlp_evals']:,}", f"{1e3 * r['reasoning_s']:.1f}", f"{1e3 * r['model_s']:.1f}",
                     "yes" if r["contended"] else ""])
    rows.append(["ratio cap / early", f"{cap['mlp_evals'] / early['mlp_evals']:.2f}×",
                 f"{cap['reasoning_s'] / early['reasoning_s']:.2f}×", f"{cap['model_s'] / early['model_s']:.2f}×", ""])
    finish_environment(env, started)
    table = markdown_table(["halting", "MLP evaluations", "reasoning fwd (ms)", "whole model fwd (ms)", "contended"],
                           rows)
    command = command_line("act_halting")
    text = (f"# ACT halting: compute saved by early halts\n\n`{command}`\n\n{environment_markdown(env)}\n\n"
            f"Model: v1 preset at d_model {width}, {layers} layers, reasoning_steps 6; input {batch}×{length} bytes "
            f"({batch * (length // 4)} positions).\n\n{table}\n")
    out = QUICK_RESULTS_DIR if args.quick else RESULTS_DIR
    write_json(out / "act_halting.json", {"command": command, "environment": env, "results": results})
    write_text(out / "act_halting.md", text)
    print(text)


if __name__ == "__main__":
    main()
