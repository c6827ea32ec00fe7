"""Item IDs as a "modality": a learned embedding per catalog item, no content at all.

With method `full` this turns the two-tower model into the classic ID-based recommenders: with the `mean`
user encoder it is matrix factorisation over the recent history (an item-to-item factor model), with
`sasrec` it is SASRec with ID embeddings. The baselines module trains it with the same trainer as the
content model so the comparison isolates what content brings (it cannot score an item it never saw in
training: such an item keeps its random initial vector, which is why content models win on cold start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..errors import DataError
from ..registry import backbones
from .base import FeatureContext


@dataclass
class IdsBackboneOptions:
    dim: int = 64
    # Catalog size; null: taken from the catalog when the inputs are prepared (featurize).
    num_items: Optional[int] = None
    init_std: float = 0.02

    def check(self) -> str | None:
        if self.dim <= 0:
            return f"dim must be positive, got {self.dim}."
        if self.num_items is not None and self.num_items <= 0:
            return f"num_items must be positive, got {self.num_items}."
        if self.init_std <= 0:
            return f"init_std must be positive, got {self.init_std}."
        return None


class IdsBackbone(nn.Module):
    """nn.Embedding over catalog positions; the item's fields are read only to count the catalog."""

    modality = "ids"

    def __init__(self, options: IdsBackboneOptions):
        super().__init__()
        self.options = options
        self.hidden_size = int(options.dim)
        self.pretrained_weights = False  # trained from scratch: no zero-shot embedding to report
        self.embedding: nn.Embedding | None = None
        if options.num_items:
            self._build(int(options.num_items))

    def _build(self, num_items: int) -> None:
        self.embedding = nn.Embedding(num_items, self.hidden_size)
        nn.init.normal_(self.embedding.weight, std=self.options.init_std)

    @property
    def num_items(self) -> int:
        return 0 if self.embedding is None else self.embedding.num_embeddings

    def featurize(self, columns: Sequence[Sequence[Any]], context: FeatureContext) -> dict[str, torch.Tensor]:
        """Item i's input is its catalog position i. The table is sized here when `num_items` was not given
        (before the model is moved to a device or handed to an optimizer, as the pipeline does)."""
        count = len(context.item_ids)
        if self.embedding is None:
            self._build(count)
        elif count != self.num_items:
            raise DataError(
                f"backbone 'ids' has {self.num_items} item embeddings but the catalog has {count} items: "
                "an ID model only scores the catalog it was trained on."
            )
        return {"index": torch.arange(count)}

    @staticmethod
    def collate(features: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"index": features["index"][index]}

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            raise RuntimeError("IdsBackbone used before featurize() sized its embedding table")
        return self.embedding(index)

    def identity(self) -> dict:
        # No weight files: the table is trained, so it travels in the package's own weights.
        return {"id": "ids", "model_type": "ids", "hidden_size": self.hidden_size, "sha256": None, "bytes": 0}


@backbones.register("ids", options=IdsBackboneOptions, availability=lambda: "offline (no weights)")
def ids(options: IdsBackboneOptions, argument: str | None = None) -> IdsBackbone:
    """Learned item-ID embeddings (no content): the ID-based baseline (MF / SASRec with IDs) with method full."""
    return IdsBackbone(options)
