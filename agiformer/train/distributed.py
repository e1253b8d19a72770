"""One process or many: the same training code runs alone or under `torchrun` (DistributedDataParallel)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from agiformer.errors import AGIFormerError


def pick_device(name: str = "auto") -> torch.device:
    """`name` ("auto": CUDA if available, else CPU), refused in one line if this machine cannot run it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise AGIFormerError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise AGIFormerError(f"device {name!r} is not available: {build}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AGIFormerError(f"device {name!r} is not available: this machine has {torch.cuda.device_count()} "
                                 f"CUDA device(s), cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise AGIFormerError(f"device {name!r} is not available on this machine; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise AGIFormerError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: str = "auto") -> "Distributed":
        """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        chosen = pick_device(device)
        if world_size == 1:
            return cls(0, 1, chosen)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if chosen.type == "cuda":
            chosen = torch.device("cuda", local_rank)
            torch.cuda.set_device(chosen)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), chosen)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all processes."""
        if self.world_size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()
