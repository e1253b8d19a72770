"""Shared helpers for the benchmark scripts: timing, peak memory, environment, result writers.

Every benchmark compares methods within one run on one machine, so the ratios and slopes it
reports are what carries over to other machines; absolute times are for this machine only.

- Time: `time_fn` runs a closure `warmup` times, then up to `repeats` more times (stopping early
  once `budget_s` is spent), and reports the median wall time from `time.perf_counter`, with a
  device synchronisation around each call on CUDA. On a shared machine, calls during which other
  processes kept more than 10 % of the CPUs busy (read from /proc/stat) are left out of the median
  when possible and the case is flagged otherwise; `wait_for_quiet` lets a script wait for a quiet
  machine before retrying a contended case.
- Peak memory: `peak_memory_bytes` runs the closure once and returns the largest amount of tensor
  memory live at any moment during the call, above what was live when it started.
  - CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`.
  - CPU: a TorchDispatchMode sees every aten op, including those autograd runs in backward, and
    adds up the bytes of each new tensor storage from the op that creates it until it is freed.
    That counts outputs, intermediates, saved tensors and gradients, but not scratch memory a
    kernel allocates and frees inside one op, nor memory outside PyTorch (BLAS workspaces, the
    interpreter). `cpu_peak_bytes_profiler` (torch.profiler allocator events) does see kernel
    scratch; the two agree on every op benchmarked here where both can run (see the README), but
    the profiler needs ~20 KB per op recorded, too much for the per-step loops.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from agiformer.precision import DTYPES, autocast, cpu_model  # noqa: F401  (autocast: imported from here by the benchmarks)

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "docs" / "results"
QUICK_RESULTS_DIR = RESULTS_DIR / "quick"
CPU_MEMORY_TEXT = {"dispatch": "new tensor storages tracked op by op with a TorchDispatchMode",
                   "profiler": "torch.profiler allocator events"}
MiB = 2 ** 20
CONTEXT_AXIS = "context (bytes, log scale)"
GB = 1e9


# ----------------------------------------------------------------------------- arguments

def powers_of_two(lo: int, hi: int) -> list[int]:
    return [2 ** e for e in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]


def add_common_args(parser: argparse.ArgumentParser, *, full_lengths: Sequence[int],
                    quick_lengths: Sequence[int], default_dtypes: str = "fp32", with_dtypes: bool = True,
                    cpu_memory: str = "dispatch") -> None:
    """with_dtypes=False: the benchmark chooses its precision itself (`agiformer.precision`), no --dtypes."""
    parser.add_argument("--quick", action="store_true",
                        help="small L range and few repeats (under a minute on 2 CPU cores); "
                             f"writes to {QUICK_RESULTS_DIR.relative_to(ROOT)}/ unless --out is given")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    if with_dtypes:
        parser.add_argument("--dtypes", default=default_dtypes,
                            help=f"comma-separated subset of {','.join(DTYPES)} (default: {default_dtypes}); "
                                 "bf16 = bf16 inputs under torch.autocast")
    parser.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help=f"comma-separated sequence lengths (default: {','.join(map(str, full_lengths))}; "
                             f"--quick: {','.join(map(str, quick_lengths))})")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default: 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (default: 5; --quick: 3)")
    parser.add_argument("--case-budget", type=float, default=None,
                        help="stop repeating a case once this many seconds are spent (default: 20; --quick: 1)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="skip a time-capped method where one forward+backward is predicted to take longer "
                             "(default: 10; --quick: 1)")
    parser.add_argument("--max-gb", type=float, default=8.0,
                        help="skip a method where its peak memory is predicted to exceed this (default: 8)")
    parser.add_argument("--retries", type=int, default=None,
                        help="re-time a case whose every call was contended by other processes, after waiting "
                             "for a quiet machine, up to this many times (default: 2; --quick: 0)")
    parser.add_argument("--max-wait", type=float, default=60.0,
                        help="longest wait for a quiet machine before each retry, in seconds (default: 60)")
    parser.add_argument("--cpu-memory", choices=["dispatch", "profiler"], default=cpu_memory,
                        help="how peak memory is measured on CPU: op-by-op storage tracking (dispatch) or "
                             f"torch.profiler allocator events (profiler; gigabytes for long per-step loops) "
                             f"(default: {cpu_memory})")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: {RESULTS_DIR.relative_to(ROOT)}; --quick: "
                             f"{QUICK_RESULTS_DIR.relative_to(ROOT)})")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: rewrite the markdown and the plot (and the summary in the JSON) "
                             "from a results JSON written earlier by this script, next to it")
    parser.set_defaults(_full_lengths=list(full_lengths), _quick_lengths=list(quick_lengths))


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on --quick, and apply --threads."""
    quick = args.quick
    if args.lengths is None:
        args.lengths = args._quick_lengths if quick else args._full_lengths
    if args.repeats is None:
        args.repeats = 3 if quick else 5
    if args.case_budget is None:
        args.case_budget = 1.0 if quick else 20.0
    if args.max_seconds is None:
        args.max_seconds = 1.0 if quick else 10.0
    if args.retries is None:
        args.retries = 0 if quick else 2
    if args.out is None:
        args.out = QUICK_RESULTS_DIR if quick else RESULTS_DIR
    if hasattr(args, "dtypes"):
        args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        unknown = [d for d in args.dtypes if d not in DTYPES]
        if unknown:
            raise SystemExit(f"unknown dtype(s) {unknown}; choose from {list(DTYPES)}")
    args.device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return args


