"""Hebbian memory kernel: forward+backward time and peak memory against sequence length.

Compares, on the same inputs in one run:
- `chunked`: agiformer.ops.chunked_hebbian (chunk size 64), the form agiformer trains with;
- `naive`:   agiformer.ops.naive_hebbian, the per-step reference loop (skipped where one
             forward+backward is predicted to exceed --max-seconds, 10 s by default);
- `seed`:    the seed repository's parallel form (benchmarks/seed_parallel_memory.py), which
             materialises (B, L, H, E, E) tensors (skipped where its peak memory is predicted to
             exceed --max-gb, 8 GB by default).

Shapes: B=1, H=8, E=Ev=64 (d_model 512). q, k = ELU(randn)+1 (q / √E), v = randn, and a per-position
decay λ = (0.9 + 0.1·σ(4 + 0.45·randn)) · α as the seed's v2 decay network produces at
initialisation (λ ≈ 0.998 at α = 1). Timing and memory use α = 1; one extra forward+backward at
α = 0.1 (the seed curriculum's first stage) checks whether outputs and input gradients stay finite.
"fp32" = float32 inputs; "bf16" = bfloat16 inputs under torch.autocast (agiformer's ops compute in
float32 internally whatever the input dtype; the seed form computes in the input dtype).

Commands (from the repository root):

    .venv/bin/python -m benchmarks.memory_kernel            # full: L = 256 … 16384, fp32 and bf16
    .venv/bin/python -m benchmarks.memory_kernel --quick    # L = 256 … 1024, < 60 s on 2 CPU cores

Full mode writes docs/results/memory_kernel.{json,md,png}; --quick writes to docs/results/quick/.
The markdown report is also printed to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from agiformer.ops import chunked_hebbian, naive_hebbian
from benchmarks.common import (
    SHARED_MACHINE_NOTE, case_series, machine_label, slopes_table,
    CPU_MEMORY_TEXT, DTYPES, GB, add_common_args, all_finite, autocast, contention_note, doubling_ratios,
    environment_markdown, find_case, fmt_mib, fmt_ms, fmt_ratio, log, loglog_slope, markdown_table,
    peak_memory_bytes, plot_loglog, powers_of_two, predict, resolve_args, run_case_benchmark, timed_case,
)
from benchmarks.seed_parallel_memory import seed_parallel_hebbian

NAME = "memory_kernel"
CHUNK = 64
METHODS = {
    # time/memory exponents are used only to predict whether the next length fits the limits
    "chunked": {"fn": lambda q, k, v, d: chunked_hebbian(q, k, v, d, chunk_size=CHUNK)[0],
                "label": "chunked_hebbian (agiformer)", "time_exponent": 1, "memory_exponent": 1,
                "time_capped": False},
    "naive": {"fn": lambda q, k, v, d: naive_hebbian(q, k, v, d)[0],
              "label": "naive_hebbian (per-step loop)", "time_exponent": 1, "memory_exponent": 1,
              "time_capped": True},
    "seed": {"fn": seed_parallel_hebbian,
             "label": "seed parallel form", "time_exponent": 1, "memory_exponent": 1,
             "time_capped": False},
}
COLORS = {"chunked": "tab:blue", "naive": "tab:green", "seed": "tab:red"}
LINESTYLES = {"fp32": "-", "bf16": "--"}
TARGETS = {"time": 50.0, "memory": 20.0}  # seed / chunked at the ratio length


def make_inputs(L: int, *, B: int, H: int, E: int, alpha: float, dtype: torch.dtype, device: torch.device,
                seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(q, k, v, log λ) as leaf tensors requiring grad, and a fixed random output cotangent.

    The same random draws for every α: only log λ shifts by log α."""
    g = torch.Generator().manual_seed(seed + L)
    q = (F.elu(torch.randn(B, H, L, E, generator=g)) + 1) / math.sqrt(E)
    k = F.elu(torch.randn(B, H, L, E, generator=g)) + 1
    v = torch.randn(B, H, L, E, generator=g)
    log_decay = torch.log(0.9 + 0.1 * torch.sigmoid(4.0 + 0.45 * torch.randn(B, H, L, generator=g))) + math.log(alpha)
    grad_out = torch.randn(B, H, L, E, generator=g)
    leaves = [t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v, log_decay)]
    return leaves, grad_out.to(device=device, dtype=dtype)


