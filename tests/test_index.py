"""Catalog indexes: built with the domain's adapter, reused until the adapter or the catalog changes, exact
and FAISS search; the index CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from crossrec_peft import Recommender
from crossrec_peft.cli import main
from crossrec_peft.errors import DataError, PackageError
from crossrec_peft.index import FaissSearch, exact_top_k, read_index, recall_against_exact
from tests._packages import make_package
from tests.conftest import small_layout


@pytest.fixture(scope="module")
def setup(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    data = small_layout(root / "data", num_items=20)
    return {
        "data": data,
        "a": make_package(tiny_bert, root / "pk", "a", "lora", seed=1, data=data),
        "b": make_package(tiny_bert, root / "pk", "b", "ia3", seed=2, data=data),
    }


def test_index_is_reused_and_invalidated(setup, tmp_path):
    cache = tmp_path / "cache"
    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    rec = Recommender.from_pretrained(setup["a"], data=data, device="cpu")
    path = rec.build_index(cache_dir=cache)
    assert path.parent == cache / "index" and path.name.startswith("a-")
    index = read_index(path)
    assert index.item_ids == [f"i{i}" for i in range(20)] and index.content.shape == (20, 32)
    stamp = path.stat().st_mtime_ns
    # A new recommender with the same adapter and catalog finds the same file and does not rewrite it.
    again = Recommender.from_pretrained(setup["a"], data=data, device="cpu")
    assert again.build_index(cache_dir=cache) == path and path.stat().st_mtime_ns == stamp
    # Another adapter: another index.
    other = Recommender.from_pretrained(setup["b"], data=data, device="cpu")
    assert other.build_index(cache_dir=cache) != path
    # The catalog changes (one title): a new index, whose vectors differ for that item only.
    items = (data / "items.jsonl").read_text().splitlines()
    row = json.loads(items[4])
    row["title"] = "a completely different green sofa"
    items[4] = json.dumps(row)
    (data / "items.jsonl").write_text("\n".join(items) + "\n")
    changed = Recommender.from_pretrained(setup["a"], data=data, device="cpu")
    new_path = changed.build_index(cache_dir=cache)
    assert new_path != path
    diff = (read_index(new_path).content - index.content).abs().amax(dim=1)
    assert diff[4] > 1e-4 and diff.argmax() == 4 and float(diff[torch.arange(20) != 4].max()) < 1e-5


def test_index_file_is_checked(setup, tmp_path):
    rec_a = Recommender.from_pretrained(setup["a"], data=setup["data"], device="cpu")
    path = rec_a.build_index(out=tmp_path / "a.safetensors")
    rec_b = Recommender.from_pretrained(setup["b"], device="cpu")
    with pytest.raises(PackageError, match="built with another version of the 'a' adapter"):
        rec_b.use_index(path)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="not a readable safetensors index"):
        rec_b.use_index(tmp_path / "junk.safetensors")
    # Recommending from the index file alone (no catalog) gives what the catalog gives.
    alone = Recommender.from_pretrained(setup["a"], device="cpu")
    alone.use_index(path)
    assert alone.recommend(["i1", "i2"], k=5) == rec_a.recommend(["i1", "i2"], k=5)
    with pytest.raises(DataError, match="'ghost'"):
        alone.recommend(["ghost"])


def test_exact_and_faiss_search():
    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(500, 16), dim=-1)
    queries = torch.nn.functional.normalize(torch.randn(20, 16), dim=-1)
    rows, scores = exact_top_k(vectors, queries[0], 10, exclude=[int((vectors @ queries[0]).argmax())])
    full = torch.sort(vectors @ queries[0], descending=True)
    assert rows.tolist() == full.indices[1:11].tolist() and torch.allclose(scores, full.values[1:11])
    # Probing every list is exhaustive: FAISS then returns exactly the exact top-k.
    exhaustive = FaissSearch(vectors, nlist=8, nprobe=8)
    assert exhaustive.nlist == 8
    assert recall_against_exact(vectors, exhaustive, queries, 10) == 1.0
    partial = FaissSearch(vectors, nlist=8, nprobe=1)
    assert 0.0 < recall_against_exact(vectors, partial, queries, 10) < 1.0


def test_faiss_recommend_and_index_cli(setup, tmp_path, capsys):
    out = tmp_path / "a.safetensors"
    assert main(["index", str(setup["a"]), "--data", str(setup["data"]), "--out", str(out), "--faiss", "--queries", "5", "-k", "3"]) == 0
    printed = capsys.readouterr().out
    assert "20 items x 32" in printed and "recall@3 against exact" in printed and out.is_file()
    rec = Recommender.from_pretrained(setup["a"], device="cpu")
    rec.use_index(out)
    # A tiny catalog has a single FAISS list: its search is exhaustive and equals the exact one.
    faiss, exact = rec.recommend(["i3"], k=4, search="faiss"), rec.recommend(["i3"], k=4)
    assert [i for i, _ in faiss] == [i for i, _ in exact]
    assert [s for _, s in faiss] == pytest.approx([s for _, s in exact], abs=1e-5)
    assert main(["index", str(setup["a"]), "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
