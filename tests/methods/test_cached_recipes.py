"""The e-commerce recipe end to end with a cached text method: the frozen text backbone runs once per item
for the whole run (training epochs and every validation read the cache), a second run reads it without
running the backbone at all, and the exported package reproduces the reported test metrics."""

from __future__ import annotations

import pytest

from crossrec_peft import recipes
from crossrec_peft.backbones.text import TextBackbone
from crossrec_peft.config import load_config
from crossrec_peft.data import load_data
from crossrec_peft.evaluation import HeldOutEvaluation, encode_catalog, model_scorer
from crossrec_peft.package import load_package
from crossrec_peft.pipeline import catalog_features, run
from tests.conftest import tiny_overrides

METHODS = {
    "side": ["model.modalities.text.method=side", "model.modalities.text.method.bottleneck=16"],
    "top": ["model.modalities.text.method=top", "model.modalities.text.method.k=1", "model.modalities.text.method.tune=lora"],
    "frozen": ["model.modalities.text.method=frozen"],
}


@pytest.mark.parametrize("method", list(METHODS))
def test_recipe_runs_with_a_cached_text_method(tiny_bert, tmp_path, monkeypatch, method):
    passes = []
    for name in ("forward", "_hidden_states"):
        real = getattr(TextBackbone, name)
        monkeypatch.setattr(TextBackbone, name, lambda self, *a, _real=real, **k: passes.append(1) or _real(self, *a, **k))
    overrides = [
        *tiny_overrides(tiny_bert, **{"train.epochs": 2, "data.cache_dir": tmp_path / "cache", "model.modalities.image": "null"}),
        *METHODS[method],
    ]
    cfg = load_config(recipes.path("ecommerce"), overrides, name="ecommerce")
    report = run(cfg, tmp_path / "run", progress=False, summary=False)
    # 120 items in batches of eval_batch_size 64: two backbone passes for two epochs, two validations,
    # the untuned baseline and the test, not one per batch and per evaluation.
    assert len(passes) == 2
    assert report["epochs_run"] == 2
    # Better than a random ranking of the 120 items (Recall@10 10/120 = 0.083); measured with OMP_NUM_THREADS=1:
    # side 0.138, top 0.138, frozen 0.163 (the tiny BERT is random-initialised: the heads learn what there is).
    assert report["metrics"]["model"]["recall@10"] > 10 / 120, report["metrics"]["model"]
    if method == "side":
        passes.clear()
        again = run(cfg, tmp_path / "again", progress=False, summary=False)
        assert passes == []  # the second run reads the cache only
        assert again["metrics"]["model"] == report["metrics"]["model"]

    model, manifest = load_package(tmp_path / "run" / "adapter")
    assert manifest["modalities"]["text"]["method"]["name"] == method.split("-")[0]
    data = load_data(cfg)
    from crossrec_peft.data import make_split

    split = make_split(data, cfg.data)
    features = catalog_features(model, data, cfg, progress=False)
    content = encode_catalog(model, features, len(data.item_ids), 64, progress=False)
    held_out = HeldOutEvaluation(split.test, split.train_item_counts(len(data.item_ids)), list(cfg.eval.ks), seed=cfg.seed)
    assert held_out.run("model", model_scorer(model, content, cfg.model.max_history)) == report["metrics"]["model"]