def forward_backward(fn, inputs: list[torch.Tensor], grad_out: torch.Tensor, device, dtype_name: str, keep: dict):
    def call():
        for t in inputs:
            t.grad = None
        with autocast(device, dtype_name):
            out = fn(*inputs)
        out.backward(grad_out.to(out.dtype))
        keep["out"] = out
        return out
    return call


def finiteness(out: torch.Tensor, inputs: list[torch.Tensor]) -> str:
    bad = [name for name, ok in (("out", all_finite([out])), ("grads", all_finite(t.grad for t in inputs))) if not ok]
    return "yes" if not bad else "NO: NaN/inf in " + " and ".join(bad)


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return ((out.detach().double() - reference).abs().max() / reference.abs().max()).item()


def run(args: argparse.Namespace, checkpoint=lambda cases: None) -> dict:
    """Measure every case; `checkpoint(cases)` is called after each one."""
    device = args.device
    B, H, E = args.batch, args.heads, args.head_dim
    history: dict[tuple[str, str], dict[str, list]] = {
        (m, d): {"time": [], "memory": []} for m in args.methods for d in args.dtypes}
    cases = []
    for L in args.lengths:
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            inputs, grad_out = make_inputs(L, B=B, H=H, E=E, alpha=1.0, dtype=dtype, device=device)
            inputs_fast_forget, _ = make_inputs(L, B=B, H=H, E=E, alpha=0.1, dtype=dtype, device=device)
            with torch.no_grad():  # float64 reference from the same (dtype-rounded) inputs, α = 1
                reference = chunked_hebbian(*(t.detach().double() for t in inputs), chunk_size=CHUNK)[0]
            for method in args.methods:
                spec = METHODS[method]
                case = {"L": L, "method": method, "dtype": dtype_name, "status": "ok", "note": "",
                        "time_s": None, "times_s": None, "peak_bytes": None, "rel_error_vs_fp64": None,
                        "finite_alpha_1": None, "finite_alpha_0.1": None}
                hist = history[(method, dtype_name)]
                predicted_mem = predict(hist["memory"], L, spec["memory_exponent"])
                predicted_time = predict(hist["time"], L, spec["time_exponent"])
                if predicted_mem is not None and predicted_mem > args.max_gb * GB:
                    last_L, last_mem = max(hist["memory"])
                    case.update(status="skipped", note=f"skipped: would need {predicted_mem / GB:.1f} GB "
                                f"(> {args.max_gb:g} GB; linear extrapolation of {last_mem / GB:.2f} GB at L={last_L})")
                elif spec["time_capped"] and predicted_time is not None and predicted_time > args.max_seconds:
                    last_L, last_time = max(hist["time"])
                    case.update(status="skipped", note=f"skipped: one fwd+bwd would take ~{predicted_time:.0f} s "
                                f"(> {args.max_seconds:g} s; {last_time:.1f} s at L={last_L})")
                if case["status"] == "skipped":
                    log(f"L={L:6d} {dtype_name} {method:8s} {case['note']}")
                    cases.append(case)
                    checkpoint(cases)
                    continue

                keep: dict = {}
                call = forward_backward(spec["fn"], inputs, grad_out, device, dtype_name, keep)
                timing = timed_case(call, device, args)
                peak = peak_memory_bytes(call, device, args.cpu_memory)
                out = keep.pop("out")
                case.update(time_s=timing["median_s"], times_s=timing["times_s"], peak_bytes=peak,
                            others_cpu_share=timing["others_cpu_share"], contended=timing["contended"],
                            note=contention_note(timing),
                            rel_error_vs_fp64=relative_error(out, reference),
                            finite_alpha_1=finiteness(out, inputs))
                del out
                call_fast = forward_backward(spec["fn"], inputs_fast_forget, grad_out, device, dtype_name, keep)
                call_fast()
                case["finite_alpha_0.1"] = finiteness(keep.pop("out"), inputs_fast_forget)
                for t in (*inputs, *inputs_fast_forget):
                    t.grad = None
                hist["time"].append((L, timing["median_s"]))
                hist["memory"].append((L, peak))
                cases.append(case)
                checkpoint(cases)
                gc.collect()
                log(f"L={L:6d} {dtype_name} {method:8s} {fmt_ms(case['time_s']):>8s} ms  {fmt_mib(peak):>8s} MiB  "
                    f"err {case['rel_error_vs_fp64']:.1e}  finite α=1: {case['finite_alpha_1']}; "
                    f"α=0.1: {case['finite_alpha_0.1']}")
            del inputs, inputs_fast_forget, grad_out, reference
            gc.collect()
    return {"cases": cases, "summary": summarize(cases, args)}


