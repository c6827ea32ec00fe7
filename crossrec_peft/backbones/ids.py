"""Item IDs as a "modality": a learned embedding per catalog item, no content at all.

With method `full` this turns the two-tower model into the classic ID-based recommenders: with the `mean`
user encoder it is matrix factorisation over the recent history (an item-to-item factor model), with
`sasrec` it is SASRec with ID embeddings. The baselines module trains it with the same trainer as the
content model so the comparison isolates what content brings (it cannot score an item it never saw in
training: such an item keeps its random initial vector, which is why content models win on cold start).

Beside a content modality, `min_item_interactions` keeps IDs to the items training can learn a vector for:
below it an item counts as lacking the modality, so the fusion leaves its ID out (`missing: mask`) and its
content alone scores it, instead of content plus a random vector (docs/real-data.md measures both).
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
    # An item has an ID vector once it has this many training interactions; below that it lacks the modality
    # (present=False) and the fusion scores it by its other modalities. 0: every item has one (the ID baseline).
    min_item_interactions: int = 0

    def check(self) -> str | None:
        if self.dim <= 0:
            return f"dim must be positive, got {self.dim}."
        if self.num_items is not None and self.num_items <= 0:
            return f"num_items must be positive, got {self.num_items}."
        if self.init_std <= 0:
            return f"init_std must be positive, got {self.init_std}."
        if self.min_item_interactions < 0:
            return f"min_item_interactions must be 0 or more, got {self.min_item_interactions}."
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
        self._known_in_run: torch.Tensor | None = None  # set by featurize from a run's training counts
        if options.num_items:
            self._build(int(options.num_items))

    def _build(self, num_items: int) -> None:
        self.embedding = nn.Embedding(num_items, self.hidden_size)
        nn.init.normal_(self.embedding.weight, std=self.options.init_std)

    def size_from_state(self, state: dict[str, torch.Tensor]) -> None:
        """Size an unsized table from a package's saved one (loading sizes it before the weights are copied
        in; the catalog it is then used with must have as many items, which `featurize` checks)."""
        saved = state.get("embedding.weight")
        if self.embedding is None and saved is not None:
            self._build(int(saved.shape[0]))

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
        out = {"index": torch.arange(count)}
        if self.options.min_item_interactions > 0:
            out["present"] = self._known(context)
        return out

    @torch.no_grad()
    def _known(self, context: FeatureContext) -> torch.Tensor:
        """[num_items] bool: the items with an ID vector. In a training run (the context has the training
        counts): those with at least `min_item_interactions`, and every other row is zeroed. An absent
        modality is never encoded, so no gradient ever reaches those rows and they stay zero: a saved table
        says which items are known by itself, and a model loaded without the counts reads it from there."""
        weight = self.embedding.weight
        if context.train_counts is None:
            return weight.ne(0).any(dim=1).cpu()
        counts = torch.as_tensor(list(context.train_counts))
        if len(counts) != len(weight):
            raise DataError(f"backbone 'ids': {len(counts)} training counts for a catalog of {len(weight)} items.")
        known = counts >= self.options.min_item_interactions
        weight[~known.to(weight.device)] = 0.0
        self._known_in_run = known
        return known

    @torch.no_grad()
    def weights_loaded(self) -> None:
        """After a package's table is copied in for continued tuning on this run's data: an item known now but
        not to the parent gets a fresh vector (a zero row would normalise to zero with an unbounded gradient),
        and one unknown now is zeroed, so a zero row still means exactly "no ID vector"."""
        known = self._known_in_run
        if known is None or self.embedding is None:
            return
        weight = self.embedding.weight
        known = known.to(weight.device)
        revive = known & ~weight.ne(0).any(dim=1)
        if bool(revive.any()):
            weight[revive] = torch.randn(int(revive.sum()), weight.shape[1], device=weight.device) * self.options.init_std
        weight[~known] = 0.0

    @staticmethod
    def collate(features: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"index": features["index"][index]}
        if "present" in features:
            out["present"] = features["present"][index]
        return out

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
