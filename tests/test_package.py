"""Adapter packages: files, manifest, plain-peft loading, integrity checks and atomic export."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from crossrec_peft import recipes
from crossrec_peft.config import load_config
from crossrec_peft.errors import PackageError
from crossrec_peft.model import build_model
from crossrec_peft.package import MANIFEST, WEIGHTS, export_package, load_package, trainable_state


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    cfg = load_config(recipes.path("ecommerce"), [f"model.modalities.text.backbone.name=hf:{tiny_bert}", "model.head_rank=4"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    directory = export_package(model, cfg, tmp_path_factory.mktemp("pkg") / "ecommerce", metrics={"model": {"ndcg@10": 0.5}})
    return model, directory, cfg


@pytest.fixture
def package(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported[1], copy)
    return copy


def test_layout_and_manifest(exported, tiny_bert):
    model, directory, _ = exported
    names = {p.name for p in directory.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", WEIGHTS, MANIFEST, "README.md"} <= names
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["domain"] == "ecommerce"
    assert set(manifest["files"]) == {n for n in names if n != MANIFEST}
    assert manifest["modalities"]["text"]["backbone"]["sha256"]
    peft_config = json.loads((directory / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == str(tiny_bert)
    assert not list(directory.parent.glob(".*")), "export left temporary directories behind"
    assert directory.stat().st_mode & 0o755 == 0o755  # not mkdtemp's private 0700
    # Our file holds the heads and temperature, never the LoRA tensors (peft's file has those).
    from safetensors.torch import load_file

    ours = load_file(str(directory / WEIGHTS))
    assert not any("lora_" in k for k in ours) and "log_temperature" in ours and "item_head.up.weight" in ours
    assert set(ours) == set(trainable_state(model))


def test_model_card_parses_with_huggingface_hub(exported):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exported[1] / "README.md")
    assert card.data.library_name == "peft"
    assert "crossrec-peft" in card.data.tags and "ecommerce" in card.data.tags
    assert "| model |" in card.text


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


def test_tampered_file_is_named(package):
    weights = package / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=f"{WEIGHTS}: sha256 does not match"):
        load_package(package)


def test_truncated_and_missing_files(package):
    (package / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(PackageError, match="adapter_model.safetensors: sha256"):
        load_package(package)
    (package / "adapter_model.safetensors").unlink()
    with pytest.raises(PackageError, match="'adapter_model.safetensors' listed in crossrec.json is missing"):
        load_package(package)


def test_pickle_files_refused(package):
    (package / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(PackageError, match="pickle files .*pytorch_model.bin"):
        load_package(package)


def test_other_backbone_refused(package):
    manifest = json.loads((package / MANIFEST).read_text())
    manifest["modalities"]["text"]["backbone"]["sha256"] = "0" * 64
    (package / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="trained on backbone"):
        load_package(package)


def test_unknown_format_version(package):
    manifest = json.loads((package / MANIFEST).read_text())
    manifest["format_version"] = 99
    (package / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="format version 99"):
        load_package(package)


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
