"""`crossrec-peft data import | validate | stats` on input that used to end in "internal error: ..." or in a
silent, wrong success: exit 2 with one message naming the file and line, or the option, through the real CLI."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest

from crossrec_peft.cli import main
from tests.commands.test_data import OPTIONS, source
from tests.conftest import small_layout
from tests.data.test_importers import FT_TRANSACTIONS, fartrans, movielens, write

DEEP = "[" * 100_000 + "]" * 100_000


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def expect_exit_2(argv, capsys, *expected: str) -> str:
    code, out, err = run(argv, capsys)
    assert code == 2, (out, err)
    assert all(e in err for e in expected), err
    assert "internal error" not in err and "Traceback" not in err
    return out


# -- validate and stats on tables that cannot be read -------------------------------------------------------------


def _layout(tmp_path: Path, kind: str) -> tuple[Path, str]:
    d = tmp_path / "d"
    write(d / "interactions.csv", "user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\nu1,i3,3\nu2,i3,4\nu2,i2,5\nu2,i1,6\n")
    if kind == "unclosed-quote":
        write(d / "items.csv", 'item_id,title\ni1,Oak desk lamp\ni2,Walnut side table\ni3,Linen cushion\ni4,"Brass hook\ni5,Wool rug\n')
        return d, f"{d / 'items.csv'}, line 5: a quote opened on this line is never closed"
    write(d / "items.jsonl", '{"item_id": "i1", "title": "a"}\n{"item_id": "i2", "title": "b"}\n{"item_id": "i3", "title": "c", "x": ' + DEEP + "}\n")
    return d, f"{d / 'items.jsonl'}, line 3: cannot be read as JSON: nested too deeply"


@pytest.mark.parametrize("command", [["validate"], ["stats"], ["stats", "--json"]], ids=["validate", "stats", "stats-json"])
@pytest.mark.parametrize("kind", ["unclosed-quote", "deep-json"])
def test_validate_and_stats_refuse_unreadable_tables(tmp_path, capsys, command, kind):
    d, expected = _layout(tmp_path, kind)
    out = expect_exit_2(["data", command[0], d, *command[1:]], capsys, expected)
    assert out == ""


# -- import options ------------------------------------------------------------------------------------------------


def _src(tmp_path: Path, fmt: str) -> Path:
    return {"movielens": movielens, "far-trans": fartrans}[fmt](tmp_path / "src") if fmt != "generic" else source(tmp_path)


@pytest.mark.parametrize(
    "fmt, options, expected",
    [
        ("movielens", ["-o", "encoding=klingon"], "option 'encoding' is 'klingon', which is not an encoding Python knows"),
        ("generic", [*OPTIONS, "-o", "encoding=rot13"], "option 'encoding' is 'rot13', which is not a text encoding"),
        ("generic", [*OPTIONS, "-o", "delimiter=;;"], "option 'delimiter' must be one character other than a quote or a line break, not ';;'"),
        ("generic", [*OPTIONS, "-o", 'delimiter="'], "option 'delimiter' must be one character other than a quote or a line break, not '\"'"),
        ("generic", [*OPTIONS, "-o", 'delimiter="\\n"'], "option 'delimiter' must be one character other than a quote or a line break, not '\\n'"),
        ("movielens", ["-o", "min_rating=.nan"], "option 'min_rating' must be a finite number, not nan"),
        ("far-trans", ["-o", "factsheet_points=0"], "option 'factsheet_points' must be a positive number of close prices"),
        ("far-trans", ["-o", "factsheet_points=-1"], "option 'factsheet_points' must be a positive number of close prices"),
    ],
    ids=["unknown-encoding", "rot13", "two-char-delimiter", "quote-delimiter", "newline-delimiter", "nan-min-rating",
         "zero-factsheet-points", "negative-factsheet-points"],
)
def test_import_option_values_exit_2_naming_the_option(tmp_path, capsys, fmt, options, expected):
    src = _src(tmp_path, fmt)
    out = expect_exit_2(["data", "import", fmt, src, "--out", tmp_path / "out", *options], capsys, f"Importer '{fmt}': {expected}")
    assert out == "" and not (tmp_path / "out").exists()


def test_import_tab_delimiter_as_the_message_says(tmp_path, capsys):
    src = source(tmp_path)
    (src / "catalog.csv").write_text((src / "catalog.csv").read_text().replace(",", "\t"))
    argv = ["data", "import", "generic", src, "--out", tmp_path / "out", "--on-error", "skip", *OPTIONS, "-o", 'delimiter="\\t"']
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "read:    catalog.csv 4 rows" in out and "written: items 4" in out


@pytest.mark.parametrize(
    "content, expected",
    [
        ("k_core: 3\ndedup: false\n  min_rating: 4\n", "line 3, column 13: cannot be read as YAML or JSON: mapping values are not allowed here."),
        ("k_core: [1\n", "line 2, column 1: cannot be read as YAML or JSON: expected ',' or ']', but got '<stream end>' "
                         "(while parsing a flow sequence that starts at line 1, column 9)."),
        ('{"k_core": 3,\n "dedup": false,,\n}\n', "line 2, column 17: cannot be read as YAML or JSON:"),
        ("k_core: 2\ndedup: \x07\n", "line 2, column 8: cannot be read as YAML or JSON: special characters are not allowed."),
    ],
    ids=["yaml-indent", "unclosed-list", "json-double-comma", "control-character"],
)
def test_broken_options_file_names_line_and_column(tmp_path, capsys, content, expected):
    src = movielens(tmp_path / "src")
    (tmp_path / "opts.yaml").write_text(content)
    expect_exit_2(["data", "import", "movielens", src, "--out", tmp_path / "out", "--options", tmp_path / "opts.yaml"], capsys,
                  f"{tmp_path / 'opts.yaml'}, {expected}")


@pytest.mark.parametrize("on_error", ["strict", "skip"])
def test_import_unclosed_quote_exits_2_in_both_modes(tmp_path, capsys, on_error):
    lines = FT_TRANSACTIONS.splitlines(keepends=True)
    lines[3] = lines[3].replace("Branch,XATH", '"Branch,XATH')
    src = fartrans(tmp_path / "src", transactions="".join(lines))
    out = expect_exit_2(["data", "import", "far-trans", src, "--out", tmp_path / "out", "--on-error", on_error], capsys,
                        f"{src / 'transactions.csv'}, line 4, field 'customerID': not valid CSV (unexpected end of data)")
    assert out == "" and not (tmp_path / "out").exists()


def test_import_far_trans_with_an_id_too_long_for_a_file_name(tmp_path, capsys):
    long_isin = "X" * 300
    src = fartrans(tmp_path / "src")
    with open(src / "asset_information.csv", "a") as fh:
        fh.write(f"{long_isin},Long fund,LF,MTF,Bond,XATH,,,2020-01-01\n")
    with open(src / "transactions.csv", "a") as fh:
        fh.write(f"C1,{long_isin},9,Buy,2020-03-01,10,1,Branch,XATH\n")
    code, out, err = run(["data", "import", "far-trans", src, "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    assert "written: items 4" in out and len(list((tmp_path / "out" / "images").iterdir())) == 4


# -- stats --plot where the plot cannot be written -------------------------------------------------------------------


def _writable(path: Path) -> bool:
    try:
        if path.is_dir():
            (path / ".probe").touch()
            (path / ".probe").unlink()
        else:
            open(path, "ab").close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def unwritable(path: Path):
    """`path` (a folder or a file) made unwritable for this process: by its permission bits, and where they do
    not stop it (root ignores them) by `chattr +i`; the test is skipped where neither works."""
    mode = path.stat().st_mode
    path.chmod(0o555 if path.is_dir() else 0o444)
    immutable = False
    try:
        if _writable(path) and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
        if _writable(path):
            pytest.skip("cannot make a path unwritable here (root, without chattr +i on this file system)")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)


@pytest.mark.parametrize(
    "where, expected",
    [
        ("under-a-file", "{plot}: {tmp}/notes.txt is not a folder, so the file cannot be written there"),
        ("deep-under-a-file", "{plot}: {tmp}/notes.txt is not a folder, so the file cannot be written there"),
        ("unwritable-folder", "{plot}: cannot write a file in {tmp}/ro"),
        ("unwritable-earlier-plot", "{plot}: exists and cannot be replaced"),
    ],
    ids=["under-a-file", "deep-under-a-file", "unwritable-folder", "unwritable-earlier-plot"],
)
def test_stats_plot_that_cannot_be_written_exits_2_before_anything_is_printed(tmp_path, capsys, where, expected):
    d = small_layout(tmp_path / "d")
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "ro").mkdir()
    plot = {
        "under-a-file": tmp_path / "notes.txt" / "h.png",
        "deep-under-a-file": tmp_path / "notes.txt" / "a" / "b" / "h.png",
        "unwritable-folder": tmp_path / "ro" / "h.png",
        "unwritable-earlier-plot": tmp_path / "ro" / "earlier.png",
    }[where]
    if where == "unwritable-earlier-plot":
        assert main(["data", "stats", str(d), "--plot", str(plot)]) == 0
        capsys.readouterr()
    with unwritable(plot if where == "unwritable-earlier-plot" else tmp_path / "ro"):
        out = expect_exit_2(["data", "stats", d, "--plot", plot], capsys, f"--plot {expected.format(plot=plot, tmp=tmp_path)}")
    assert out == ""


def test_stats_plot_in_a_folder_still_to_be_made(tmp_path, capsys):
    d = small_layout(tmp_path / "d")
    code, out, err = run(["data", "stats", d, "--plot", tmp_path / "new" / "sub" / "h.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "new" / "sub" / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in (tmp_path / "new" / "sub").iterdir() if p.name.startswith(".crossrec")]  # the probe is gone
