"""The layer cache on a tiny real BERT: hits, misses, incremental rebuilds, invalidation, resume after a
killed build, damaged shards, unwritable directories."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from crossrec_peft.backbones.base import FeatureContext
from crossrec_peft.backbones.text import TextBackbone, TextBackboneOptions
from crossrec_peft.cache import CacheSettings, Output, Pooled, Tokens, cached_rows, describe
from crossrec_peft.cache import build as build_module
from crossrec_peft.errors import ConfigError

TITLES = [f"product {i} {'red' if i % 2 else 'blue'} lamp of size {i * 3}" for i in range(10)]
KEEPS = {"output": Output(), "pooled": Pooled(), "tokens1": Tokens(1)}


def backbone(path: Path, max_length: int = 12) -> TextBackbone:
    return TextBackbone(str(path), model_id=str(path), options=TextBackboneOptions(max_length=max_length))


def rows(bb, keep, titles, root, **kw):
    features = bb.featurize([titles], FeatureContext(item_ids=[str(i) for i in range(len(titles))]))
    return cached_rows(bb, keep, features, CacheSettings(root=root, progress=False, batch_size=3, **kw))


def values(out) -> dict[str, np.ndarray]:
    return {k: v.all().numpy() for k, v in out.items()}


@pytest.fixture
def encoded(monkeypatch):
    """Counts the items each build encodes."""
    seen: list[int] = []
    real = build_module._encode

    def counting(bb, keep, features, index, fields):
        seen.append(len(index))
        return real(bb, keep, features, index, fields)

    monkeypatch.setattr(build_module, "_encode", counting)
    return seen


@pytest.mark.parametrize("keep", list(KEEPS), ids=list(KEEPS))
def test_hit_reads_without_encoding_and_matches_the_backbone(tiny_bert, tmp_path, encoded, keep):
    bb = backbone(tiny_bert)
    first = values(rows(bb, KEEPS[keep], TITLES, tmp_path))
    assert sum(encoded) == len(TITLES)
    encoded.clear()
    again = values(rows(bb, KEEPS[keep], TITLES, tmp_path))
    assert encoded == []  # a hit: nothing encoded
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    features = bb.featurize([TITLES], FeatureContext(item_ids=[str(i) for i in range(10)]))
    with torch.no_grad():
        direct = bb(**bb.collate(features, torch.arange(10)))
    if "output" in first:  # fp16 rows of the backbone's own output
        np.testing.assert_allclose(first["output"], direct.numpy(), atol=2e-3, rtol=2e-3)
    assert first["present"].tolist() == [1] * 10


@pytest.mark.parametrize("keep", list(KEEPS), ids=list(KEEPS))
def test_items_are_encoded_longest_first_and_read_back_in_catalog_order(tiny_bert, tmp_path, monkeypatch, keep):
    """Batches hold items of similar length (less padding), and every row equals the row a build in catalog
    order writes."""
    titles = [" ".join(["word"] * (1 + (i * 7) % 11)) + f" item {i}" for i in range(12)]
    widths: list[int] = []
    real = build_module._encode

    def recording(bb, keep, features, index, fields):
        widths.append(int(features["attention_mask"][index].sum(dim=1).max()))
        return real(bb, keep, features, index, fields)

    monkeypatch.setattr(build_module, "_encode", recording)
    bb = backbone(tiny_bert, max_length=16)
    by_length = values(rows(bb, KEEPS[keep], titles, tmp_path / "by-length"))
    assert len(widths) == 4 and widths == sorted(widths, reverse=True) and widths[0] > widths[-1]

    widths.clear()
    monkeypatch.setattr(TextBackbone, "sequence_lengths", None)  # no lengths: catalog order
    in_order = values(rows(bb, KEEPS[keep], titles, tmp_path / "in-order"))
    assert widths != sorted(widths, reverse=True)  # the catalog order mixes lengths
    assert by_length.keys() == in_order.keys()
    if "mask" in by_length:  # token states: only real tokens are read (padding holds whatever its batch left)
        np.testing.assert_array_equal(by_length["mask"], in_order["mask"])
        real_tokens = by_length["mask"].astype(bool)
        by_length["tokens"], in_order["tokens"] = by_length["tokens"][real_tokens], in_order["tokens"][real_tokens]
    for name in by_length:
        np.testing.assert_allclose(by_length[name], in_order[name], atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize(
    "change, expect_encoded",
    [
        ("one item's text", 1),
        ("a new item", 1),
        ("item order", 0),
        ("nothing", 0),
    ],
)
def test_only_changed_or_new_items_are_encoded(tiny_bert, tmp_path, encoded, change, expect_encoded):
    bb = backbone(tiny_bert)
    rows(bb, Pooled(), TITLES, tmp_path)
    titles = list(TITLES)
    if change == "one item's text":
        titles[4] = "a completely different desk"
    elif change == "a new item":
        titles.append("a brand new mug")
    elif change == "item order":
        titles = titles[::-1]
    encoded.clear()
    out = values(rows(bb, Pooled(), titles, tmp_path))
    assert sum(encoded) == expect_encoded
    fresh = values(rows(bb, Pooled(), titles, tmp_path / "fresh"))
    for name in out:  # what the incremental cache hands out equals a cache built from scratch
        np.testing.assert_array_equal(out[name], fresh[name])


@pytest.mark.parametrize("change", ["weights", "max_length", "format"])
def test_a_cache_for_other_settings_is_rebuilt_saying_why(tiny_bert, tmp_path, encoded, caplog, change):
    from transformers import BertModel

    model_dir = tmp_path / "bert"
    shutil.copytree(tiny_bert, model_dir)
    rows(backbone(model_dir), Pooled(), TITLES, tmp_path / "cache")
    max_length = 12
    if change == "weights":
        model = BertModel.from_pretrained(model_dir)
        with torch.no_grad():
            model.embeddings.word_embeddings.weight.mul_(1.5)
        model.save_pretrained(model_dir, safe_serialization=True)
    elif change == "max_length":
        max_length = 16
    else:
        index = next((tmp_path / "cache").rglob("index.json"))
        data = json.loads(index.read_text())
        data["format"] = 0
        index.write_text(json.dumps(data))
    encoded.clear()
    with caplog.at_level(logging.WARNING, logger="crossrec_peft.cache"):
        out = values(rows(backbone(model_dir, max_length), Pooled(), TITLES, tmp_path / "cache"))
    assert sum(encoded) == len(TITLES)
    why = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert len(why) == 1
    assert {"weights": "sha256", "max_length": "max_length", "format": "format version"}[change] in why[0]
    fresh = values(rows(backbone(model_dir, max_length), Pooled(), TITLES, tmp_path / "fresh"))
    np.testing.assert_array_equal(out["layers"], fresh["layers"])


@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_killed_build_resumes_to_identical_rows(tiny_bert, tmp_path, monkeypatch, encoded, stop_after):
    monkeypatch.setattr(build_module, "SHARD_ITEMS", 3)  # 10 items: shards of 3, 3, 3, 1
    bb = backbone(tiny_bert)

    def kill(shards, items):
        if shards == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rows(bb, Tokens(1), TITLES, tmp_path / "killed", on_shard=kill)
    # A kill mid-write leaves a temporary file behind, never a shard the index names.
    (next((tmp_path / "killed").rglob("index.json")).parent / ".s00009.tokens.npy.tmp").write_bytes(b"partial")
    encoded.clear()
    resumed = values(rows(bb, Tokens(1), TITLES, tmp_path / "killed"))
    assert sum(encoded) == len(TITLES) - 3 * stop_after  # completed shards were kept
    clean = values(rows(bb, Tokens(1), TITLES, tmp_path / "clean"))
    for name in clean:
        np.testing.assert_array_equal(resumed[name], clean[name])


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_a_damaged_shard_is_detected_and_rebuilt(tiny_bert, tmp_path, monkeypatch, encoded, caplog, damage):
    monkeypatch.setattr(build_module, "SHARD_ITEMS", 4)
    bb = backbone(tiny_bert)
    clean = values(rows(bb, Output(), TITLES, tmp_path))
    shard = sorted(tmp_path.rglob("s00001.output.npy"))[0]
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-10])
    elif damage == "edit":
        data = bytearray(shard.read_bytes())
        data[-1] ^= 0xFF
        shard.write_bytes(bytes(data))
    else:
        shard.unlink()
    encoded.clear()
    with caplog.at_level(logging.WARNING, logger="crossrec_peft.cache"):
        again = values(rows(bb, Output(), TITLES, tmp_path))
    assert sum(encoded) == 4
    assert any("damaged" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(again["output"], clean["output"])


def test_an_unwritable_cache_directory_fails_naming_it(tiny_bert, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should go")
    with pytest.raises(ConfigError, match="cannot be written"):
        rows(backbone(tiny_bert), Output(), TITLES, blocker)
    assert blocker.read_text() == "a file where the cache directory should go"


def test_a_full_disk_fails_with_the_size_needed(tiny_bert, tmp_path, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ConfigError, match=r"needs .* MiB for 10 items, but only 0.0 MiB are free"):
        rows(backbone(tiny_bert), Pooled(), TITLES, tmp_path)


def test_describe_lists_each_cache(tiny_bert, tmp_path):
    bb = backbone(tiny_bert)
    rows(bb, Output(), TITLES, tmp_path)
    rows(bb, Tokens(1), TITLES[:4], tmp_path)
    found = {e["keep"]["kind"]: e for e in describe(tmp_path)}
    assert set(found) == {"output", "tokens"}
    assert found["output"]["items"] == 10 and found["tokens"]["items"] == 4
    assert all(e["bytes"] > 0 and e["backbone"] == str(tiny_bert) for e in found.values())
