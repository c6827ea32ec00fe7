"""Package integrity (issue 11, groups 4 and 5): the manifest is validated against its schema before use,
sealed by package_sha256, every file a load reads is listed with its sha256, an unlisted file is refused,
unreadable weights are named, and adapter_config.json must agree with the manifest."""

from __future__ import annotations

import json
import shutil

import pytest

from crossrec_peft.cli import main
from crossrec_peft.errors import PackageError
from crossrec_peft.fsutil import sha256
from crossrec_peft.manifest import canonical_sha256
from crossrec_peft.package import MANIFEST, WEIGHTS, load_package, read_manifest, seal_package, verify_package
from crossrec_peft.recommender import Recommender
from tests._packages import make_package, write_manifest


@pytest.fixture(scope="module")
def exported(tiny_bert, tmp_path_factory):
    return make_package(tiny_bert, tmp_path_factory.mktemp("pkgs"), "shop", "lora")


@pytest.fixture
def package(exported, tmp_path):
    copy = tmp_path / "pkg"
    shutil.copytree(exported, copy)
    return copy


def manifest_of(directory) -> dict:
    return json.loads((directory / MANIFEST).read_text())


def loaders(directory):
    """Every way a package is loaded: the model loader, the Recommender, the recommend command."""
    yield lambda: load_package(directory)
    yield lambda: Recommender(device="cpu").load_adapter(directory)


# -- schema (group 4) -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda m: m.update(files=["a", "b"]), "'files': Input should be a valid dictionary (got a list)"),
        (lambda m: m.update(weights="crossrec_weights.safetensors"), "'weights'"),
        (lambda m: m["modalities"]["text"].update(fields="title"), "'modalities.text.fields'"),
        (lambda m: m["modalities"]["text"]["method"].update(name=3), "'modalities.text.method.name'"),
        (lambda m: m.update(format_version="3"), "format version '3' is not supported"),
        (lambda m: m["files"].update({"../outside.safetensors": "0" * 64}), "must be a path inside the package"),
        (lambda m: m["files"].update({WEIGHTS: "not-a-hash"}), "64 lowercase hex digits"),
        (lambda m: m.pop("model"), "'model': Field required"),
    ],
    ids=["files-list", "weights-text", "fields-text", "method-name-int", "version-text", "path-outside", "bad-hash", "no-model"],
)
def test_manifest_schema_names_the_field(package, change, expected):
    manifest = manifest_of(package)
    change(manifest)
    write_manifest(package, manifest)
    for load in loaders(package):
        with pytest.raises(PackageError) as err:
            load()
        assert expected in str(err.value) and MANIFEST in str(err.value), str(err.value)


def test_recommend_with_a_files_list_exits_2(package, capsys):
    manifest = manifest_of(package)
    manifest["files"] = ["a", "b"]
    write_manifest(package, manifest)
    assert main(["recommend", str(package), "--history", "i1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'files'" in err and "internal error" not in err


def test_garbage_weights_with_a_recorded_hash_are_named(package, capsys):
    for name in (WEIGHTS, "adapter_model.safetensors"):
        (package / name).write_bytes(b"\x00garbage, not safetensors" * 10)
        manifest = manifest_of(package)
        manifest["files"][name] = sha256(package / name)
        write_manifest(package, manifest)
        for load in loaders(package):
            with pytest.raises(PackageError, match=f"{name}: not a readable safetensors file"):
                load()
    assert main(["recommend", str(package), "--history", "i1"]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err


# -- what integrity covers (group 5) --------------------------------------------------------------------------------


def test_unlisted_weight_file_is_refused(package):
    manifest = manifest_of(package)
    del manifest["files"]["adapter_model.safetensors"]
    write_manifest(package, manifest)
    data = bytearray((package / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (package / "adapter_model.safetensors").write_bytes(bytes(data))
    for load in loaders(package):
        with pytest.raises(PackageError, match="'adapter_model.safetensors' is read on load but not listed"):
            load()


@pytest.mark.parametrize("name, refused", [("extra.safetensors", True), ("notes.json", True), ("sub/x.txt", True),
                                           ("NOTES.md", False), ("LICENSE", False)])
def test_unlisted_files_other_than_documentation_are_refused(package, name, refused):
    (package / name).parent.mkdir(exist_ok=True)
    (package / name).write_text("added after export\n")
    if refused:
        with pytest.raises(PackageError, match=f"{name}: this file is in the package but not listed"):
            verify_package(package)
    else:
        verify_package(package)


@pytest.mark.parametrize(
    "change",
    [lambda m: m["metrics"].update(model={"ndcg@10": 0.99}), lambda m: m["modalities"]["text"]["method"].update(r=64),
     lambda m: m.update(name="other")],
    ids=["metrics", "lora-rank", "name"],
)
def test_edited_manifest_is_refused(package, change):
    manifest = manifest_of(package)
    change(manifest)
    (package / MANIFEST).write_text(json.dumps(manifest, indent=2))  # not re-sealed: an edit by hand
    for load in loaders(package):
        with pytest.raises(PackageError, match="the manifest was edited after export"):
            load()


def test_lora_config_must_agree_with_the_manifest(package):
    manifest = manifest_of(package)
    manifest["modalities"]["text"]["method"]["r"] = 8  # adapter_config.json (what peft reads) says 4
    write_manifest(package, manifest)
    for load in loaders(package):
        with pytest.raises(PackageError, match="adapter_config.json: r is 4, but crossrec.json records r=8"):
            load()
    config = json.loads((package / "adapter_config.json").read_text())
    config["peft_type"] = "IA3"
    (package / "adapter_config.json").write_text(json.dumps(config))
    manifest["modalities"]["text"]["method"]["r"] = 4
    manifest["files"]["adapter_config.json"] = sha256(package / "adapter_config.json")
    write_manifest(package, manifest)
    with pytest.raises(PackageError, match="peft_type 'IA3', but crossrec.json records method 'lora'"):
        load_package(package)


def test_format_2_package_loads_and_is_resealed(package):
    manifest = manifest_of(package)
    assert manifest["format_version"] == 3 and manifest["package_sha256"] == canonical_sha256(manifest)
    del manifest["package_sha256"]
    manifest["format_version"] = 2
    (package / MANIFEST).write_text(json.dumps(manifest))
    assert read_manifest(package)["package_sha256"] is None  # format 2: loads, edits undetectable
    load_package(package)
    sealed = seal_package(package)
    assert manifest_of(package)["format_version"] == 3 and sealed["package_sha256"] == canonical_sha256(manifest_of(package))
    load_package(package)
    edited = manifest_of(package)
    edited["metrics"] = {"model": {"ndcg@10": 1.0}}
    (package / MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(PackageError, match="edited after export"):
        load_package(package)
