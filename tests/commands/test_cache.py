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
    # The recipe's frozen EfficientNet-Lite0 image tower reads its own cache beside the text method's.
    assert "120 items, modalities text, image: cache ready" in out.out
    # It says what it will write before it starts (a warning: shown on stderr by the CLI). Items are keyed by
    # content: demo products that share a picture share the image cache's entry.
    said = [r.getMessage() for r in caplog.records]
    assert any("-text-" in m and "encoding 120 of 120 items" in m for m in said), said
    assert any("effnet-lite0" in m and "share the content of another" in m for m in said), said
    caplog.clear()
    assert main(["cache", "info", "--cache-dir", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    caches = {"image" if c["name"].startswith("effnet-lite0") else "text": c for c in info["caches"]}
    assert {m: c["keep"]["kind"] for m, c in caches.items()} == {"text": kind, "image": "output"}
    assert caches["text"]["items"] == 120 and 0 < caches["image"]["items"] < 120
    assert all(c["bytes"] > 0 for c in caches.values())
    code, out = build(tiny_bert, cache, method, capsys)  # a second build encodes nothing
    assert code == 0 and not any("encoding" in r.getMessage() for r in caplog.records)
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "removed 2 layer cache(s)" in capsys.readouterr().out
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
