"""The byte head's summed embedding tables: fused `embedding_sum` against lookup-then-add, same run.

Forward + backward of Σ_j E[ids[..., j]] at the shapes of the head of runs/en-wiki-baseline.toml, read
from the recipe (its batch × row bytes; the n-gram table of one row block per order, the continuation
table of 257 rows per order; the head's width), fp32. The two forms alternate call by call, so whatever else the
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

from agiformer.ops import NO_CONTINUATION, embedding_sum, naive_embedding_sum
from agiformer.train.recipe import load_recipe
from benchmarks.common import (
    QUICK_RESULTS_DIR, RESULTS_DIR, ROOT, command_line, environment, environment_markdown, finish_environment, log,
    markdown_table, write_json, write_text,
)

RECIPE = ROOT / "runs" / "en-wiki-baseline.toml"


def recipe_tables(recipe) -> dict[str, tuple[int, int]]:
    """name → (rows, ids per position) of the recipe's head tables, as ByteNgramEmbedding and
    ContinuationEmbedding size them."""
    config = recipe.model_config()
    orders = len(config.head_continuations)
    return {f"n-grams (orders 2-{config.head_ngrams})": ((config.head_ngrams - 1) * config.head_ngram_buckets,
                                                        config.head_ngrams - 1),
            f"continuations ({orders} orders)": (orders * (NO_CONTINUATION + 1), orders)}


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
    recipe = load_recipe(RECIPE)
    positions, dim = recipe.batch_size * recipe.seq_len, recipe.model_config().head_hidden
    results = [measure(name, rows, per, positions=positions, dim=dim, calls=calls)
               for name, (rows, per) in recipe_tables(recipe).items()]
    finish_environment(env, started)
    command = command_line("embedding_sum", argv)
    table = markdown_table(
        ["table", "rows × width", "ids per byte", "fused fwd+bwd", "lookup-then-add fwd+bwd", "plain / fused",
         "max abs Δ out", "max abs Δ grad"],
        [[r["table"], f"{r['rows']:,} × {dim}", r["ids_per_position"], f"{r['fused_s'] * 1e3:.1f} ms",
          f"{r['plain_s'] * 1e3:.1f} ms", f"{r['plain_over_fused']:.2f}×", f"{r['max_abs_diff_out']:.1e}",
          f"{r['max_abs_diff_grad']:.1e}"] for r in results])
    text = (f"# Summed embedding tables: fused against lookup-then-add\n\n`{command}`\n\n{environment_markdown(env)}\n\n"
            f"{positions:,} byte positions (batch {recipe.batch_size} × {recipe.seq_len:,}, `{RECIPE.name}`), fp32, median of {calls} alternating calls of each form "
            f"after one warm-up.\n\n{table}\n")
    out = QUICK_RESULTS_DIR if args.quick else RESULTS_DIR
    write_json(out / "embedding_sum.json", {"command": command, "environment": env, "results": results})
    write_text(out / "embedding_sum.md", text)
    print(text)


if __name__ == "__main__":
    main()
