"""Options checked before any work (issue 11, groups 4 and 8): numbers by the parser naming the option,
output plots before anything is read, printed or written; a user's file is never overwritten by a plot."""

from __future__ import annotations

import hashlib

import pytest

from crossrec_peft.cli import main
from tests.conftest import small_layout
from tests.test_report import write_run


@pytest.mark.parametrize(
    "args, option",
    [
        (["index", "{pkg}", "--batch-size", "0"], "--batch-size"),
        (["index", "{pkg}", "--queries", "-3"], "--queries"),
        (["recommend", "{pkg}", "--history", "i1", "-k", "0"], "-k"),
        (["data", "validate", "{data}", "--min-interactions", "0"], "--min-interactions"),
        (["sweep", "ecommerce", "--trials", "0"], "--trials"),
    ],
    ids=["index-batch-size", "index-queries", "recommend-k", "validate-min-interactions", "sweep-trials"],
)
def test_non_positive_numbers_are_refused_by_the_parser(tmp_path, capsys, args, option):
    data = small_layout(tmp_path / "data")
    with pytest.raises(SystemExit) as exit_:
        main([a.format(pkg=tmp_path / "pkg", data=data) for a in args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "must be a positive integer" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "plot, message",
    [
        ("stats.txt", "--plot must name a .png file"),
        ("{data}/items.jsonl", "--plot must name a .png file"),
        ("{data}/img/i0.png", "is inside the data directory"),
        ("{mine}", "exists and is not a PNG image"),
        ("{tmp}", "must name a .png file"),
    ],
    ids=["text-file", "data-table", "data-image", "user-file-named-png", "directory"],
)
def test_data_stats_plot_is_checked_first(tmp_path, capsys, plot, message):
    data = small_layout(tmp_path / "data")
    mine = tmp_path / "mine.png"
    mine.write_text("my notes, not an image\n")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["data", "stats", str(data), "--plot", plot.format(data=data, mine=mine, tmp=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == "" and "internal error" not in captured.err
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_data_stats_plot_rewrites_its_own_png(tmp_path, capsys):
    data = small_layout(tmp_path / "data")
    plot = tmp_path / "stats.png"
    for _ in range(2):
        assert main(["data", "stats", str(data), "--plot", str(plot)]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG") and f"plot: {plot}" in capsys.readouterr().out


def test_report_plot_is_checked_before_the_table_is_printed(tmp_path, capsys):
    write_run(tmp_path / "a", "a", plots=False)
    assert main(["report", str(tmp_path / "a"), "--plot", str(tmp_path / "x.jpg")]) == 2
    captured = capsys.readouterr()
    assert "--plot must name a .png file" in captured.err and captured.out == ""


@pytest.mark.parametrize("name, content, message", [
    ("index.bin", None, "--out must name a .safetensors file"),
    ("weights.safetensors", b"my own file", "exists and is not a crossrec-peft index"),
])
def test_index_out_is_checked_before_loading(tmp_path, capsys, name, content, message):
    out = tmp_path / name
    if content is not None:
        out.write_bytes(content)
    assert main(["index", str(tmp_path / "no-package"), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert (out.read_bytes() == content) if content is not None else not out.exists()
