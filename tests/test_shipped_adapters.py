"""The adapter packages shipped in adapters/: intact, small, documented, and still reproducing the test
metrics recorded in their manifests on demo data regenerated from their recorded config.

The reproduction is evaluation only (no training): the demo catalog is regenerated into the test's own
cache, the package is loaded onto freshly loaded backbones, and the test split is ranked as the run that
exported it ranked it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrec_peft import recipes
from crossrec_peft.backbones.effnet_lite import BUNDLED
from crossrec_peft.config import load_config
from crossrec_peft.data import load_data, make_split
from crossrec_peft.evaluation import HeldOutEvaluation, encode_catalog, model_scorer
from crossrec_peft.package import TOWER_SUFFIX, load_package, verify_package
from crossrec_peft.pipeline import catalog_features

ADAPTERS = Path(__file__).resolve().parent.parent / "adapters"
SHIPPED = ["ecommerce", "finance", "video"]
MIB = 2**20


def test_every_domain_is_shipped_as_data_only():
    assert sorted(p.name for p in ADAPTERS.iterdir() if p.is_dir()) == sorted(SHIPPED)
    assert not list(ADAPTERS.rglob("*.py")), "adapters/ holds data, not code"


@pytest.mark.parametrize("domain", SHIPPED)
def test_package_is_intact_small_and_documented(domain):
    from huggingface_hub import ModelCard

    directory = ADAPTERS / domain
    manifest = verify_package(directory)  # every file's sha256, no pickles
    assert manifest["domain"] == domain and manifest["parent"] is None
    modalities = manifest["modalities"]
    assert modalities["text"]["backbone"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    # The package was trained with the image tower its recipe now ships (recipes/<domain>.yaml).
    recipe = load_config(recipes.path(domain), name=domain).model.modalities.image
    image = modalities["image"]
    assert (image["backbone"]["id"], image["method"]["name"]) == (recipe.backbone.name, recipe.method.name)
    towers = set(manifest["weights"]["towers"].values())
    if recipe.backbone.name in BUNDLED:
        # A bundled pretrained tower, frozen (`side` trains beside it): identified by its converted weights'
        # sha256, none of it stored.
        assert image["pretrained"] and image["backbone"]["sha256"] == BUNDLED[recipe.backbone.name].converted_sha256
        assert not towers
    else:
        # A tower without a pretrained base (trained from scratch): its own file, small, sized apart.
        assert manifest["weights"]["towers"] == {"image": f"image{TOWER_SUFFIX}"} and not image["pretrained"]
        assert (directory / f"image{TOWER_SUFFIX}").stat().st_size == manifest["sizes"]["tower_bytes"]["image"] < 1 * MIB
    adapter = sum(p.stat().st_size for p in directory.rglob("*.safetensors") if p.name not in towers)
    # Everything trained on top of pretrained backbones: under 2.5 MB per domain (LoRA on MiniLM 0.3 MB; the
    # fusion and the heads, of which the image projection reads Lite0's 1,280 pooled features, 1.2 MB; finance's
    # side network over Lite0's stages 0.9 MB more).
    assert adapter == manifest["sizes"]["adapter_bytes"] < 2.5 * MIB
    card = ModelCard.load(directory / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert domain in card.data.tags
    recorded = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert recorded == {m: manifest["metrics"]["model"][f"{m}@10"] for m in ("recall", "ndcg", "mrr")}
    if towers:
        assert "`image` tower, trained from scratch" in card.text
    else:
        assert f"frozen `{recipe.backbone.name}`" in card.text


@pytest.mark.parametrize("domain", SHIPPED)
def test_reproduces_recorded_metrics_on_regenerated_demo_data(domain):
    directory = ADAPTERS / domain
    model, manifest = load_package(directory)
    cfg = load_config(manifest["config"])
    assert cfg.data.path is None, "shipped adapters are trained on the built-in demo data"
    data = load_data(cfg)  # regenerated: the tests' demo cache starts empty
    assert data.summary()["interactions"] == manifest["data"]["interactions"]
    from crossrec_peft.package import data_fingerprint

    assert data_fingerprint(data.source) == manifest["data"]["sha256"], "the demo generator changed: retrain the shipped adapter"
    split = make_split(data, cfg.data)
    num_items = len(data.item_ids)
    content = encode_catalog(model, catalog_features(model, data, cfg), num_items, cfg.train.eval_batch_size, progress=False)
    held_out = HeldOutEvaluation(split.test, split.train_item_counts(num_items), list(cfg.eval.ks), seed=cfg.seed)
    metrics = held_out.run("model", model_scorer(model, content, cfg.model.max_history))
    recorded = manifest["metrics"]["model"]
    for key in ("recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20"):
        # Same machine class, same order of operations; the tolerance only absorbs rank flips of near-ties
        # from float summation order (one flip among 3,000 users moves NDCG by ~3e-4).
        assert metrics[key] == pytest.approx(recorded[key], abs=1e-3), (key, json.dumps(metrics), json.dumps(recorded))
    assert metrics["ndcg@10"] > 2 * manifest["metrics"]["untuned"]["ndcg@10"]


def test_readme_example_swaps_the_three_shipped_domains_on_one_backbone(monkeypatch, capsys):
    """The README's swap example, run as written (from the repository root), then the promises behind it:
    MiniLM loaded once for the three domains, each domain recommending from its own catalog, and a batch
    whose rows belong to different domains scoring as each domain does alone."""
    import re

    import torch

    root = ADAPTERS.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Swapping domains on one backbone", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(root)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102  (our own README)
    printed = capsys.readouterr().out
    rec = scope["rec"]
    assert rec.domains == ["ecommerce", "finance", "video"] and rec.domain == "video"
    # One MiniLM for every domain, one EfficientNet-Lite0 for e-commerce and video; finance's side network reads
    # Lite0's stage states, which a shared pass does not return, so finance loads its own Lite0.
    assert len(rec._backbones) == 2 and list(rec.own_backbones("finance")) == ["image"]
    shown = eval(printed.strip().splitlines()[-1])  # noqa: S307  the printed [(item_id, score), ...]
    assert len(shown) == 5 and all(i.startswith("V") and i not in ("V0012", "V0345") for i, _ in shown)

    histories = {}
    for domain in rec.domains:
        rec.set_domain(domain)
        ids = rec._catalog(rec._get(domain)).item_ids  # the demo catalog the package was trained on
        histories[domain] = [ids[1], ids[2], ids[3]]
        top = rec.recommend(history=histories[domain], k=10)
        catalog = set(rec._get(domain).index.item_ids)
        assert len(top) == 10 and all(i in catalog and i not in histories[domain] for i, _ in top)
        assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)

    rows = ["video", "finance", "ecommerce", "finance"]
    candidates = {d: histories[d][:2] for d in rec.domains}
    mixed = rec.score([histories[d] for d in rows], [candidates[d] for d in rows], domains=rows)
    for i, d in enumerate(rows):
        alone = rec.score([histories[d]], [candidates[d]], domains=[d])
        torch.testing.assert_close(mixed[i], alone[0], atol=1e-5, rtol=1e-4)
