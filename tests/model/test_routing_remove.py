"""Removing a domain's peft adapter from a shared backbone, or failing to add one, leaves the backbone as it was:
the next LoRA domain loaded onto it scores exactly as on a fresh backbone. (The server removes a domain whose load
failed after its adapter was added; an empty PeftModel left behind used to be wrapped in a second one, and the
next domain's LoRA weights then loaded under the wrong names and were silently lost.)"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from crossrec_peft import Recommender
from crossrec_peft.errors import PackageError
from tests._packages import make_package, write_manifest
from tests.conftest import small_layout

HISTORIES = [["i1", "i2"], ["i3"], ["i5", "i6", "i7"]]
CANDIDATES = ["i0", "i4", "i8", "i11", "i15"]


@pytest.fixture(scope="module")
def packages(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("routing-remove")
    data = small_layout(root / "data", num_items=16)
    return {
        "shop": make_package(tiny_bert, root / "pk", "shop", "lora", seed=1, data=data),
        "bank": make_package(tiny_bert, root / "pk", "bank", "lora8", seed=2, data=data),
        "later": make_package(tiny_bert, root / "pk", "later", "bottleneck", seed=3, data=data),
    }


@pytest.fixture(scope="module")
def clean(packages):
    """The scores of "shop" loaded alone onto a fresh backbone."""
    rec = Recommender(device="cpu")
    rec.load_adapter(packages["shop"])
    return rec.score(HISTORIES, CANDIDATES, domains="shop")


def spoiled(package, tmp_path, edit):
    """A copy of `package` with its peft files edited by `edit(directory)`, re-sealed so that the package's own
    checks pass and the load fails inside peft (after peft has put its layers into the backbone)."""
    directory = shutil.copytree(package, tmp_path / f"spoiled-{package.name}")
    changed = edit(directory)
    manifest = json.loads((directory / "crossrec.json").read_text())
    rel = str(changed.relative_to(directory))
    manifest["files"][rel] = hashlib.sha256(changed.read_bytes()).hexdigest()
    write_manifest(directory, manifest)
    return directory


def wrong_shape(directory):
    path = next(directory.rglob("adapter_model.safetensors"))
    tensors = load_file(str(path))
    tensors[sorted(tensors)[0]] = torch.zeros(3, 3)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def no_target(directory):
    path = next(directory.rglob("adapter_config.json"))
    config = json.loads(path.read_text())
    config["target_modules"] = ["nonexistent_module"]
    path.write_text(json.dumps(config))
    return path


def load_then_remove(rec, packages, tmp_path):
    """What the server does with a load that fails after the adapter was added (its catalog cannot be read)."""
    name = rec.load_adapter(packages["shop"], name="failed")
    for backbone in rec._domains.pop(name).shared.values():
        backbone.remove(name)


def load_fails_in_peft(edit):
    def run(rec, packages, tmp_path):
        with pytest.raises(PackageError):  # its wording is the package checks' business
            rec.load_adapter(spoiled(packages["shop"], tmp_path, edit), name="failed")
        assert "failed" not in rec.domains
    return run


@pytest.mark.parametrize("others", [[], ["bank"], ["later"]], ids=["alone", "beside-lora", "beside-bottleneck"])
@pytest.mark.parametrize("mishap", [load_then_remove, load_fails_in_peft(wrong_shape), load_fails_in_peft(no_target)],
                         ids=["removed", "peft-shape-mismatch", "peft-target-missing"])
def test_loading_after_a_removed_or_failed_peft_adapter_equals_a_clean_load(packages, clean, tmp_path, others, mishap):
    rec = Recommender(device="cpu")
    for other in others:
        rec.load_adapter(packages[other])
    before = rec.score(HISTORIES, CANDIDATES, domains=others[0]) if others else None
    mishap(rec, packages, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec.load_adapter(packages["shop"])
    peft_warnings = [str(w.message) for w in caught if "adapter keys" in str(w.message) or "peft_config" in str(w.message)]
    assert peft_warnings == []
    assert torch.allclose(rec.score(HISTORIES, CANDIDATES, domains="shop"), clean, atol=1e-6)
    if others:  # the domains already there kept their adapters
        assert torch.allclose(rec.score(HISTORIES, CANDIDATES, domains=others[0]), before, atol=1e-6)


def test_removing_the_last_peft_adapter_restores_the_plain_backbone(packages):
    rec = Recommender(device="cpu")
    rec.load_adapter(packages["shop"])
    shared = rec._domains["shop"].shared["text"]
    plain = shared._pristine.model
    shared.remove("shop")
    model = shared.backbone.model
    assert type(model) is type(plain)
    assert [name for name, _ in model.named_modules()] == [name for name, _ in plain.named_modules()]
    assert not hasattr(model, "peft_config")