def summarize(cases: list[dict], args) -> dict:
    measured = sorted({c["L"] for c in cases if c["status"] == "ok"})
    candidates = [L for L in measured if L <= args.ratio_length]
    ratio_L = candidates[-1] if candidates else None
    ratios = {}
    for dtype in args.dtypes:
        base = find_case(cases, ratio_L, "chunked", dtype)
        entry = {}
        for other in ("seed", "naive"):
            c = find_case(cases, ratio_L, other, dtype)
            if base and c:
                entry[f"{other}/chunked time"] = c["time_s"] / base["time_s"]
                entry[f"{other}/chunked memory"] = c["peak_bytes"] / base["peak_bytes"]
        ratios[dtype] = entry
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
    return {"ratio_length": ratio_L, "ratios": ratios, "targets": TARGETS, "slopes": slopes}


def render_markdown(result: dict, args, command: str) -> str:
    s = result["summary"]
    ratio_L = s["ratio_length"]
    lines = [
        "# Hebbian memory kernel: forward+backward time and peak memory",
        "",
        f"Command: `{command}` ({'quick' if args.quick else 'full'} mode; "
        + (f"{result['environment']['wall_time_s']} s wall time)" if not result.get("interrupted") else
           f"INTERRUPTED run: {sum(c['status'] == 'ok' for c in result['cases'])} cases measured, "
           f"{len(result['cases'])} of {len(args.lengths) * len(args.dtypes) * len(args.methods)} reached)"),
        "",
        environment_markdown(result["environment"]),
        "",
        f"Setup: B={args.batch}, H={args.heads}, E=Ev={args.head_dim}; chunk size {CHUNK}; "
        "λ = (0.9 + 0.1·σ(4 + 0.45·randn))·α per position and head (the seed v2 decay at initialisation); "
        f"timed at α=1: median of up to {args.repeats} forward+backward calls after {args.warmup} warm-up "
        f"(repeats stop after {args.case_budget:g} s). Peak memory = largest tensor memory live during one "
        f"forward+backward above the inputs (CPU: {CPU_MEMORY_TEXT[args.cpu_memory]}; "
        "CUDA: max_memory_allocated). "
        "Relative error = max|out − ref| / max|ref| against chunked_hebbian in float64 on the same inputs. "
        "`finite` checks the output and the gradients of q, k, v, log λ. "
        "bf16 = bf16 inputs under torch.autocast: agiformer's ops compute in float32 internally, the seed form "
        "computes in bf16 (the seed itself forced float32).",
        "",
        f"## Ratios at L = {ratio_L}" + ("" if ratio_L == args.ratio_length else
                                         f" (largest measured L ≤ {args.ratio_length})"),
        "",
    ]
    rows = []
    for dtype, r in s["ratios"].items():
        t, m = r.get("seed/chunked time"), r.get("seed/chunked memory")
        rows.append([dtype, fmt_ratio(t), fmt_ratio(m),
                     fmt_ratio(r.get("naive/chunked time")), fmt_ratio(r.get("naive/chunked memory")),
                     "—" if t is None else ("met" if t >= TARGETS["time"] else "NOT met"),
                     "—" if m is None else ("met" if m >= TARGETS["memory"] else "NOT met")])
    lines.append(markdown_table(
        ["dtype", "seed/chunked time", "seed/chunked peak memory", "naive/chunked time", "naive/chunked peak memory",
         f"time target ≥ {TARGETS['time']:g}×", f"memory target ≥ {TARGETS['memory']:g}×"], rows))
    lines += ["", "## Log-log slopes of time (and peak memory) against L", ""]
    lines.append(slopes_table(s["slopes"]))
    lines += ["", "## All cases", ""]
    order = {m: i for i, m in enumerate(METHODS)}
    rows = []
    for c in sorted(result["cases"], key=lambda c: (c["L"], c["dtype"] != "fp32", order[c["method"]])):
        err = c["rel_error_vs_fp64"]
        rows.append([c["L"], c["method"], c["dtype"], fmt_ms(c["time_s"]), fmt_mib(c["peak_bytes"]),
                     "—" if err is None else (f"{err:.1e}" if math.isfinite(err) else "nan"),
                     c["finite_alpha_1"] or "—", c["finite_alpha_0.1"] or "—", c["note"]])
    lines.append(markdown_table(["L", "method", "dtype", "fwd+bwd time (ms)", "peak memory (MiB)",
                                 "rel. error vs fp64", "finite at α=1", "finite at α=0.1", "note"], rows))
    lines += [
        "",
        "Notes:",
        "- The seed form multiplies k_t by exp(−b_t), b_t = Σ_{m≤t} log λ_m, which overflows to inf once "
        "−b_t > 88.7 (fp32 and bf16 share the exponent range); inf · 0 then gives NaN. At α = 0.1 "
        "(log λ ≈ −2.3) that is after ~39 positions, so every length here is NaN; at α = 1 with the decay "
        "used here (λ ≈ 0.998) it stays finite up to ~49 000 positions, but with λ ≈ 0.95 it fails beyond ~1 700. "
        "chunked_hebbian only exponentiates differences b_s − b_t ≤ 0 within a chunk and stays finite.",
        "- Skipped cases are predicted from the largest measured length of the same method and dtype "
        "(time and memory linear in L).",
        SHARED_MACHINE_NOTE,
    ]
    return "\n".join(lines)


