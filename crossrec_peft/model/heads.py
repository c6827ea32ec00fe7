"""Small trainable heads shared by both towers."""

from __future__ import annotations

import torch
from torch import nn


class ResidualLowRank(nn.Module):
    """x + up(down(x)). `up` starts at zero, so an untrained head is the identity and adds few weights
    (2 * dim * rank) to an exported adapter."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.normal_(self.down.weight, std=dim**-0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x))
