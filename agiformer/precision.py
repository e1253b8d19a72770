"""Which precision to compute in, chosen by measuring this machine.

bf16 autocast is ~6x faster than fp32 on a Xeon with AMX, ~2.5x on a Zen 4 with AVX-512 BF16, and
~50x *slower* on a CPU without bf16 instructions (AVX2 only: bf16 matmuls run at ~1 GFLOP/s through
a scalar fallback). No CPU flag list predicts that reliably across torch builds, so `"auto"` times a
bf16 and an fp32 matmul of the model's width for a fraction of a second each and takes bf16 only
where it is clearly faster. On CUDA, `"auto"` is bf16 where the GPU supports it.

    choice = choose_precision("auto", torch.device("cpu"), width=256)
    print(choice.describe())      # precision fp32 (measured at width 256: bf16 1.3, fp32 61.0 GFLOP/s; AMD EPYC)
    with autocast(device, choice.precision): ...
"""

from __future__ import annotations

import contextlib
import functools
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the precisions a computation can run in
# bf16 autocast adds casts around every matmul (13 % of a training step on a Xeon with AMX), so a
# matmul that is merely as fast in bf16 makes the step slower: bf16 must win by this factor.
BF16_MARGIN = 1.25
TIMING_SECONDS = 0.15  # per dtype, after one untimed call


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str                   # "bf16" or "fp32": what to compute in
    requested: str                   # what was asked for: "auto", "bf16" or "fp32"
    reason: str                      # "measured", "forced" or "cuda"
    device: str
    width: int | None = None         # the matmul width timed
    bf16_gflops: float | None = None
    fp32_gflops: float | None = None
    cpu: str | None = None

    def describe(self) -> str:
        if self.reason == "measured":
            return (f"precision {self.precision} (measured at width {self.width}: bf16 {self.bf16_gflops:.1f}, "
                    f"fp32 {self.fp32_gflops:.1f} GFLOP/s; {self.cpu})")
        if self.reason == "cuda":
            return f"precision {self.precision} ({self.device}: bf16 {'is' if self.precision == 'bf16' else 'is not'} supported)"
        return f"precision {self.precision} (forced)"

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def matmul_gflops(dtype: torch.dtype, m: int, k: int, n: int, *, device: torch.device,
                  seconds: float = TIMING_SECONDS) -> float:
    """GFLOP/s of an (m, k) @ (k, n) matmul in `dtype`, timed over repeated calls for about `seconds`
    after one untimed call."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(k, n, generator=generator).to(device=device, dtype=dtype)
    a @ b  # first call: kernel selection, allocation
    calls, started = 0, time.perf_counter()
    while True:
        a @ b
        calls += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls * 2 * m * k * n / elapsed / 1e9


@functools.lru_cache(maxsize=None)
def _measured_choice(device_name: str, width: int) -> PrecisionChoice:
    device = torch.device(device_name)
    # the shape of a block's MLP on a batch of latents
    bf16, fp32 = (matmul_gflops(dtype, 256, width, 4 * width, device=device) for dtype in (torch.bfloat16, torch.float32))
    return PrecisionChoice(faster_precision(bf16, fp32), "auto", "measured", device_name, width, round(bf16, 2),
                           round(fp32, 2), cpu_model())


def faster_precision(bf16_gflops: float, fp32_gflops: float) -> str:
    return "bf16" if bf16_gflops >= BF16_MARGIN * fp32_gflops else "fp32"


def choose_precision(requested: str, device: torch.device | str, *, width: int) -> PrecisionChoice:
    """`requested` is "auto" (measure, once per process, device and width), "bf16" or "fp32" (forced)."""
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return PrecisionChoice(requested, requested, "forced", str(device))
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        return PrecisionChoice("bf16" if supported else "fp32", "auto", "cuda", torch.cuda.get_device_name(device))
    return _measured_choice(str(device), width)


def autocast(device: torch.device, precision: str):
    """The context a forward runs in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"autocast takes a chosen precision, 'bf16' or 'fp32', got {precision!r}")
    return contextlib.nullcontext()
