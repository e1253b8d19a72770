"""One process or many: the same training code runs alone or under `torchrun` (DistributedDataParallel)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
