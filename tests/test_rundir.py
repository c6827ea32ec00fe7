"""A failed run changes nothing in its run directory (issue 11, group 1): nothing is written until the
inputs are checked, and a directory holding a finished run is refused, naming --out and --resume."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from crossrec_peft.cli import main
from tests.conftest import small_layout


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def finished_run(directory: Path, *, report: bool = True) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text("name: ecommerce\nmodel:\n  head_rank: 16\ntrain:\n  epochs: 1\n")
    (directory / "metrics.jsonl").write_text('{"epoch": 1, "split": "validation", "ndcg@10": 0.1}\n')
    if report:
        (directory / "report.json").write_text('{"name": "ecommerce"}\n')
    return directory


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.path=/nonexistent/crossrec"], "does not exist"),
        (["train.lr=-1"], "'train.lr' must be a positive number"),
        (["data.path={bad_data}"], "duplicate item id"),
    ],
    ids=["missing-data", "bad-config", "bad-data"],
)
def test_failed_run_leaves_an_earlier_unfinished_run_dir_as_it_was(tmp_path, capsys, overrides, expected):
    bad = small_layout(tmp_path / "bad")
    (bad / "items.jsonl").write_text((bad / "items.jsonl").read_text().replace('"i1"', '"i0"'))
    out = finished_run(tmp_path / "run", report=False)
    before = snapshot(out)
    args = [o.format(bad_data=bad) for o in overrides]
    assert main(["recipe", "ecommerce", "--quiet", "--out", str(out), *args]) == 2
    assert expected in capsys.readouterr().err
    assert snapshot(out) == before


def test_a_finished_run_is_refused_naming_out_and_resume(tmp_path, capsys):
    out = finished_run(tmp_path / "run")
    before = snapshot(out)
    assert main(["recipe", "ecommerce", "--quiet", "--out", str(out), "data.path=/nonexistent/crossrec"]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "--out" in err and f"--resume {out}" in err
    assert snapshot(out) == before


def test_a_run_dir_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("mine\n")
    assert main(["recipe", "ecommerce", "--quiet", "--out", str(out)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert out.read_text() == "mine\n"


def test_sweep_with_bad_data_leaves_no_study_behind(tmp_path, capsys):
    """A relative of the run directory defect: `sweep` created its directory and SQLite study before the
    data was read, so a typo in data.path left a study with a failed trial."""
    out = tmp_path / "sweep"
    assert main(["sweep", "ecommerce", "data.path=/nonexistent/crossrec", "--trials", "1", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "files",
    [
        {"keep.txt": "mine\n"},
        # The names a run writes, but the user's own: they would be overwritten by the run's.
        {"config.yaml": "my own config\n", "metrics.jsonl": "my metrics\n"},
        {"config.yaml": "- a list\n"},
        {"notes": {"a.txt": "x"}},
    ],
    ids=["other-file", "same-names", "config-not-a-run", "subdirectory"],
)
def test_a_directory_with_files_but_no_run_is_refused(tmp_path, capsys, files):
    out = tmp_path / "mine"
    out.mkdir()
    for name, content in files.items():
        if isinstance(content, dict):
            (out / name).mkdir()
            for sub, text in content.items():
                (out / name / sub).write_text(text)
        else:
            (out / name).write_text(content)
    before = snapshot(out)
    assert main(["recipe", "ecommerce", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"Run directory '{out}' is not empty and holds no earlier run" in err and "--out" in err
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(files)


@pytest.mark.parametrize("out, message", [("a-file/sub", "Cannot create"), ("n" * 300, "Cannot write the directory")],
                         ids=["under-a-file", "name-too-long"])
def test_a_run_dir_that_cannot_be_made_is_refused_before_anything_loads(tmp_path, capsys, out, message):
    (tmp_path / "a-file").write_text("mine\n")
    assert main(["recipe", "ecommerce", "--quiet", "--out", str(tmp_path / out), "data.path=/nonexistent/crossrec"]) == 2
    err = capsys.readouterr().err
    # The output is refused first: the data directory, which does not exist either, is never looked at.
    assert message in err and ("is a file, not a directory" in err or "File name too long" in err) and "does not exist" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] and (tmp_path / "a-file").read_text() == "mine\n"
