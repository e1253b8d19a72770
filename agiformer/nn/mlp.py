import torch
from torch import nn
import torch.nn.functional as F


class SwiGLU(nn.Module):
    """w_out(silu(w_gate x) · w_up x): the feed-forward of every block and of the reasoning loop."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_out = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_out(F.silu(self.w_gate(x)) * self.w_up(x))
