"""Where a training step's time goes: MFU of a recipe's real training step against the machine's matmul
peak in the precision the trainer chose (measured in the same run), and a torch.profiler table of the operators that take the time.

    python -m benchmarks.training_profile                       # runs/en-1h.toml, 6 timed steps
    python -m benchmarks.training_profile --recipe runs/demo-en.toml --quick

The step is the trainer's own (`Trainer.train_step`: batch sampling, the chosen precision, forward,
backward, clipping, AdamW). FLOPs are the matmul FLOPs torch's FlopCounterMode counts in forward +
backward of one batch; MFU = FLOPs / step time / peak. Operators are grouped into kinds (matmul,
dtype casts and copies, elementwise, …) by name.

Writes docs/results/training_profile.{json,md} (docs/results/quick/ with --quick).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from agiformer.precision import DTYPES, autocast, matmul_gflops
from agiformer.train.recipe import load_recipe
from agiformer.train.trainer import Trainer
from benchmarks.common import (
    QUICK_RESULTS_DIR, RESULTS_DIR, ROOT, command_line, environment, environment_markdown, finish_environment, log,
    markdown_table, write_json, write_text,
)

KINDS = [  # first match wins
    ("matmul", r"^aten::(mm|bmm|addmm|baddbmm|matmul|linear|_scaled_dot_product|_flash_attention|convolution|"
               r"_convolution|mkldnn_convolution|_mkldnn|conv)"),
    ("dtype casts and copies", r"^aten::(copy_|_to_copy|to|clone|contiguous|cat|stack|index|index_select|gather|"
                               r"scatter|pad|constant_pad_nd|narrow_copy|unbind|split|_unsafe_view|flip)"),
    ("optimizer", r"^(aten::_foreach|Optimizer|aten::_fused_adamw)"),
    ("reductions and norms", r"^aten::(sum|mean|norm|_fused_rms_norm|rms_norm|linalg_vector_norm|logsumexp|"
                             r"_log_softmax|log_softmax|softmax|_softmax|nll_loss|cumsum|max|amax)"),
    ("GRU and recurrent", r"^aten::(gru|_thnn_fused_gru|rnn)"),
    ("elementwise", r"^aten::(mul|add|sub|div|sigmoid|silu|exp|log|elu|neg|rsqrt|pow|tanh|where|fill_|zero_|"
                    r"masked_fill|clamp|maximum|minimum|sqrt|reciprocal|threshold|.*_backward$|addcmul|addcdiv|lerp|"
                    r"exp2|expm1|log1p|abs|sign|ge|gt|lt|le|eq|ne|logical)"),
]


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.match(pattern, name):
            return kind
    return "other"


def step_flops(trainer: Trainer) -> int:
    recipe = trainer.recipe
    x = torch.randint(0, 256, (recipe.batch_size, recipe.seq_len))
    with FlopCounterMode(display=False) as counter:
        with autocast(trainer.device, trainer.precision.precision):
            loss = trainer.model.loss(x, plasticity=recipe.stages[-1].plasticity, effort=1.0).loss
        loss.backward()
    trainer.model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "runs" / "en-1h.toml")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps")
    # a run's first steps are slower (allocations growing, caches filling): on an Intel Xeon the en-wiki-baseline
    # step took 1.34, 1.08, 0.91 s ... and settled near 0.85 s from the 8th on
    parser.add_argument("--warmup", type=int, default=8, help="untimed training steps before the timed ones")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="2 timed steps")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    steps = 2 if args.quick else args.steps
    started = time.perf_counter()
    env = environment(torch.device("cpu"))
    recipe = load_recipe(args.recipe)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(recipe, data_dir=args.data_dir, out_dir=scratch, progress=False)
        peak_size = 2048 if args.quick else 4096
        peak = 1e9 * matmul_gflops(DTYPES[trainer.precision.precision], peak_size, peak_size, peak_size,
                                   device=torch.device("cpu"), seconds=2.0)
        flops = step_flops(trainer)
        warmup = 2 if args.quick else args.warmup
        for step in range(warmup):
            trainer.train_step(step)
        times = []
        for step in range(warmup, warmup + steps):
            tick = time.perf_counter()
            trainer.train_step(step)
            times.append(time.perf_counter() - tick)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for step in range(warmup + steps, warmup + steps + 2):
                trainer.train_step(step)
    step_s = sorted(times)[len(times) // 2]
    mfu = flops / step_s / peak
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") or e.key.startswith("Optimizer")]
    total_self = sum(e.self_cpu_time_total for e in prof.key_averages())
    by_kind: dict[str, float] = {}
    for e in prof.key_averages():
        by_kind[kind_of(e.key)] = by_kind.get(kind_of(e.key), 0.0) + e.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
    finish_environment(env, started)
    bytes_per_step = recipe.batch_size * recipe.seq_len * recipe.grad_accum
    command = command_line("training_profile", argv)
    kinds_table = markdown_table(["kind of operator", "share of self CPU time", "ms per step"],
                                 [[k, f"{100 * v / total_self:.1f} %", f"{v / 2e3:.0f}"]
                                  for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])])
    ops_table = markdown_table(["operator", "kind", "share", "ms per step", "calls per step"],
                               [[f"`{e.key}`", kind_of(e.key), f"{100 * e.self_cpu_time_total / total_self:.1f} %",
                                 f"{e.self_cpu_time_total / 2e3:.0f}", f"{e.count / 2:.0f}"] for e in top])
    text = (f"# Where a training step's time goes\n\n`{command}`\n\n{environment_markdown(env)}\n\n"
            f"Recipe `{args.recipe.name}`: {trainer.model.num_parameters():,} parameters, batch {recipe.batch_size} × "
            f"{recipe.seq_len} bytes, {trainer.precision.describe()}.\n\n"
            + markdown_table(["measured", "value"], [
                [f"training step (median of {steps}, after {warmup} untimed)", f"{step_s:.3f} s"],
                ["throughput", f"{bytes_per_step / step_s / 1e3:.1f} kB/s"],
                ["matmul FLOPs per step (fwd + bwd)", f"{flops / 1e9:.1f} GFLOP"],
                [f"{trainer.precision.precision} matmul peak ({peak_size}² matmul, same run)",
                 f"{peak / 1e12:.3f} TFLOP/s"],
                ["MFU", f"{100 * mfu:.1f} %"]])
            + f"\n\nProfile of 2 training steps (torch.profiler, self CPU time by operator):\n\n{kinds_table}\n\n"
            + ops_table + "\n")
    out = args.out or (QUICK_RESULTS_DIR if args.quick else RESULTS_DIR)
    write_json(out / "training_profile.json", {
        "command": command, "recipe": str(args.recipe), "environment": env, "step_s": step_s, "step_times_s": times,
        "flops_per_step": flops, "precision": trainer.precision.to_dict(), "peak_flops": peak, "mfu": mfu, "bytes_per_step": bytes_per_step,
        "self_cpu_us_by_kind": by_kind,
        "top_ops": [{"op": e.key, "self_cpu_us": e.self_cpu_time_total, "calls": e.count} for e in top]})
    write_text(out / "training_profile.md", text)
    print(text)
    log(f"MFU {100 * mfu:.1f} % ({flops / 1e9:.1f} GFLOP in {step_s:.3f} s, {trainer.precision.precision} peak {peak / 1e12:.3f} TFLOP/s)")


if __name__ == "__main__":
    main()
