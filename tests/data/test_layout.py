"""The standard layout loader: clean data loads, every kind of bad input gets an error naming file, row and
field, and the user's files are never modified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from crossrec_peft.data import leave_one_out, load_layout
from crossrec_peft.errors import DataError
from tests.conftest import write_jsonl


def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_loads_jsonl_in_time_order(tmp_path):
    d = tmp_path / "d"
    write_jsonl(d / "items.jsonl", [{"item_id": f"i{i}", "title": f"t{i}"} for i in range(4)])
    write_jsonl(d / "interactions.jsonl", [
        {"user_id": "a", "item_id": "i2", "timestamp": 30},
        {"user_id": "a", "item_id": "i0", "timestamp": 10},
        {"user_id": "b", "item_id": "i3", "timestamp": 5},
        {"user_id": "a", "item_id": "i1", "timestamp": 20},
        {"user_id": "b", "item_id": "i1", "timestamp": 5},  # same time: file order kept
        {"user_id": "b", "item_id": "i0", "timestamp": 6},
    ])
    data = load_layout(d, ["title"])
    assert data.user_ids == ["a", "b"]
    assert [s.tolist() for s in data.sequences] == [[0, 1, 2], [3, 1, 0]]
    assert data.summary()["interactions"] == 6


def test_loads_csv_and_parquet_and_iso_timestamps(tmp_path):
    import datasets

    d = tmp_path / "d"
    d.mkdir()
    (d / "items.csv").write_text('item_id,title\n1,"lamp, red"\n2,chair\n3,desk\n')
    datasets.Dataset.from_dict({
        "user_id": ["u", "u", "u"], "item_id": ["3", "1", "2"],
        "timestamp": ["2024-01-03T00:00:00", "2024-01-01T00:00:00", "2024-01-02T00:00:00"],
    }).to_parquet(str(d / "interactions.parquet"))
    data = load_layout(d, ["title"])
    assert data.item_ids == ["1", "2", "3"]
    assert data.sequences[0].tolist() == [0, 1, 2]


def test_leave_one_out_split(layout_dir):
    data = load_layout(layout_dir, ["title"])
    split = leave_one_out(data.sequences)
    seq = data.sequences[0]
    assert split.train[0].tolist() == seq[:-2].tolist()
    assert split.validation.targets[0] == seq[-2] and split.test.targets[0] == seq[-1]
    assert split.test.histories[0].tolist() == seq[:-1].tolist()
    counts = split.train_item_counts(len(data.item_ids))
    assert counts.sum() == sum(len(s) - 2 for s in data.sequences)


def _expect(directory: Path, *fragments: str, fields=("title",)):
    before = digest(directory)
    with pytest.raises(DataError) as err:
        load_layout(directory, list(fields))
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    assert digest(directory) == before
    return str(err.value)


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_layout(tmp_path / "nope", ["title"])
    d = tmp_path / "d"
    write_jsonl(d / "items.jsonl", [{"item_id": "a", "title": "x"}])
    _expect(d, "no interactions table", "interactions.jsonl")


def test_two_formats_of_one_table(layout_dir):
    (layout_dir / "items.csv").write_text("item_id,title\na,b\n")
    _expect(layout_dir, "several items tables")


def test_missing_column(layout_dir):
    _expect(layout_dir, "items.jsonl", "missing column 'description'", "Columns present: item_id, title, category", fields=("title", "description"))


def test_duplicate_item_id(layout_dir):
    rows = [{"item_id": "i0", "title": "a"}, {"item_id": "i1", "title": "b"}, {"item_id": "i0", "title": "c"}]
    write_jsonl(layout_dir / "items.jsonl", rows)
    _expect(layout_dir, "items.jsonl, line 3", "field 'item_id'", "duplicate item id 'i0'", "line 1")


def test_unknown_item_in_interactions(layout_dir):
    path = layout_dir / "interactions.jsonl"
    lines = path.read_text().splitlines()
    lines[4] = '{"user_id": "u0", "item_id": "ghost", "timestamp": 5}'
    lines[6] = '{"user_id": "u1", "item_id": "ghost2", "timestamp": 5}'
    path.write_text("\n".join(lines) + "\n")
    _expect(layout_dir, "interactions.jsonl, line 5", "field 'item_id'", "item 'ghost'", "1 more rows name unknown items")


def test_user_with_too_few_interactions(layout_dir):
    path = layout_dir / "interactions.jsonl"
    path.write_text(path.read_text() + '{"user_id": "lonely", "item_id": "i1", "timestamp": 1}\n')
    _expect(layout_dir, "line 41", "user 'lonely' has 1 interaction", "at least 3")


def test_empty_ids(layout_dir):
    write_jsonl(layout_dir / "items.jsonl", [{"item_id": None if i == 1 else f"i{i}", "title": "x"} for i in range(12)])
    _expect(layout_dir, "items.jsonl, line 2", "field 'item_id': empty value")


def test_bad_timestamp(layout_dir):
    path = layout_dir / "interactions.jsonl"
    lines = path.read_text().splitlines()
    rows = [l.replace('"timestamp": ', '"timestamp": "') .replace("}", '"}') for l in lines]
    rows[2] = rows[2].replace('"1002"', '"not a date"')
    path.write_text("\n".join(rows) + "\n")
    _expect(layout_dir, "interactions.jsonl, line 3", "field 'timestamp'", "'not a date'")


def test_unreadable_file(layout_dir):
    (layout_dir / "items.jsonl").write_text('{"item_id": "a", "title": \n')
    _expect(layout_dir, "items.jsonl", "cannot be read as JSON")


def test_generated_demo_is_deterministic(tmp_path):
    from crossrec_peft.data.domains import get_domain

    domain = get_domain("ecommerce")
    domain.generate(tmp_path / "a", num_items=60, num_users=40, seed=3)
    domain.generate(tmp_path / "b", num_items=60, num_users=40, seed=3)
    domain.generate(tmp_path / "c", num_items=60, num_users=40, seed=4)
    a, b, c = (load_layout(tmp_path / x, ["title", "category"]) for x in "abc")
    assert a.items.data.column("title").to_pylist() == b.items.data.column("title").to_pylist()
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert a.items.data.column("title").to_pylist() != c.items.data.column("title").to_pylist()
    assert len(a.user_ids) == 40 and min(len(s) for s in a.sequences) >= 4
    assert all(len(set(s.tolist())) == len(s) for s in a.sequences)  # no repeats


def test_typed_id_columns_and_timestamps_are_kept(tmp_path):
    """Ids stored as integers, large strings or dictionaries load as text; each history keeps its timestamps."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "d"
    d.mkdir()
    pq.write_table(pa.table({"item_id": pa.array(["a", "b", "c"], pa.large_string()), "title": ["x", "y", "z"]}), d / "items.parquet")
    pq.write_table(pa.table({
        "user_id": pa.array([7, 7, 7, 8, 8, 8]),
        "item_id": pa.array(["a", "b", "c", "c", "b", "a"]).dictionary_encode(),
        "timestamp": [30, 20, 10, 1, 2, 3],
    }), d / "interactions.parquet")
    data = load_layout(d, ["title"])
    assert data.user_ids == ["7", "8"]
    assert [s.tolist() for s in data.sequences] == [[2, 1, 0], [2, 1, 0]]
    assert [t.tolist() for t in data.timestamps] == [[10.0, 20.0, 30.0], [1.0, 2.0, 3.0]]
