"""`popularity`: the most-interacted items for everyone."""

from __future__ import annotations

import numpy as np
import torch

from ..registry import baselines
from .base import Baseline, BaselineContext, Scorer


def popularity_scorer(counts: np.ndarray) -> Scorer:
    scores = torch.as_tensor(counts, dtype=torch.float32)

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        return scores.expand(len(histories), -1).clone()

    return score


@baselines.register("popularity")
class Popularity(Baseline):
    """items ranked by their number of training interactions"""

    validated = True

    def scorer(self, context: BaselineContext) -> Scorer:
        return popularity_scorer(context.split.train_item_counts(context.num_items))