def args_from_results(result: dict, args: argparse.Namespace) -> argparse.Namespace:
    """The settings a stored result was measured with (for --render), over the current arguments."""
    config = dict(result["config"])
    config["case_budget"] = config.pop("case_budget_s", None)
    merged = {**vars(args), **config, "quick": result.get("mode") == "quick"}
    return argparse.Namespace(**merged)


# ----------------------------------------------------------------------------- measuring

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _busy_cpu_seconds() -> float | None:
    """CPU seconds spent busy by the whole machine since boot (all CPUs, all processes), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def others_cpu_share(wall_s: float, busy_before, busy_after, own_before: float, own_after: float) -> float | None:
    """Fraction of the machine's CPUs that other processes kept busy during a call (from /proc/stat)."""
    if busy_before is None or busy_after is None or wall_s <= 0:
        return None
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    others = (busy_after - busy_before) - (own_after - own_before) - 2 * tick  # tolerate tick rounding
    return max(0.0, others) / (wall_s * _usable_cpus())


def machine_is_quiet(window_s: float = 2.0, threshold: float = 0.1) -> bool:
    busy0, own0 = _busy_cpu_seconds(), _own_cpu_seconds()
    time.sleep(window_s)
    share = others_cpu_share(window_s, busy0, _busy_cpu_seconds(), own0, _own_cpu_seconds())
    return share is None or share < threshold


def wait_for_quiet(max_wait_s: float, *, threshold: float = 0.1) -> float:
    """Sleep until other processes use < threshold of the CPUs for 2 s, at most max_wait_s; returns seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        if machine_is_quiet(threshold=threshold):
            break
    return time.perf_counter() - start


def time_fn(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int,
            budget_s: float, contention_threshold: float = 0.1) -> dict:
    """Median wall time of fn() over up to `repeats` calls after `warmup` calls.

    Repeats stop early once `budget_s` seconds of timed calls are spent (at least one timed call).
    Each call also records the share of the CPUs other processes used meanwhile (/proc/stat); calls
    where it exceeds `contention_threshold` are "contended" and left out of the median when at least
    one uncontended call exists (more calls are made, within 3 × budget_s, to replace them).
    `contended` in the result is True when every call was contended."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    shares: list[float | None] = []
    clean: list[float] = []
    spent = 0.0
    while len(clean) < max(1, repeats):
        synchronize(device)
        busy0, own0 = _busy_cpu_seconds(), _own_cpu_seconds()
        start = time.perf_counter()
        fn()
        synchronize(device)
        wall = time.perf_counter() - start
        share = others_cpu_share(wall, busy0, _busy_cpu_seconds(), own0, _own_cpu_seconds())
        times.append(wall)
        shares.append(share)
        spent += wall
        if share is None or share <= contention_threshold:
            clean.append(wall)
        if (clean and spent >= budget_s) or spent >= 3 * budget_s:
            break
    used = clean or times
    return {"median_s": statistics.median(used), "min_s": min(used), "times_s": times,
            "others_cpu_share": shares, "contended": not clean}


