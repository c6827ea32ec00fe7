"""Training objectives (registry kind `objective`).

An objective is built as ``factory(options)`` and called as ``objective(outputs, batch) -> (loss, logs)``,
where `outputs` is what TwoTowerModel.forward returns; the trainer knows nothing else about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .registry import objectives


@dataclass
class RetrievalOptions:
    # Not negatives: another pair's target that is this pair's target item, and the other targets of the
    # same user's window (items this user does interact with, later or earlier).
    remove_accidental_hits: bool = True


@objectives.register("retrieval", options=RetrievalOptions)
class InBatchSoftmax:
    """In-batch softmax over cosine similarities / temperature: each user's target against the batch's other targets."""

    def __init__(self, options: RetrievalOptions):
        self.options = options

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = outputs["logit_scale"] * outputs["users"] @ outputs["items"].T
        if self.options.remove_accidental_hits:
            item, row = outputs["target_item"], outputs["row"]
            false_negative = (item.view(-1, 1) == item.view(1, -1)) | (row.view(-1, 1) == row.view(1, -1))
            false_negative.fill_diagonal_(False)
            logits = logits.masked_fill(false_negative, torch.finfo(logits.dtype).min)
        labels = torch.arange(len(logits), device=logits.device)
        loss = F.cross_entropy(logits, labels)
        return loss, {"loss": float(loss.detach())}
