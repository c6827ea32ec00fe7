"""Full-ranking metrics, vectorised in torch.

Each evaluation case has one held-out target. Its rank is the number of candidate items scored above it,
plus a seeded random share of the items tied with it (so a constant scorer gets a random, not a perfect,
rank). With one relevant item, Recall@K equals HR@K, NDCG@K is 1/log2(rank+2) and MRR@K is 1/(rank+1),
each zero when rank >= K.
"""

from __future__ import annotations

import torch

METRICS = ("recall", "ndcg", "mrr")


def exclude(scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Set scores[rows[i], cols[i]] to -inf in place (items a user already has)."""
    if len(rows):
        scores[rows, cols] = float("-inf")
    return scores


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """0-based rank of each row's target among that row's scores."""
    scores = torch.nan_to_num(scores, nan=float("-inf"))
    target_scores = scores.gather(1, targets.view(-1, 1))
    above = (scores > target_scores).sum(1)
    ties = (scores == target_scores).sum(1) - 1
    share = torch.rand(len(targets), generator=generator) if generator is not None else torch.zeros(len(targets))
    return above + torch.floor(share.to(scores.device) * (ties + 1)).long()


def ranking_metrics(ranks: torch.Tensor, ks: list[int]) -> dict[str, torch.Tensor]:
    """Per-case values of recall@k, ndcg@k and mrr@k for every k."""
    ranks = ranks.to(torch.float64)
    out = {}
    for k in ks:
        hit = (ranks < k).to(torch.float64)
        out[f"recall@{k}"] = hit
        out[f"ndcg@{k}"] = hit / torch.log2(ranks + 2)
        out[f"mrr@{k}"] = hit / (ranks + 1)
    return out
