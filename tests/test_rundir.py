"""A failed run changes nothing in its run directory (issue 11, group 1): nothing is written until the
inputs are checked, and a directory holding a finished run is refused, naming --out. Resuming a finished run
changes nothing either; resuming one interrupted before its report completes it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from crossrec_peft import recipes
from crossrec_peft.cli import main
from crossrec_peft.config import load_config
from crossrec_peft.recipe_class import Recipe
from tests.conftest import small_layout, tiny_overrides


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


def test_a_finished_run_is_refused_naming_out(tmp_path, capsys):
    out = finished_run(tmp_path / "run")
    before = snapshot(out)
    assert main(["recipe", "ecommerce", "--quiet", "--out", str(out), "data.path=/nonexistent/crossrec"]) == 2
    err = capsys.readouterr().err
    # Not --resume: resuming a finished run changes nothing (below).
    assert "holds a finished run" in err and "--out" in err and "--resume" not in err
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


# -- resuming a finished run, and one interrupted before its report ------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_bert):
    """The e-commerce recipe on the tiny BERT, text only: a real run in seconds."""
    return tiny_overrides(tiny_bert, **{"model.modalities.image": "null"})


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    """A finished run made through the CLI (every file a run writes: report, package, checkpoints)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["recipe", "ecommerce", "--quiet", "--out", str(out), *tiny]) == 0
    return out


def resume_args(spelling: str, out: Path) -> list[str]:
    return {
        "--resume": ["--resume", str(out)],
        "--resume and --out": ["--resume", str(out), "--out", str(out)],
        "train.resume": ["--out", str(out), "train.resume=true"],
        # A key a resume may change (checkpoint.RESUMABLE_CHANGES) does not make it another run.
        "--resume, eval_batch_size": ["--resume", str(out), "train.eval_batch_size=32"],
    }[spelling]


@pytest.mark.parametrize("spelling", ["--resume", "--resume and --out", "train.resume", "--resume, eval_batch_size"])
def test_resuming_a_finished_run_says_so_and_changes_nothing(finished, tiny, tmp_path, capsys, spelling):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = snapshot(out)
    assert main(["recipe", "ecommerce", "--quiet", *tiny, *resume_args(spelling, out)]) == 0
    said = " ".join(capsys.readouterr().out.split())  # rich-free print, but a terminal may wrap it
    assert f"The run at {out} is already finished: its report is {out / 'report.json'}" in said
    # report.json, report.md, the package's manifest (its time and id), checkpoints, metrics.jsonl: byte for byte.
    assert snapshot(out) == before and "adapter/crossrec.json" in before and "report.json" in before


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=2", "train.epochs: run 1, now 2"),
        ("eval.ks=[5,10]", "eval.ks: run [5, 10, 20], now [5, 10]"),
        ("hybrid.enabled=true", "hybrid.enabled: run False, now True"),
    ],
    ids=["training", "evaluation", "hybrid"],
)
def test_resuming_a_finished_run_with_another_config_is_refused(finished, tiny, tmp_path, capsys, override, message):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = snapshot(out)
    assert main(["recipe", "ecommerce", "--quiet", *tiny, override, "--resume", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"Run directory '{out}' holds a finished run (report.json) made with another configuration" in err
    assert message in err and "nothing was changed" in err and "Traceback" not in err
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "report.json").write_text("{cut"), "report.json: not valid JSON"),
        (lambda d: (d / "report.json").write_text('{"name": ["a"], "metrics": {"model": {}}}'), "report.json: field 'name' must be a text"),
        (lambda d: (d / "config.yaml").unlink(), "its config.yaml cannot be read (No such file or directory)"),
        (lambda d: (d / "config.yaml").write_text("- a list\n"), "its config.yaml cannot be read (it holds a list"),
    ],
    ids=["report-not-json", "report-name-a-list", "config-missing", "config-a-list"],
)
def test_resuming_a_finished_run_that_cannot_be_read_is_refused(finished, tiny, tmp_path, capsys, damage, message):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    damage(out)
    before = snapshot(out)
    assert main(["recipe", "ecommerce", "--quiet", *tiny, "--resume", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "othing was changed" in err and "Traceback" not in err
    assert snapshot(out) == before


class StopsBeforeReport(Recipe):
    """A run killed after training: in evaluate (no package, no report) or after the export (no report)."""

    stop_in = "evaluate"

    def evaluate(self):
        if self.stop_in == "evaluate":
            raise KeyboardInterrupt
        super().evaluate()

    def report(self):
        raise KeyboardInterrupt


@pytest.mark.parametrize("stop_in, package_left", [("evaluate", False), ("report", True)], ids=["in-evaluate", "after-export"])
def test_resuming_a_run_interrupted_before_its_report_completes_it(finished, tiny, tmp_path, capsys, stop_in, package_left):
    out = tmp_path / "run"
    cfg = load_config(recipes.path("ecommerce"), tiny, name="ecommerce")
    recipe = StopsBeforeReport(cfg, out, progress=False, summary=False)
    recipe.stop_in = stop_in
    with pytest.raises(KeyboardInterrupt):
        recipe.run()
    assert not (out / "report.json").exists() and (out / "adapter").is_dir() == package_left
    assert main(["recipe", "ecommerce", "--quiet", *tiny, "--resume", str(out)]) == 0
    assert "already finished" not in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    # Completed from the last checkpoint: the same results as the run that was never interrupted.
    assert report["metrics"] == json.loads((finished / "report.json").read_text())["metrics"]
    assert (out / "adapter" / "crossrec.json").is_file() and (out / "report.md").is_file()
    # Now it is finished: another resume changes nothing.
    before = snapshot(out)
    assert main(["recipe", "ecommerce", "--quiet", *tiny, "--resume", str(out)]) == 0
    assert "is already finished" in capsys.readouterr().out and snapshot(out) == before
