"""Fusion heads: modality embeddings -> one item content vector. Registry kind `fusion`.

A fusion is built as ``factory(options, dims)`` with `dims` mapping modality name to embedding size, exposes
`out_dim`, and is called as ``fusion(embeddings, present)``: modality name -> embeddings [batch, dim] and
modality name -> bool [batch] (False where the item lacks that modality; its embedding row is zeros).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import fusions


@fusions.register("mean")
class MeanFusion(nn.Module):
    """Average of the L2-normalised modality embeddings (equal sizes); a single modality passes through normalised."""

    def __init__(self, options: None, dims: dict[str, int]):
        super().__init__()
        sizes = sorted(set(dims.values()))
        if len(sizes) != 1:
            raise ConfigError(
                f"Fusion 'mean' needs modality embeddings of one size, got {dims}: choose a fusion that projects "
                f"(run `crossrec-peft ls fusion`)."
            )
        self.out_dim = sizes[0]
        self.order = list(dims)

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        # Missing modalities are left out of the mean (their rows are zeros, which normalise to zeros).
        stacked = torch.stack([F.normalize(embeddings[m], dim=-1) for m in self.order])
        weights = torch.stack([present[m] for m in self.order]).to(stacked.dtype).unsqueeze(-1)
        return (stacked * weights).sum(0) / weights.sum(0).clamp(min=1.0)
