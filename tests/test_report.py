"""report.md / report.json / plots from a report dict, and `crossrec-peft report` over several run dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrec_peft.cli import main
from crossrec_peft.plots import loss_keys, read_metrics_log
from crossrec_peft.report import markdown, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def metrics(scale: float) -> dict[str, float]:
    out = {}
    for k in (5, 10):
        out.update({f"recall@{k}": 0.2 * scale * k / 10, f"ndcg@{k}": 0.1 * scale, f"mrr@{k}": 0.05 * scale, f"map@{k}": 0.05 * scale, f"coverage@{k}": 0.5})
    return out


def fake_report(run_dir: Path, name: str = "demo", *, sampled: bool = True) -> dict:
    systems = {"model": metrics(1.0), "untuned": metrics(0.5), "popularity": metrics(0.2), "itemknn": metrics(0.8), "ids": metrics(0.9)}
    return {
        "name": name, "domain": "ecommerce", "run_dir": str(run_dir), "adapter_dir": None, "split": "leave_one_out",
        "metrics": systems,
        "baselines": ["untuned", "popularity", "itemknn", "ids"],
        "baseline_details": {"ids": {"epochs_run": 3, "best_epoch": 2, "steps": 30, "train_seconds": 1.5, "dim": 16, "parameters": 1234}},
        "sampled": {"negatives": 100, "metrics": {s: {k: min(1.0, 3 * v) for k, v in m.items() if not k.startswith("coverage")} for s, m in systems.items()}} if sampled else None,
        "cold_start": {"max_train_interactions": 5, "cases": 7, "share": 0.07, "metrics": {s: {"recall@10": 0.1, "ndcg@10": 0.05 if s != "ids" else 0.0, "mrr@10": 0.02} for s in systems}},
        "by_history": {"buckets": ["1-2", "3-5"], "cases": [40, 60], "metrics": {s: {"1-2": m, "3-5": m} for s, m in systems.items()}},
        "validation": {"model": metrics(1.0)},
        "params": {"trainable": 10, "total": 100, "share": 0.1},
        "adapter_bytes": 1000, "backbone_bytes": 100000, "train_seconds": 3.0, "total_seconds": 9.0,
        "best_epoch": 2, "epochs_run": 2, "steps": 20, "stopped_early": False,
        "data": {"source": "demo", "items": 120, "users": 100, "interactions": 900},
        "objective_metrics": {"rating": {"rmse": 0.91234, "mae": 0.7, "cases": 50}},
    }


def write_run(run_dir: Path, name: str = "demo", scale: float = 1.0, *, plots: bool = True) -> dict:
    run_dir.mkdir(parents=True)
    log = [
        {"epoch": 1, "step": 10, "lr": 0.001, "loss": 3.0, "loss/retrieval": 2.5, "loss/ctr": 0.5},
        {"epoch": 1, "step": 20, "lr": 0.001, "loss": 2.0, "loss/retrieval": 1.7, "loss/ctr": 0.3},
        {"epoch": 1, "step": 20, "split": "validation", "ndcg@10": 0.1, "recall@10": 0.2},
        {"epoch": 1, "step": 5, "lr": 0.01, "loss": 4.0, "system": "ids"},
        {"epoch": 1, "step": 5, "split": "validation", "ndcg@10": 0.05, "recall@10": 0.1, "system": "ids"},
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"cut off')
    report = fake_report(run_dir, name)
    report["metrics"]["model"] = metrics(scale)
    write_report(run_dir, report, plots=plots)
    return report


def test_run_report_has_every_section_and_plot(tmp_path):
    report = write_run(tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["plots"] == {"training": "plots/training.png", "systems": "plots/systems.png", "history_length": "plots/history_length.png"}
    for rel in on_disk["plots"].values():
        data = (tmp_path / "run" / rel).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    md = (tmp_path / "run" / "report.md").read_text()
    for heading in ("## Model and baselines", "## Before and after fine-tuning", "overstates quality", "## Cold start", "## By history length", "## Training"):
        assert heading in md, heading
    for system in ("model", "untuned", "popularity", "itemknn", "ids"):
        assert f"| {system} | " in md
    # The before/after table: untuned 0.05 -> tuned 0.10 on NDCG@10 is +0.0500, +100%.
    assert "| ndcg@10 | 0.0500 | 0.1000 | +0.0500 | +100.0% |" in md
    assert "![model and baselines](plots/systems.png)" in md
    assert "| rating.rmse | 0.9123 |" in md and "| rating.cases | 50 |" in md
    assert report["plots"] == on_disk["plots"]


def test_markdown_without_optional_sections(tmp_path):
    report = fake_report(tmp_path, sampled=False)
    del report["metrics"]["untuned"], report["cold_start"], report["by_history"]
    md = markdown(report)
    assert "no before/after comparison" in md
    assert "Sampled" not in md and "Cold start" not in md


def test_metrics_log_and_loss_keys(tmp_path):
    write_run(tmp_path / "run", plots=False)
    records = read_metrics_log(tmp_path / "run" / "metrics.jsonl")
    assert len(records) == 5  # the cut-off last line is skipped
    assert loss_keys(records) == ["loss", "loss/retrieval", "loss/ctr"]
    assert read_metrics_log(tmp_path / "absent.jsonl") == []


def test_report_command_compares_runs(tmp_path, capsys):
    write_run(tmp_path / "a", "alpha", 1.0, plots=False)
    write_run(tmp_path / "b", "alpha", 0.5, plots=False)
    plot = tmp_path / "cmp.png"
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "alpha (a)" in out and "alpha (b)" in out  # same name: told apart by directory
    assert "0.1000" in out and "0.0500" in out  # the two models' NDCG@10
    assert plot.read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "no such run directory"),
        (lambda d: d.mkdir(), "no report.json"),
        (lambda d: (d.mkdir(), (d / "report.json").write_text("{oops")), "not valid JSON"),
        (lambda d: (d.mkdir(), (d / "report.json").write_text('{"metrics": {}}')), "'metrics.model' is missing"),
        (lambda d: (d.mkdir(), (d / "report.json").write_text('{"metrics": {"model": {"ndcg@10": "high"}}}')), "must map metric names to numbers"),
    ],
)
def test_report_command_bad_run_dirs_exit_2(tmp_path, capsys, make, message):
    write_run(tmp_path / "good", plots=False)
    bad = tmp_path / "bad"
    make(bad)
    assert main(["report", str(tmp_path / "good"), str(bad), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(bad) in err and "Traceback" not in err


def test_run_labels_stay_unique():
    from crossrec_peft.report import run_labels

    labels = run_labels([Path("x/a"), Path("y/a"), Path("b")], [{"name": "r"}, {"name": "r"}, {"name": "q"}])
    assert labels == ["r (a) #1", "r (a) #2", "q"]



@pytest.mark.parametrize(
    "model, untuned, warned",
    [(0.030, 0.040, True), (0.050, 0.040, False), (0.040, 0.040, False), (0.030, None, False)],
)
def test_report_says_plainly_when_tuning_lost_to_the_untuned_backbone(model, untuned, warned):
    from crossrec_peft.report import below_untuned

    validation = {"model": {"ndcg@10": model}}
    if untuned is not None:
        validation["untuned"] = {"ndcg@10": untuned}
    warning = below_untuned({"validation": validation})
    assert (warning is not None) == warned
    if warned:
        assert f"{model:.4f}" in warning and f"{untuned:.4f}" in warning and "-25.0%" in warning
