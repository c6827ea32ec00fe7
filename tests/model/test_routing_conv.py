"""Mixed-domain batches and swaps on a convolutional image tower (the bundled EfficientNet-Lite0): LoRA on the
pointwise convolutions, IA3 on their channels and bottleneck adapters after blocks, several domains on one
frozen tower, each row equal to its domain's package loaded on its own (as tests/model/test_routing.py does
for the text tower)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.index import load_catalog
from tests._packages import alone_scores, perturb, recommender_with
from tests.conftest import small_layout

METHODS = {
    "lora": {"name": "lora", "r": 4, "layers": [5, 6]},
    "ia3": {"name": "ia3"},
    "bottleneck": {"name": "bottleneck", "size": 8, "points": ["stage5", "stage6"]},
    "frozen": {"name": "frozen"},
}
DOMAINS = list(METHODS)
FIELDS = ["image"]


def image_package(directory, domain: str, method: str, data, seed: int):
    from crossrec_peft import recipes
    from crossrec_peft.config import load_config
    from crossrec_peft.model import build_model
    from crossrec_peft.package import export_package

    raw = OmegaConf.to_container(load_config(recipes.path("ecommerce")))
    raw.update(name=domain, domain="ecommerce")
    raw["data"]["path"] = str(data)
    raw["model"]["modalities"] = {"image": {"fields": FIELDS, "backbone": {"name": "effnet-lite0", "image_size": 32}, "method": METHODS[method]}}
    raw["model"]["fusion"] = {"name": "mean"}
    raw["model"]["head_rank"] = 4
    cfg = load_config(raw)
    cfg.domain = domain
    torch.manual_seed(seed)
    model = perturb(build_model(cfg.model), 0.2)
    return export_package(model.eval(), cfg, directory / domain, data_summary={"source": str(data)})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("routing-conv")
    data = small_layout(root / "data", num_items=16)
    packages = {m: image_package(root / "pk", m, m, data, seed=i) for i, m in enumerate(DOMAINS)}
    return recommender_with(packages), packages, data


def test_one_tower_for_every_domain(setup):
    rec, _, _ = setup
    assert rec.domains == DOMAINS and len(rec._backbones) == 1


def test_mixed_batch_equals_each_domain_alone(setup):
    rec, packages, data = setup
    histories = [["i1", "i2"], ["i3"], ["i5", "i6", "i7"], ["i0", "i4"], ["i9", "i10"], ["i2", "i11"]]
    domains = ["lora", "ia3", "bottleneck", "frozen", "lora", "bottleneck"]
    candidates = ["i0", "i4", "i8", "i11", "i15"]
    mixed = rec.score(histories, candidates, domains=domains)
    for row, (history, domain) in enumerate(zip(histories, domains)):
        expected = alone_scores(packages[domain], data, history, candidates, FIELDS)
        assert torch.allclose(mixed[row], expected, atol=1e-4), (domain, mixed[row], expected)
    # Each adapter really changes the tower's output: the same history scores differently per domain.
    same = rec.score([histories[0]] * len(DOMAINS), candidates, domains=DOMAINS)
    for i, domain in enumerate(DOMAINS[:-1]):
        assert (same[i] - same[-1]).abs().max() > 1e-3, domain


@pytest.mark.parametrize("order", [["bottleneck", "lora", "bottleneck"], ["lora", "ia3", "lora"]])
def test_swapping_domains_gives_each_its_own_scores(setup, order):
    rec, packages, data = setup
    history, candidates = ["i1", "i2", "i3"], ["i4", "i5", "i6"]
    for domain in order:
        rec.set_domain(domain)
        assert torch.allclose(rec.score([history], candidates)[0], alone_scores(packages[domain], data, history, candidates, FIELDS), atol=1e-4), domain


def test_shared_tower_routes_rows_on_channels(setup):
    """At the tower: interleaved rows of three domains equal each domain's rows run alone."""
    rec, _, data = setup
    backbone = next(iter(rec._backbones.values()))
    model = rec._domains["lora"].model
    catalog = load_catalog(data)
    ids = [catalog.item_ids[i] for i in range(9)]
    features = model.featurize(catalog.columns(FIELDS, list(range(9))), FeatureContext(item_ids=ids, root=data))
    inputs = model.collate_items(features, torch.arange(9))["image"]
    domains = ["lora", "ia3", "bottleneck"] * 3
    mixed, _ = backbone(inputs, domains)
    for domain in set(domains):
        rows = torch.tensor([i for i, d in enumerate(domains) if d == domain])
        alone, _ = backbone({k: v[rows] for k, v in inputs.items()}, [domain] * len(rows))
        assert torch.allclose(mixed[rows], alone, atol=1e-4), domain
    base, _ = backbone(inputs, ["frozen"] * 9)
    assert not torch.allclose(mixed, base, atol=1e-3)
