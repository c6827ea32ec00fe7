"""Vectorised metrics against a brute-force reference on random cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossrec_peft.metrics import exclude, ranking_metrics, target_ranks


def reference(scores: np.ndarray, target: int, k: int) -> dict[str, float]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # distinct scores: order is unique
    rank = order.index(target)
    hit = rank < k
    return {"recall": float(hit), "ndcg": 1 / math.log2(rank + 2) if hit else 0.0, "mrr": 1 / (rank + 1) if hit else 0.0}


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(40, 30))
    targets = rng.integers(0, 30, size=40)
    got = ranking_metrics(target_ranks(torch.tensor(scores), torch.tensor(targets)), [1, 5, 10, 30])
    for k in (1, 5, 10, 30):
        for row in range(40):
            ref = reference(scores[row], targets[row], k)
            for name in ("recall", "ndcg", "mrr"):
                assert got[f"{name}@{k}"][row].item() == pytest.approx(ref[name], abs=1e-12)


def test_ties_get_a_seeded_random_share():
    scores = torch.zeros(2000, 50)  # a constant scorer
    targets = torch.zeros(2000, dtype=torch.long)
    ranks = target_ranks(scores, targets, torch.Generator().manual_seed(0))
    assert ranks.min() >= 0 and ranks.max() <= 49
    assert abs(ranks.float().mean().item() - 24.5) < 1.5  # uniform over 0..49, not 0
    again = target_ranks(scores, targets, torch.Generator().manual_seed(0))
    assert torch.equal(ranks, again)
    assert target_ranks(scores, targets).max() == 0  # without a generator: optimistic, documented


def test_exclusion_and_nan():
    scores = torch.tensor([[5.0, 4.0, 3.0, float("nan")]])
    exclude(scores, torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert target_ranks(scores, torch.tensor([2])).item() == 0
    assert target_ranks(scores, torch.tensor([3])).item() == 3  # NaN ranks last
