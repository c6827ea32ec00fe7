"""Vectorised metrics against a brute-force reference on random cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrec_peft.metrics import (
    auc,
    coverage,
    exclude,
    log_loss,
    log_loss_from_logits,
    pointwise_metrics,
    precision_recall_f1,
    ranking_metrics,
    rating_metrics,
    target_ranks,
    top_items,
    topk_metrics,
)


def reference(scores: np.ndarray, target: int, k: int) -> dict[str, float]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # distinct scores: order is unique
    rank = order.index(target)
    hit = rank < k
    mrr = 1 / (rank + 1) if hit else 0.0
    return {"recall": float(hit), "ndcg": 1 / math.log2(rank + 2) if hit else 0.0, "mrr": mrr, "map": mrr}


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(40, 30))
    targets = rng.integers(0, 30, size=40)
    got = ranking_metrics(target_ranks(torch.tensor(scores), torch.tensor(targets)), [1, 5, 10, 30])
    for k in (1, 5, 10, 30):
        for row in range(40):
            ref = reference(scores[row], targets[row], k)
            for name in ("recall", "ndcg", "mrr", "map"):
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


# -- several relevant items, coverage -------------------------------------------------------------------------


def reference_topk(scores: np.ndarray, relevant: np.ndarray, k: int) -> dict[str, float]:
    order = list(np.argsort(-scores, kind="stable"))[:k]
    rel = set(np.flatnonzero(relevant).tolist())
    gains = [1.0 if i in rel else 0.0 for i in order]
    hits = sum(gains)
    dcg = sum(g / math.log2(pos + 2) for pos, g in enumerate(gains))
    idcg = sum(1 / math.log2(pos + 2) for pos in range(min(len(rel), k)))
    precisions = [sum(gains[: pos + 1]) / (pos + 1) for pos in range(len(gains))]
    ap = sum(p * g for p, g in zip(precisions, gains)) / min(len(rel), k) if rel else 0.0
    first = next((pos for pos, g in enumerate(gains) if g), None)
    return {
        "precision": hits / k,
        "recall": hits / len(rel) if rel else 0.0,
        "hr": float(hits > 0),
        "ndcg": dcg / idcg if idcg else 0.0,
        "mrr": 1 / (first + 1) if first is not None else 0.0,
        "map": ap,
    }


@pytest.mark.parametrize("seed", range(4))
def test_topk_metrics_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(30, 25))  # distinct scores: the top-k order is unique
    relevant = rng.random((30, 25)) < rng.uniform(0.02, 0.4)
    relevant[0] = False  # a case without relevant items scores zero
    got = topk_metrics(torch.tensor(scores), torch.tensor(relevant), [1, 3, 10, 25])
    for k in (1, 3, 10, 25):
        for row in range(30):
            ref = reference_topk(scores[row], relevant[row], k)
            for name, value in ref.items():
                assert got[f"{name}@{k}"][row].item() == pytest.approx(value, abs=1e-12), (name, k, row)


def test_single_target_map_equals_mrr_and_topk_agrees_with_ranks():
    rng = np.random.default_rng(7)
    scores = rng.normal(size=(50, 40))
    targets = rng.integers(0, 40, size=50)
    relevant = np.zeros_like(scores, dtype=bool)
    relevant[np.arange(50), targets] = True
    by_rank = ranking_metrics(target_ranks(torch.tensor(scores), torch.tensor(targets)), [5, 10])
    by_topk = topk_metrics(torch.tensor(scores), torch.tensor(relevant), [5, 10])
    for name in ("recall@5", "ndcg@10", "mrr@10", "map@10", "map@5"):
        assert torch.allclose(by_rank[name], by_topk[name])
    assert torch.equal(by_rank["map@10"], by_rank["mrr@10"])


def test_coverage():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 1.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    top = top_items(scores, 1)
    assert top.view(-1).tolist() == [0, 0, 3]
    assert coverage(top, 4) == 0.5
    assert coverage(top_items(scores, 2), 4) == 1.0


# -- pointwise ----------------------------------------------------------------------------------------------


def reference_auc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_pointwise_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    labels = (rng.random(n) < 0.4).astype(float)
    labels[:2] = [0.0, 1.0]
    # Rounded scores make ties, which AUC counts as one half.
    probabilities = np.round(rng.random(n), 1).clip(0.05, 0.95)
    assert auc(probabilities, labels) == pytest.approx(reference_auc(probabilities, labels), abs=1e-12)
    ref_ll = -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    assert log_loss(probabilities, labels) == pytest.approx(ref_ll, rel=1e-12)
    logits = np.log(probabilities / (1 - probabilities))
    assert log_loss_from_logits(logits, labels) == pytest.approx(ref_ll, rel=1e-9)
    threshold = 0.5
    tp = sum(1 for p, y in zip(probabilities, labels) if p >= threshold and y)
    fp = sum(1 for p, y in zip(probabilities, labels) if p >= threshold and not y)
    fn = sum(1 for p, y in zip(probabilities, labels) if p < threshold and y)
    prf = precision_recall_f1(probabilities, labels, threshold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    assert prf["precision"] == pytest.approx(precision) and prf["recall"] == pytest.approx(recall)
    assert prf["f1"] == pytest.approx(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    both = pointwise_metrics(logits, labels, logits=True)
    assert both["auc"] == pytest.approx(reference_auc(probabilities, labels)) and both["log_loss"] == pytest.approx(ref_ll, rel=1e-9)


def test_auc_edges():
    assert auc([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0
    assert auc([0.9, 0.2, 0.1], [0, 0, 1]) == 0.0
    assert auc([0.5, 0.5], [0, 1]) == 0.5
    with pytest.raises(ValueError, match="positive and one negative"):
        auc([0.1, 0.2], [1, 1])


@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=40))
@settings(max_examples=50, deadline=None)
def test_rating_metrics_match_numpy(pairs):
    pred, target = np.array(pairs).T
    m = rating_metrics(pred, target)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)), abs=1e-12)
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - target)), abs=1e-12)
    assert m["mae"] <= m["rmse"] + 1e-12
