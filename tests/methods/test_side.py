"""`side`: trains from cached layer states only (no backbone run, no gradient into it), starts equal to
`frozen`, selects layers as configured, and exports -> reloads to identical scores."""

from __future__ import annotations

import pytest
import torch

from crossrec_peft.errors import ConfigError
from crossrec_peft.methods.side import select_layers
from crossrec_peft.objectives import InBatchSoftmax, RetrievalOptions
from crossrec_peft.package import export_package, load_package
from crossrec_peft.pipeline import catalog_features  # noqa: F401  (the path recipes take; see test_recipe_cached)
from tests.methods.cached_setup import ITEMS, N, context, count_calls, model_and_batch, raw_embeddings

OPTIONS = [
    {"name": "side"},
    {"name": "side", "layers": "last:1", "bottleneck": 8, "gate": "vector"},
    {"name": "side", "layers": "every:2", "bottleneck": 16},
    {"name": "side", "layers": "0,2", "gate": "scalar", "dropout": 0.0},
]


@pytest.mark.parametrize("method", OPTIONS, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items() if k != "name") or "defaults")
def test_side_trains_without_running_or_touching_the_backbone(tiny_bert, tmp_path, method):
    model, _, batch = model_and_batch(tiny_bert, method, tmp_path)
    backbone = model.modalities["m"].backbone
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    calls = count_calls([backbone.model])
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss, _ = InBatchSoftmax(RetrievalOptions())(model(batch), batch)
    loss.backward()
    side = model.modalities["m"].method_module
    assert all(p.grad is not None for p in side.parameters())
    assert all(not p.requires_grad and p.grad is None for p in backbone.parameters())
    optimizer.step()
    assert calls == [0]  # a training step never ran the backbone
    assert all(torch.equal(p, before[n]) for n, p in backbone.named_parameters())
    assert side.up.weight.abs().sum() > 0  # the side network did learn


def test_untrained_side_equals_frozen(tiny_bert, tmp_path):
    side, features, _ = model_and_batch(tiny_bert, {"name": "side"}, tmp_path, dtype="float32")
    with torch.no_grad():
        emb, present = side.modalities["m"](side.collate_items(features, torch.arange(N))["m"])
    assert present.all()
    torch.testing.assert_close(emb, raw_embeddings(side), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "spec, layers, expected",
    [("all", 6, [0, 1, 2, 3, 4, 5, 6]), ("last:2", 6, [5, 6]), ("every:2", 6, [0, 2, 4, 6]), ("every:4", 6, [2, 6]), ("1, 3", 6, [1, 3])],
)
def test_layer_selection(spec, layers, expected):
    assert select_layers(spec, layers) == expected


@pytest.mark.parametrize("spec, message", [("last:0", "must be all"), ("seven", "must be all"), ("9", "layers 0..6")])
def test_bad_layer_selection_is_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        select_layers(spec, 6)


@pytest.mark.parametrize("cached", [True, False], ids=["cache-dir", "in-memory"])
def test_export_then_reload_gives_identical_scores(tiny_bert, tmp_path, cached):
    from tests.methods.cached_setup import config

    method = {"name": "side", "layers": "every:2", "gate": "vector"}
    model, features, batch = model_and_batch(tiny_bert, method, tmp_path / "cache" if cached else None)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    package = export_package(model, config(tiny_bert, method), tmp_path / "pkg")
    reloaded, manifest = load_package(package)
    assert manifest["modalities"]["m"]["method"] == method  # the layers it reads are in the manifest
    again = reloaded.featurize(ITEMS, context(tmp_path / "cache" if cached else None))
    from crossrec_peft.data.batching import Collator
    from tests.methods.cached_setup import WINDOWS

    with torch.no_grad():
        a, b = model(batch), reloaded(Collator(again, reloaded.collate_items)(WINDOWS))
    assert torch.equal(a["users"], b["users"]) and torch.equal(a["items"], b["items"])


def test_side_on_a_timm_tower_reads_its_cached_stages(tmp_path):
    """On a convnet the side network reads the cached pooled stages (timm's feature levels): the training
    step never runs the tower, an untrained side equals frozen, and the stages it names are the tower's."""
    from omegaconf import OmegaConf

    from crossrec_peft import recipes
    from crossrec_peft.backbones.base import FeatureContext
    from crossrec_peft.cache import CacheSettings
    from crossrec_peft.config import load_config
    from crossrec_peft.data.batching import Collator
    from crossrec_peft.model import build_model
    from tests.conftest import render_images
    from tests.methods.cached_setup import WINDOWS

    names = [f"img/{i}.png" for i in range(N)]
    render_images(tmp_path / "data", names)
    raw = OmegaConf.to_container(load_config(recipes.path("ecommerce"), ["model.head_rank=4"]))
    raw["model"]["modalities"] = {"img": {
        "fields": ["image"],
        "backbone": {"name": "timm:mobilenetv3_small_050", "image_size": 32},
        "method": {"name": "side", "layers": "0,2,4", "bottleneck": 8},
    }}
    raw["model"]["fusion"] = {"name": "mean"}
    torch.manual_seed(0)
    model = build_model(load_config(raw).model)
    context = FeatureContext(item_ids=[str(i) for i in range(N)], root=tmp_path / "data",
                             layer_cache=CacheSettings(root=tmp_path / "cache", dtype="float32", progress=False))
    features = model.featurize({"image": names}, context)
    encoder = model.modalities["img"]
    backbone = encoder.backbone
    side = encoder.method_module
    assert [side.slices[i][1] - side.slices[i][0] for i in range(3)] == [backbone.layer_widths()[i] for i in (0, 2, 4)]

    pixels = backbone.collate(backbone.featurize([names], FeatureContext(item_ids=names, root=tmp_path / "data")), torch.arange(N))
    with torch.no_grad():
        emb, present = encoder(model.collate_items(features, torch.arange(N))["img"])
        assert present.all()
        direct = backbone(pixels["pixel_values"])
        torch.testing.assert_close(emb, direct, atol=1e-5, rtol=1e-5)  # untrained side == frozen

    calls = count_calls([backbone.model])
    model.train()
    batch = Collator(features, model.collate_items)(WINDOWS)
    loss, _ = InBatchSoftmax(RetrievalOptions())(model(batch), batch)
    loss.backward()
    assert calls == [0]
    assert all(p.grad is not None for p in side.parameters())
    assert all(p.grad is None for p in backbone.parameters())
