"""User encoders: a user's history of item content vectors -> one vector. Registry kind `user_encoder`.

Built as ``factory(options, dim)``; called with history vectors [batch, length, dim] and a boolean mask
[batch, length] that is True at real (not padded) positions. Histories are ordered oldest to newest.
An encoder may also provide ``prefixes(history, mask) -> [batch, length, dim]`` (position t encodes items
0..t) so that training on every position of a window takes one pass; without it, the model calls the
encoder once per position.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import user_encoders


@user_encoders.register("mean")
class MeanUserEncoder(nn.Module):
    """Mean of the history's item vectors (the towers' heads add the learned projection)."""

    def __init__(self, options: None, dim: int):
        super().__init__()
        self.out_dim = dim

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(history.dtype).unsqueeze(-1)
        return (history * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def prefixes(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Running means: position t is the mean of items 0..t."""
        weights = mask.to(history.dtype).unsqueeze(-1)
        return (history * weights).cumsum(1) / weights.cumsum(1).clamp(min=1.0)
