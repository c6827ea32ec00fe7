"""Mixed-domain batches: one pass over a shared backbone, each row with its own domain's adapter, equal to
each domain's package loaded on its own (load_package: peft's own LoRA/IA3 layers, our Adapted modules)."""

from __future__ import annotations

import pytest
import torch

from crossrec_peft.index import load_catalog
from crossrec_peft.package import load_package
from tests._packages import alone_scores, make_package, recommender_with
from tests.conftest import TINY_CLIP_IMAGE, small_layout

DOMAINS = ["lora", "lora8", "ia3", "bottleneck", "frozen", "lora_bias"]
SHARING = DOMAINS[:-1]  # lora_bias trains the backbone's own biases: its domain gets its own backbone


@pytest.fixture(scope="module")
def setup(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("routing")
    data = small_layout(root / "data", num_items=16)
    packages = {m: make_package(tiny_bert, root / "pk", m, m, seed=i, data=data) for i, m in enumerate(DOMAINS)}
    return recommender_with(packages), packages, data


def test_one_backbone_for_every_domain(setup):
    rec, _, _ = setup
    assert rec.domains == DOMAINS
    assert len(rec._backbones) == 1
    backbones = {id(rec._domains[d].model.modalities["text"].backbone) for d in SHARING}
    assert len(backbones) == 1
    assert all(rec.own_backbones(d) == {} for d in SHARING)


def test_lora_with_trained_biases_gets_its_own_backbone(setup):
    """peft keeps LoRA's trained biases in the base layers: sharing would leak them into every domain, so
    the method says why it cannot share and the domain gets its own copy (the shared one stays untouched)."""
    rec, packages, data = setup
    reason = rec.own_backbones("lora_bias")["text"]
    assert "bias 'all'" in reason and "own bias vectors" in reason
    own = rec._domains["lora_bias"].model.modalities["text"].backbone
    shared = rec._backbones[next(iter(rec._backbones))]
    assert own is not shared.backbone and "lora_bias" not in shared.domains
    shared_bias = dict(shared.backbone.named_parameters())["model.base_model.model.encoder.layer.0.attention.self.query.base_layer.bias"]
    own_bias = dict(own.named_parameters())["model.base_model.model.encoder.layer.0.attention.self.query.base_layer.bias"]
    assert not torch.allclose(shared_bias, own_bias)  # the trained biases stayed with their domain


def test_sharing_backbone_refuses_a_method_that_cannot_share(setup, tiny_bert):
    from crossrec_peft.errors import PackageError
    from crossrec_peft.methods.peft_methods import Lora, LoraOptions

    _, packages, _ = setup
    from crossrec_peft.backbones.text import TextBackboneOptions, hf
    from crossrec_peft.model.routing import SharedBackbone

    shared = SharedBackbone(hf(TextBackboneOptions(max_length=16), str(tiny_bert)))
    with pytest.raises(PackageError, match="cannot share backbone .*bias 'all'"):
        shared.add("x", Lora(LoraOptions(r=4, bias="all")), packages["lora_bias"], {})
    assert shared.domains == []


def test_mixed_batch_equals_each_domain_alone(setup):
    rec, packages, data = setup
    histories = [["i1", "i2"], ["i3"], ["i5", "i6", "i7"], ["i0", "i4"], ["i9", "i10"], ["i2", "i11"], ["i12"]]
    domains = ["lora", "ia3", "bottleneck", "lora8", "frozen", "lora_bias", "lora"]
    candidates = ["i0", "i4", "i8", "i11", "i15", "i13"]
    mixed = rec.score(histories, candidates, domains=domains)
    for row, (history, domain) in enumerate(zip(histories, domains)):
        expected = alone_scores(packages[domain], data, history, candidates)
        assert torch.allclose(mixed[row], expected, atol=1e-5), (domain, mixed[row], expected)
    # The adapters really differ: routing a row through another domain's adapter changes its scores.
    same_history = rec.score([histories[0]] * len(DOMAINS), candidates, domains=DOMAINS)
    frozen = DOMAINS.index("frozen")
    for i, domain in enumerate(DOMAINS):
        if i != frozen:
            assert (same_history[i] - same_history[frozen]).abs().max() > 1e-3, domain


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
    from crossrec_peft.model.routing import ModuleRoutes, Route

    torch.manual_seed(0)
    route, module = Route(), torch.nn.Identity()
    routes = ModuleRoutes(module, route, "identity")
    adapter = BottleneckAdapter(8, 4, "relu")
    torch.nn.init.normal_(adapter.up.weight)
    routes.add("a", adapter, on_input=False)
    x = torch.randn(4, 3, 8)
    original = x.clone()
    route.groups = {"a": torch.tensor([0, 2]), "b": torch.tensor([1, 3])}
    with torch.no_grad():
        out = module(x)
    assert torch.equal(x, original)
    assert torch.allclose(out[[0, 2]], adapter(x[[0, 2]])) and torch.equal(out[[1, 3]], x[[1, 3]])


@torch.no_grad()
def test_own_image_tower_beside_shared_text(tiny_bert, setup, tmp_path):
    """The e-commerce recipe's model with the tiny CLIP image tower trained whole (LoRA text on the shared
    backbone, attention fusion) mixed with a text-only domain equals each package loaded alone, images included."""
    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.model import build_model
    from crossrec_peft.package import export_package

    rec, packages, data = setup
    cfg = load_config(recipes.path("ecommerce"), [f"model.modalities.text.backbone.name=hf:{tiny_bert}",
                                                 "model.modalities.text.backbone.max_length=16", "model.head_rank=4",
                                                 *(f"{k}={v}" for k, v in TINY_CLIP_IMAGE.items())])
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
        assert torch.allclose(scores[1], alone_scores(packages["lora"], data, history, candidates), atol=1e-5)
    finally:
        rec._domains["shop"].shared["text"].remove("shop")
        del rec._domains["shop"]


@torch.no_grad()
def test_method_without_own_share_runs_through_a_view(tiny_bert, setup, tmp_path):
    """A method that does not override `share` (here bottleneck adapters registered again without their
    routed hooks) gets a view: its own module tree over the shared frozen tensors, loaded as load_package
    would; its rows in a mixed batch equal its package alone, and nothing is copied."""
    from crossrec_peft import registry
    from crossrec_peft.methods.base import Method
    from crossrec_peft.methods.bottleneck import Bottleneck, BottleneckOptions
    from tests import _packages

    class Viewed(Bottleneck):
        share = Method.share

    registry.methods.register("bottleneck_view", options=BottleneckOptions)(Viewed)
    _packages.METHODS["viewed"] = {"name": "bottleneck_view", "kind": "houlsby", "size": 8}
    rec, packages, data = setup
    try:
        package = make_package(tiny_bert, tmp_path, "viewed", "viewed", seed=11, data=data)
        rec.load_adapter(package)
        shared = rec._domains["viewed"].shared["text"]
        assert shared is rec._domains["lora"].shared["text"] and "viewed" in shared.views
        view_params = {id(p) for p in shared.views["viewed"].parameters()}
        frozen = {id(p) for n, p in shared.backbone.named_parameters() if "lora_" not in n}
        assert frozen and frozen <= view_params  # the frozen tensors are shared, not copied
        histories, candidates = [["i1", "i2"], ["i3", "i4"], ["i5"]], ["i0", "i8", "i9", "i10"]
        scores = rec.score(histories, candidates, domains=["viewed", "lora", "viewed"])
        assert torch.allclose(scores[0], alone_scores(package, data, histories[0], candidates), atol=1e-5)
        assert torch.allclose(scores[1], alone_scores(packages["lora"], data, histories[1], candidates), atol=1e-5)
        assert torch.allclose(scores[2], alone_scores(package, data, histories[2], candidates), atol=1e-5)
    finally:
        if "viewed" in rec._domains:
            rec._domains["viewed"].shared["text"].remove("viewed")
            del rec._domains["viewed"]
        registry.methods._entries.pop("bottleneck_view", None)
        _packages.METHODS.pop("viewed", None)
