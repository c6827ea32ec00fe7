"""`crossrec-peft cache build | info | clear` on the tiny BERT and a small demo catalog, in tmp_path."""

from __future__ import annotations

import json

import pytest

from crossrec_peft.cli import main
from tests.conftest import tiny_overrides


def build(tiny_bert, cache, method: str, capsys):
    code = main(["cache", "build", "ecommerce", *tiny_overrides(tiny_bert), f"model.modalities.text.method={method}", "--cache-dir", str(cache), "--quiet"])
    return code, capsys.readouterr()


@pytest.mark.parametrize("method, kind", [("side", "pooled"), ("frozen", "output"), ("top", "tokens")])
def test_build_then_info_then_clear(tiny_bert, tmp_path, capsys, caplog, method, kind):
    cache = tmp_path / "cache"
    code, out = build(tiny_bert, cache, method, capsys)
    assert code == 0, out.err
    assert "120 items, modalities text: cache ready" in out.out
    # It says what it will write before it starts (a warning: shown on stderr by the CLI).
    assert any("encoding 120 of 120 items" in r.getMessage() for r in caplog.records)
    caplog.clear()
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [c["keep"]["kind"] for c in info["caches"]] == [kind]
    assert info["caches"][0]["items"] == 120 and info["caches"][0]["bytes"] > 0
    code, out = build(tiny_bert, cache, method, capsys)  # a second build encodes nothing
    assert code == 0 and not any("encoding" in r.getMessage() for r in caplog.records)
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "removed 1 layer cache(s)" in capsys.readouterr().out
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    assert "no layer caches" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["cache", "clear", "nope"], "No layer cache named 'nope'"),
        (["cache", "build"], "Usage: crossrec-peft cache build"),
        (["cache", "build", "ecommerce", "model.modalities.text.method=lora", "model.modalities.image.method=full"], "no modality uses a cached method"),
    ],
)
def test_bad_input_exits_2_naming_it(tmp_path, capsys, argv, message):
    before = sorted(tmp_path.rglob("*"))
    assert main([*argv, "--cache-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before  # a failed command changes nothing
