"""Where an import writes: inputs inside the output directory are refused (the finished import replaces it),
paths that cannot be written are named (OutputError, exit 2), a failed import leaves no directory behind, and
a symlinked output is followed. Also datasets' JSON-typed columns (rows of mixed types) read as their values."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crossrec_peft.cli import main
from crossrec_peft.data.importers import import_dataset
from crossrec_peft.errors import DataError, OutputError
from tests.data.test_importers import AMAZON_USERS, GENERIC_OPTIONS, amazon, digest, generic, table, write

HF_ROWS = [
    {"reviewer": "r1", "asin": "B1", "product": "Lamp", "ts": 1},
    {"reviewer": "r1", "asin": "B2", "product": "Chair", "ts": 2},
    {"reviewer": "r2", "asin": "B1", "product": "Lamp", "ts": 3},
    {"reviewer": "r2", "asin": "B3", "product": "Desk", "ts": 4},
]
HF_OPTIONS = {"name": "json", "data_files": "reviews.jsonl", "columns": {"user_id": "reviewer", "item_id": "asin", "title": "product", "timestamp": "ts"}}


def hf_source(d: Path, rows=HF_ROWS) -> Path:
    write(d / "reviews.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return d


def everything(root: Path) -> dict[str, str]:
    """Every path under root, hidden ones included, with its content's digest (a directory as '<dir>')."""
    return {**{str(p.relative_to(root)): "<dir>" for p in root.rglob("*") if p.is_dir()}, **digest(root)}


# An earlier import that also holds the user's input: the finished import would replace the directory, and
# with it the input. (fmt, make the source and the earlier import, options, output relative to tmp_path.)
INPUT_IN_OUTPUT = {
    "hf source is the output": (
        "hf", lambda t: hf_source(t / "data"), lambda t: HF_OPTIONS, "data", "would replace the source directory",
    ),
    "hf data_files inside the output": (
        "hf", lambda t: (hf_source(t / "out"), hf_source(t / "src"))[1],
        lambda t: {**HF_OPTIONS, "data_files": str(t / "out" / "reviews.jsonl")},
        "out", "data_files file .*reviews.jsonl is inside the output directory",
    ),
    "generic items file inside the output": (
        "generic", lambda t: (generic(t / "out"), generic(t / "src"))[1],
        lambda t: {**GENERIC_OPTIONS, "items": str(t / "out" / "catalog.csv")},
        "out", "items file .*catalog.csv is inside the output directory",
    ),
}


@pytest.mark.parametrize("fmt, make, options, out, message", INPUT_IN_OUTPUT.values(), ids=INPUT_IN_OUTPUT.keys())
def test_an_input_inside_the_output_is_refused_and_kept(tmp_path, fmt, make, options, out, message):
    src = make(tmp_path)
    # The output is an earlier import's directory (its report), so only the input's place can refuse it.
    write(tmp_path / out / "import_report.json", "{}")
    before = everything(tmp_path)
    with pytest.raises(DataError, match=message):
        import_dataset(fmt, src, tmp_path / out, options=options(tmp_path))
    assert everything(tmp_path) == before


@pytest.mark.parametrize(
    "make, out, message",
    [
        (lambda t: write(t / "a-file", "mine"), "a-file/sub", "Cannot create '.*a-file/sub': '.*a-file' is a file"),
        (lambda t: None, "/proc/self/crossrec-test/out", "Cannot write the directory '/proc/self/crossrec-test'"),
        (lambda t: None, "n" * 300, "File name too long"),
    ],
    ids=["under-a-file", "unwritable", "name-too-long"],
)
def test_an_output_that_cannot_be_written_is_named(tmp_path, capsys, make, out, message):
    if out.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    src = amazon(tmp_path / "src")
    make(tmp_path)
    before = everything(tmp_path)
    with pytest.raises(OutputError, match=message):
        import_dataset("amazon-seq", src, tmp_path / out)
    assert everything(tmp_path) == before
    assert main(["data", "import", "amazon-seq", str(src), "--out", str(tmp_path / out)]) == 2
    assert "error: Cannot" in capsys.readouterr().err


def test_a_failed_import_leaves_no_parent_directories(tmp_path):
    src = amazon(tmp_path / "src", users="u1\tA1 NOPE\n")
    with pytest.raises(DataError, match="NOPE"):
        import_dataset("amazon-seq", src, tmp_path / "new" / "parents" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_long_output_name_and_the_usual_modes(tmp_path):
    out = tmp_path / ("L" * 250)  # legal; the temporary name beside it must still fit the file system's limit
    import_dataset("amazon-seq", amazon(tmp_path / "src"), out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "items.parquet").stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src", out.name])


def test_a_symlinked_output_replaces_what_it_points_to(tmp_path):
    src = amazon(tmp_path / "src")
    import_dataset("amazon-seq", src, tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    write(src / "users.tsv", AMAZON_USERS.replace(" A1\n", "\n"))
    import_dataset("amazon-seq", src, tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and len(table(tmp_path / "real" / "interactions.parquet")) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real", "src"]  # no stray link or old directory


@pytest.mark.parametrize(
    "row, field, expected",
    [
        # One row of another type makes datasets give the column Arrow's JSON type, whose values are JSON
        # texts: every title came out quoted ('"Lamp"').
        ({"product": ["a", "b"]}, "title", ["Lamp", "Chair", "Desk", '["a", "b"]']),
        # A date among epoch seconds: the row parses like any other.
        ({"ts": "1970-01-01T00:00:05Z"}, "timestamp", [1.0, 2.0, 3.0, 4.0, 5.0]),
    ],
    ids=["list-among-titles", "date-among-numbers"],
)
def test_hf_columns_of_mixed_types_read_as_their_values(tmp_path, row, field, expected):
    rows = [*HF_ROWS, {"reviewer": "r3", "asin": "B4", "product": "Stool", "ts": 5, **row}]
    src = hf_source(tmp_path / "src", rows)
    import_dataset("hf", src, tmp_path / "out", options={**HF_OPTIONS, "cache_dir": str(tmp_path / "hf-cache")})
    if field == "title":
        got = [r["title"] for r in table(tmp_path / "out" / "items.parquet")]
    else:
        got = sorted(r["timestamp"] for r in table(tmp_path / "out" / "interactions.parquet"))
    assert got == expected
