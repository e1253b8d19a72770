"""The byte head's summed embedding tables: fused `embedding_sum` against lookup-then-add, same run.

Forward + backward of Σ_j E[ids[..., j]] at the shapes of a recipe's head (runs/en-wiki-baseline.toml:
batch 4 × 2,048 bytes; the n-gram table of 5 orders × 65,536 rows, the continuation table of 15
orders × 257 rows; width 256), fp32. The two forms alternate call by call, so whatever else the
machine does hits both alike; the report gives each median and their ratio, and the largest
difference between the two outputs and weight gradients.

    .venv/bin/python -m benchmarks.embedding_sum            # writes docs/results/embedding_sum.{json,md}
    .venv/bin/python -m benchmarks.embedding_sum --quick    # 3 calls each, docs/results/quick/
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from agiformer.ops import embedding_sum, naive_embedding_sum
from benchmarks.common import (
    QUICK_RESULTS_DIR, RESULTS_DIR, command_line, environment, environment_markdown, finish_environment, log,
    markdown_table, write_json, write_text,
)

TABLES = {  # name: (rows, ids per position)
    "n-grams (orders 2-6)": (5 * 65536, 5),
    "continuations (15 orders)": (15 * 257, 15),
}


def forward_backward(fn, ids: torch.Tensor, weight: torch.Tensor, upstream: torch.Tensor) -> float:
    weight.grad = None
    start = time.perf_counter()
    fn(ids, weight).backward(upstream)
    return time.perf_counter() - start


def measure(name: str, rows: int, per_position: int, *, positions: int, dim: int, calls: int) -> dict:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(rows, dim, generator=g).requires_grad_()
    ids = torch.randint(0, rows, (positions, per_position), generator=g)
    upstream = torch.randn(positions, dim, generator=g)
    times = {"fused": [], "plain": []}
    forms = {"fused": embedding_sum, "plain": naive_embedding_sum}
    for call in range(calls + 1):  # the first call of each warms up
        for form, fn in forms.items():
            elapsed = forward_backward(fn, ids, weight, upstream)
            if call:
                times[form].append(elapsed)
    outputs = {form: fn(ids, weight) for form, fn in forms.items()}
    grads = {form: torch.autograd.grad((out * upstream).sum(), weight)[0] for form, out in outputs.items()}
    fused_s, plain_s = statistics.median(times["fused"]), statistics.median(times["plain"])
    log(f"{name}: fused {fused_s * 1e3:.1f} ms, plain {plain_s * 1e3:.1f} ms")
    return {"table": name, "rows": rows, "ids_per_position": per_position, "fused_s": fused_s, "plain_s": plain_s,
            "plain_over_fused": plain_s / fused_s, "times_s": times,
            "max_abs_diff_out": (outputs["fused"] - outputs["plain"]).abs().max().item(),
            "max_abs_diff_grad": (grads["fused"] - grads["plain"]).abs().max().item()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed calls of each form")
    parser.add_argument("--calls", type=int, default=15, help="timed calls of each form")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    env = environment(torch.device("cpu"))
    calls = 3 if args.quick else args.calls
    results = [measure(name, rows, per, positions=4 * 2048, dim=256, calls=calls) for name, (rows, per) in TABLES.items()]
    finish_environment(env, started)
    command = command_line("embedding_sum", argv)
    table = markdown_table(
        ["table", "rows × width", "ids per byte", "fused fwd+bwd", "lookup-then-add fwd+bwd", "plain / fused",
         "max abs Δ out", "max abs Δ grad"],
        [[r["table"], f"{r['rows']:,} × 256", r["ids_per_position"], f"{r['fused_s'] * 1e3:.1f} ms",
          f"{r['plain_s'] * 1e3:.1f} ms", f"{r['plain_over_fused']:.2f}×", f"{r['max_abs_diff_out']:.1e}",
          f"{r['max_abs_diff_grad']:.1e}"] for r in results])
    text = (f"# Summed embedding tables: fused against lookup-then-add\n\n`{command}`\n\n{environment_markdown(env)}\n\n"
            f"{4 * 2048:,} byte positions (batch 4 × 2,048), fp32, median of {calls} alternating calls of each form "
            f"after one warm-up.\n\n{table}\n")
    out = QUICK_RESULTS_DIR if args.quick else RESULTS_DIR
    write_json(out / "embedding_sum.json", {"command": command, "environment": env, "results": results})
    write_text(out / "embedding_sum.md", text)
    print(text)


if __name__ == "__main__":
    main()
