"""Values in a package that its schema leaves open (the model config, head specs, data source, peft's
adapter_config.json and weights): each wrong one is a PackageError naming the file and the key, on both load
paths (load_package and the Recommender's shared backbones), in sealed format-3 and unsealed format-2 manifests."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from crossrec_peft.errors import PackageError
from crossrec_peft.package import MANIFEST, load_package, sha256
from crossrec_peft.recommender import Recommender

from ._packages import make_package, write_manifest
from .conftest import small_layout


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("values")
    data = small_layout(root / "data")
    return make_package(tiny_bert, root, "shop", "lora", data=data)


@pytest.fixture
def package(exported, tmp_path):
    copy = tmp_path / "shop"
    shutil.copytree(exported, copy)
    return copy


def edit(directory, change, *, version: int = 3) -> None:
    """Change crossrec.json; format 3 is re-sealed (a consistent package), format 2 has no seal to keep."""
    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    if version == 2:
        manifest["format_version"] = 2
        manifest.pop("package_sha256")
    write_manifest(directory, manifest)


def reseal_file(directory, rel: str) -> None:
    """Record a changed file's sha256 (and re-seal): only the checks behind the hashes can catch it."""
    edit(directory, lambda m: m["files"].__setitem__(rel, sha256(directory / rel)))


def change_file(directory, rel: str, change):
    """Apply `change` to the package file `rel` (a .json file as its dict, a .safetensors file as its dict of
    tensors), write it back and re-seal it; returns the file's path and what `change` returned."""
    path = directory / rel
    if path.suffix == ".json":
        content = json.loads(path.read_text())
        result = change(content)
        path.write_text(json.dumps(content))
    else:
        content = load_file(str(path))
        result = change(content)
        save_file(content, str(path), metadata={"format": "pt"})
    reseal_file(directory, rel)
    return path, result


def assert_both_refuse(directory, match: str) -> None:
    """Both load paths (load_package and the Recommender's shared backbones) refuse the package with `match`."""
    for load in (lambda: load_package(directory), lambda: Recommender(device="cpu").load_adapter(directory)):
        with pytest.raises(PackageError, match=match):
            load()


# (edit of the manifest, the key the message must name, and the message's words)
MANIFEST_CASES = {
    "data source a number": (lambda m: m["data"].update(source=12), r"'data.source': Input should be a valid string"),
    "unknown head kind": (lambda m: m.update(heads={"category": {"kind": "nosuch"}}), r"'heads.category.kind' is 'nosuch', not a head"),
    "head option unknown": (lambda m: m.update(heads={"ctr": {"kind": "binary", "size": 3}}), r"'heads.ctr' does not describe a binary head"),
    "max_history text": (lambda m: m["model"].update(max_history="ten"), r"invalid value for 'model.max_history'"),
    "user encoder missing": (lambda m: m["model"].pop("user_encoder"), r"'model.user_encoder': Field required"),
    "modality without backbone": (lambda m: m["model"]["modalities"]["text"].pop("backbone"), r"'model.modalities.text.backbone': Field required"),
    "negative head rank": (lambda m: m["model"].update(head_rank=-1), r"'model.head_rank' must be positive, got -1"),
    "unknown fusion": (lambda m: m["model"].update(fusion={"name": "nosuchfusion"}), r"'model.fusion.name': Unknown fusion 'nosuchfusion'"),
    "backbone option text": (lambda m: m["model"]["modalities"]["text"]["backbone"].update(max_length="long"),
                             r"Invalid value for 'model.modalities.text.backbone.max_length'"),
    "unknown backbone": (lambda m: m["model"]["modalities"]["text"]["backbone"].update(name="nosuch"), r"'model.modalities.text.backbone.name': Unknown backbone"),
}


@pytest.mark.parametrize("version", [3, 2])
@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_bad_manifest_values_name_the_manifest_and_key(package, case, version):
    change, message = MANIFEST_CASES[case]
    edit(package, change, version=version)
    assert_both_refuse(package, f"^{package / MANIFEST}: .*{message}")


def test_a_manifest_without_max_history_still_loads(package):
    """Older packages recorded no max_history (the Recommender uses its default): not a reason to refuse them."""
    edit(package, lambda m: m["model"].pop("max_history"), version=2)
    load_package(package)


# (edit of adapter_config.json, what the message says)
PEFT_CONFIG_CASES = {
    "dropout text": (lambda c: c.update(lora_dropout="high"), r"'lora_dropout' must be a number from 0 to below 1, got 'high'"),
    "rank text": (lambda c: c.update(r="8"), r"'r' must be a positive integer, got '8'"),
    "targets a number": (lambda c: c.update(target_modules=3), r"'target_modules' must be null, a regular expression or a list"),
    "targets match nothing": (lambda c: c.update(target_modules=["nonexistent_mod"]), r"'target_modules' \(\['nonexistent_mod'\]\) names no module of backbone"),
}


@pytest.mark.parametrize("case", list(PEFT_CONFIG_CASES))
def test_bad_peft_config_values_name_the_file_and_key(package, case):
    change, message = PEFT_CONFIG_CASES[case]
    path, _ = change_file(package, "adapter_config.json", change)
    assert_both_refuse(package, f"^{path}: {message}")


def _drop_first(tensors) -> str:
    name = sorted(tensors)[0]
    del tensors[name]
    return name


def _narrow_first(tensors) -> str:
    name = sorted(tensors)[0]
    tensors[name] = tensors[name][:, :3].contiguous()
    return name


# (edit of adapter_model.safetensors returning the tensor it changed, the message given the file and that tensor)
ADAPTER_WEIGHT_CASES = {
    # peft only warns about a missing tensor and keeps its initial value: the scores would change silently.
    "missing tensor": (_drop_first, lambda path, name: f"^{path}: 1 tensor\\(s\\) of the peft adapter are missing: '{name}'"),
    # torch's error starts with a line that names no tensor; the size-mismatch line is the one to show.
    "misshapen tensor": (
        _narrow_first,
        lambda path, name: f"do not fit the backbone .*size mismatch for {name.removesuffix('.weight')}\\.[a-z]+\\.weight: copying a param with shape",
    ),
}


@pytest.mark.parametrize("case", list(ADAPTER_WEIGHT_CASES))
def test_bad_lora_tensors_are_refused_by_name(package, case):
    change, message = ADAPTER_WEIGHT_CASES[case]
    path, name = change_file(package, "adapter_model.safetensors", change)
    assert_both_refuse(package, message(path, name))
