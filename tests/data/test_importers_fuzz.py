"""Mangled inputs for every file-based importer: whatever the bytes, an import either raises DataError or
writes a clean dataset that the standard-layout loader accepts; inputs stay unchanged and no temporary
directory is left behind."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crossrec_peft.data import load_layout
from crossrec_peft.data.importers import import_dataset
from crossrec_peft.errors import DataError
from tests.data.test_importers import (
    AMAZON_ITEMS,
    AMAZON_USERS,
    FT_ASSETS,
    FT_CUSTOMERS,
    FT_TRANSACTIONS,
    GENERIC_INTER,
    GENERIC_ITEMS,
    GENERIC_OPTIONS,
    ML_MOVIES,
    ML_RATINGS,
    ML_TAGS,
    ml100k_item,
)

# Hypothesis keeps a cache in ./.hypothesis unless told otherwise: keep it out of the checkout.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "crossrec-peft-hypothesis"))
# Bounded for the regular suite; raise it for a deeper run (CROSSREC_FUZZ_EXAMPLES=1000).
MAX_EXAMPLES = int(os.environ.get("CROSSREC_FUZZ_EXAMPLES", "50"))

ML100K_ITEMS = "\n".join([
    ml100k_item(1, "Toy Story (1995)", "01-Jan-1995", {3, 4, 5}),
    ml100k_item(2, "Café Society (1995)", "01-Jan-1995", {8}),
    ml100k_item(3, "Shanghai Triad", "01-Jan-1996", {8}),
]).encode("latin-1") + b"\n"
HF_ROWS = "".join(json.dumps(r) + "\n" for r in [
    {"reviewer": "r1", "asin": "B1", "product": "Red &amp; lamp", "ts": 1},
    {"reviewer": "r1", "asin": "B2", "product": "Chair", "ts": 2},
    {"reviewer": "r2", "asin": "B1", "product": "Red &amp; lamp", "ts": 3},
    {"reviewer": "r2", "asin": "B3", "product": "Desk", "ts": 4},
])

# name: (format, {file: bytes}, options, text field)
CASES = {
    "amazon-seq": ("amazon-seq", {"items.tsv": AMAZON_ITEMS, "users.tsv": AMAZON_USERS}, {}, "title"),
    "movielens-csv": ("movielens", {"movies.csv": ML_MOVIES, "ratings.csv": ML_RATINGS, "tags.csv": ML_TAGS}, {"min_rating": 1.0}, "title"),
    "movielens-100k": ("movielens", {
        "u.item": ML100K_ITEMS,
        "u.data": "1\t1\t5\t874965758\n1\t2\t3\t876893171\n1\t3\t4\t878542960\n2\t1\t4\t876893119\n2\t3\t2\t889751712\n",
    }, {}, "title"),
    "movielens-1m": ("movielens", {
        "movies.dat": "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n3::Señor (1996)::Drama\n".encode("latin-1"),
        "ratings.dat": "1::1::5::978300760\n1::2::3::978302109\n2::3::4::978300275\n2::1::5::978824291\n",
    }, {}, "title"),
    "far-trans": ("far-trans", {
        "asset_information.csv": FT_ASSETS, "customer_information.csv": FT_CUSTOMERS, "transactions.csv": FT_TRANSACTIONS,
    }, {}, "description"),
    "generic": ("generic", {"catalog.csv": GENERIC_ITEMS, "events.jsonl": GENERIC_INTER}, {**GENERIC_OPTIONS, "k_core": 2}, "title"),
    "hf-json": ("hf", {"reviews.jsonl": HF_ROWS}, {
        "name": "json", "data_files": "reviews.jsonl",
        "columns": {"user_id": "reviewer", "item_id": "asin", "title": "product", "timestamp": "ts"},
    }, "title"),
}

SNIPPETS = [
    b"\t", b",", b";", b"|", b"::", b"\n", b"\r\n", b"\r", b'"', b"'", b"\xff", b"\xc3", b"\xe9", b"\x00", b"\xef\xbb\xbf",
    b"&amp;", b"&#0;", b" ", b"  \t ", b"9999999999999999999999", b"-1", b"nan", b"inf", b"1e308", b"0.5", b"{}", b"[]",
    b"null", b"1e999", b"9" * 400, b"\\", b"item_id\ttitle\n", b"userId,movieId,rating,timestamp\n", b"(no genres listed)", b"Predicted_",
]
DELIMITER_SWAPS = [(b"\t", b","), (b",", b";"), (b",", b"\t"), (b"::", b":"), (b"|", b","), (b"\n", b"\r\n"), (b'"', b"")]

MUTATION = st.one_of(
    st.tuples(st.just("replace"), st.floats(0, 1), st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(SNIPPETS) | st.binary(min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 40)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.none()),
    st.tuples(st.just("dup_line"), st.floats(0, 1), st.none()),
    st.tuples(st.just("drop_line"), st.floats(0, 1), st.none()),
    st.tuples(st.just("swap"), st.floats(0, 1), st.sampled_from(DELIMITER_SWAPS)),
)


def mangle(data: bytes, mutations) -> bytes:
    for kind, where, arg in mutations:
        at = int(where * len(data))
        if kind == "replace":
            data = data[:at] + arg + data[at + len(arg):]
        elif kind == "insert":
            data = data[:at] + arg + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + arg:]
        elif kind == "truncate":
            data = data[:at]
        elif kind in ("dup_line", "drop_line"):
            lines = data.splitlines(keepends=True)
            if lines:
                i = min(int(where * len(lines)), len(lines) - 1)
                lines[i:i + 1] = [lines[i], lines[i]] if kind == "dup_line" else []
                data = b"".join(lines)
        else:
            data = data.replace(*arg)
    return data


def tree_digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mangled_files_give_data_error_or_a_loadable_dataset(case, data):
    fmt, files, options, field = CASES[case]
    target = data.draw(st.sampled_from(sorted(files)), label="file")
    mutations = data.draw(st.lists(MUTATION, min_size=1, max_size=4), label="mutations")
    on_error = data.draw(st.sampled_from(["strict", "skip"]), label="on_error")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src, out = root / "src", root / "out"
        src.mkdir()
        for name, content in files.items():
            raw = content.encode("utf-8") if isinstance(content, str) else content
            (src / name).write_bytes(mangle(raw, mutations) if name == target else raw)
        before = tree_digest(src)
        opts = dict(options)
        if fmt == "hf":
            opts["cache_dir"] = str(root / "hf-cache")
        try:
            report = import_dataset(fmt, src, out, on_error=on_error, options=opts)
        except DataError as exc:
            event("DataError")
            assert str(exc).strip()
            assert not out.exists()
        else:
            event(f"imported ({on_error}, {'with' if report.rejected else 'no'} rejected rows)")
            loaded = load_layout(out, [field], min_interactions=1)
            assert loaded.num_interactions == report.written["interactions"] == pq.read_metadata(out / "interactions.parquet").num_rows
            assert len(loaded.item_ids) == report.written["items"]
            assert all(isinstance(v, str) for v in loaded.columns([field])[field])
            if on_error == "strict":
                assert report.rejected == 0
            else:
                entries = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
                assert len(entries) == report.rejected
                assert all({"file", "line", "reason", "raw"} <= set(e) for e in entries)
            saved = json.loads((out / "import_report.json").read_text(encoding="utf-8"))
            assert saved["written"] == report.written
            if fmt != "amazon-seq":  # every interaction row read is written or counted as dropped
                read = report.read[Path(report.files["interactions"]).name]
                assert read == report.written["interactions"] + report.dropped_total("interactions")
        assert tree_digest(src) == before
        assert sorted(p.name for p in root.iterdir() if not p.name.startswith("hf-cache")) in (["out", "src"], ["src"])
