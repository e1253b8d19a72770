"""Sliding-window attention: forward+backward time and peak memory against sequence length.

Compares, on the same inputs in one run:
- `blockwise`: agiformer.ops.blockwise_window_attention — blocks of W queries attend to their own
               and the previous block through scaled_dot_product_attention; O(L·W);
- `naive`:     agiformer.ops.naive_window_attention — dense L×L masked scaled_dot_product_attention
               (the seed's approach, O(L²)); skipped where one forward+backward is predicted to
               exceed --max-seconds (10 s) or its peak memory --max-gb (8 GB), extrapolating ∝ L².

Shapes: B=1, H=8, E=64, window W=128; q, k, v = randn. Where both ran, the table gives the largest
absolute difference between the two outputs and between the two sets of input gradients.
"fp32" = float32 inputs (the default); "bf16" (--dtypes fp32,bf16) = bfloat16 inputs under torch.autocast.

Commands (from the repository root):

    .venv/bin/python -m benchmarks.window_attention            # full: L = 256 … 16384
    .venv/bin/python -m benchmarks.window_attention --quick    # L = 256 … 2048, < 60 s on 2 CPU cores

Full mode writes docs/results/window_attention.{json,md,png}; --quick writes to docs/results/quick/.
The markdown report is also printed to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from agiformer.ops import blockwise_window_attention, naive_window_attention
from benchmarks.common import (
    SHARED_MACHINE_NOTE, case_series, machine_label, slopes_table,
    CPU_MEMORY_TEXT, DTYPES, GB, add_common_args, autocast, contention_note, doubling_ratios, environment_markdown,
    find_case, fmt_mib, fmt_ms, fmt_ratio, log, loglog_slope, markdown_table, peak_memory_bytes, plot_loglog,
    powers_of_two, predict, resolve_args, run_case_benchmark, timed_case,
)

NAME = "window_attention"
METHODS = {
    "blockwise": {"fn": blockwise_window_attention, "label": "blockwise_window_attention (agiformer)",
                  "time_exponent": 1, "memory_exponent": 1, "time_capped": False},
    "naive": {"fn": naive_window_attention, "label": "naive_window_attention (dense L×L mask)",
              "time_exponent": 2, "memory_exponent": 2, "time_capped": True},
}
COLORS = {"blockwise": "tab:blue", "naive": "tab:orange"}
LINESTYLES = {"fp32": "-", "bf16": "--"}


def make_inputs(L: int, *, B: int, H: int, E: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed + L)
    q, k, v, grad_out = (torch.randn(B, H, L, E, generator=g) for _ in range(4))
    leaves = [t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v)]
    return leaves, grad_out.to(device=device, dtype=dtype)


def forward_backward(fn, inputs, grad_out, window: int, device, dtype_name: str, keep: dict):
    def call():
        for t in inputs:
            t.grad = None
        with autocast(device, dtype_name):
            out = fn(*inputs, window)
        out.backward(grad_out.to(out.dtype))
        keep["out"] = out
        return out
    return call


def run(args: argparse.Namespace, checkpoint=lambda cases: None) -> dict:
    """Measure every case; `checkpoint(cases)` is called after each one."""
    device = args.device
    B, H, E, W = args.batch, args.heads, args.head_dim, args.window
    history = {(m, d): {"time": [], "memory": []} for m in args.methods for d in args.dtypes}
    cases = []
    for L in args.lengths:
        for dtype_name in args.dtypes:
            inputs, grad_out = make_inputs(L, B=B, H=H, E=E, dtype=DTYPES[dtype_name], device=device)
            results = {}
            for method in args.methods:
                spec = METHODS[method]
                case = {"L": L, "method": method, "dtype": dtype_name, "status": "ok", "note": "",
                        "time_s": None, "times_s": None, "peak_bytes": None,
                        "max_abs_diff_out": None, "max_abs_diff_grads": None}
                hist = history[(method, dtype_name)]
                predicted_mem = predict(hist["memory"], L, spec["memory_exponent"])
                predicted_time = predict(hist["time"], L, spec["time_exponent"])
                if predicted_mem is not None and predicted_mem > args.max_gb * GB:
                    last_L, last_mem = max(hist["memory"])
                    case.update(status="skipped", note=f"skipped: would need {predicted_mem / GB:.1f} GB "
                                f"(> {args.max_gb:g} GB; {last_mem / GB:.2f} GB at L={last_L} "
                                f"× (L/{last_L})^{spec['memory_exponent']})")
                elif spec["time_capped"] and predicted_time is not None and predicted_time > args.max_seconds:
                    last_L, last_time = max(hist["time"])
                    case.update(status="skipped", note=f"skipped: one fwd+bwd would take ~{predicted_time:.0f} s "
                                f"(> {args.max_seconds:g} s; {last_time:.2f} s at L={last_L} "
                                f"× (L/{last_L})^{spec['time_exponent']})")
                if case["status"] == "skipped":
                    log(f"L={L:6d} {dtype_name} {method:9s} {case['note']}")
                    cases.append(case)
                    checkpoint(cases)
                    continue
                keep: dict = {}
                call = forward_backward(spec["fn"], inputs, grad_out, W, device, dtype_name, keep)
                timing = timed_case(call, device, args)
                peak = peak_memory_bytes(call, device, args.cpu_memory)
                results[method] = (keep.pop("out").detach(), [t.grad.detach() for t in inputs])
                case.update(time_s=timing["median_s"], times_s=timing["times_s"], peak_bytes=peak,
                            others_cpu_share=timing["others_cpu_share"], contended=timing["contended"],
                            note=contention_note(timing))
                hist["time"].append((L, timing["median_s"]))
                hist["memory"].append((L, peak))
                cases.append(case)
                checkpoint(cases)
                gc.collect()
                log(f"L={L:6d} {dtype_name} {method:9s} {fmt_ms(case['time_s']):>8s} ms  {fmt_mib(peak):>8s} MiB")
            if "blockwise" in results and "naive" in results:
                (out_b, grads_b), (out_n, grads_n) = results["blockwise"], results["naive"]
                diff_out = (out_b.float() - out_n.float()).abs().max().item()
                diff_grads = max((a.float() - b.float()).abs().max().item() for a, b in zip(grads_b, grads_n))
                for c in cases:
                    if c["L"] == L and c["dtype"] == dtype_name and c["status"] == "ok":
                        c.update(max_abs_diff_out=diff_out, max_abs_diff_grads=diff_grads)
                log(f"L={L:6d} {dtype_name} max |blockwise − naive|: out {diff_out:.1e}, grads {diff_grads:.1e}")
            del inputs, grad_out, results
            gc.collect()
    return {"cases": cases, "summary": summarize(cases, args)}


def summarize(cases, args) -> dict:
    measured = sorted({c["L"] for c in cases if c["status"] == "ok" and c["method"] == "naive"})
    candidates = [L for L in measured if L <= args.ratio_length]
    ratio_L = candidates[-1] if candidates else None
    ratios = {}
    for dtype in args.dtypes:
        b, n = find_case(cases, ratio_L, "blockwise", dtype), find_case(cases, ratio_L, "naive", dtype)
        ratios[dtype] = ({"naive/blockwise time": n["time_s"] / b["time_s"],
                          "naive/blockwise memory": n["peak_bytes"] / b["peak_bytes"]} if b and n else {})
    slopes = {}
    for method in args.methods:
        for dtype in args.dtypes:
            pts = sorted((c["L"], c["time_s"], c["peak_bytes"]) for c in cases
                         if c["method"] == method and c["dtype"] == dtype and c["status"] == "ok")
            big = [p for p in pts if p[0] >= 1024]
            slopes[f"{method} {dtype}"] = {
                "time_all_L": loglog_slope([p[0] for p in pts], [p[1] for p in pts]),
                "time_L_ge_1024": loglog_slope([p[0] for p in big], [p[1] for p in big]),
                "memory_all_L": loglog_slope([p[0] for p in pts], [p[2] for p in pts]),
                "time_ratio_per_doubling": doubling_ratios([p[0] for p in pts], [p[1] for p in pts]),
                "L_range": [pts[0][0], pts[-1][0]] if pts else None,
            }
    diffs = [c for c in cases if c["max_abs_diff_out"] is not None]
    max_diff = {dtype: {"out": max((c["max_abs_diff_out"] for c in diffs if c["dtype"] == dtype), default=None),
                        "grads": max((c["max_abs_diff_grads"] for c in diffs if c["dtype"] == dtype), default=None)}
                for dtype in args.dtypes}
    return {"ratio_length": ratio_L, "ratios": ratios, "slopes": slopes, "max_abs_diff": max_diff}


def render_markdown(result: dict, args, command: str) -> str:
    s = result["summary"]
    ratio_L = s["ratio_length"]
    fe = (lambda x: "—" if x is None else f"{x:.1e}")
    lines = [
        "# Sliding-window attention: forward+backward time and peak memory",
        "",
        f"Command: `{command}` ({'quick' if args.quick else 'full'} mode; "
        + (f"{result['environment']['wall_time_s']} s wall time)" if not result.get("interrupted") else
           f"INTERRUPTED run: {sum(c['status'] == 'ok' for c in result['cases'])} cases measured, "
           f"{len(result['cases'])} of {len(args.lengths) * len(args.dtypes) * len(args.methods)} reached)"),
        "",
        environment_markdown(result["environment"]),
        "",
        f"Setup: B={args.batch}, H={args.heads}, E={args.head_dim}, window W={args.window}; q, k, v = randn; "
        f"median of up to {args.repeats} forward+backward calls after {args.warmup} warm-up "
        f"(repeats stop after {args.case_budget:g} s). Peak memory = largest tensor memory live during one "
        f"forward+backward above the inputs (CPU: {CPU_MEMORY_TEXT[args.cpu_memory]}; "
        "CUDA: max_memory_allocated). "
        "`max abs Δ` = largest absolute difference between the blockwise and the naive output / input gradients.",
        "",
        f"## Ratios at L = {ratio_L}" + ("" if ratio_L == args.ratio_length else
                                         f" (largest L ≤ {args.ratio_length} where naive ran)"),
        "",
        markdown_table(["dtype", "naive/blockwise time", "naive/blockwise peak memory", "max abs Δ out (all L)",
                        "max abs Δ grads (all L)"],
                       [[d, fmt_ratio(r.get("naive/blockwise time")), fmt_ratio(r.get("naive/blockwise memory")),
                         fe(s["max_abs_diff"][d]["out"]), fe(s["max_abs_diff"][d]["grads"])]
                        for d, r in s["ratios"].items()]),
        "",
        "## Log-log slopes of time (and peak memory) against L",
        "",
        slopes_table(s["slopes"]),
        "",
        "## All cases",
        "",
    ]
    order = {m: i for i, m in enumerate(METHODS)}
    rows = [[c["L"], c["method"], c["dtype"], fmt_ms(c["time_s"]), fmt_mib(c["peak_bytes"]),
             fe(c["max_abs_diff_out"]), fe(c["max_abs_diff_grads"]), c["note"]]
            for c in sorted(result["cases"], key=lambda c: (c["L"], c["dtype"] != "fp32", order[c["method"]]))]
    lines.append(markdown_table(["L", "method", "dtype", "fwd+bwd time (ms)", "peak memory (MiB)",
                                 "max abs Δ out", "max abs Δ grads", "note"], rows))
    lines += [
        "",
        "Notes:",
        "- Skipped cases are predicted from the largest measured length of the same method and dtype "
        "(blockwise ∝ L, naive ∝ L²).",
        SHARED_MACHINE_NOTE,
    ]
    return "\n".join(lines)


def plot(result: dict, args, path: Path) -> bool:
    time_series, mem_series = case_series(result, args, labels={m: v["label"] for m, v in METHODS.items()},
                                          colors=COLORS, linestyles=LINESTYLES)
    env = result["environment"]
    title = (f"Sliding-window attention (W={args.window}), forward+backward, B={args.batch} H={args.heads} "
             f"E={args.head_dim} — {machine_label(env)}")
    return plot_loglog(path, title, [
        {"ylabel": "forward+backward time (ms)", "series": time_series, "reference_slopes": [1, 2],
         "title": "time vs L"},
        {"ylabel": "peak memory above inputs (MiB)", "series": mem_series, "reference_slopes": [1, 2],
         "title": "peak memory vs L"},
    ])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, full_lengths=powers_of_two(256, 16384), quick_lengths=powers_of_two(256, 2048),
                    default_dtypes="fp32", cpu_memory="profiler")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--ratio-length", type=int, default=4096,
                        help="L at which naive/blockwise ratios are reported (largest L ≤ this where naive ran)")
    args = resolve_args(parser.parse_args(argv))
    args.methods = [m for m in args.methods.split(",") if m]
    run_case_benchmark(NAME, args, argv, config={"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "window": args.window},
                       run=run, summarize=summarize, render_markdown=render_markdown, plot=plot)


if __name__ == "__main__":
    main()
