"""`category`: an auxiliary task predicting each target item's category from its item vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, did_you_mean
from ..model.heads import CategoryHead
from ..registry import objectives
from .base import Objective, ObjectiveContext


@dataclass
class CategoryOptions:
    field: str = "category"  # the items-table column holding one category per item (empty: no category)


@objectives.register("category", options=CategoryOptions)
class CategoryPrediction(Objective):
    """Cross-entropy of a linear head predicting the item's category from its vector (auxiliary task)."""

    name = "category"

    def __init__(self, options: CategoryOptions):
        super().__init__(options)
        self.head: CategoryHead | None = None
        self.item_class: torch.Tensor | None = None

    def prepare(self, model, context: ObjectiveContext) -> None:
        column = context.item_column(self.options.field)
        if column is None:
            raise ConfigError(
                f"train.objective: category reads the item field '{self.options.field}', which the items table of "
                f"{context.where} does not have.{did_you_mean(self.options.field, context.item_columns)} "
                f"Columns present: {', '.join(context.item_columns)}."
            )
        names = [None if v is None or str(v).strip() == "" else str(v) for v in column]
        classes = sorted({n for n in names if n is not None})
        if len(classes) < 2:
            raise ConfigError(f"train.objective: category needs at least two distinct values in the item field '{self.options.field}' of {context.where}, found {len(classes)}.")
        self.head = self.attach_head(model, CategoryHead(model.dim, classes))
        position = {c: i for i, c in enumerate(self.head.classes)}
        # -100: cross_entropy's ignore_index, for items without a category (or one unknown to a loaded head).
        self.item_class = torch.tensor([position.get(n, -100) if n is not None else -100 for n in names], dtype=torch.long)

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.head(outputs["items"])
        self.item_class = self.item_class.to(logits.device)
        target = self.item_class[outputs["target_item"]]
        known = target != -100
        if not bool(known.any()):
            return logits.sum() * 0.0, {"loss": 0.0}
        loss = F.cross_entropy(logits, target, ignore_index=-100)
        accuracy = (logits[known].argmax(-1) == target[known]).float().mean()
        return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}
