"""The least-squares memory's read, forward and backward: `spd_solve` (one Cholesky factorisation,
its factor reused by the backward pass) against autograd through torch.linalg.cholesky and
torch.cholesky_solve (the factorisation differentiated), at the key sizes MAG uses or would
(576: SmolLM2's width; 1,152 and 1,728: 2 and 3 token states side by side). One call solves every
chunk of a 2,048-token sequence at once, as `least_squares_memory_scan` does: (A + λI)⁻¹ qᵀ for
2,048 / C chunks of C queries. Also checks, in the same run, that both give the same read and
gradients (float32, relative error).

    python -m benchmarks.least_squares_solve --threads 2

Writes docs/results/least_squares_solve.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from agiformer.ops.least_squares_memory import spd_solve
from benchmarks.common import (
    RESULTS_DIR, command_line, environment, environment_markdown, finish_environment, log, markdown_table,
    time_fn, write_json, write_text,
)


def autograd_solve(A: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """The baseline: A⁻¹ Q with autograd through the factorisation."""
    return torch.cholesky_solve(Q, torch.linalg.cholesky(A))


def solve_case(dim: int, chunks: int, chunk_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked A (1, chunks, dim, dim), growing sums of unit k kᵀ plus λI, and queries (1, chunks, dim, C)."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.nn.functional.normalize(torch.randn(chunks * chunk_size, dim, generator=g), dim=-1)
    per_chunk = (keys.view(chunks, chunk_size, dim).transpose(1, 2) @ keys.view(chunks, chunk_size, dim))
    A = torch.cumsum(per_chunk, dim=0) + 1e-3 * torch.eye(dim)
    Q = torch.randn(1, chunks, dim, chunk_size, generator=g)
    return A[None], Q


def forward_backward(solve, A: torch.Tensor, Q: torch.Tensor, probe: torch.Tensor):
    A, Q = A.clone().requires_grad_(True), Q.clone().requires_grad_(True)
    X = solve(A, Q)
    (X * probe).sum().backward()
    return X.detach(), A.grad, Q.grad


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", default="576,1152,1728", help="key dimensions (default: 576,1152,1728)")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "least_squares_solve", help="output stem")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started, env = time.time(), environment(torch.device("cpu"))
    chunks = args.tokens // args.chunk_size
    rows, cases = [], []
    for dim in (int(d) for d in args.dims.split(",")):
        log(f"least_squares_solve: Dk {dim}, {chunks} chunks of {args.chunk_size}")
        A, Q = solve_case(dim, chunks, args.chunk_size)
        probe = torch.randn_like(Q)
        timings = {name: time_fn(lambda solve=solve: forward_backward(solve, A, Q, probe), torch.device("cpu"),
                                 warmup=1, repeats=args.repeats, budget_s=60)
                   for name, solve in (("autograd", autograd_solve), ("spd_solve", spd_solve))}
        fast, reference = forward_backward(spd_solve, A, Q, probe), forward_backward(autograd_solve, A, Q, probe)
        # autograd's gradient for A is the symmetric part of the general one spd_solve returns
        errors = [relative_error(fast[0], reference[0]),
                  relative_error((fast[1] + fast[1].transpose(-1, -2)) / 2, reference[1]),
                  relative_error(fast[2], reference[2])]
        base, new = timings["autograd"]["median_s"], timings["spd_solve"]["median_s"]
        cases.append({"dim": dim, "chunks": chunks, "chunk_size": args.chunk_size, "timings": timings,
                      "speedup": base / new, "relative_errors": {"read": errors[0], "grad_A": errors[1],
                                                                "grad_Q": errors[2]}})
        rows.append([dim, f"{1e3 * base:.0f}", f"{1e3 * new:.0f}", f"{base / new:.1f}x", f"{max(errors):.1e}"])
    finish_environment(env, started)
    command = command_line("least_squares_solve", argv)
    write_json(args.out.with_suffix(".json"), {"tokens": args.tokens, "chunk_size": args.chunk_size, "cases": cases,
                                               "command": command, "environment": env})
    table = markdown_table(["key dims", "autograd through Cholesky, ms", "spd_solve, ms", "speed-up",
                            "max relative error"], rows)
    write_text(args.out.with_suffix(".md"), f"# Least-squares memory read: forward + backward\n\n`{command}`\n\n"
               f"One sequence of {args.tokens} tokens in {chunks} chunks of {args.chunk_size}, float32, median of "
               f"{args.repeats} calls.\n\n{table}\n\n{environment_markdown(env)}\n")
    print(table)


if __name__ == "__main__":
    main()
