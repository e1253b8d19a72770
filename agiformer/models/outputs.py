import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class LossOutput(NamedTuple):
    loss: torch.Tensor             # objective to minimise: bpb + ponder_weight · mean ponder cost
    bpb: torch.Tensor              # mean bits per byte over all B·L bytes
    total_bits: torch.Tensor       # sum of bits over all bytes (for exact aggregation across windows)
    n_bytes: int
    ponder: torch.Tensor           # mean ACT ponder cost per position (0 without adaptive reasoning)
    mean_steps: torch.Tensor       # mean reasoning steps per position (0 without adaptive reasoning)


def next_byte_loss(logits: torch.Tensor, x: torch.Tensor) -> LossOutput:
    """The loss of a model with neither ponder cost nor reasoning steps: logits (B, L, 256) predicting the
    bytes x (B, L), scored in float32 at least (bf16 up, float64 kept)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    total_bits = F.cross_entropy(logits.reshape(-1, 256), x.reshape(-1), reduction="sum") / math.log(2)
    zero = total_bits.new_zeros(())
    return LossOutput(total_bits / x.numel(), total_bits / x.numel(), total_bits, x.numel(), zero, zero)