def plot(result: dict, args, path: Path) -> bool:
    time_series, mem_series = case_series(result, args, labels={m: v["label"] for m, v in METHODS.items()},
                                          colors=COLORS, linestyles=LINESTYLES)
    env = result["environment"]
    title = (f"Hebbian memory kernel, forward+backward, B={args.batch} H={args.heads} E={args.head_dim} — "
             f"{machine_label(env)}")
    return plot_loglog(path, title, [
        {"ylabel": "forward+backward time (ms)", "series": time_series, "reference_slopes": [1],
         "title": "time vs L (α = 1)"},
        {"ylabel": "peak memory above inputs (MiB)", "series": mem_series, "reference_slopes": [1],
         "title": "peak memory vs L (α = 1)"},
    ])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, full_lengths=powers_of_two(256, 16384), quick_lengths=powers_of_two(256, 1024),
                    default_dtypes="fp32,bf16")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--ratio-length", type=int, default=4096,
                        help="L at which seed/chunked ratios are reported (largest measured L ≤ this)")
    args = resolve_args(parser.parse_args(argv))
    args.methods = [m for m in args.methods.split(",") if m]
    run_case_benchmark(NAME, args, argv, config={"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "chunk_size": CHUNK,
                "decay": "log((0.9 + 0.1*sigmoid(4 + 0.45*randn)) * alpha)",
                "alphas": {"timed": 1.0, "finiteness": [1.0, 0.1]}},
                       run=run, summarize=summarize, render_markdown=render_markdown, plot=plot)


if __name__ == "__main__":
    main()
