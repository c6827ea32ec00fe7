"""The smaller defects of issue 11 (group 8): each message says what is wrong in the user's terms."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from crossrec_peft.cli import main
from crossrec_peft.config import load_config
from crossrec_peft.errors import ConfigError, DataError
from tests.conftest import small_layout, write_jsonl
from tests._packages import make_package


def test_import_help_lists_exactly_the_registered_formats(capsys):
    from crossrec_peft.data.importers import IMPORTERS

    with pytest.raises(SystemExit):
        main(["data", "import", "-h"])
    text = " ".join(capsys.readouterr().out.split())
    listed = text.split("one of: ", 1)[1].split(" (docs/data.md)")[0].split(", ")
    assert sorted(listed) == sorted(IMPORTERS) and "amazon-reviews" not in text


@pytest.mark.parametrize(
    "content, expected",
    [("just a string\n", "holds a single text value, not a mapping"), ("- a\n- b\n", "holds a list, not a mapping"),
     ("", "the file is empty"), ("# only a comment\n", "the file is empty")],
    ids=["scalar", "list", "empty", "comment-only"],
)
def test_recipe_file_that_is_not_a_mapping(tmp_path, content, expected):
    path = tmp_path / "recipe.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    assert "unknown key" not in str(err.value) and "ListConfig" not in str(err.value) and "modalities" not in str(err.value)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "{dir}"], "is a directory; give a YAML recipe file"),
        (["data", "import", "generic", "{dir}", "--out", "{tmp}/o", "--options", "{dir}"], "is a directory; give a YAML or JSON file"),
        (["recipe", "ecommerce", "--out", "{tmp}/r", "data.path={file}"], "is a file, not a directory"),
        (["data", "validate", "{file}"], "is a file, not a directory"),
        (["report", "{file}"], "is a file, not a run directory"),
    ],
    ids=["train-dir", "options-dir", "data-path-file", "validate-file", "report-file"],
)
def test_directory_or_file_where_the_other_is_expected(tmp_path, capsys, args, expected):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("x\n")
    filled = [a.format(dir=tmp_path / "dir", tmp=tmp_path, file=tmp_path / "file.txt") for a in args]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert expected in err and "does not exist" not in err, err


def test_hf_relative_data_files_are_named_under_src(tmp_path):
    from crossrec_peft.data.importers import import_dataset

    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(DataError) as err:
        import_dataset("hf", src, tmp_path / "out", options={"name": "json", "data_files": "missing.jsonl",
                                                             "cache_dir": str(tmp_path / "hf-cache")})
    assert str(src / "missing.jsonl") in str(err.value)


def test_open_clip_random_init_warning_is_not_printed(caplog):
    from crossrec_peft import registry
    from crossrec_peft.config import component

    entry, argument, options = component(registry.backbones, {"name": "openclip:crossrec-tiny-vit"}, "backbone")
    with caplog.at_level(logging.WARNING):
        backbone = entry.factory(options, argument)
    assert backbone.pretrained_weights is False
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]


# -- recommend / index --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("msg")
    data = small_layout(root / "data")
    return make_package(tiny_bert, root, "shop", "lora", data=data), data


def test_unknown_history_id_names_the_data_directory(shop, tmp_path, capsys):
    package, data = shop
    assert main(["recommend", str(package), "--data", str(data), "--history", "i1", "ghost"]) == 2
    err = capsys.readouterr().err
    assert "'ghost'" in err and f"not in the catalog at {data}" in err and ".safetensors" not in err


def test_same_package_twice_under_a_name(shop, capsys):
    package, data = shop
    assert main(["recommend", str(package), str(package), "--data", str(data), "--history", "i1"]) == 2
    err = capsys.readouterr().err
    assert f"NAME={package}" in err and "name=..." not in err
    assert main(["recommend", str(package), f"shop2={package}", "--domain", "shop2", "--data", str(data), "--history", "i1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["domain"] == "shop2"


def test_domain_did_you_mean_names_unloaded_known_domains(shop, capsys):
    package, data = shop
    assert main(["recommend", str(package), "--domain", "finanse", "--history", "i1"]) == 2
    assert "Did you mean 'finance'? No adapter of that domain is loaded" in capsys.readouterr().err
    assert main(["recommend", str(package), "--domain", "shpo", "--history", "i1"]) == 2
    assert "Did you mean 'shop'?" in capsys.readouterr().err


def test_index_bad_image_message_names_file_once_and_no_run_option(tmp_path):
    """An image package over a catalog with a broken image: the message names the items file and line, the
    item once, and no option that `index` does not have."""
    from crossrec_peft import recipes
    from crossrec_peft.model import build_model
    from crossrec_peft.package import export_package
    from crossrec_peft.recommender import Recommender

    cfg = load_config(recipes.path("ecommerce"), ["model.modalities.text=null", "model.head_rank=4"])
    torch.manual_seed(0)
    package = export_package(build_model(cfg.model).eval(), cfg, tmp_path / "pkg")
    data = small_layout(tmp_path / "data")
    items = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines()]
    items[4]["image"] = "img/broken.png"
    (data / "img" / "broken.png").write_bytes(b"not an image at all")
    write_jsonl(data / "items.jsonl", items)
    rec = Recommender(device="cpu")
    rec.load_adapter(package, data=data)
    with pytest.raises(DataError) as err:
        rec.build_index(out=tmp_path / "index.safetensors")
    message = str(err.value)
    assert f"{data / 'items.jsonl'}, line 5: item 'i4'" in message, message
    assert message.count("'i4'") == 1 and "data.on_bad_image" not in message
