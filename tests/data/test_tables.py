"""Reading the standard layout's tables (issue 11, groups 2, 3 and 6): ids stay text, timestamps are parsed
value by value, and a table that cannot be parsed is named with its file, 1-based line and what is wrong,
with no library log line saying something else."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from crossrec_peft.data import load_layout
from crossrec_peft.errors import DataError

INTERACTIONS_CSV = "user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\nu1,i3,3\n"
ITEMS_CSV = "item_id,title\ni1,a\ni2,b\ni3,c\n"


def empty_parquet() -> bytes:
    """A Parquet file with the interactions' columns and no rows."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"user_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string())}), buffer)
    return buffer.getvalue()


def layout(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"items.csv": ITEMS_CSV, "interactions.csv": INTERACTIONS_CSV, **files}
    for name, content in files.items():
        if content is None:
            continue
        (directory / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return directory


# -- group 2: ids keep their text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, item_ids, user_ids",
    [
        ({"items.csv": "item_id,title\n007,a\n016,b\n7,c\n",
          "interactions.csv": "user_id,item_id,timestamp\n001,007,1\n001,016,2\n001,7,3\n"}, ["007", "016", "7"], ["001"]),
        ({"items.csv": "item_id,title\n0673677002,a\n0673677003,b\n0673677004,c\n",
          "interactions.csv": "user_id,item_id\n42,0673677002\n42,0673677003\n42,0673677004\n"},
         ["0673677002", "0673677003", "0673677004"], ["42"]),
        ({"items.csv": None, "items.jsonl": '{"item_id": 7, "title": "a"}\n{"item_id": "i2", "title": "b"}\n{"item_id": "1.50", "title": "c"}\n',
          "interactions.csv": None,
          "interactions.jsonl": '{"user_id": 1, "item_id": "7"}\n{"user_id": "1", "item_id": "i2"}\n{"user_id": 1, "item_id": "1.50"}\n'},
         ["7", "i2", "1.50"], ["1"]),
    ],
    ids=["leading-zeros", "retail-article-ids", "jsonl-numbers-and-text"],
)
def test_ids_are_read_as_text(tmp_path, files, item_ids, user_ids):
    data = load_layout(layout(tmp_path / "d", files), ["title"])
    assert data.item_ids == item_ids
    assert data.user_ids == user_ids
    assert data.sequences[0].tolist() == [0, 1, 2]


def test_ids_differing_only_by_leading_zeros_are_distinct_items(tmp_path):
    d = layout(tmp_path / "d", {"items.csv": "item_id,title\n007,a\n7,b\n07,c\n",
                                 "interactions.csv": "user_id,item_id\nu,7\nu,007\nu,07\n"})
    data = load_layout(d, ["title"])
    assert data.item_ids == ["007", "7", "07"] and data.sequences[0].tolist() == [1, 0, 2]


def test_catalog_and_users_table_keep_leading_zeros(tmp_path):
    from crossrec_peft.index import load_catalog

    d = layout(tmp_path / "d", {"items.csv": "item_id,title\n007,a\n016,b\n7,c\n",
                                 "interactions.csv": "user_id,item_id\n001,007\n001,016\n001,7\n",
                                 "users.csv": "user_id,risk_level\n001,Balanced\n"})
    assert load_catalog(d).item_ids == ["007", "016", "7"]
    assert load_layout(d, ["title"]).users.data.column("user_id").to_pylist() == ["001"]


# -- group 3: timestamps, value by value ---------------------------------------------------------------------


def test_docs_example_with_mixed_timestamps_loads(tmp_path):
    """The JSONL example of docs/data.md, verbatim: an int, an int and an ISO string."""
    d = layout(tmp_path / "d", {
        "items.csv": None, "interactions.csv": None,
        "items.jsonl": (
            '{"item_id": "i1", "title": "Oak desk lamp, warm white", "category": "lighting", "image": "images/i1.png"}\n'
            '{"item_id": "i2", "title": "Walnut side table", "category": "furniture"}\n'
            '{"item_id": "i3", "title": "Linen cushion cover", "category": "textiles"}\n'
        ),
        "interactions.jsonl": (
            '{"user_id": "u1", "item_id": "i2", "timestamp": 1700000000}\n'
            '{"user_id": "u1", "item_id": "i1", "timestamp": 1700003600}\n'
            '{"user_id": "u1", "item_id": "i3", "timestamp": "2023-11-15T09:00:00Z"}\n'
        ),
    })
    data = load_layout(d, ["title"])
    assert data.sequences[0].tolist() == [1, 0, 2]
    assert data.timestamps[0].tolist() == [1700000000.0, 1700003600.0, 1700038800.0]


