"""Mangled standard-layout tables (issue 11): whatever the bytes of items / interactions in CSV, JSONL or
Parquet, `load_layout` either loads or raises DataError naming the data file, never another exception (and
never crashes the process: pyarrow's JSON reader can, on some garbage, which is why JSONL is parsed first)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crossrec_peft.data import load_layout
from crossrec_peft.errors import DataError
from tests.data.test_importers_fuzz import MUTATION, mangle

os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "crossrec-peft-hypothesis"))
MAX_EXAMPLES = int(os.environ.get("CROSSREC_FUZZ_EXAMPLES", "40"))

ITEMS = [{"item_id": f"0{i}", "title": f"lamp {i}, oak", "category": "c"} for i in range(5)]
INTERACTIONS = [{"user_id": f"u{u}", "item_id": f"0{(u + t) % 5}", "timestamp": [1700000000, "2023-11-15T09:00:00Z", 1700003600.5][t]}
                for u in range(3) for t in range(3)]


def encode(rows: list[dict], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "csv":
        header = list(rows[0])
        return (",".join(header) + "\n" + "".join(",".join(f'"{r[h]}"' if "," in str(r[h]) else str(r[h]) for h in header) + "\n" for r in rows)).encode()
    table = pa.table({k: [str(r[k]) for r in rows] for k in rows[0]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mangled_tables_load_or_raise_data_error_naming_the_file(fmt, data):
    target = data.draw(st.sampled_from(["items", "interactions"]), label="table")
    mutations = data.draw(st.lists(MUTATION, min_size=1, max_size=4), label="mutations")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "data"
        d.mkdir()
        for stem, rows in (("items", ITEMS), ("interactions", INTERACTIONS)):
            raw = encode(rows, fmt)
            (d / f"{stem}.{fmt}").write_bytes(mangle(raw, mutations) if stem == target else raw)
        try:
            loaded = load_layout(d, ["title"], min_interactions=1)
        except DataError as exc:
            message = str(exc)
            assert str(d) in message, message
            assert f"{target}.{fmt}" in message or "items." in message or "interactions." in message, message
            event(f"DataError: {message.split(': ', 1)[-1][:40]}")
        else:
            assert len(loaded.item_ids) == len(set(loaded.item_ids)) and all(isinstance(i, str) for i in loaded.item_ids)
            assert all(isinstance(u, str) for u in loaded.user_ids)
            event("loaded")
