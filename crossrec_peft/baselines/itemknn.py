"""`itemknn`: item-based nearest neighbours on the training co-occurrence."""

from __future__ import annotations

import numpy as np
import torch

from ..registry import baselines
from .base import Baseline, BaselineContext, Scorer


def interaction_matrix(sequences: list[np.ndarray], num_items: int) -> torch.Tensor:
    """Binary users x items matrix (sparse COO, coalesced, float32) of the training sequences; repeats count once."""
    rows = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(sequences)] or [np.zeros(0, dtype=np.int64)])
    cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences] or [np.zeros(0, dtype=np.int64)])
    pairs = np.unique(rows * num_items + cols)
    index = torch.as_tensor(np.stack([pairs // num_items, pairs % num_items]))
    values = torch.ones(len(pairs), dtype=torch.float32)
    return torch.sparse_coo_tensor(index, values, (len(sequences), num_items), is_coalesced=True, check_invariants=True)


def itemknn_scorer(train_sequences: list[np.ndarray], num_items: int) -> Scorer:
    """Item-kNN on co-occurrence: score(u, j) = sum over the user's distinct history items i != j of
    cos(i, j) = C_ij / sqrt(n_i n_j), with C = X^T X the co-occurrence counts of the binary users x items
    matrix X and n_i = C_ii.

    C is never formed: for a block of users with history indicator H (block x items), the scores are
    D^-1/2 X^T X D^-1/2 H^T minus the self-similarity of the history items, two sparse-dense products with
    X (cost: interactions x block), so memory stays linear in the interactions whatever the catalog size."""
    x = interaction_matrix(train_sequences, num_items)
    xt = x.t().coalesce()
    n = torch.zeros(num_items)
    n.index_add_(0, x.indices()[1], x.values())
    inv_sqrt = torch.where(n > 0, n.clamp(min=1).rsqrt(), torch.zeros_like(n))

    def score(histories: list[np.ndarray]) -> torch.Tensor:
        h = torch.zeros(len(histories), num_items)
        for r, items in enumerate(histories):
            h[r, torch.as_tensor(items, dtype=torch.long)] = 1.0
        scaled = (h * inv_sqrt).T.contiguous()  # items x block
        scores = torch.sparse.mm(xt, torch.sparse.mm(x, scaled)).T * inv_sqrt
        return scores - h * (n > 0).float()  # cos(i, i) = 1 for every item seen in training

    return score


@baselines.register("itemknn")
class ItemKNN(Baseline):
    """item-kNN: sum of cosine similarities on the training co-occurrence to the user's history items"""

    validated = True

    def scorer(self, context: BaselineContext) -> Scorer:
        return itemknn_scorer(context.split.train, context.num_items)
