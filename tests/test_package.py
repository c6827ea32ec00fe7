"""Adapter packages: files, manifest, model card, plain-peft loading, integrity checks, backbone checks,
format migration and atomic export."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from crossrec_peft import recipes
from crossrec_peft.config import load_config
from crossrec_peft.errors import PackageError
from crossrec_peft.model import build_model
from crossrec_peft.package import (
    FORMAT_VERSION, MANIFEST, WEIGHTS, export_package, load_package, package_id, read_manifest, sha256, exported_state,
)

from ._packages import perturb, write_manifest
from .conftest import TINY_CLIP_IMAGE


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    """The e-commerce recipe's text + image model on the tiny BERT, with the tiny CLIP image tower trained whole
    (stored whole in the package), moved off its initial values and exported."""
    tiny_clip = [f"{k}={v}" for k, v in TINY_CLIP_IMAGE.items()]
    cfg = load_config(recipes.path("ecommerce"), [f"model.modalities.text.backbone.name=hf:{tiny_bert}", "model.head_rank=4", *tiny_clip])
    torch.manual_seed(0)
    model = perturb(build_model(cfg.model), 0.05)
    model.eval()
    metrics = {"model": {"recall@10": 0.25, "ndcg@10": 0.5, "mrr@10": 0.125}, "popularity": {"recall@10": 0.1, "ndcg@10": 0.05, "mrr@10": 0.02}}
    data = {"source": "/nowhere/ecommerce-demo", "items": 12, "users": 8, "interactions": 40, "history_length": {"min": 5, "median": 5.0, "max": 5}}
    directory = export_package(model, cfg, tmp_path_factory.mktemp("pkg") / "ecommerce", metrics=metrics, data_summary=data)
    return model, directory, cfg


@pytest.fixture
def package(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported[1], copy)
    return copy


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def edit_manifest(directory, change) -> None:
    """Change crossrec.json and re-seal it (package_sha256), as a consistent package with that content."""
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    write_manifest(directory, manifest)


def test_layout_and_manifest(exported, tiny_bert):
    model, directory, cfg = exported
    names = {p.name for p in directory.iterdir()}
    assert names == {"adapter_config.json", "adapter_model.safetensors", WEIGHTS, "image_tower.safetensors", MANIFEST, "README.md"}
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 3 and manifest["domain"] == "ecommerce"
    assert manifest["files"] == {n: sha256(directory / n) for n in names if n != MANIFEST}
    assert manifest["id"] == package_id(manifest) and manifest["id"].startswith("ecommerce/ecommerce@")
    assert manifest["parent"] is None and manifest["config"]["train"]["lr"] == cfg.train.lr
    text = manifest["modalities"]["text"]
    assert text["backbone"]["sha256"] and text["backbone"]["id"] == str(tiny_bert) and text["pretrained"]
    assert manifest["modalities"]["image"]["pretrained"] is False
    assert {"torch", "peft", "transformers", "safetensors", "huggingface_hub"} <= set(manifest["versions"])
    assert manifest["weights"] == {"adapter": WEIGHTS, "towers": {"image": "image_tower.safetensors"}}
    assert manifest["sizes"]["adapter_bytes"] == (directory / WEIGHTS).stat().st_size + (directory / "adapter_model.safetensors").stat().st_size
    assert manifest["sizes"]["tower_bytes"] == {"image": (directory / "image_tower.safetensors").stat().st_size}
    peft_config = json.loads((directory / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == str(tiny_bert)
    assert not list(directory.parent.glob(".*")), "export left temporary directories behind"
    assert directory.stat().st_mode & 0o755 == 0o755  # not mkdtemp's private 0700
    # Heads, fusion and temperature in our file; the whole from-scratch tower in its own; LoRA only in peft's.
    ours, tower = load_file(str(directory / WEIGHTS)), load_file(str(directory / "image_tower.safetensors"))
    assert not any("lora_" in k for k in [*ours, *tower]) and "log_temperature" in ours and "item_head.up.weight" in ours
    assert tower and all(k.startswith("modalities.image.backbone.") for k in tower)
    assert not any(k.startswith("modalities.image.") for k in ours)
    assert set(ours) | set(tower) == set(exported_state(model))


def test_reload_gives_the_same_model(exported):
    model, directory, _ = exported
    reloaded, manifest = load_package(directory)
    assert same_weights(model, reloaded)
    assert not any(p.requires_grad for p in reloaded.parameters())


def test_model_card_parses_with_huggingface_hub(exported):
    from huggingface_hub import ModelCard

    _, directory, _ = exported
    manifest = read_manifest(directory)
    card = ModelCard.load(directory / "README.md")
    assert card.data.library_name == "peft"
    assert {"crossrec-peft", "recommendation", "ecommerce", "lora", "full"} <= set(card.data.tags)
    assert card.data.base_model is None  # a local directory is not a Hub id
    assert card.data.datasets == ["ecommerce-demo"] and card.data.metrics == ["recall", "ndcg", "mrr"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"recall": 0.25, "ndcg": 0.5, "mrr": 0.125}
    assert "| model | 0.2500 | 0.5000 | 0.1250 |" in card.text and "| popularity |" in card.text
    assert manifest["id"] in card.text and "Recommender.from_pretrained" in card.text
    assert "`image` tower, trained from scratch" in card.text and "image_tower.safetensors" in card.text


def test_model_card_names_hub_backbones():
    """A Hub id becomes base_model (what links the adapter to its base on the Hub)."""
    from huggingface_hub import ModelCard

    from crossrec_peft.package import write_model_card

    manifest = {
        "domain": "video", "format_version": 2, "id": "video/x@0", "params": {"trainable": 1, "total": 2},
        "modalities": {"text": {"backbone": {"id": "sentence-transformers/all-MiniLM-L6-v2"}, "method": {"name": "lora"}}},
    }
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        write_model_card(Path(tmp), manifest)
        card = ModelCard.load(Path(tmp) / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "No metrics recorded." in card.text


def test_plain_peft_loads_the_lora_part(exported, tiny_bert):
    from peft import PeftModel
    from transformers import AutoModel

    model, directory, _ = exported
    plain = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_bert), str(directory))
    ours = model.modalities["text"].backbone.model
    ids = torch.tensor([[101, 2000, 2001, 102]])
    with torch.no_grad():
        a = plain(input_ids=ids).last_hidden_state
        b = ours(input_ids=ids).last_hidden_state
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, AutoModel.from_pretrained(tiny_bert)(input_ids=ids).last_hidden_state, atol=1e-4)


@pytest.mark.parametrize("name", [WEIGHTS, "image_tower.safetensors", "adapter_config.json", "README.md"])
def test_tampered_file_is_named(package, name):
    path = package / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=f"{name}: sha256 does not match"):
        load_package(package)


def test_truncated_and_missing_files(package):
    (package / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(PackageError, match="adapter_model.safetensors: sha256"):
        load_package(package)
    (package / "adapter_model.safetensors").unlink()
    with pytest.raises(PackageError, match="'adapter_model.safetensors' listed in crossrec.json is missing"):
        load_package(package)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "extra/weights.pt", "state.pkl"])
def test_pickle_files_refused(package, name):
    (package / name).parent.mkdir(exist_ok=True)
    (package / name).write_bytes(b"\x80\x04")
    with pytest.raises(PackageError, match=f"pickle files \\({name}\\); pickle can run code"):
        load_package(package)


def test_other_backbone_refused_by_hash_and_by_id(package, tiny_bert):
    edit_manifest(package, lambda m: m["modalities"]["text"]["backbone"].update(sha256="0" * 64))
    with pytest.raises(PackageError, match=f"trained on backbone '{tiny_bert}', sha256 000000000000…, .* but the backbone here is '{tiny_bert}', sha256 [0-9a-f]{{12}}"):
        load_package(package)
    # The recorded id is what decides what "the same backbone" is, whatever the config says.
    from crossrec_peft.package import check_backbone

    with pytest.raises(PackageError, match="trained on backbone 'org/a', revision v1, but the backbone here is 'org/a', revision v2 \\(revision differs\\)"):
        check_backbone("pkg", "text", {"id": "org/a", "revision": "v1"}, {"id": "org/a", "revision": "v2"})
    with pytest.raises(PackageError, match="'org/a'.*'org/b' \\(id differs\\)"):
        check_backbone("pkg", "text", {"id": "org/a"}, {"id": "org/b"})
    check_backbone("pkg", "text", {"id": "org/a", "revision": None}, {"id": "org/a", "revision": "v2"})  # unknown: not compared


def test_wrong_shapes_fail_naming_both_backbones(exported, tmp_path, tiny_bert):
    """A backbone whose weights' hash was not recorded (loaded by Hub id) and that changed since: the shapes
    are the last line of defence, and there is no way to force past them."""
    from transformers import BertConfig, BertModel

    model, directory, cfg = exported
    base = tmp_path / "bert"
    shutil.copytree(tiny_bert, base)
    package = tmp_path / "pkg"
    cfg2 = load_config(recipes.path("ecommerce"), [f"model.modalities.text.backbone.name=hf:{base}", "model.head_rank=4"])
    export_package(build_model(cfg2.model), cfg2, package)
    for f in base.glob("*.safetensors"):
        f.unlink()
    BertModel(BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).save_pretrained(base)
    with pytest.raises(PackageError, match="sha256 differs"):
        load_package(package)
    edit_manifest(package, lambda m: m["modalities"]["text"]["backbone"].update(sha256=None))
    with pytest.raises(PackageError, match=f"trained on backbone '{base}', hidden size 32, but the backbone here is '{base}', .*hidden size 48"):
        load_package(package)
    edit_manifest(package, lambda m: m["modalities"]["text"]["backbone"].update(hidden_size=None))
    with pytest.raises(PackageError, match=f"do not fit the backbone '{base}'.*hidden size 48.*size mismatch.*no way to force"):
        load_package(package)


def test_newer_and_unknown_format_versions(package):
    edit_manifest(package, lambda m: m.update(format_version=99))
    with pytest.raises(PackageError, match="format version 99 is newer than this crossrec-peft reads \\(format 3\\); upgrade"):
        load_package(package)
    edit_manifest(package, lambda m: m.update(format_version=0))
    with pytest.raises(PackageError, match="format version 0 is not supported .* no migration from it exists.*package-format.md"):
        load_package(package)


def downgrade_to_v1(directory) -> None:
    """Rewrite a package as format version 1 wrote it: every non-peft tensor, towers included, in
    crossrec_weights.safetensors, and a manifest without id, parent, config, weights and sizes."""
    manifest = json.loads((directory / MANIFEST).read_text())
    state = {}
    for f in [WEIGHTS, *manifest["weights"]["towers"].values()]:
        state.update(load_file(str(directory / f)))
        (directory / f).unlink()
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    for key in ("id", "parent", "config", "weights", "sizes", "created"):
        manifest.pop(key)
    for mod in manifest["modalities"].values():
        mod.pop("pretrained")
    manifest["format_version"] = 1
    manifest["files"] = {str(p.relative_to(directory)): sha256(p) for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_version_1_package_loads_through_the_migration(exported, package):
    model = exported[0]
    downgrade_to_v1(package)
    assert json.loads((package / MANIFEST).read_text())["format_version"] == 1
    reloaded, manifest = load_package(package)
    assert same_weights(model, reloaded)
    assert manifest["format_version"] == 3 and manifest["parent"] is None and manifest["id"] == package_id(manifest)
    assert manifest["package_sha256"] is None  # format 1 had no hash of the manifest: edits cannot be detected
    assert manifest["weights"]["towers"] == {} and manifest["modalities"]["image"]["pretrained"] is False
    assert manifest["sizes"]["adapter_bytes"] == sum(p.stat().st_size for p in package.glob("*.safetensors"))


def test_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        load_package(tmp_path / "nothing")
    with pytest.raises(PackageError, match="not a crossrec-peft adapter package"):
        load_package(tmp_path)


def test_reexport_replaces_atomically(exported, tmp_path):
    model, _, cfg = exported
    target = tmp_path / "pkg"
    export_package(model, cfg, target)
    (target / "stale.txt").write_text("from an older export")
    export_package(model, cfg, target)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    load_package(target)


def test_interrupted_export_leaves_nothing_loadable(exported, tmp_path):
    """An export that fails after the weights are written (here: metrics that cannot be written as JSON)
    leaves no package where there was none, and the previous package untouched where there was one."""
    model, _, cfg = exported
    target = tmp_path / "pkg"
    with pytest.raises(TypeError):
        export_package(model, cfg, target, metrics={"model": {"ndcg@10": object()}})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PackageError, match="does not exist"):
        load_package(target)
    export_package(model, cfg, target, metrics={"model": {"ndcg@10": 0.5}})
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(TypeError):
        export_package(model, cfg, target, metrics={"model": {"ndcg@10": object()}})
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    load_package(target)
