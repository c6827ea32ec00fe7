"""The `evaluate` metric modules load offline from their folders and give the same numbers as the run's
own evaluation code."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

# evaluate reads these when imported: no network, and its module cache out of the user's home.
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_MODULES_CACHE", os.path.join(tempfile.gettempdir(), "crossrec-peft-evaluate-modules"))
import evaluate  # noqa: E402  (the dev extra installs it)

from crossrec_peft.data.split import EvalCases  # noqa: E402
from crossrec_peft.evaluate_metrics import path  # noqa: E402
from crossrec_peft.evaluation import evaluate_cases  # noqa: E402
from crossrec_peft.metrics import pointwise_metrics  # noqa: E402


def test_ranking_module_matches_the_run_evaluation():
    rng = np.random.default_rng(0)
    items, users = 30, 25
    scores = np.round(rng.normal(size=(users, items)), 1).astype(np.float32)  # rounded: ties are broken by the seed
    histories = [rng.choice(items, size=int(rng.integers(1, 6)), replace=False) for _ in range(users)]
    targets = rng.integers(0, items, size=users)
    module = evaluate.load(path("ranking"))
    got = module.compute(predictions=scores.tolist(), references=targets.tolist(), ks=[5, 10], exclude=[h.tolist() for h in histories], seed=3)
    expected = evaluate_cases(lambda h: torch.tensor(scores[: len(h)]), EvalCases(histories, targets), [5, 10], batch_size=users, seed=3)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_ranking_module_against_an_independent_implementation():
    """Untied scores, so each target's rank is unambiguous: rank = items scored above it, history excluded;
    Recall@k = [rank < k], NDCG@k = 1/log2(rank + 2), MRR@k = 1/(rank + 1) within k (one target per case)."""
    rng = np.random.default_rng(7)
    items, users = 40, 30
    scores = rng.normal(size=(users, items))
    histories = [rng.choice(items, size=int(rng.integers(1, 8)), replace=False) for _ in range(users)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(items), h)) for h in histories])
    ranks = []
    for row, history, target in zip(scores, histories, targets):
        allowed = np.ones(items, dtype=bool)
        allowed[history] = False
        ranks.append(int((row[allowed] > row[target]).sum()))
    ranks = np.array(ranks)
    module = evaluate.load(path("ranking"))
    got = module.compute(predictions=scores.tolist(), references=targets.tolist(), ks=[5, 10], exclude=[h.tolist() for h in histories], seed=0)
    for k in (5, 10):
        hit = ranks < k
        assert got[f"recall@{k}"] == pytest.approx(hit.mean(), abs=1e-12)
        assert got[f"ndcg@{k}"] == pytest.approx(np.where(hit, 1 / np.log2(ranks + 2), 0).mean(), abs=1e-12)
        assert got[f"mrr@{k}"] == pytest.approx(np.where(hit, 1 / (ranks + 1), 0).mean(), abs=1e-12)
    assert 0 < got["recall@10"] < 1  # the case mix has hits and misses, so the check above discriminates


def test_pointwise_module_against_an_independent_implementation():
    """AUC as the share of (positive, negative) pairs ordered right (ties count half); log-loss and
    precision/recall/F1 at the threshold from their definitions."""
    rng = np.random.default_rng(2)
    labels = (rng.random(80) < 0.35).astype(int)
    probabilities = np.clip(0.3 * labels + 0.7 * rng.random(80), 1e-3, 1 - 1e-3)
    got = evaluate.load(path("pointwise")).compute(predictions=probabilities.tolist(), references=labels.tolist(), threshold=0.5)
    pos, neg = probabilities[labels == 1], probabilities[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    predicted = probabilities >= 0.5
    tp = int((predicted & (labels == 1)).sum())
    precision, recall = tp / predicted.sum(), tp / labels.sum()
    expected = {
        "auc": pairs,
        "log_loss": -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities)),
        "precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name  # the module computes in float32


def test_pointwise_module_matches_metrics():
    rng = np.random.default_rng(1)
    labels = (rng.random(60) < 0.3).astype(int)
    probabilities = rng.random(60)
    module = evaluate.load(path("pointwise"))
    got = module.compute(predictions=probabilities.tolist(), references=labels.tolist(), threshold=0.4)
    assert got == pytest.approx(pointwise_metrics(probabilities, labels, threshold=0.4))


def test_unknown_module_name():
    with pytest.raises(ValueError, match="known: ranking, pointwise"):
        path("rankings")
