"""Whole-model training cost against context length: AGIFORMER vs a byte GPT of the same size.

For each context L (bytes), one training step (forward + backward, batch 1, in the precision this machine
runs fastest, measured; --precision to force one):
time, time per byte, and peak tensor memory; the log-log slope of each against L. AGIFORMER's
FLOPs are counted with torch's FlopCounterMode and compared with the machine's matmul peak in that precision,
measured in the same run by a large matmul (MFU).

    python -m benchmarks.model_scaling            # L = 1 K … 64 K bytes
    python -m benchmarks.model_scaling --quick    # L = 1 K … 4 K, about a minute

Writes docs/results/model_scaling.{json,md,png} (docs/results/quick/ with --quick).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from agiformer import AGIFormer, AGIFormerConfig
from agiformer.models import ByteGPT, ByteGPTConfig
from agiformer.precision import DTYPES, PRECISIONS, autocast, choose_precision, matmul_gflops
from benchmarks.common import (
    add_common_args, command_line, environment, environment_markdown, finish_environment, fmt_mib, fmt_ms,
    CONTEXT_AXIS, loglog_slope,
    markdown_table, peak_memory_bytes, plot_loglog, powers_of_two, resolve_args, timed_case, write_json, write_text,
)

# the demo-en model (runs/demo-en.toml)
AGIFORMER = dict(d_model=256, n_layers=4, n_heads=4, window=64, head="gru", head_hidden=256)


def matched_byte_gpt(target_parameters: int, d_model: int) -> ByteGPTConfig:
    """The byte GPT of width d_model whose depth brings its parameter count closest to the target."""
    def count(layers):
        return sum(p.numel() for p in ByteGPT(ByteGPTConfig(d_model=d_model, n_layers=layers, n_heads=4)).parameters())
    layers = min(range(1, 33), key=lambda n: abs(count(n) - target_parameters))
    return ByteGPTConfig(d_model=d_model, n_layers=layers, n_heads=4)


def train_step(model, x: torch.Tensor, device: torch.device, precision: str):
    def step():
        model.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = model.loss(x, effort=1.0).loss
        loss.backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, full_lengths=powers_of_two(1024, 65536), quick_lengths=[1024, 2048, 4096],
                    with_dtypes=False)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="auto (default): bf16 where this machine runs it faster than fp32, measured")
    args = resolve_args(parser.parse_args())
    device = torch.device(args.device)
    started = time.perf_counter()
    env = environment(device)
    choice = choose_precision(args.precision, device, width=AGIFORMER["d_model"])
    precision = choice.precision
    size = 2048 if args.quick else 4096  # a large square matmul: the machine's practical peak
    peak = 1e9 * matmul_gflops(DTYPES[precision], size, size, size, device=device, seconds=2.0)
    torch.manual_seed(0)
    agiformer = AGIFormer(AGIFormerConfig.preset("v2", **AGIFORMER)).to(device)
    gpt_config = matched_byte_gpt(agiformer.num_parameters(), AGIFORMER["d_model"])
    models = {"AGIFORMER": agiformer, "byte GPT": ByteGPT(gpt_config).to(device)}
    rows, results = [], {name: [] for name in models}
    for name, model in models.items():
        previous = None
        for length in args.lengths:
            x = torch.randint(0, 256, (1, length), device=device)
            if previous and previous["time_s"] * (length / previous["length"]) ** 2 > args.max_seconds * 4:
                results[name].append({"length": length, "skipped": f"predicted > {args.max_seconds * 4:.0f} s"})
                continue
            step = train_step(model, x, device, precision)
            timing = timed_case(step, device, args)
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            memory = peak_memory_bytes(step, device)
            row = {"length": length, "time_s": timing["median_s"], "time_per_byte_s": timing["median_s"] / length,
                   "peak_bytes": memory, "flops": flops, "mfu": flops / timing["median_s"] / peak,
                   "contended": timing["contended"]}
            results[name].append(row)
            previous = row
            print(f"{name:10s} L={length:>6}: {fmt_ms(row['time_s'])} ms, {fmt_mib(memory)} MiB, "
                  f"MFU {100 * row['mfu']:.1f} %", flush=True)
    slopes = {}
    for name, series in results.items():
        done = [r for r in series if "time_s" in r]
        slopes[name] = {"time": loglog_slope([r["length"] for r in done], [r["time_s"] for r in done]),
                        "memory": loglog_slope([r["length"] for r in done], [r["peak_bytes"] for r in done])}
        for r in series:
            rows.append([name, f"{r['length']:,}"] + ([fmt_ms(r["time_s"]), f"{1e6 * r['time_per_byte_s']:.1f}",
                                                       fmt_mib(r["peak_bytes"]), f"{100 * r['mfu']:.1f}"]
                                                      if "time_s" in r else [r["skipped"], "", "", ""]))
    finish_environment(env, started)
    params = {name: m.num_parameters() for name, m in models.items()}
    command = command_line("model_scaling")
    text = (f"# Training cost against context length\n\n`{command}`\n\n{environment_markdown(env)}\n\n"
            f"{choice.describe()}; measured {precision} matmul peak: {peak / 1e12:.3f} TFLOP/s. AGIFORMER: demo-en model ({params['AGIFORMER']:,} "
            f"parameters); byte GPT: d_model {gpt_config.d_model}, {gpt_config.n_layers} layers "
            f"({params['byte GPT']:,} parameters). One training step, batch 1, {precision}.\n\n"
            + markdown_table(["model", "context (bytes)", "step (ms)", "µs per byte", "peak memory (MiB)", "MFU (%)"],
                             rows)
            + "\n\nLog-log slopes against context: "
            + "; ".join(f"{n}: time {s['time']:.2f}, memory {s['memory']:.2f}" for n, s in slopes.items()
                        if s["time"] is not None) + "\n")
    write_json(args.out / "model_scaling.json", {"command": command, "environment": env, "precision": choice.to_dict(), "peak_flops": peak,
                                                 "parameters": params,
                                                 "results": results, "slopes": slopes})
    write_text(args.out / "model_scaling.md", text)
    plot(results, args.out / "model_scaling.png", precision)
    print(text)


def plot(results: dict, path: Path, precision: str) -> None:
    """Time and peak memory against context, log-log, from the JSON's "results"."""
    def series(key):
        return {n: {"x": [r["length"] for r in s if "time_s" in r], "y": [r[key] for r in s if "time_s" in r]}
                for n, s in results.items()}

    plot_loglog(path, f"one training step against context (batch 1, {precision})", [
        {"title": "time per step", "ylabel": "seconds", "series": series("time_s"), "reference_slopes": [1, 2]},
        {"title": "peak tensor memory", "ylabel": "bytes", "series": series("peak_bytes"), "reference_slopes": [1]},
    ], xlabel=CONTEXT_AXIS)


if __name__ == "__main__":
    main()
