from typing import NamedTuple

import torch


class LossOutput(NamedTuple):
    loss: torch.Tensor             # objective to minimise: bpb + ponder_weight · mean ponder cost
    bpb: torch.Tensor              # mean bits per byte over all B·L bytes
    total_bits: torch.Tensor       # sum of bits over all bytes (for exact aggregation across windows)
    n_bytes: int
    ponder: torch.Tensor           # mean ACT ponder cost per position (0 without adaptive reasoning)
    mean_steps: torch.Tensor       # mean reasoning steps per position (0 without adaptive reasoning)
