"""`crossrec-peft recommend` and `index` on a user's mistakes: a bad --device, a corrupt --index file, -k above
the catalog, an index written into a package. Each exits with code 2 and one message naming what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from crossrec_peft.cli import main
from crossrec_peft.package import load_package
from tests._packages import make_package
from tests.conftest import small_layout


@pytest.fixture(scope="module")
def shop(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend-errors")
    data = small_layout(root / "data", num_items=12)
    return make_package(tiny_bert, root, "shop", "lora", data=data)


def fails(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return err


DEVICES = [
    ("bogus", "--device 'bogus': not a device; give cpu, cuda, cuda:N or mps"),
    pytest.param("cuda", "--device 'cuda': no CUDA GPU is available on this machine",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
]


@pytest.mark.parametrize("command", ["recommend", "index"])
@pytest.mark.parametrize("device, message", DEVICES)
def test_bad_device_names_the_option(shop, capsys, command, device, message):
    extra = ["--history", "i1"] if command == "recommend" else []
    assert message in fails([command, str(shop), *extra, "--device", device], capsys)


def index_file(path, metadata: dict, content=None):
    save_file({"content": torch.zeros(2, 4) if content is None else content}, str(path), metadata=metadata)
    return path


CORRUPT = {
    "item_ids not JSON": ({"item_ids": "[oops"}, None, "metadata 'item_ids' is not valid JSON"),
    "item_ids not a list": ({"item_ids": "5"}, None, "metadata 'item_ids' must be a JSON list of item id strings, but holds 5"),
    "item_ids numbers": ({"item_ids": "[1, 2]"}, None, "metadata 'item_ids' must be a JSON list of item id strings, but holds 1"),
    "content not a matrix": ({"item_ids": '["i1", "i2"]'}, torch.zeros(2), "tensor 'content' has shape (2,), not [items, dim]"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_index_file_names_the_file_and_key(shop, tmp_path, capsys, case):
    metadata, content, message = CORRUPT[case]
    path = index_file(tmp_path / "idx.safetensors", {"format": "crossrec-index/1", **metadata}, content)
    err = fails(["recommend", str(shop), "--history", "i1", "--index", str(path)], capsys)
    assert f"{path}: {message}" in err


@pytest.mark.parametrize("k, ok", [(12, True), (13, False), (1000, False)])
def test_k_above_the_catalog_is_refused(shop, capsys, k, ok):
    """As the server refuses it (k_out_of_range): never fewer rows than --json's "k" says without a word."""
    args = ["recommend", str(shop), "--history", "i1", "-k", str(k), "--keep-history", "--json"]
    if ok:
        assert main(args) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["k"] == k == len(out["items"])
    else:
        assert f"k must be at most 12 (the catalog size of domain 'shop'), got {k}" in fails(args, capsys)


@pytest.mark.parametrize("where", ["index.safetensors", "sub/index.safetensors"])
def test_index_out_inside_a_package_is_refused(shop, tmp_path, capsys, where):
    """An unlisted file makes a package refuse to load: the command must not break the package it reads."""
    package = tmp_path / "shop"
    shutil.copytree(shop, package)
    out = package / where
    err = fails(["index", str(package), "--out", str(out)], capsys)
    assert f"--out {out}: inside the adapter package {package}" in err and f"{tmp_path / 'shop-index.safetensors'}" in err
    assert not out.exists()
    load_package(package)  # still loads
