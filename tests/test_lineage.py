"""Continued fine-tuning: `init_from=ADAPTER` starts a run from an exported package, and the new package
records its parent and the data it was tuned on, so a chain of versions can be traced."""

from __future__ import annotations

import json
import shutil

import pytest

from tests._packages import write_manifest
import torch

from crossrec_peft import recipes
from crossrec_peft.config import load_config
from crossrec_peft.errors import ConfigError, PackageError
from crossrec_peft.model import build_model
from crossrec_peft.package import MANIFEST, data_fingerprint, init_from_package, load_package, read_manifest, sha256
from crossrec_peft.pipeline import run
from tests.conftest import small_layout, tiny_overrides


def overrides(tiny_bert, data, **extra):
    return tiny_overrides(tiny_bert, **{"data.path": data, "eval.baselines": "[untuned]", **extra})


@pytest.fixture(scope="module")
def chain(tiny_bert, tmp_path_factory):
    """A parent tuned on one set of interactions, then a child continued from it on newer ones."""
    root = tmp_path_factory.mktemp("lineage")
    old = small_layout(root / "old")
    new = small_layout(root / "new", num_users=10, length=6)
    parent_cfg = load_config(recipes.path("ecommerce"), overrides(tiny_bert, old), name="shop")
    run(parent_cfg, root / "v1", progress=False, summary=False)
    child_cfg = load_config(recipes.path("ecommerce"), overrides(tiny_bert, new, init_from=root / "v1" / "adapter"), name="shop")
    report = run(child_cfg, root / "v2", progress=False, summary=False)
    return root, old, new, child_cfg, report


def test_child_manifest_records_parent_and_data(chain):
    root, old, new, _, report = chain
    parent, child = read_manifest(root / "v1" / "adapter"), read_manifest(root / "v2" / "adapter")
    assert parent["parent"] is None
    assert child["parent"] == {
        "id": parent["id"], "manifest_sha256": sha256(root / "v1" / "adapter" / MANIFEST), "source": str(root / "v1" / "adapter"),
    }
    assert child["id"] != parent["id"]  # other weights, other id
    assert parent["data"]["sha256"] == data_fingerprint(old) != child["data"]["sha256"] == data_fingerprint(new)
    assert child["data"]["users"] == 10 and child["config"]["init_from"] == str(root / "v1" / "adapter")
    # The run evaluated the parent on the new test cases before training, beside the untuned baseline.
    assert {"model", "untuned", "parent"} <= set(report["metrics"]) and child["metrics"]["parent"] == report["metrics"]["parent"]
    records = [json.loads(line) for line in (root / "v2" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("system") == "parent" and r["epoch"] == 0 for r in records)
    card = (root / "v2" / "adapter" / "README.md").read_text()
    assert f"Continued from `{parent['id']}`" in card


def item_vectors(model, layout):
    """Item vectors of the first items of a layout, as the model scores them."""
    from crossrec_peft.backbones.base import FeatureContext
    from crossrec_peft.data import load_layout

    data = load_layout(layout, ["title", "category", "image"])
    features = model.featurize(data.columns(["title", "category", "image"]), FeatureContext(item_ids=data.item_ids, root=layout))
    with torch.no_grad():
        return model.item_vectors(model.encode_content(model.collate_items(features, torch.arange(6))))


def test_continued_model_starts_from_the_parent(chain, tiny_bert):
    """A fresh model with the parent's weights loaded (what the run trains from) scores exactly like the
    parent package loaded on its own; after training the child differs from it."""
    root, _, new, child_cfg, _ = chain
    torch.manual_seed(1)  # a different random start, which init_from must overwrite entirely
    start = build_model(child_cfg.model).eval()
    init_from_package(start, str(root / "v1" / "adapter"), child_cfg)
    parent, _ = load_package(root / "v1" / "adapter")
    assert torch.allclose(item_vectors(start, new), item_vectors(parent, new), atol=1e-6)
    child, _ = load_package(root / "v2" / "adapter")
    assert not torch.allclose(item_vectors(child, new), item_vectors(parent, new), atol=1e-4)


def test_init_from_checks_model_and_backbone(chain, tiny_bert, tmp_path):
    root, _, new, _, _ = chain
    with pytest.raises(ConfigError, match="'init_from': '.*nowhere' is not an adapter package"):
        load_config(recipes.path("ecommerce"), overrides(tiny_bert, new, init_from=tmp_path / "nowhere"))
    other = load_config(recipes.path("ecommerce"), overrides(tiny_bert, new, init_from=root / "v1" / "adapter", **{"model.head_rank": 8}))
    with pytest.raises(PackageError, match="config differs at model.head_rank \\(8 in the config, 4 in the parent\\)"):
        init_from_package(build_model(other.model), other.init_from, other)
    moved = tmp_path / "parent"
    shutil.copytree(root / "v1" / "adapter", moved)
    manifest = json.loads((moved / MANIFEST).read_text())
    manifest["modalities"]["text"]["backbone"]["sha256"] = "0" * 64
    write_manifest(moved, manifest)
    cfg = load_config(recipes.path("ecommerce"), overrides(tiny_bert, new, init_from=moved))
    with pytest.raises(PackageError, match=f"init_from={moved}: modality 'text' was trained on backbone '{tiny_bert}', sha256 000000000000…"):
        init_from_package(build_model(cfg.model), cfg.init_from, cfg)


@pytest.mark.parametrize("earlier", [False, True], ids=["new-dir", "unfinished-run-dir"])
def test_a_parent_that_does_not_fit_is_refused_before_the_run_dir_is_written(chain, tiny_bert, tmp_path, earlier):
    """The model section is compared with the parent's when the inputs are checked, not after the run started:
    a refused init_from leaves no run directory, and an earlier unfinished run's files as they were."""
    root, _, new, _, _ = chain
    out = tmp_path / "run"
    if earlier:
        out.mkdir()
        (out / "config.yaml").write_text("name: shop\nmodel:\n  head_rank: 4\ntrain:\n  epochs: 1\n")
        (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = {p.name: p.read_bytes() for p in out.iterdir()} if earlier else None
    cfg = load_config(recipes.path("ecommerce"), overrides(tiny_bert, new, init_from=root / "v1" / "adapter", **{"model.head_rank": 8}))
    with pytest.raises(PackageError, match="config differs at model.head_rank"):
        run(cfg, out, progress=False, summary=False)
    if earlier:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else:
        assert not out.exists()
