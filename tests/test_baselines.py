"""Baselines: item-kNN against a dense brute force, the ID backbone, and the ID model trained by the run's
trainer on data with structure an ID model can learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossrec_peft import recipes
from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.baselines import itemknn_scorer, popularity_scorer, run_baselines
from crossrec_peft.config import load_config
from crossrec_peft.data.split import leave_one_out
from crossrec_peft.errors import ConfigError, DataError
from crossrec_peft.evaluation import HeldOutEvaluation, evaluate_cases
from crossrec_peft.train import MetricsLog
from tests.conftest import tiny_overrides


def dense_itemknn(train: list[np.ndarray], histories: list[np.ndarray], num_items: int) -> np.ndarray:
    x = np.zeros((len(train), num_items))
    for u, s in enumerate(train):
        x[u, s] = 1.0
    c = x.T @ x
    n = np.diag(c).copy()
    sim = np.zeros_like(c)
    for i in range(num_items):
        for j in range(num_items):
            if i != j and n[i] and n[j]:
                sim[i, j] = c[i, j] / np.sqrt(n[i] * n[j])
    out = np.zeros((len(histories), num_items))
    for r, h in enumerate(histories):
        for i in set(h.tolist()):
            out[r] += sim[i]
    return out


@pytest.mark.parametrize("seed", range(3))
def test_itemknn_matches_dense_cosine(seed):
    rng = np.random.default_rng(seed)
    items = 25
    train = [rng.choice(items, size=int(rng.integers(1, 9))) for _ in range(40)]  # repeats allowed: count once
    histories = [rng.choice(items, size=int(rng.integers(1, 6))) for _ in range(15)]
    got = itemknn_scorer(train, items)(histories)
    assert got.shape == (15, items)
    np.testing.assert_allclose(got.numpy(), dense_itemknn(train, histories, items), rtol=1e-5, atol=1e-5)


def clustered_sequences(rng, users: int, items: int, length: int = 8) -> list[np.ndarray]:
    """Two halves of the catalog; each user stays in one half: co-occurrence and IDs can learn it,
    popularity cannot."""
    half = items // 2
    return [rng.choice(half, size=length, replace=False) + half * (u % 2) for u in range(users)]


def test_itemknn_and_popularity_on_clustered_data():
    rng = np.random.default_rng(0)
    split = leave_one_out(clustered_sequences(rng, 200, 40))
    knn = evaluate_cases(itemknn_scorer(split.train, 40), split.test, [10])
    pop = evaluate_cases(popularity_scorer(split.train_item_counts(40)), split.test, [10])
    assert knn["recall@10"] > 1.5 * pop["recall@10"]


def test_ids_backbone_sizes_its_table_from_the_catalog():
    from crossrec_peft.backbones.ids import IdsBackbone, IdsBackboneOptions

    backbone = IdsBackbone(IdsBackboneOptions(dim=8))
    features = backbone.featurize([["a", "b", "c"]], FeatureContext(item_ids=["a", "b", "c"]))
    assert backbone.num_items == 3 and backbone.pretrained_weights is False
    out = backbone(**backbone.collate(features, torch.tensor([2, 0])))
    assert out.shape == (2, 8)
    assert torch.equal(out[0], backbone.embedding.weight[2])
    with pytest.raises(DataError, match="3 item embeddings but the catalog has 2 items"):
        backbone.featurize([["a", "b"]], FeatureContext(item_ids=["a", "b"]))


def test_ids_model_trains_with_the_run_trainer(tmp_path, tiny_bert):
    rng = np.random.default_rng(1)
    items = 40
    split = leave_one_out(clustered_sequences(rng, 160, items))
    cfg = load_config(
        recipes.path("ecommerce"),
        tiny_overrides(tiny_bert, **{"eval.ids.epochs": 3, "eval.ids.dim": 16, "eval.ids.lr": 0.05, "train.batch_size": 40, "eval.baselines": "[popularity,ids]"}),
    )
    evaluation = HeldOutEvaluation(split.test, split.train_item_counts(items), [10], cold_start_max=0)
    log = MetricsLog(tmp_path / "metrics.jsonl")
    details = run_baselines(cfg, split, [f"i{i}" for i in range(items)], evaluation, log=log, progress=False)
    report = evaluation.report()
    assert set(report["metrics"]) == {"popularity", "ids"}
    assert report["metrics"]["ids"]["recall@10"] > 1.5 * report["metrics"]["popularity"]["recall@10"]
    assert details["ids"]["epochs_run"] >= 1 and details["ids"]["parameters"] > items * 16
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records and all(r["system"] == "ids" for r in records)
    assert any(r.get("split") == "validation" for r in records)


def test_unknown_baseline_is_a_config_error(tiny_bert):
    with pytest.raises(ConfigError, match="unknown baseline 'itemnn'.*itemknn"):
        load_config(recipes.path("ecommerce"), tiny_overrides(tiny_bert, **{"eval.baselines": "[popularity,itemnn]"}))
    with pytest.raises(ConfigError, match="sampled_negatives"):
        load_config(recipes.path("ecommerce"), tiny_overrides(tiny_bert, **{"eval.sampled_negatives": 0}))