@pytest.mark.parametrize(
    "interactions, expected",
    [
        ("user_id,item_id,timestamp\nu,i1,10\nu,i2,11\nu,i3,yesterday\nu,i1,12\n",
         ["interactions.csv, line 4, field 'timestamp'", "'yesterday'"]),
        ("user_id,item_id,timestamp\nu,i1,2024-01-01\nu,i2,1704153600.5\nu,i3,2024-13-45\n",
         ["interactions.csv, line 4, field 'timestamp'", "'2024-13-45'"]),
        ("user_id,item_id,timestamp\nu,i1,10\nu,i2,\nu,i3,12\n",
         ["interactions.csv, line 3, field 'timestamp'", "empty value"]),
    ],
    ids=["word", "bad-date-among-mixed", "empty-csv-cell"],
)
def test_unparsable_timestamp_is_named_by_its_own_line(tmp_path, interactions, expected):
    with pytest.raises(DataError) as err:
        load_layout(layout(tmp_path / "d", {"interactions.csv": interactions}), ["title"])
    message = str(err.value)
    assert all(e in message for e in expected), message
    assert "more rows" not in message and "line 2," not in message


def test_null_timestamp_message_has_no_numpy_repr(tmp_path):
    d = layout(tmp_path / "d", {"interactions.csv": None, "interactions.jsonl": (
        '{"user_id": "u", "item_id": "i1", "timestamp": 1}\n{"user_id": "u", "item_id": "i2", "timestamp": null}\n'
        '{"user_id": "u", "item_id": "i3", "timestamp": 3}\n')})
    with pytest.raises(DataError, match=r"interactions.jsonl, line 2, field 'timestamp': empty value") as err:
        load_layout(d, ["title"])
    assert "np." not in str(err.value) and "nan" not in str(err.value)


# -- group 6: tables that cannot be parsed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"items.csv": b"item_id,title\ni1,a\ni2,caf\xe9\ni3,c\n"}, "items.csv, line 3: not UTF-8 (byte 0xe9)"),
        ({"items.csv": "item_id,title\ni1,a\ni2,b,extra\ni3,c\n"}, "items.csv, line 3: 3 fields, more than the header's 2"),
        ({"items.csv": None, "items.jsonl": '{"item_id": "i1", "title": "a"}\n{"item_id": "i2", "title": "b"}\n{"item_id": "i3", "ti'},
         "items.jsonl, line 3: cannot be read as JSON"),
        ({"items.csv": None, "items.jsonl": '{"item_id": "i1", "title": "a"}\n["i2", "b"]\n{"item_id": "i3", "title": "c"}\n'},
         "items.jsonl, line 2: holds a JSON array, not an object"),
        ({"items.csv": None, "items.jsonl": '{"item_id": "i1", "title": "a"}\n\x00garbage{{]\n{"item_id": "i3", "title": "c"}\n'},
         "items.jsonl, line 2: cannot be read as JSON"),
        ({"items.csv": None, "items.jsonl": b'{"item_id": "i1", "title": "a"}\n{"item_id": "i2", "title": "\xff"}\n'},
         "items.jsonl, line 2: not UTF-8"),
        ({"items.csv": "item_id,title\n"}, "items.csv: has a header (item_id, title) but no rows"),
        ({"items.csv": "item_id\rtitle,x\ni1,a\n"}, "items.csv, line 2: 2 fields, more than the header's 1"),
        # Found by the layout fuzz test: the header's open quote runs a name on into a line that is not UTF-8.
        ({"items.csv": b'00,"lamp 0,c\n01\x00\x80lamp 1, oak",c\n02,"lamp 2, oak",c\n'},
         "items.csv, line 1 (the header): a quote opened there is not closed on that line"),
        ({"items.csv": ""}, "items.csv: the file is empty (0 bytes)"),
        ({"interactions.csv": None, "interactions.jsonl": ""}, "interactions.jsonl: the file is empty (0 bytes)"),
        ({"interactions.csv": None, "interactions.parquet": ""}, "interactions.parquet: the file is empty (0 bytes)"),
        ({"interactions.csv": None, "interactions.parquet": b"PAR1 not really"}, "interactions.parquet: cannot be read as Parquet"),
        ({"interactions.csv": None, "interactions.parquet": empty_parquet()}, "interactions.parquet: has no rows"),
    ],
    ids=["non-utf8-csv", "ragged-csv", "truncated-jsonl", "jsonl-array", "jsonl-garbage", "non-utf8-jsonl",
         "header-only-csv", "carriage-return-in-header", "open-quote-in-header-into-non-utf8", "zero-byte-csv", "zero-byte-jsonl", "zero-byte-parquet", "corrupt-parquet", "zero-row-parquet"],
)
def test_unparsable_tables_name_file_and_line(tmp_path, caplog, files, expected):
    d = layout(tmp_path / "d", files)
    with caplog.at_level(logging.DEBUG), pytest.raises(DataError) as err:
        load_layout(d, ["title"])
    assert expected in str(err.value), str(err.value)
    assert str(d) in str(err.value)
    # No library log line with its own (0-based or vaguer) account of the same problem.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]


def test_table_that_is_a_directory_is_named(tmp_path):
    d = layout(tmp_path / "d", {"items.csv": None})
    (d / "items.csv").mkdir()
    with pytest.raises(DataError, match="items.csv: is a directory"):
        load_layout(d, ["title"])
    with pytest.raises(DataError, match="is a file, not a directory"):
        load_layout(d / "interactions.csv", ["title"])
