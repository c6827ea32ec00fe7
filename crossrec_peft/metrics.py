"""Recommendation metrics, vectorised in torch (formulas in docs/metrics.md).

Ranking, one held-out target per case (the leave-one-out protocol): the target's rank is the number of
candidate items scored above it, plus a seeded random share of the items tied with it (so a constant scorer
gets a random, not a perfect, rank). With one relevant item Recall@K equals HR@K, NDCG@K is
1/log2(rank+2), MRR@K and MAP@K are 1/(rank+1), each zero when rank >= K.

Ranking, several relevant items per case (`topk_metrics`): precision, recall, HR, NDCG, MRR and MAP at K
from a relevance matrix. Catalog coverage@K: the share of items that appear in at least one top-K list.

Pointwise (click/interest prediction and ratings): AUC, log-loss, precision/recall/F1 at a threshold,
RMSE and MAE.
"""

from __future__ import annotations

import torch

METRICS = ("recall", "ndcg", "mrr", "map")


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
    """Per-case values of recall@k, ndcg@k, mrr@k and map@k for every k (one relevant item per case)."""
    ranks = ranks.to(torch.float64)
    out = {}
    for k in ks:
        hit = (ranks < k).to(torch.float64)
        out[f"recall@{k}"] = hit
        out[f"ndcg@{k}"] = hit / torch.log2(ranks + 2)
        out[f"mrr@{k}"] = hit / (ranks + 1)
        # Average precision with a single relevant item is the precision at its position: 1/(rank+1).
        out[f"map@{k}"] = out[f"mrr@{k}"].clone()
    return out


def top_items(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of each row's k highest scores (NaN last), best first."""
    scores = torch.nan_to_num(scores, nan=float("-inf"))
    return scores.topk(min(k, scores.shape[1]), dim=1).indices


def coverage(top: torch.Tensor, num_items: int) -> float:
    """Share of the catalog present in at least one row of `top` (indices of recommended items)."""
    if num_items <= 0:
        raise ValueError("coverage needs a non-empty catalog")
    seen = torch.zeros(num_items, dtype=torch.bool, device=top.device)
    seen[top.reshape(-1)] = True
    return float(seen.sum()) / num_items


def topk_metrics(scores: torch.Tensor, relevant: torch.Tensor, ks: list[int]) -> dict[str, torch.Tensor]:
    """Per-case precision, recall, hr, ndcg, mrr and map at each k for binary relevance [cases, items].

    Ties are broken by `torch.topk` (use distinct scores where the order matters). Recall divides by the
    number of relevant items, MAP by min(k, relevant), the NDCG ideal puts every relevant item first. Cases
    without a relevant item score zero everywhere."""
    relevant = relevant.bool()
    n_rel = relevant.sum(1).to(torch.float64)
    top = top_items(scores, max(ks))
    gains = relevant.gather(1, top).to(torch.float64)  # [cases, K]: 1 where the i-th recommendation is relevant
    positions = torch.arange(1, gains.shape[1] + 1, dtype=torch.float64, device=gains.device)
    discounts = 1.0 / torch.log2(positions + 1)
    cum_discounts = discounts.cumsum(0)
    hits_so_far = gains.cumsum(1)
    out = {}
    for k in ks:
        g, kk = gains[:, :k], min(k, gains.shape[1])
        hits = g.sum(1)
        dcg = (g * discounts[:kk]).sum(1)
        ideal_len = n_rel.clamp(max=kk).long()
        ideal = torch.where(ideal_len > 0, cum_discounts[(ideal_len - 1).clamp(min=0)], torch.zeros_like(dcg))
        first = torch.where(g.any(1), g.argmax(1).to(torch.float64) + 1, torch.full_like(hits, float("inf")))
        precision_at = hits_so_far[:, :kk] / positions[:kk]
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = torch.where(n_rel > 0, hits / n_rel.clamp(min=1), torch.zeros_like(hits))
        out[f"hr@{k}"] = (hits > 0).to(torch.float64)
        out[f"ndcg@{k}"] = torch.where(ideal > 0, dcg / ideal.clamp(min=1e-12), torch.zeros_like(dcg))
        out[f"mrr@{k}"] = 1.0 / first
        out[f"map@{k}"] = (precision_at * g).sum(1) / n_rel.clamp(min=1).clamp(max=kk)
    return out


# -- pointwise ------------------------------------------------------------------------------------------------


def _flat(x, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(x).detach().reshape(-1).to(dtype)


def auc(scores, labels) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties counting 1/2.

    Computed from average ranks (Mann-Whitney U); needs at least one positive and one negative label."""
    s, y = _flat(scores), _flat(labels)
    n_pos = float((y > 0.5).sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative label")
    order = torch.argsort(s)
    sorted_s = s[order]
    # Average rank of each group of tied scores: mean of its first and last 1-based position.
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    avg_rank = (ends - (counts.to(torch.float64) - 1) / 2)[inverse]
    ranks = torch.empty_like(avg_rank)
    ranks[order] = avg_rank
    u = ranks[y > 0.5].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def log_loss(probabilities, labels, *, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to [eps, 1-eps]) against 0/1 labels."""
    p, y = _flat(probabilities).clamp(eps, 1 - eps), _flat(labels)
    return float(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean())


def log_loss_from_logits(logits, labels) -> float:
    """Mean binary cross-entropy of logits (numerically stable; no clipping)."""
    z, y = _flat(logits), _flat(labels)
    return float(torch.nn.functional.binary_cross_entropy_with_logits(z, y))


def precision_recall_f1(scores, labels, threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall and F1 of predicting positive when score >= threshold (0 where undefined)."""
    predicted, y = _flat(scores) >= threshold, _flat(labels) > 0.5
    tp = float((predicted & y).sum())
    fp = float((predicted & ~y).sum())
    fn = float((~predicted & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def rmse(predictions, targets) -> float:
    """Root mean squared error."""
    return float(torch.sqrt(((_flat(predictions) - _flat(targets)) ** 2).mean()))


def mae(predictions, targets) -> float:
    """Mean absolute error."""
    return float((_flat(predictions) - _flat(targets)).abs().mean())


def pointwise_metrics(scores, labels, *, threshold: float = 0.5, logits: bool = False) -> dict[str, float]:
    """AUC, log-loss and precision/recall/F1 at `threshold` for click/interest predictions.

    `scores` are probabilities, or logits with logits=True (the threshold then applies to the probability)."""
    s = _flat(scores)
    probabilities = torch.sigmoid(s) if logits else s
    out = {"auc": auc(s, labels), "log_loss": log_loss_from_logits(s, labels) if logits else log_loss(s, labels)}
    out.update(precision_recall_f1(probabilities, labels, threshold))
    return out


def rating_metrics(predictions, targets) -> dict[str, float]:
    """RMSE and MAE of predicted ratings."""
    return {"rmse": rmse(predictions, targets), "mae": mae(predictions, targets)}