def timed_case(fn: Callable[[], object], device: torch.device, args: argparse.Namespace) -> dict:
    """time_fn with the script's settings; a fully contended case is retried after waiting for quiet."""
    timing = time_fn(fn, device, warmup=args.warmup, repeats=args.repeats, budget_s=args.case_budget)
    waited, tries = 0.0, 0
    while timing["contended"] and tries < args.retries:
        waited += wait_for_quiet(args.max_wait)
        timing = time_fn(fn, device, warmup=0, repeats=args.repeats, budget_s=args.case_budget)
        tries += 1
    timing.update(waited_s=round(waited, 1), retries=tries)
    return timing


def contention_note(timing: dict) -> str:
    if not timing["contended"]:
        return ""
    shares = [s for s in timing["others_cpu_share"] if s is not None]
    return (f"timed while other processes used ~{100 * statistics.median(shares):.0f}% of the CPUs"
            if shares else "timed under contention")


class _TensorMemoryTracker(TorchDispatchMode):
    """Running total of the bytes of every tensor storage created while the mode is active.

    A storage counts from the op that creates it until its Python storage object dies, which
    (PyTorch preserves one Python object per live storage) is when the storage itself is freed.
    Outputs that share a storage with one of the op's inputs (views, in-place ops) are not new."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, weakref.ref] = {}

    def _freed(self, key: int, nbytes: int) -> None:
        if self._tracked.pop(key, None) is not None:
            self.live -= nbytes

    @staticmethod
    def _storage(t):
        try:
            return t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
            return None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {id(st) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
                  for st in [self._storage(t)] if st is not None}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            st = self._storage(t)
            if st is None or id(st) in inputs or id(st) in self._tracked:
                continue
            key, nbytes = id(st), st.nbytes()
            self._tracked[key] = weakref.ref(st, lambda _, key=key, nbytes=nbytes: self._freed(key, nbytes))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


def cpu_peak_bytes_dispatch(fn: Callable[[], object]) -> int:
    """Peak of live tensor bytes created during fn(), tracked op by op (TorchDispatchMode)."""
    with _TensorMemoryTracker() as tracker:
        result = fn()
        del result
    return tracker.peak


def cpu_peak_bytes_profiler(fn: Callable[[], object]) -> int:
    """Peak of the running sum of torch.profiler's CPU allocator events during fn().

    Sees every allocation of PyTorch's CPU allocator, including scratch buffers inside kernels,
    but the profiler keeps a record of every op: ~20 KB each, so a per-step loop over thousands
    of positions needs gigabytes. Used to cross-check `cpu_peak_bytes_dispatch`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
        del result
    events = prof.profiler.kineto_results.events()
    deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in deltas:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_memory_bytes(fn: Callable[[], object], device: torch.device, cpu_method: str = "dispatch") -> int:
    """Largest tensor memory live during fn(), above what was live before it (bytes)."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        del result
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if device.type == "cpu":
        return cpu_peak_bytes_profiler(fn) if cpu_method == "profiler" else cpu_peak_bytes_dispatch(fn)
    raise NotImplementedError(f"peak memory on {device.type}")


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def predict(points: list[tuple[int, float]], length: int, exponent: float) -> float | None:
    """Extrapolate from the largest measured (L, value) as value · (length / L)^exponent."""
    if not points:
        return None
    last_length, last_value = max(points)
    return last_value * (length / last_length) ** exponent


def loglog_slope(lengths: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) against log(L)."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(lengths, values) if x > 0 and y and y > 0]
    if len(pairs) < 2:
        return None
    mx = sum(p[0] for p in pairs) / len(pairs)
    my = sum(p[1] for p in pairs) / len(pairs)
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    return sum((p[0] - mx) * (p[1] - my) for p in pairs) / sxx


def doubling_ratios(lengths: Sequence[int], values: Sequence[float]) -> list[float]:
    """value(2L) / value(L) for each consecutive pair of measured lengths that differ by 2×."""
    pairs = dict(zip(lengths, values))
    return [pairs[2 * L] / pairs[L] for L in sorted(pairs) if 2 * L in pairs and pairs[L]]


# ----------------------------------------------------------------------------- environment

def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
                return [f for f in line.split(":", 1)[1].split() if f in wanted]
    except OSError:
        pass
    return []


def _git_commit() -> str | None:
    try:  # read-only query
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_model": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": _usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "git_commit": _git_commit(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def environment_markdown(env: dict) -> str:
    lines = [
        f"- date (UTC): {env['date_utc']}",
        f"- CPU: {env['cpu_model']} ({env['usable_cpus']} usable of {env['logical_cpus']} logical CPUs; "
        f"flags: {', '.join(env['cpu_flags']) or 'none of avx2/avx512f/avx512_bf16/amx_bf16'})",
        f"- torch {env['torch_version']}, {env['torch_threads']} threads, Python {env['python_version']}, "
        f"{env['platform']}",
        f"- device: {env['device']}" + (f" ({env['gpu']})" if env.get("gpu") else ""),
        f"- git commit: {env['git_commit']}",
    ]
    if env.get("load_average_at_start") is not None:
        lines.append(f"- load average (1/5/15 min) at start: "
                     f"{' / '.join(f'{x:.2f}' for x in env['load_average_at_start'])}"
                     + (f"; at end: {' / '.join(f'{x:.2f}' for x in env['load_average_at_end'])}"
                        if env.get("load_average_at_end") else ""))
    return "\n".join(lines)


def finish_environment(env: dict, started: float) -> None:
    env["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    env["wall_time_s"] = round(time.perf_counter() - started, 1)


# ----------------------------------------------------------------------------- writers

def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 1000 else f"{ms:,.0f}"


def fmt_mib(nbytes: float | None) -> str:
    if nbytes is None:
        return "—"
    mib = nbytes / MiB
    return f"{mib:.3g}" if mib < 1000 else f"{mib:,.0f}"


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3g}×" if x < 100 else f"{x:,.0f}×")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def plot_loglog(path: Path, title: str, panels: Sequence[dict],
                xlabel: str = "sequence length L (positions, log scale)") -> bool:
    """One PNG, one log-log panel per entry of `panels`.

    A panel is {"ylabel": str, "series": {label: {"x": [...], "y": [...], "style": {...}}},
    "reference_slopes": [1, 2]}: dashed grey guide lines ∝ L^p through the lowest first point.
    Returns False (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 6.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        all_x: list[float] = []
        starts = []
        for label, s in panel["series"].items():
            pts = [(x, y) for x, y in zip(s["x"], s["y"]) if y is not None and y > 0]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=4, label=label, **s.get("style", {}))
            all_x += xs
            starts.append((ys[0], xs[0]))
        if starts and all_x:
            y0, x0 = min(starts)
            x1 = max(all_x)
            for p in panel.get("reference_slopes", []):
                ax.plot([x0, x1], [y0 * 0.5, y0 * 0.5 * (x1 / x0) ** p], color="grey",
                        linestyle=":" if p == 1 else "-.", linewidth=1,
                        label=f"guide ∝ L^{p}" if p != 1 else "guide ∝ L")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if all_x:
            ticks = sorted(set(all_x))
            ax.set_xticks(ticks, [f"{int(t)}" for t in ticks], rotation=45 if len(ticks) > 5 else 0)
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel["ylabel"] + " (log scale)")
        ax.grid(True, which="both", linestyle=":", linewidth=0.5, alpha=0.6)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        if panel.get("title"):
            ax.set_title(panel["title"], fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- the flow of a case benchmark

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def command_line(name: str, argv: Sequence[str] | None = None) -> str:
    """The command that ran benchmark `name`, for the reports."""
    return " ".join([".venv/bin/python -m benchmarks." + name, *(sys.argv[1:] if argv is None else argv)])


def find_case(cases: list[dict], L: int, method: str, dtype: str) -> dict | None:
    """The measured case of this length, method and dtype, if it ran."""
    for c in cases:
        if c["L"] == L and c["method"] == method and c["dtype"] == dtype and c["status"] == "ok":
            return c
    return None


def run_case_benchmark(name: str, args: argparse.Namespace, argv, *, config: dict, run, summarize, render_markdown,
                       plot) -> None:
    """Measure (or, with --render, re-render a stored result), then write JSON, markdown and PNG.

    `run(args, checkpoint)` measures every case and calls `checkpoint(cases)` after each, so a run
    killed midway leaves its cases in NAME.partial.json."""
    command = command_line(name, argv)
    report = dict(name=name, summarize=summarize, render_markdown=render_markdown, plot=plot)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        args = args_from_results(result, args)
        result["summary"] = summarize(result["cases"], args)
        result["rendered_by"] = command
        write_case_outputs(result, args, args.render.parent, **report)
        return
    started = time.perf_counter()
    if args.retries:
        waited = wait_for_quiet(args.max_wait)
        if waited > 3:
            log(f"waited {waited:.0f} s for other processes to leave the CPUs")
    env = environment(args.device)
    base = {"benchmark": name, "command": command, "mode": "quick" if args.quick else "full",
            "config": {**config, "lengths": args.lengths, "dtypes": args.dtypes, "methods": args.methods,
                       "warmup": args.warmup, "repeats": args.repeats, "case_budget_s": args.case_budget,
                       "max_seconds": args.max_seconds, "max_gb": args.max_gb, "cpu_memory": args.cpu_memory},
            "environment": env}
    partial = args.out / f"{name}.partial.json"
    result = {**base, **run(args, lambda cases: write_json(partial, {**base, "interrupted": True, "cases": cases}))}
    finish_environment(env, started)
    partial.unlink(missing_ok=True)
    write_case_outputs(result, args, args.out, **report)


def write_case_outputs(result: dict, args, out: Path, *, name: str, summarize, render_markdown, plot) -> None:
    """Markdown (also printed), plot and JSON of one result into folder `out`."""
    markdown = render_markdown(result, args, result["command"])
    if result.get("source"):
        markdown = markdown.replace("\n\n", f"\n\nSource: {result['source']}.\n\n", 1)
    if result.get("rendered_by"):
        markdown = markdown.replace("\n\n", f"\n\nReport re-rendered from the stored JSON by `{result['rendered_by']}`."
                                    "\n\n", 1)
    png = out / f"{name}.png"
    plotted = plot(result, args, png)
    markdown += (f"\n\n![time and peak memory against L]({png.name})" if plotted
                 else "\n\n(matplotlib is not installed: no plot written.)")
    write_json(out / f"{name}.json", result)
    write_text(out / f"{name}.md", markdown)
    print(markdown)
    log(f"wrote {out / (name + '.json')}, {out / (name + '.md')}" + (f", {png}" if plotted else "")
        + (f" ({result['environment']['wall_time_s']} s of measurement)"
           if result["environment"].get("wall_time_s") is not None else ""))


SHARED_MACHINE_NOTE = (
    "- Times are wall-clock and this machine may be shared: timed calls during which other processes kept "
    "> 10 % of the CPUs busy (/proc/stat) are left out of the median when an uncontended call exists; a case "
    "with none is retried after waiting for a quiet machine (--retries, --max-wait) and otherwise flagged in "
    "its note. Compare ratios within one run.")


def machine_label(env: dict) -> str:
    device = env["cpu_model"] if env["device"] == "cpu" else env.get("gpu", env["device"])
    return f"{device}, {env['torch_threads']} threads, torch {env['torch_version']}"


def case_series(result: dict, args, *, labels: dict, colors: dict, linestyles: dict) -> tuple[dict, dict]:
    """Time (ms) and peak memory (MiB) series per method and dtype, for `plot_loglog`."""
    time_series, mem_series = {}, {}
    for method in args.methods:
        for dtype in args.dtypes:
            pts = sorted((c["L"], c["time_s"], c["peak_bytes"]) for c in result["cases"]
                         if c["method"] == method and c["dtype"] == dtype and c["status"] == "ok")
            if not pts:
                continue
            label = f"{labels[method]}, {dtype}"
            style = {"color": colors[method], "linestyle": linestyles[dtype]}
            time_series[label] = {"x": [p[0] for p in pts], "y": [p[1] * 1e3 for p in pts], "style": style}
            mem_series[label] = {"x": [p[0] for p in pts], "y": [p[2] / MiB for p in pts], "style": style}
    return time_series, mem_series


def slopes_table(slopes: dict) -> str:
    def f2(x):
        return "—" if x is None else f"{x:.2f}"
    return markdown_table(
        ["method dtype", "time, all L", "time, L ≥ 1024", "peak memory, all L", "L measured", "time × per doubling of L"],
        [[k, f2(v["time_all_L"]), f2(v["time_L_ge_1024"]), f2(v["memory_all_L"]),
          "—" if not v["L_range"] else f"{v['L_range'][0]}–{v['L_range'][1]}",
          ", ".join(f"{r:.2g}" for r in v["time_ratio_per_doubling"]) or "—"] for k, v in slopes.items()])
