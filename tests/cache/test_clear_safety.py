"""`cache clear` deletes only layer caches (folders holding index.json), leaves other folders alone, removes a
named cache whose index it cannot read; `cache info` lists malformed indexes as unreadable."""

from __future__ import annotations

import json

import pytest

from crossrec_peft.cli import main

MALFORMED = ['{"shards": 5}', '{"shards":[{"noitems":1}]}', "[1]", '{"settings": 3}', "{not json"]


def cache(root, name, index='{"format": 1, "settings": {}, "fields": {}, "shards": []}'):
    d = root / "layers" / name
    d.mkdir(parents=True)
    (d / "index.json").write_text(index)
    (d / "s00000.output.npy").write_bytes(b"x" * 10)
    return d


def foreign(root):
    d = root / "layers" / "mynet"
    d.mkdir(parents=True)
    (d / "conv.py").write_text("code\n")
    return d


@pytest.mark.parametrize("index", ['{"format": 1, "settings": {}, "fields": {}, "shards": []}', *MALFORMED])
def test_clear_all_keeps_non_caches(tmp_path, capsys, index):
    c, f = cache(tmp_path, "c1", index), foreign(tmp_path)
    assert main(["cache", "clear", "--cache-dir", str(tmp_path)]) == 0
    assert not c.exists()
    assert (f / "conv.py").read_text() == "code\n"
    out = capsys.readouterr().out
    assert "removed 1 layer cache(s)" in out and "left alone 1" in out and "mynet" in out


@pytest.mark.parametrize("index", MALFORMED)
def test_info_lists_malformed_as_unreadable(tmp_path, capsys, index):
    cache(tmp_path, "bad", index)
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    assert "bad:" in capsys.readouterr().out.replace("\n", " ") and True
    assert main(["cache", "info", "--json", "--cache-dir", str(tmp_path)]) == 0
    entry = json.loads(capsys.readouterr().out)["caches"][0]
    assert entry["name"] == "bad" and "unreadable index.json" in entry["problem"]


@pytest.mark.parametrize("index", MALFORMED)
def test_clear_named_malformed(tmp_path, index):
    c, other = cache(tmp_path, "bad", index), cache(tmp_path, "keep")
    assert main(["cache", "clear", "bad", "--cache-dir", str(tmp_path)]) == 0
    assert not c.exists() and other.exists()


@pytest.mark.parametrize("names", [["mynet"], ["c1", "mynet"], ["c1", "nosuch"]])
def test_clear_named_refusal_changes_nothing(tmp_path, capsys, names):
    c, f = cache(tmp_path, "c1"), foreign(tmp_path)
    assert main(["cache", "clear", *names, "--cache-dir", str(tmp_path)]) == 2
    assert c.exists() and (f / "conv.py").is_file()
    err = capsys.readouterr().err
    assert ("not a layer cache" in err) if "nosuch" not in names else ("nosuch" in err)


@pytest.mark.parametrize("action", ["info", "clear"])
@pytest.mark.parametrize("where", ["root", "layers"])
def test_cache_dir_that_is_a_file(tmp_path, capsys, action, where):
    target = tmp_path / "afile"
    if where == "root":
        target.write_text("x")
    else:
        target.mkdir()
        (target / "layers").write_text("x")
    assert main(["cache", action, "--cache-dir", str(target)]) == 2
    assert "--cache-dir" in capsys.readouterr().err
    assert target.exists()
