"""`crossrec-peft data import | validate | stats`: summaries, exit codes, and errors naming file, row and
field, on small files the tests write."""

from __future__ import annotations

import json

import pytest

from crossrec_peft.cli import main
from crossrec_peft.commands.data import parse_option_args
from tests.conftest import small_layout, write_jsonl

ITEMS_CSV = "sku,name,price\nS1,Oak lamp,10\nS2,Walnut table,20\nS3,Linen cushion,5\nS4,Brass clock,15\n"
EVENTS = [
    ("c1", "S1", 1), ("c1", "S2", 2), ("c1", "S3", 3), ("c1", "S3", 3),  # one exact repeat (dedup)
    ("c2", "S4", 4), ("c2", "S1", 5), ("c2", "S2", 6), ("c2", "S9", 7),  # S9: not in the catalog
]
OPTIONS = ["-o", "items=catalog.csv", "-o", "interactions=events.jsonl", "-o", "columns.item_id=sku",
           "-o", "columns.user_id=customer", "-o", "columns.title=name", "-o", "columns.timestamp=when"]


def source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "catalog.csv").write_text(ITEMS_CSV)
    write_jsonl(src / "events.jsonl", [{"customer": c, "sku": s, "when": 1_700_000_000 + t} for c, s, t in EVENTS])
    return src


def test_import_prints_kept_and_dropped_counts(tmp_path, capsys):
    src, out = source(tmp_path), tmp_path / "out"
    assert main(["data", "import", "generic", str(src), "--out", str(out), "--on-error", "skip", *OPTIONS]) == 0
    printed = capsys.readouterr().out
    assert "read:    catalog.csv 4 rows, events.jsonl 8 rows" in printed
    assert "written: items 4, interactions 6 (2 users with interactions)" in printed
    assert "dropped interactions: duplicate_interaction 1, unknown_item 1" in printed
    assert f"bad rows: 1, listed in {out}/rejected.jsonl" in printed
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"], r["reason"]) for r in rejected] == [(8, "sku", "unknown_item")]

    # The same import in strict mode stops at the bad row, exit 2, and leaves the earlier import alone.
    assert main(["data", "import", "generic", str(src), "--out", str(out), *OPTIONS]) == 2
    err = capsys.readouterr().err
    assert "events.jsonl, line 8, field 'sku': item 'S9' is not in catalog.csv." in err
    assert (out / "interactions.parquet").is_file()


def test_import_options_from_a_file(tmp_path, capsys):
    src = source(tmp_path)
    (tmp_path / "opts.yaml").write_text(
        "items: catalog.csv\ninteractions: events.jsonl\n"
        "columns: {item_id: sku, user_id: customer, title: name, timestamp: when}\n"
    )
    # -o overrides the file: k_core=2 keeps items with two interactions (S1, S2) and users with two of those.
    code = main(["data", "import", "generic", str(src), "--out", str(tmp_path / "o"), "--options", str(tmp_path / "opts.yaml"),
                 "--on-error", "skip", "-o", "k_core=2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "written: items 2, interactions 4" in printed and "k_core" in printed


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "import", "movielen", "x", "--out", "y"], "Unknown import format 'movielen'. Did you mean 'movielens'?"),
        (["data", "import", "generic", "{src}", "--out", "{out}", "-o", "k_cor=2"], "unknown option 'k_cor'. Did you mean 'k_core'?"),
        (["data", "import", "generic", "{src}", "--out", "{out}", "-o", "k_core"], "Format options are KEY=VALUE, got 'k_core'"),
        (["data", "import", "generic", "{src}/nope", "--out", "{out}"], "does not exist"),
        (["data", "import", "generic", "{src}", "--out", "{out}", "--options", "{src}/none.yaml"], "Options file"),
    ],
)
def test_import_errors_exit_2(tmp_path, capsys, args, message):
    src = source(tmp_path)
    argv = [a.format(src=src, out=tmp_path / "out") for a in args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_parse_option_args():
    hints = {"items": str, "k_core": int, "encoding": str, "text_fields": list | None}
    parsed = parse_option_args(
        ["k_core=5", "dedup=false", "text_fields=[title, description]", "items=2024-01-01.csv", "encoding=007",
         "columns.item_id=sku", "columns.title=007", "max_text_length=null"],
        hints,
    )
    assert parsed == {"k_core": 5, "dedup": False, "text_fields": ["title", "description"], "items": "2024-01-01.csv",
                      "encoding": "007", "columns": {"item_id": "sku", "title": "007"}, "max_text_length": None}


def test_validate_ok_and_bad(tmp_path, capsys):
    d = small_layout(tmp_path / "d")
    assert main(["data", "validate", str(d)]) == 0
    assert f"OK: {d}: 12 items, 8 users, 40 interactions (text fields checked: title; every user has at least 3)" in capsys.readouterr().out
    lines = (d / "interactions.jsonl").read_text().splitlines()
    lines[6] = '{"user_id": "u1", "item_id": "i4", "timestamp": "soon"}'
    (d / "interactions.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["data", "validate", str(d)]) == 2
    assert "interactions.jsonl, line 7, field 'timestamp'" in capsys.readouterr().err


def test_validate_missing_image_exits_2(tmp_path, capsys):
    d = small_layout(tmp_path / "d")
    (d / "img" / "i3.png").unlink()
    assert main(["data", "validate", str(d), "--fields", "title,category"]) == 2
    err = capsys.readouterr().err
    assert "items.jsonl, line 4, field 'image'" in err and "Traceback" not in err
    assert main(["data", "validate", str(d), "--no-images"]) == 0


def test_stats_text_json_and_plot(tmp_path, capsys):
    d = small_layout(tmp_path / "d")
    assert main(["data", "stats", str(d), "--plot", str(tmp_path / "h.png")]) == 0
    printed = capsys.readouterr().out
    assert "interactions            40" in printed and "images: 100.0% of items have an existing file" in printed
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "stats", str(d), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["users"] == 8 and stats["history_length"]["max"] == 5 and stats["image"]["coverage"] == 1.0
    assert main(["data", "stats", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
