"""Mixed-domain batches: one pass over a shared backbone, each row with its own domain's adapter, equal to
each domain's package loaded on its own (load_package: peft's own LoRA/IA3 layers, our Adapted modules)."""

from __future__ import annotations

import pytest
import torch

from crossrec_peft.index import load_catalog
from crossrec_peft.package import load_package
from crossrec_peft.recommender import Recommender
from tests._packages import make_package
from tests.conftest import small_layout

DOMAINS = ["lora", "lora8", "ia3", "bottleneck", "frozen"]


@pytest.fixture(scope="module")
def setup(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("routing")
    data = small_layout(root / "data", num_items=16)
    packages = {m: make_package(tiny_bert, root / "pk", m, m, seed=i, data=data) for i, m in enumerate(DOMAINS)}
    rec = Recommender(device="cpu")
    for m in DOMAINS:
        rec.load_adapter(packages[m])
    return rec, packages, data


_ALONE: dict = {}


@torch.no_grad()
def reference_scores(package, data, history: list[str], candidates: list[str]) -> torch.Tensor:
    """Scores from the domain's package loaded alone, through the model's own towers."""
    if package not in _ALONE:
        _ALONE[package] = load_package(package)[0]
    model = _ALONE[package]
    catalog = load_catalog(data)
    ids = history + candidates
    columns = catalog.columns(["title", "category"], catalog.lookup(ids))
    content = model.encode_content(model.collate_items(model.featurize(columns), torch.arange(len(ids))))
    user = model.user_vectors(content[: len(history)].unsqueeze(0), torch.ones(1, len(history), dtype=torch.bool))[0]
    return model.item_vectors(content[len(history) :]) @ user


def test_one_backbone_for_every_domain(setup):
    rec, _, _ = setup
    assert rec.domains == DOMAINS
    assert len(rec._backbones) == 1
    backbones = {id(rec._domains[d].model.modalities["text"].backbone) for d in DOMAINS}
    assert len(backbones) == 1


def test_mixed_batch_equals_each_domain_alone(setup):
    rec, packages, data = setup
    histories = [["i1", "i2"], ["i3"], ["i5", "i6", "i7"], ["i0", "i4"], ["i9", "i10"], ["i2", "i11"], ["i12"]]
    domains = ["lora", "ia3", "bottleneck", "lora8", "frozen", "ia3", "lora"]
    candidates = ["i0", "i4", "i8", "i11", "i15", "i13"]
    mixed = rec.score(histories, candidates, domains=domains)
    for row, (history, domain) in enumerate(zip(histories, domains)):
        expected = reference_scores(packages[domain], data, history, candidates)
        assert torch.allclose(mixed[row], expected, atol=1e-5), (domain, mixed[row], expected)
    # The adapters really differ: routing a row through another domain's adapter changes its scores.
    same_history = rec.score([histories[0]] * len(DOMAINS), candidates, domains=DOMAINS)
    for i, domain in enumerate(DOMAINS[:-1]):
        assert (same_history[i] - same_history[-1]).abs().max() > 1e-3, domain


def test_shared_backbone_routes_rows(setup):
    """At the backbone: interleaved rows of three domains equal each domain's rows run alone."""
    rec, _, data = setup
    backbone = rec._backbones[next(iter(rec._backbones))]
    model = rec._domains["lora"].model
    catalog = load_catalog(data)
    features = model.featurize(catalog.columns(["title", "category"], list(range(9))))
    inputs = model.collate_items(features, torch.arange(9))["text"]
    domains = ["lora", "ia3", "bottleneck"] * 3
    mixed, _ = backbone(inputs, domains)
    for domain in set(domains):
        rows = torch.tensor([i for i, d in enumerate(domains) if d == domain])
        alone, _ = backbone({k: v[rows] for k, v in inputs.items()}, [domain] * len(rows))
        assert torch.allclose(mixed[rows], alone, atol=1e-5), domain
    base, _ = backbone(inputs, ["frozen"] * 9)
    assert not torch.allclose(mixed, base, atol=1e-3)


def test_removed_domain_leaves_the_others(tiny_bert, setup, tmp_path):
    rec, packages, data = setup
    histories, candidates = [["i1", "i2"], ["i3", "i4"]], ["i0", "i8", "i9"]
    before = rec.score(histories, candidates, domains=["lora", "bottleneck"])
    extra = make_package(tiny_bert, tmp_path, "extra", "bottleneck", seed=9, data=data)
    rec.load_adapter(extra)
    backbone = rec._domains["extra"].shared["text"]
    backbone.remove("extra")
    del rec._domains["extra"]
    assert torch.allclose(rec.score(histories, candidates, domains=["lora", "bottleneck"]), before, atol=1e-6)


def test_identity_module_output_is_not_changed_in_place():
    """A bottleneck adapter may sit on a module that returns its input (nn.Identity): routing a mixed batch
    must not write into that input."""
    from crossrec_peft.methods.bottleneck import BottleneckAdapter
    from crossrec_peft.model.routing import _ModuleRoutes, _Route

    torch.manual_seed(0)
    route, module = _Route(), torch.nn.Identity()
    routes = _ModuleRoutes(module, route, "identity")
    adapter = BottleneckAdapter(8, 4, "relu")
    torch.nn.init.normal_(adapter.up.weight)
    routes.add_adapter("a", adapter)
    x = torch.randn(4, 3, 8)
    original = x.clone()
    route.groups = {"a": torch.tensor([0, 2]), "b": torch.tensor([1, 3])}
    with torch.no_grad():
        out = module(x)
    assert torch.equal(x, original)
    assert torch.allclose(out[[0, 2]], adapter(x[[0, 2]])) and torch.equal(out[[1, 3]], x[[1, 3]])


@torch.no_grad()
def test_own_image_tower_beside_shared_text(tiny_bert, setup, tmp_path):
    """The e-commerce recipe's model (LoRA text on the shared backbone, an image tower trained whole, attention
    fusion) mixed with a text-only domain equals each package loaded alone, images included."""
    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.model import build_model
    from crossrec_peft.package import export_package

    rec, packages, data = setup
    cfg = load_config(recipes.path("ecommerce"), [f"model.modalities.text.backbone.name=hf:{tiny_bert}",
                                                 "model.modalities.text.backbone.max_length=16", "model.head_rank=4"])
    torch.manual_seed(5)
    model = build_model(cfg.model)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(0.05 * torch.randn_like(p))
    package = export_package(model.eval(), cfg, tmp_path / "shop", data_summary={"source": str(data)})
    rec.load_adapter(package, name="shop")
    try:
        assert rec._domains["shop"].shared["text"] is rec._domains["lora"].shared["text"]
        assert "image" not in rec._domains["shop"].shared
        history, candidates = ["i1", "i2", "i3"], ["i4", "i5", "i6", "i7"]
        scores = rec.score([history, history], candidates, domains=["shop", "lora"])
        alone, _ = load_package(package)
        catalog = load_catalog(data)
        ids = history + candidates
        columns = catalog.columns(["title", "category", "image"], catalog.lookup(ids))
        from crossrec_peft.backbones.base import FeatureContext

        features = alone.featurize(columns, FeatureContext(item_ids=ids, root=data))
        content = alone.encode_content(alone.collate_items(features, torch.arange(len(ids))))
        user = alone.user_vectors(content[:3].unsqueeze(0), torch.ones(1, 3, dtype=torch.bool))[0]
        assert torch.allclose(scores[0], alone.item_vectors(content[3:]) @ user, atol=1e-5)
        assert torch.allclose(scores[1], reference_scores(packages["lora"], data, history, candidates), atol=1e-5)
    finally:
        rec._domains["shop"].shared["text"].remove("shop")
        del rec._domains["shop"]
